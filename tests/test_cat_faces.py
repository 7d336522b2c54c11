"""The cat-face cascade of the head detector, on real ImageNet photos of tests/fixtures/animal_heads.csv."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from ingest_helpers import iou, manifest_by_source, serial_options, true_box

import preprocessing.head_detector as head_detector
from preprocessing.animals import ingest_animals, parse_classes
from preprocessing.errors import IngestError
from preprocessing.head_detector import DEFAULT_CAT_FACE_THRESHOLD, DEFAULT_TEMPLATES, detect_cat_faces
from preprocessing.images import decode_image

FIXTURE = Path(__file__).parent / "fixtures" / "animal_heads.csv"
EGYPTIAN_CAT = "n02124075_Egyptian_cat.JPEG"  # development row: the face the threshold was calibrated on


def fixture_box(name: str) -> tuple[int, int, int, int]:
    with FIXTURE.open(encoding="utf-8") as labels:
        return true_box(next(row for row in csv.DictReader(labels) if row["file"] == name))


@pytest.fixture(scope="module")
def photos(shared_data: Path) -> Path:
    return shared_data / "animals"


def photo(photos: Path, folder: str, name: str):
    return decode_image((photos / folder / name).read_bytes())


def test_the_cascade_frames_a_cat_head(photos: Path) -> None:
    # Best face first, in source pixels: the hand-drawn head box, accepted at the default threshold.
    egyptian = detect_cat_faces(photo(photos, "imagenet_dev", EGYPTIAN_CAT))
    assert egyptian and iou(egyptian[0].box, fixture_box(EGYPTIAN_CAT)) >= 0.8
    assert egyptian[0].score >= DEFAULT_CAT_FACE_THRESHOLD


def test_the_cascade_gives_dogs_nothing_it_would_accept(photos: Path) -> None:
    assert detect_cat_faces(photo(photos, "imagenet_samples", "n02106662_German_shepherd.JPEG")) == []
    # A "face" on a Scottish terrier's photo, off its head: below the threshold, so not a head.
    scotch = detect_cat_faces(photo(photos, "imagenet_dev", "n02097298_Scotch_terrier.JPEG"))
    assert scotch and iou(scotch[0].box, fixture_box("n02097298_Scotch_terrier.JPEG")) < 0.5
    assert all(face.score < DEFAULT_CAT_FACE_THRESHOLD for face in scotch)


def test_cat_classes_ask_the_cascade_first(photos: Path, tmp_path: Path) -> None:
    source = tmp_path / "photos"
    source.mkdir()
    (source / "n02124075_1.JPEG").symlink_to(photos / "imagenet_dev" / EGYPTIAN_CAT)
    (source / "n02097298_1.JPEG").symlink_to(photos / "imagenet_dev" / "n02097298_Scotch_terrier.JPEG")
    out = tmp_path / "ds"
    # An impossible template threshold: only the cascade can accept, and it runs for cat classes only
    # (the terrier's photo has a cascade "face" that any cascade threshold of -99 would accept).
    with pytest.raises(IngestError, match="'n02097298' has 0"):
        ingest_animals(str(source), DEFAULT_TEMPLATES, out, classes=parse_classes(["n02124075", "n02097298"]), threshold=99,
                       cat_face_threshold=-99, options=serial_options())
    summary = ingest_animals(str(source), DEFAULT_TEMPLATES, out, classes=parse_classes(["n02124075"]), threshold=99,
                             options=serial_options())
    assert summary.counts == {"n02124075": {"train": 1}}
    (entry,) = manifest_by_source(out).values()
    cascade_box = detect_cat_faces(photo(photos, "imagenet_dev", EGYPTIAN_CAT))[0].box
    assert entry["transform"]["detector"] == "cat_face" and entry["transform"]["head_box"] == list(cascade_box)
    # Above the cascade's own threshold nothing is accepted: the cascade decides by its threshold.
    with pytest.raises(IngestError, match="too few training images"):
        ingest_animals(str(source), DEFAULT_TEMPLATES, tmp_path / "strict", classes=parse_classes(["n02124075"]), threshold=99,
                       cat_face_threshold=10, options=serial_options())


def test_a_missing_cascade_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(head_detector, "CAT_FACE_CASCADE", "no_such_cascade.xml")
    head_detector.cat_face_cascade.cache_clear()
    try:
        with pytest.raises(IngestError, match="no_such_cascade.xml: cat-face cascade missing or unreadable"):
            head_detector.cat_face_cascade()
    finally:
        monkeypatch.undo()
        head_detector.cat_face_cascade.cache_clear()
