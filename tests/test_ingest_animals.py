"""ImageNet heads by template matching, on one real ImageNet image per breed/species."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
from ingest_helpers import manifest_by_source, rejections, report, serial_options, tree_bytes

import preprocessing.pipeline as pipeline

from preprocessing.animals import CAT_PRESET, DOG_PRESET, ingest_animals, load_templates, parse_classes, wnid_of
from preprocessing.errors import IngestError

# Head regions (x0, y0, x1, y1 in source pixels) drawn by hand on the samples whose crops were
# checked by eye; the crop's centre must fall inside one of them.
HEADS = {
    "n02106662_German_shepherd.JPEG": [(195, 40, 270, 130)],
    "n02110185_Siberian_husky.JPEG": [(200, 160, 300, 255)],
    "n02113023_Pembroke.JPEG": [(275, 105, 375, 210), (0, 135, 115, 240)],  # either corgi
    "n02123045_tabby.JPEG": [(120, 0, 335, 300)],
    "n02130308_cheetah.JPEG": [(0, 60, 330, 350)],
}


@pytest.fixture(scope="module")
def animals(shared_data: Path) -> Path:
    return shared_data / "animals"


@pytest.fixture(scope="module")
def sample_out(animals: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("animals") / "ds"
    classes = parse_classes(["dogs", "cats"])
    ingest_animals(str(animals / "imagenet_samples"), animals / "templates", out, classes=classes, options=serial_options())
    return out


def test_presets_match_the_paper() -> None:
    assert DOG_PRESET["siberian_husky"] == ("n02110185",) and len(DOG_PRESET) == 5
    assert CAT_PRESET["house_cat"] == ("n02123045", "n02123159", "n02123394", "n02123597", "n02124075")
    assert set(CAT_PRESET) == {"house_cat", "tiger", "lion", "cougar", "leopard", "jaguar", "cheetah"}


def test_parse_classes() -> None:
    assert parse_classes(["n02110185", "big=n02129604,n02129165"]) == {"n02110185": ("n02110185",), "big": ("n02129604", "n02129165")}
    assert set(parse_classes(["dogs"])) == set(DOG_PRESET)
    with pytest.raises(IngestError, match="expected a preset"):
        parse_classes(["husky"])
    with pytest.raises(IngestError, match="n02129604 is in two classes"):
        parse_classes(["cats", "n02129604"])


def test_wnid_from_imagenet_layouts() -> None:
    assert wnid_of("n02110185/n02110185_10045.JPEG") == "n02110185"
    assert wnid_of("train/n02110185/img.jpg") == "n02110185"
    assert wnid_of("n02130308_cheetah.JPEG") == "n02130308"
    assert wnid_of("val/ILSVRC2012_val_00000001.JPEG") is None


def test_heads_are_found_in_the_real_samples(sample_out: Path, animals: Path) -> None:
    entries = {Path(source).name: entry for source, entry in manifest_by_source(sample_out).items()}
    for name, regions in HEADS.items():
        left, top, side, _ = entries[name]["transform"]["box"]
        centre_x, centre_y = left + side / 2, top + side / 2
        assert any(x0 <= centre_x <= x1 and y0 <= centre_y <= y1 for x0, y0, x1, y1 in regions), (name, entries[name]["transform"])
        assert cv2.imread(str(sample_out / entries[name]["output"])).shape == (128, 128, 3)
    assert entries["n02110185_Siberian_husky.JPEG"]["output"] == "siberian_husky/train/n02110185_Siberian_husky.png"
    assert entries["n02123045_tabby.JPEG"]["domain"] == "house_cat"


def test_no_match_is_rejected_with_its_best_score(sample_out: Path, animals: Path) -> None:
    # The Samoyed's head is hidden behind leaves in this photo.
    reason = rejections(sample_out)[str(animals / "imagenet_samples" / "n02111889_Samoyed.JPEG")]
    assert reason.startswith("no head found: best match score ") and "< threshold 3.3" in reason


def test_rerun_reuses_crops_and_their_boxes(animals: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ds"
    classes = parse_classes(["dogs"])
    ingest_animals(str(animals / "imagenet_samples"), animals / "templates", out, classes=classes, options=serial_options())
    first = tree_bytes(out)
    decoded = []
    real_process_image = pipeline.process_image
    monkeypatch.setattr(pipeline, "process_image", lambda task: decoded.append(task) or real_process_image(task))
    ingest_animals(str(animals / "imagenet_samples"), animals / "templates", out, classes=classes, options=serial_options())
    assert tree_bytes(out) == first, "manifest keeps each reused crop's box and score"
    assert len(decoded) == 1, "only the rejected Samoyed is matched again"


def test_synset_folder_layout_and_other_classes(animals: Path, tmp_path: Path) -> None:
    root = tmp_path / "imagenet" / "train"
    layout = {"n02110185": "n02110185_Siberian_husky.JPEG", "n02113023": "n02113023_Pembroke.JPEG", "n01440764": "n02129165_lion.JPEG"}
    for wnid, sample in layout.items():
        (root / wnid).mkdir(parents=True)
        (root / wnid / f"{wnid}_1.JPEG").symlink_to(animals / "imagenet_samples" / sample)
    out = tmp_path / "ds"
    classes = parse_classes(["n02110185", "corgi=n02113023"])
    summary = ingest_animals(str(tmp_path / "imagenet"), animals / "templates", out, classes=classes, size=64, options=serial_options())
    assert summary.counts == {"corgi": {"train": 1}, "n02110185": {"train": 1}}
    assert report(out)["notes"]["files_of_other_classes"] == 1


def test_nothing_above_an_impossible_threshold(animals: Path, tmp_path: Path) -> None:
    with pytest.raises(IngestError, match=r"no image was written .*best match score \d+\.\d+ < threshold 99"):
        ingest_animals(
            str(animals / "imagenet_samples"), animals / "templates", tmp_path / "ds",
            classes=parse_classes(["dogs"]), threshold=99, options=serial_options(),
        )


def test_templates_are_loaded_with_mirrors(animals: Path, tmp_path: Path) -> None:
    templates = load_templates(animals / "templates")
    assert len(templates.images) == 6 and templates.names[1] == "cat_head.jpg (mirrored)"
    with pytest.raises(IngestError, match="template folder not found"):
        load_templates(tmp_path / "missing")


def test_the_head_box_fixture_fits_its_real_images(shared_data: Path) -> None:
    """tests/fixtures/animal_heads.csv: one row per real image, boxes inside the image, a disjoint split."""
    import csv

    from PIL import Image

    rows = list(csv.DictReader((Path(__file__).parent / "fixtures" / "animal_heads.csv").open(encoding="utf-8")))
    animals = shared_data / "animals"
    listed = {(row["folder"], row["file"]) for row in rows}
    on_disk = {(folder, path.name) for folder in ("imagenet_dev", "imagenet_samples") for path in (animals / folder).iterdir()}
    assert listed == on_disk and len(rows) == 70
    assert {row["split"] for row in rows} == {"development", "held_out"}
    assert sum(row["split"] == "held_out" for row in rows) == 40
    for row in rows:
        if row["no_head"] == "1":
            assert not row["x0"], row
            continue
        width, height = Image.open(animals / row["folder"] / row["file"]).size
        x0, y0, x1, y1 = (int(row[key]) for key in ("x0", "y0", "x1", "y1"))
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, row
