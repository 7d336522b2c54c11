"""Digits for domain adaptation: MNIST (idx files, gzipped or not) and USPS (HDF5), labels kept.

Both are brought to one square size, gray PNG, one domain each (``mnist``, ``usps``) with
``train`` and ``test`` splits. USPS digits fill their whole 16x16 frame while MNIST digits
fill about 20 of 28 pixels, so USPS is first padded with black (``usps_pad`` pixels per
side) to give both sets the same digit scale; by default the pad is the one whose mean USPS
digit lies closest to the mean MNIST digit (no labels used), and the ingest reports the
distance for each candidate. Labels go into the manifest and into a compact
``<domain>/labels-<split>.csv`` per split. Whole arrays are resized at once and encoded by a
process pool, so the full 70000-image MNIST takes seconds.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from preprocessing.errors import IngestError
from preprocessing.output import DatasetWriter, encode_image, sha256_bytes
from preprocessing.pipeline import IngestOptions, IngestSummary, summary_of, worker_pool
from unit_core.ingest_settings import DIGITS_SIZE
from unit_core.layout import labels_name

DEFAULT_SIZE = DIGITS_SIZE
MNIST_SPLITS = {"train": "train", "test": "t10k"}
USPS_SPLITS = ("train", "test")
# cv2.resize handles at most this many channels at once (CV_CN_MAX in OpenCV 5).
_RESIZE_BATCH = 128
_AREA_RESIZE_BATCH = 4
_ENCODE_CHUNK = 2048
#: USPS pads tried when choosing the alignment, and the training images each set contributes to its mean digit.
USPS_PAD_CANDIDATES = tuple(range(0, 7))
ALIGNMENT_SAMPLE = 3000


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


def pad_batch(images: np.ndarray, pad: int) -> np.ndarray:
    """N x H x W images with ``pad`` black pixels added on every side."""
    return np.pad(images, ((0, 0), (pad, pad), (pad, pad))) if pad else images


def mean_digit_distance(mnist: np.ndarray, usps: np.ndarray, size: int, usps_pad: int) -> float:
    """Sum over the size x size pixels of the squared difference of the two mean digits (pixels in [0, 1])."""
    mean_mnist = resize_batch(mnist, size).astype(np.float64).mean(axis=0) / 255
    mean_usps = resize_batch(pad_batch(usps, usps_pad), size).astype(np.float64).mean(axis=0) / 255
    return float(((mean_mnist - mean_usps) ** 2).sum())


def choose_usps_pad(mnist: np.ndarray, usps: np.ndarray, size: int) -> tuple[int, dict[int, float]]:
    """The USPS pad (of USPS_PAD_CANDIDATES) whose mean digit is closest to MNIST's, and every candidate's distance.

    Uses the first ALIGNMENT_SAMPLE training images of each set; labels are not read.
    """
    mnist, usps = mnist[:ALIGNMENT_SAMPLE], usps[:ALIGNMENT_SAMPLE]
    if not len(mnist) or not len(usps):
        raise IngestError("cannot align USPS to MNIST: a training split is empty")
    distances = {pad: mean_digit_distance(mnist, usps, size, pad) for pad in USPS_PAD_CANDIDATES}
    return min(distances, key=distances.__getitem__), distances


def encode_batch(images: np.ndarray, image_format: str) -> list[bytes]:
    """Encode a stack of gray images; a top-level function so process pools can run it."""
    return [encode_image(image, image_format) for image in images]


def _encoded_chunks(images: np.ndarray, options: IngestOptions) -> Iterator[list[bytes]]:
    chunks = [images[start : start + _ENCODE_CHUNK] for start in range(0, len(images), _ENCODE_CHUNK)]
    if options.workers == 1 or len(chunks) == 1:
        yield from (encode_batch(chunk, options.image_format) for chunk in chunks)
        return
    with worker_pool(options.workers) as pool:
        yield from pool.map(encode_batch, chunks, [options.image_format] * len(chunks))


def write_digit_split(writer: DatasetWriter, domain: str, split: str, digits: DigitSplit, size: int, pad: int,
                      options: IngestOptions) -> None:
    """Pad, resize and encode one split of one domain, with its ``labels-<split>.csv``."""
    labels = digits.labels
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise IngestError(f"{digits.source}: labels must be 0..9, found {labels.min()}..{labels.max()}")
    width = max(5, len(str(len(digits.images))))
    resized = resize_batch(pad_batch(digits.images, pad), size)
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
    writer.add_metadata_file(labels_name(domain, split), ("\n".join(rows) + "\n").encode())


def ingest_digits(
    out_dir: str | Path,
    *,
    mnist: str | Path | None = None,
    usps: str | Path | None = None,
    size: int = DEFAULT_SIZE,
    limit: int | None = None,
    usps_pad: int | None = None,
    options: IngestOptions = IngestOptions(),
) -> IngestSummary:
    """MNIST (folder of idx files) and/or USPS (HDF5 file) as domains ``mnist`` and ``usps``.

    ``size``: common side in pixels (28 or 32 are usual). ``limit``: first N images per split.
    ``usps_pad``: black pixels added per side of the 16x16 USPS digits before resizing; None
    chooses it by :func:`choose_usps_pad` (needs MNIST; with USPS alone, no pad).
    """
    if mnist is None and usps is None:
        raise IngestError("give at least one of mnist (folder of idx files) or usps (HDF5 file)")
    if size < 4:
        raise IngestError(f"size must be at least 4, got {size}")
    if limit is not None and limit < 1:
        raise IngestError(f"limit must be at least 1, got {limit}")
    if usps_pad is not None and usps_pad < 0:
        raise IngestError(f"usps_pad must be 0 or more pixels, got {usps_pad}")
    domains = {}
    if mnist is not None:
        domains["mnist"] = load_mnist(mnist, limit)
    if usps is not None:
        domains["usps"] = load_usps(usps, limit)
    details, distances = [], {}
    if usps is None:
        usps_pad = 0
    elif usps_pad is None and mnist is None:
        usps_pad = 0
        details.append("usps: no MNIST to align with, USPS digits not padded")
    elif usps_pad is None:
        usps_pad, distances = choose_usps_pad(domains["mnist"]["train"].images, domains["usps"]["train"].images, size)
        table = ", ".join(f"{pad} px {distance:.1f}" for pad, distance in distances.items())
        details.append(f"usps: padded {usps_pad} px per side, the pad whose mean digit is closest to MNIST's "
                       f"(squared distance of the mean digits: {table})")
    elif mnist is not None:
        distance = mean_digit_distance(domains["mnist"]["train"].images[:ALIGNMENT_SAMPLE],
                                       domains["usps"]["train"].images[:ALIGNMENT_SAMPLE], size, usps_pad)
        distances = {usps_pad: distance}
        details.append(f"usps: padded {usps_pad} px per side (squared distance of the mean digits to MNIST's: {distance:.1f})")
    parameters = {"mnist": str(mnist) if mnist else None, "usps": str(usps) if usps else None, "size": size,
                  "limit": limit, "usps_pad": usps_pad}
    pads = {"mnist": 0, "usps": usps_pad}
    with DatasetWriter(out_dir, options.image_format, options.reuse_previous, kind="digits", parameters=parameters) as writer:
        if distances:
            writer.note("usps_mean_digit_distance", {str(pad): round(value, 3) for pad, value in distances.items()})
        for domain, splits in domains.items():
            for split, digits in splits.items():
                write_digit_split(writer, domain, split, digits, size, pads[domain], options)
    return summary_of(writer, details)
