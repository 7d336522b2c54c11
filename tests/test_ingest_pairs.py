"""Aligned pairs (real edges2handbags) into test_paired: two folders, or side by side A|B."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from ingest_helpers import encode, photo, rejections, report, serial_options, write

from preprocessing.errors import IngestError
from preprocessing.images import decode_image
from preprocessing.pairs import ingest_pairs


@pytest.fixture(scope="module")
def handbags(shared_data: Path) -> Path:
    return shared_data / "pairs" / "edges2handbags"


def read_rgb(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]


def test_two_folders_matched_by_name(handbags: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    summary = ingest_pairs(out, folder_a=str(handbags / "edges"), folder_b=str(handbags / "photos"),
                           domain_a="edges", domain_b="photos", options=serial_options())
    assert summary.counts == {"edges": {"test_paired": 9}, "photos": {"test_paired": 9}}
    names = sorted(path.name for path in (out / "edges" / "test_paired").iterdir())
    assert names == sorted(path.name for path in (out / "photos" / "test_paired").iterdir()) == [f"0000{i}.png" for i in range(9)]
    assert np.array_equal(read_rgb(out / "photos/test_paired/00003.png"), decode_image((handbags / "photos/00003.jpg").read_bytes()))


def test_side_by_side_format(handbags: Path, tmp_path: Path) -> None:
    joined = tmp_path / "joined"
    for index in range(9):
        edges = decode_image((handbags / "edges" / f"0000{index}.jpg").read_bytes())
        bag = decode_image((handbags / "photos" / f"0000{index}.jpg").read_bytes())
        write(joined / f"{index}.png", encode(np.hstack([edges, bag]), "PNG"))
    out = tmp_path / "ds"
    ingest_pairs(out, side_by_side=str(joined), domain_a="edges", domain_b="photos", options=serial_options())
    expected_bag = decode_image((handbags / "photos/00005.jpg").read_bytes())
    assert np.array_equal(read_rgb(out / "photos/test_paired/5.png"), expected_bag)
    assert read_rgb(out / "edges/test_paired/5.png").shape == (256, 256, 3)

    swapped = tmp_path / "swapped"
    ingest_pairs(swapped, side_by_side=str(joined), domain_a="photos", domain_b="edges", a_side="right", size=(128, 128),
                 options=serial_options())
    assert read_rgb(swapped / "photos/test_paired/5.png").shape == (128, 128, 3)
    assert report(swapped)["counts"] == {"edges": {"test_paired": 9}, "photos": {"test_paired": 9}}


def test_incomplete_pairs_are_rejected_together(handbags: Path, tmp_path: Path) -> None:
    folder_a, folder_b = tmp_path / "a", tmp_path / "b"
    for index in range(3):
        for folder, kind in ((folder_a, "edges"), (folder_b, "photos")):
            write(folder / f"{index}.jpg", (handbags / kind / f"0000{index}.jpg").read_bytes())
    write(folder_a / "lonely.jpg", (handbags / "edges" / "00004.jpg").read_bytes())
    good = (folder_b / "1.jpg").read_bytes()
    write(folder_b / "1.jpg", good[: len(good) // 3])  # truncated: pair 1 must go entirely
    write(folder_b / "2.jpg", encode(photo(300, 200), "JPEG"))  # other size: refused without --size
    out = tmp_path / "ds"
    summary = ingest_pairs(out, folder_a=str(folder_a), folder_b=str(folder_b), options=serial_options())
    assert summary.counts == {"A": {"test_paired": 1}, "B": {"test_paired": 1}}
    reasons = rejections(out)
    assert reasons[f"{folder_a}/lonely.jpg"] == "no file named lonely in B's folder"
    assert reasons[f"{folder_a}/1.jpg"] == reasons[f"{folder_b}/1.jpg"]
    assert reasons[f"{folder_a}/1.jpg"].startswith("pair 1 not written: B: corrupt or truncated JPEG")
    assert "sizes differ: 256x256 vs 300x200" in reasons[f"{folder_a}/2.jpg"]

    resized = ingest_pairs(tmp_path / "ds2", folder_a=str(folder_a), folder_b=str(folder_b), size=(128, 128), options=serial_options())
    assert resized.counts == {"A": {"test_paired": 2}, "B": {"test_paired": 2}}


def test_side_by_side_with_odd_width(tmp_path: Path) -> None:
    write(tmp_path / "in" / "odd.png", encode(photo(101, 50), "PNG"))
    write(tmp_path / "in" / "even.png", encode(photo(100, 50), "PNG"))
    out = tmp_path / "ds"
    ingest_pairs(out, side_by_side=str(tmp_path / "in"), options=serial_options())
    assert "odd width (101)" in rejections(out)[f"{tmp_path / 'in'}/odd.png"]


def test_argument_checks(tmp_path: Path) -> None:
    for kwargs in ({}, {"folder_a": "x"}, {"side_by_side": "x", "folder_a": "y"}):
        with pytest.raises(IngestError, match="either side_by_side, or both"):
            ingest_pairs(tmp_path / "ds", **kwargs)
    with pytest.raises(IngestError, match="must differ"):
        ingest_pairs(tmp_path / "ds", side_by_side="x", domain_a="same", domain_b="same")
