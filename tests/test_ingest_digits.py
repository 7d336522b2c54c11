"""MNIST (real idx files) and USPS (real HDF5) for domain adaptation, labels kept."""

from __future__ import annotations

import gzip
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from ingest_helpers import manifest_by_source, report, serial_options, tree_bytes

from preprocessing.digits import choose_usps_pad, ingest_digits, load_mnist, load_usps, read_idx, resize_batch
from preprocessing.errors import IngestError

# The first labels of the real files (well known for MNIST; read off usps.h5 with h5py for USPS).
MNIST_TRAIN_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
MNIST_TEST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
USPS_TRAIN_LABELS = [6, 5, 4, 7, 3, 6, 3, 1, 0, 1]


@pytest.fixture(scope="module")
def digits(shared_data: Path) -> Path:
    return shared_data / "digits"


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(size).to_bytes(4, "big") for size in array.shape)
    return header + array.astype(np.uint8).tobytes()


def read_png(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_idx_files_gzipped_or_not(digits: Path, tmp_path: Path) -> None:
    images = read_idx(digits / "mnist" / "train-images.idx3-ubyte.gz")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    sample = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "raw-idx3-ubyte").write_bytes(idx_bytes(sample))
    (tmp_path / "packed-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(sample)))
    assert np.array_equal(read_idx(tmp_path / "raw-idx3-ubyte"), sample)
    assert np.array_equal(read_idx(tmp_path / "packed-idx3-ubyte.gz"), sample)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00", "not an idx file of unsigned bytes"),
        (idx_bytes(np.zeros((2, 2), np.uint8))[:-1], r"header says \(2, 2\) = 4 bytes of data, file has 3"),
        (b"\x00\x00\x08\x03\x00", "truncated idx header"),
    ],
)
def test_malformed_idx_files(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(IngestError, match=f"{path}: {message}"):
        read_idx(path)


def test_mnist_and_usps_subset(digits: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    summary = ingest_digits(out, mnist=digits / "mnist", usps=digits / "usps" / "usps.h5", size=28, limit=50, options=serial_options())
    assert summary.counts == {"mnist": {"test": 50, "train": 50}, "usps": {"test": 50, "train": 50}}
    entries = manifest_by_source(out)
    mnist_source = str(digits / "mnist" / "train-images.idx3-ubyte.gz")
    assert [entries[f"{mnist_source}#{index}"]["label"] for index in range(10)] == MNIST_TRAIN_LABELS
    test_source = str(digits / "mnist" / "t10k-images.idx3-ubyte.gz")
    assert [entries[f"{test_source}#{index}"]["label"] for index in range(10)] == MNIST_TEST_LABELS
    usps_source = f"{digits / 'usps' / 'usps.h5'}:train"
    assert [entries[f"{usps_source}#{index}"]["label"] for index in range(10)] == USPS_TRAIN_LABELS
    assert entries[f"{usps_source}#3"]["output"] == "usps/train/00003.png"
    labels = (out / "usps" / "labels-train.csv").read_text().splitlines()
    assert labels[0] == "file,label" and [int(row.split(",")[1]) for row in labels[1:11]] == USPS_TRAIN_LABELS
    assert labels[1].startswith("00000.png,")
    # 28x28 MNIST is stored unchanged; 16x16 USPS is enlarged to the common size.
    first = read_idx(digits / "mnist" / "train-images.idx3-ubyte.gz")[0]
    assert np.array_equal(read_png(out / "mnist/train/00000.png"), first)
    usps = read_png(out / "usps/train/00000.png")
    assert usps.shape == (28, 28) and usps.max() > 200 and usps[0, 0] < 30, "white digit on black, like MNIST"
    assert report(out)["metadata_files"] == ["mnist/labels-test.csv", "mnist/labels-train.csv", "usps/labels-test.csv", "usps/labels-train.csv"]


def test_size_32_and_batch_resize_matches_single_resize(digits: Path, tmp_path: Path) -> None:
    images = load_mnist(digits / "mnist", limit=300)["train"].images
    batch = resize_batch(images, 32)
    single = np.stack([cv2.resize(image, (32, 32), interpolation=cv2.INTER_CUBIC) for image in images])
    assert batch.shape == (300, 32, 32) and np.abs(batch.astype(int) - single).max() <= 1
    ingest_digits(tmp_path / "ds", mnist=digits / "mnist", size=32, limit=5, options=serial_options())
    assert read_png(tmp_path / "ds/mnist/test/00004.png").shape == (32, 32)


@pytest.mark.parametrize("size", [14, 16, 20])
def test_shrinking_batch_resize_matches_single_resize(digits: Path, size: int) -> None:
    images = load_mnist(digits / "mnist", limit=301)["train"].images
    single = np.stack([cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA) for image in images])
    assert np.array_equal(resize_batch(images, size), single)


def test_parallel_encoding_equals_serial(digits: Path, tmp_path: Path) -> None:
    ingest_digits(tmp_path / "serial", usps=digits / "usps" / "usps.h5", limit=2500, options=serial_options())
    ingest_digits(tmp_path / "parallel", usps=digits / "usps" / "usps.h5", limit=2500, options=serial_options(workers=2))
    assert tree_bytes(tmp_path / "serial") == tree_bytes(tmp_path / "parallel")


def ink_height(folder: Path) -> float:
    """Mean height in pixels of the rows holding ink (value > 64) of the PNG digits in ``folder``."""
    heights = []
    for path in sorted(folder.iterdir()):
        rows = np.flatnonzero((read_png(path) > 64).any(axis=1))
        heights.append(rows[-1] - rows[0] + 1)
    return float(np.mean(heights))


def test_usps_digits_are_padded_to_the_scale_of_mnist(digits: Path, tmp_path: Path) -> None:
    """USPS digits fill their 16x16 frame, MNIST's about 20 of 28 pixels: unpadded, USPS would come out 1.4x larger."""
    mnist = load_mnist(digits / "mnist", limit=3000)["train"].images
    usps = load_usps(digits / "usps" / "usps.h5", limit=3000)["train"].images
    pad, distances = choose_usps_pad(mnist, usps, 32)
    assert pad in (3, 4), distances  # 3-4 px: 16 + 2 * pad against MNIST's 20-in-28 digit box
    assert distances[pad] < distances[0] / 5
    out = tmp_path / "ds"
    summary = ingest_digits(out, mnist=digits / "mnist", usps=digits / "usps" / "usps.h5", size=32, limit=300,
                            options=serial_options())
    measured = {int(key): value for key, value in report(out)["notes"]["usps_mean_digit_distance"].items()}
    chosen = min(measured, key=measured.__getitem__)
    assert chosen in (3, 4) and f"usps: padded {chosen} px per side" in summary.describe()
    mnist_height, usps_height = ink_height(out / "mnist" / "train"), ink_height(out / "usps" / "train")
    assert abs(usps_height - mnist_height) < 2.0, (mnist_height, usps_height)
    ingest_digits(tmp_path / "unpadded", usps=digits / "usps" / "usps.h5", size=32, limit=300, usps_pad=0,
                  options=serial_options())
    assert ink_height(tmp_path / "unpadded" / "usps" / "train") > mnist_height + 5


def test_bad_usps_files(tmp_path: Path) -> None:
    path = tmp_path / "usps.h5"
    with h5py.File(path, "w") as h5:
        for split in ("train", "test"):
            h5[f"{split}/data"] = np.full((3, 256), 2.0, np.float32)
            h5[f"{split}/target"] = np.zeros(3, np.int32)
    with pytest.raises(IngestError, match=r"train/data values lie in \[2.000, 2.000\], expected \[0, 1\]"):
        ingest_digits(tmp_path / "ds", usps=path, options=serial_options())
    (tmp_path / "not.h5").write_bytes(b"plain text")
    with pytest.raises(IngestError, match="cannot read as HDF5"):
        ingest_digits(tmp_path / "ds", usps=tmp_path / "not.h5", options=serial_options())
    with pytest.raises(IngestError, match="no train-images idx file"):
        ingest_digits(tmp_path / "ds", mnist=tmp_path, options=serial_options())


@pytest.mark.slow
def test_full_usps(digits: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    summary = ingest_digits(out, usps=digits / "usps" / "usps.h5", size=28, options=serial_options(workers=2))
    assert summary.counts == {"usps": {"test": 2007, "train": 7291}}
    with h5py.File(digits / "usps" / "usps.h5") as h5:
        targets = np.asarray(h5["test/target"])
    rows = (out / "usps" / "labels-test.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[1]) for row in rows] == targets.tolist()
    assert len(list((out / "usps" / "train").iterdir())) == 7291
