"""Digits for domain adaptation: MNIST (idx files, gzipped or not) and USPS (HDF5), labels kept.

Both are brought to one square size, gray PNG, one domain each (``mnist``, ``usps``) with
``train`` and ``test`` splits. Labels go into the manifest and into a compact
``<domain>/labels-<split>.csv`` per split. Whole arrays are resized at once and encoded by a
process pool, so the full 70000-image MNIST takes seconds.
"""

from __future__ import annotations

import gzip
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from preprocessing.errors import IngestError
from preprocessing.output import DatasetWriter, encode_image, sha256_bytes
from preprocessing.pipeline import IngestOptions, IngestSummary, summary_of

DEFAULT_SIZE = 28
MNIST_SPLITS = {"train": "train", "test": "t10k"}
USPS_SPLITS = ("train", "test")
# cv2.resize handles at most this many channels at once (CV_CN_MAX in OpenCV 5).
_RESIZE_BATCH = 128
_AREA_RESIZE_BATCH = 4
_ENCODE_CHUNK = 2048


@dataclass(frozen=True)
class DigitSplit:
    images: np.ndarray  # N x H x W uint8, white digit on black
    labels: np.ndarray  # N int
    source: str  # file (USPS: "file:split") the images came from; "#<index>" is appended per image


def read_idx(path: str | Path) -> np.ndarray:
    """An idx file (the MNIST format, gzipped or not) as a uint8 array of its declared shape."""
    path = Path(path)
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError) as exc:
        raise IngestError(f"{path}: cannot read: {exc}") from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise IngestError(f"{path}: not an idx file of unsigned bytes (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IngestError(f"{path}: truncated idx header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64))
    if len(data) - header != expected:
        raise IngestError(f"{path}: header says {shape} = {expected} bytes of data, file has {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path:
    suffixes = ("idx3-ubyte", "idx1-ubyte", "idx3-ubyte.gz", "idx1-ubyte.gz")
    candidates = [folder / f"{stem}{separator}{suffix}" for separator in ("-", ".") for suffix in suffixes]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise IngestError(f"{folder}: no {stem} idx file (looked for {', '.join(c.name for c in candidates)})")


def load_mnist(folder: str | Path, limit: int | None = None) -> dict[str, DigitSplit]:
    """MNIST's train and t10k idx files from ``folder``; ``limit`` keeps the first N of each split."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IngestError(f"{folder}: MNIST folder not found")
    splits = {}
    for split, prefix in MNIST_SPLITS.items():
        images_file = _find_idx(folder, f"{prefix}-images")
        labels_file = _find_idx(folder, f"{prefix}-labels")
        images, labels = read_idx(images_file), read_idx(labels_file)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise IngestError(f"{images_file}: {images.shape} images do not fit {labels_file}: {labels.shape} labels")
        splits[split] = DigitSplit(images[:limit], labels[:limit].astype(np.int64), str(images_file))
    return splits


def load_usps(path: str | Path, limit: int | None = None) -> dict[str, DigitSplit]:
    """USPS in the common HDF5 layout: ``train/data`` (N, 256) floats in [0, 1], ``train/target``; same for test."""
    import h5py

    path = Path(path)
    splits = {}
    try:
        with h5py.File(path, "r") as h5:
            for split in USPS_SPLITS:
                if f"{split}/data" not in h5 or f"{split}/target" not in h5:
                    raise IngestError(f"{path}: missing {split}/data or {split}/target")
                data = np.asarray(h5[f"{split}/data"][:limit], dtype=np.float32)
                labels = np.asarray(h5[f"{split}/target"][:limit]).astype(np.int64)
                if data.ndim != 2 or data.shape[1] != 256 or len(data) != len(labels):
                    raise IngestError(f"{path}: {split}/data is {data.shape}, expected (N, 256) with N = {len(labels)} targets")
                if data.size and (data.min() < -1e-6 or data.max() > 1 + 1e-6):
                    raise IngestError(f"{path}: {split}/data values lie in [{data.min():.3f}, {data.max():.3f}], expected [0, 1]")
                images = np.rint(np.clip(data, 0.0, 1.0) * 255).astype(np.uint8).reshape(-1, 16, 16)
                splits[split] = DigitSplit(images, labels, f"{path}:{split}")
    except OSError as exc:
        raise IngestError(f"{path}: cannot read as HDF5: {exc}") from None
    return splits


def resize_batch(images: np.ndarray, size: int) -> np.ndarray:
    """Resize N x H x W images to N x size x size, many per OpenCV call (images stacked as channels)."""
    if images.shape[1:] == (size, size):
        return images
    shrinking = size <= min(images.shape[1:])
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    # OpenCV's area resize takes at most 4 channels at a non-integer scale (28 -> 16).
    per_call = _AREA_RESIZE_BATCH if shrinking else _RESIZE_BATCH
    out = np.empty((len(images), size, size), dtype=np.uint8)
    for start in range(0, len(images), per_call):
        stacked = np.ascontiguousarray(images[start : start + per_call].transpose(1, 2, 0))
        resized = cv2.resize(stacked, (size, size), interpolation=interpolation)
        out[start : start + per_call] = resized.reshape(size, size, -1).transpose(2, 0, 1)
    return out


def encode_batch(images: np.ndarray, image_format: str) -> list[bytes]:
    """Encode a stack of gray images; a top-level function so process pools can run it."""
    return [encode_image(image, image_format) for image in images]


def _encoded_chunks(images: np.ndarray, options: IngestOptions) -> Iterator[list[bytes]]:
    chunks = [images[start : start + _ENCODE_CHUNK] for start in range(0, len(images), _ENCODE_CHUNK)]
    if options.workers == 1 or len(chunks) == 1:
        yield from (encode_batch(chunk, options.image_format) for chunk in chunks)
        return
    with ProcessPoolExecutor(options.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(encode_batch, chunks, [options.image_format] * len(chunks))


def _write_split(writer: DatasetWriter, domain: str, split: str, digits: DigitSplit, size: int, options: IngestOptions) -> None:
    labels = digits.labels
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise IngestError(f"{digits.source}: labels must be 0..9, found {labels.min()}..{labels.max()}")
    width = max(5, len(str(len(digits.images))))
    resized = resize_batch(digits.images, size)
    rows = ["file,label"]
    index = 0
    with tqdm(total=len(resized), desc=f"{domain}/{split}", unit="img", disable=not options.progress) as progress:
        for chunk in _encoded_chunks(resized, options):
            for encoded in chunk:
                name = f"{index:0{width}d}"
                label = int(labels[index])
                path = writer.add_encoded(
                    encoded,
                    domain=domain,
                    split=split,
                    name=name,
                    source=f"{digits.source}#{index}",
                    source_sha256=sha256_bytes(digits.images[index].tobytes()),
                    label=label,
                )
                rows.append(f"{path.name},{label}")
                index += 1
            progress.update(len(chunk))
    writer.add_metadata_file(f"{domain}/labels-{split}.csv", ("\n".join(rows) + "\n").encode())


def ingest_digits(
    out_dir: str | Path,
    *,
    mnist: str | Path | None = None,
    usps: str | Path | None = None,
    size: int = DEFAULT_SIZE,
    limit: int | None = None,
    options: IngestOptions = IngestOptions(),
) -> IngestSummary:
    """MNIST (folder of idx files) and/or USPS (HDF5 file) as domains ``mnist`` and ``usps``.

    ``size``: common side in pixels (28 or 32 are usual). ``limit``: first N images per split.
    """
    if mnist is None and usps is None:
        raise IngestError("give at least one of mnist (folder of idx files) or usps (HDF5 file)")
    if size < 4:
        raise IngestError(f"size must be at least 4, got {size}")
    if limit is not None and limit < 1:
        raise IngestError(f"limit must be at least 1, got {limit}")
    domains = {}
    if mnist is not None:
        domains["mnist"] = load_mnist(mnist, limit)
    if usps is not None:
        domains["usps"] = load_usps(usps, limit)
    parameters = {"mnist": str(mnist) if mnist else None, "usps": str(usps) if usps else None, "size": size, "limit": limit}
    with DatasetWriter(out_dir, options.image_format, options.reuse_previous, kind="digits", parameters=parameters) as writer:
        for domain, splits in domains.items():
            for split, digits in splits.items():
                _write_split(writer, domain, split, digits, size, options)
    return summary_of(writer)
