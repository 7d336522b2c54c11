"""ImageNet heads: the detector, manual boxes, drop lists and class checks, on real ImageNet photos."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from ingest_helpers import (
    iou,
    manifest_by_source,
    rejections,
    report,
    serial_options,
    tree_bytes,
    true_box,
)

import preprocessing.pipeline as pipeline
from preprocessing.animals import (
    CAT_PRESET,
    DOG_PRESET,
    PRESETS,
    REVIEW_NAME,
    ingest_animals,
    parse_classes,
    read_boxes,
    template_kinds,
    wnid_of,
)
from preprocessing.errors import IngestError
from preprocessing.head_detector import (
    DEFAULT_TEMPLATES,
    TEMPLATE_CONTEXT,
    detect_heads,
    load_template_bank,
)
from preprocessing.images import decode_image

FIXTURE = Path(__file__).parent / "fixtures" / "animal_heads.csv"
HUSKY = "n02110185_Siberian_husky.JPEG"
SHEPHERD = "n02106662_German_shepherd.JPEG"


def fixture_rows() -> dict[str, dict[str, str]]:
    with FIXTURE.open(encoding="utf-8") as labels:
        return {row["file"]: row for row in csv.DictReader(labels)}


@pytest.fixture(scope="module")
def animals(shared_data: Path) -> Path:
    return shared_data / "animals"


@pytest.fixture
def imagenet(animals: Path, tmp_path: Path) -> Path:
    """ImageNet's synset-folder layout: two husky photos and one shepherd photo (real images under other names)."""
    root = tmp_path / "train"
    layout = {
        "n02110185/n02110185_1.JPEG": animals / "imagenet_samples" / HUSKY,
        "n02110185/n02110185_2.JPEG": animals / "imagenet_samples" / "n02111889_Samoyed.JPEG",
        "n02106662/n02106662_1.JPEG": animals / "imagenet_samples" / SHEPHERD,
    }
    for relative, source in layout.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).symlink_to(source)
    return root


def write_boxes(path: Path, rows: list[str]) -> Path:
    path.write_text("file,x0,y0,x1,y1\n" + "".join(f"{row}\n" for row in rows), encoding="utf-8")
    return path


def test_presets_match_the_paper() -> None:
    assert DOG_PRESET["siberian_husky"] == ("n02110185",) and len(DOG_PRESET) == 5
    assert CAT_PRESET["house_cat"] == ("n02123045", "n02123159", "n02123394", "n02123597", "n02124075")
    assert set(CAT_PRESET) == {"house_cat", "tiger", "lion", "cougar", "leopard", "jaguar", "cheetah"}


def test_one_name_per_class_everywhere() -> None:
    assert parse_classes(["siberian_husky", "n02106662"]) == {"siberian_husky": ("n02110185",), "german_shepherd": ("n02106662",)}
    assert parse_classes(["n01440764", "big=n02129604,n02129165"]) == {"n01440764": ("n01440764",), "big": ("n02129604", "n02129165")}
    assert set(parse_classes(["dogs"])) == set(DOG_PRESET)
    with pytest.raises(IngestError, match="preset class 'siberian_husky'; use --class siberian_husky"):
        parse_classes(["husky=n02110185"])
    with pytest.raises(IngestError, match="expected a preset"):
        parse_classes(["husky"])
    with pytest.raises(IngestError, match="n02129604 is in two classes"):
        parse_classes(["cats", "big=n02129604,n02129165"])


@pytest.mark.parametrize("preset", ["dogs", "cats"])
def test_preset_domains_are_the_ingest_class_names(preset: str) -> None:
    import yaml

    config = yaml.safe_load((Path(__file__).parents[1] / "presets" / f"{preset}.yaml").read_text(encoding="utf-8"))
    classes = parse_classes(config["ingest"]["classes"])
    # the paper's breeds / species, one domain each, named as the ingest names its class folders
    assert config["data"]["domains"] == list(PRESETS[preset]) == list(classes)


def test_classes_are_matched_with_their_kind_of_templates() -> None:
    assert template_kinds(DOG_PRESET["samoyed"]) == ("dog",)
    assert template_kinds(("n02123045", "n02129604")) == ("cat", "big_cat"), "house cats and big cats share their templates"
    assert template_kinds(("n02110185", "n02129604")) is None and template_kinds(("n01440764",)) is None


def test_wnid_from_imagenet_layouts() -> None:
    assert wnid_of("n02110185/n02110185_10045.JPEG") == "n02110185"
    assert wnid_of("train/n02110185/img.jpg") == "n02110185"
    assert wnid_of("n02130308_cheetah.JPEG") == "n02130308"
    assert wnid_of("val/ILSVRC2012_val_00000001.JPEG") is None


@pytest.mark.parametrize("name", ["n02093256_Staffordshire_bullterrier.JPEG", "n02092002_Scottish_deerhound.JPEG", "n02094114_Norfolk_terrier.JPEG"])
def test_detector_finds_a_head_given_a_crop_of_it(name: str, animals: Path, tmp_path: Path) -> None:
    """Held-out photos with their own head crop as the only template: the pyramid, windows and box geometry are right."""
    row = fixture_rows()[name]
    image = decode_image((animals / row["folder"] / name).read_bytes())
    x0, y0, x1, y1 = true_box(row)
    pad_x, pad_y = round((x1 - x0) * TEMPLATE_CONTEXT), round((y1 - y0) * TEMPLATE_CONTEXT)
    padded = cv2.copyMakeBorder(image, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_REPLICATE)
    (tmp_path / "dog").mkdir()
    cv2.imwrite(str(tmp_path / "dog" / "own.png"), cv2.cvtColor(padded[y0 : y1 + 2 * pad_y, x0 : x1 + 2 * pad_x], cv2.COLOR_RGB2BGR))
    shutil.copy(DEFAULT_TEMPLATES / "background.npz", tmp_path)
    found = detect_heads(image, load_template_bank(tmp_path).matcher())[0]
    assert iou(found.box, (x0, y0, x1, y1)) >= 0.5, found
    shipped = detect_heads(image, load_template_bank(DEFAULT_TEMPLATES).matcher(["dog"]))[0]
    assert found.score > shipped.score + 1, "a crop of this very head matches far better than other breeds' heads"


def test_template_bank_checks_its_folder(tmp_path: Path) -> None:
    bank = load_template_bank(DEFAULT_TEMPLATES)
    assert {"dog", "cat", "big_cat"} == bank.kinds() and len(bank.templates) == 29
    with pytest.raises(IngestError, match="template folder not found"):
        load_template_bank(tmp_path / "missing")
    (tmp_path / "dog").mkdir()
    shutil.copy(DEFAULT_TEMPLATES / "dog" / "n02085620_Chihuahua.png", tmp_path / "dog")
    with pytest.raises(IngestError, match="no background.npz"):
        load_template_bank(tmp_path)
    shutil.copy(DEFAULT_TEMPLATES / "background.npz", tmp_path)
    shutil.copy(DEFAULT_TEMPLATES / "dog" / "n02085620_Chihuahua.png", tmp_path / "loose.png")
    with pytest.raises(IngestError, match="loose.png: a template belongs in a kind folder"):
        load_template_bank(tmp_path)


def test_manual_boxes_replace_detection(imagenet: Path, animals: Path, tmp_path: Path) -> None:
    rows = fixture_rows()
    husky, shepherd = true_box(rows[HUSKY]), true_box(rows[SHEPHERD])
    boxes = write_boxes(tmp_path / "boxes.csv", [f"n02110185_1.JPEG,{','.join(map(str, husky))}",
                                                 f"n02106662/n02106662_1.JPEG,{','.join(map(str, shepherd))}"])
    out = tmp_path / "ds"
    # An impossible threshold: only the manual boxes can give crops.
    summary = ingest_animals(str(imagenet), DEFAULT_TEMPLATES, out, classes=parse_classes(["siberian_husky", "german_shepherd"]),
                             threshold=99, boxes=boxes, options=serial_options())
    assert summary.counts == {"german_shepherd": {"train": 1}, "siberian_husky": {"train": 1}}
    entries = {Path(source).name: entry for source, entry in manifest_by_source(out).items()}
    husky_entry = entries["n02110185_1.JPEG"]["transform"]
    assert husky_entry["head_box"] == list(husky) and husky_entry["score"] is None
    # The crop is the box actually cut: the output equals that region of the source, resized.
    source = decode_image((animals / "imagenet_samples" / HUSKY).read_bytes())
    left, top, right, bottom = husky_entry["crop_box"]
    assert right - left == bottom - top == round(max(husky[2] - husky[0], husky[3] - husky[1]) * 1.5)
    written = cv2.cvtColor(cv2.imread(str(out / entries["n02110185_1.JPEG"]["output"])), cv2.COLOR_BGR2RGB).astype(int)

    def difference(dx: int) -> float:
        region = source[top : bottom, left + dx : right + dx]
        return float(np.abs(written - cv2.resize(region, (128, 128), interpolation=cv2.INTER_LINEAR)).mean())

    assert difference(0) < 3 and difference(4) > 2 * difference(0)
    assert rejections(out)[str(imagenet / "n02110185" / "n02110185_2.JPEG")].startswith("no head found: best candidate [")
    assert "accepted 2; rejected: no head found 1" in summary.describe()


def test_detected_crops_record_head_and_crop_boxes(animals: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    ingest_animals(str(animals / "imagenet_samples"), DEFAULT_TEMPLATES, out, classes=parse_classes(["dogs"]), threshold=-99,
                   options=serial_options())
    entries = manifest_by_source(out)
    assert len(entries) == 5
    for source, entry in entries.items():
        height, width = decode_image(Path(source).read_bytes()).shape[:2]
        x0, y0, x1, y1 = entry["transform"]["head_box"]
        left, top, right, bottom = entry["transform"]["crop_box"]
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, entry
        assert 0 <= left <= x0 and 0 <= top <= y0 and x1 <= right <= width and y1 <= bottom <= height, entry
        assert right - left == bottom - top and isinstance(entry["transform"]["score"], float)
    sheet = cv2.imread(str(out / REVIEW_NAME))
    assert sheet is not None and sheet.shape[1] == 8 * 128


def test_drop_list_and_too_few_images(imagenet: Path, tmp_path: Path) -> None:
    drop = tmp_path / "drop.txt"
    drop.write_text("# seen, not a husky head\nn02110185_2.JPEG\n\nnot_in_the_input.JPEG\n", encoding="utf-8")
    boxes = write_boxes(tmp_path / "boxes.csv", ["n02110185_1.JPEG,212,170,290,253", "n02106662_1.JPEG,211,54,279,106"])
    out = tmp_path / "ds"
    classes = parse_classes(["siberian_husky", "german_shepherd"])
    summary = ingest_animals(str(imagenet), DEFAULT_TEMPLATES, out, classes=classes, threshold=99, boxes=boxes, drop=drop,
                             options=serial_options())
    assert summary.counts == {"german_shepherd": {"train": 1}, "siberian_husky": {"train": 1}}
    assert rejections(out)[str(imagenet / "n02110185" / "n02110185_2.JPEG")] == f"dropped: listed in {drop}"
    assert report(out)["notes"]["drop_not_found"] == ["not_in_the_input.JPEG"]
    before = tree_bytes(out)
    with pytest.raises(IngestError, match=r"'german_shepherd' has 1, 'siberian_husky' has 1; nothing was written"):
        ingest_animals(str(imagenet), DEFAULT_TEMPLATES, out, classes=classes, threshold=99, boxes=boxes, drop=drop,
                       min_images=2, options=serial_options())
    assert tree_bytes(out) == before, "the previous data set is left as it was"
    assert (tmp_path / "ds.review.png").is_file()
    with pytest.raises(IngestError, match=r"'samoyed' has 0 \(no input files\)"):
        ingest_animals(str(imagenet), DEFAULT_TEMPLATES, tmp_path / "ds2", classes=parse_classes(["siberian_husky", "samoyed"]),
                       threshold=99, boxes=boxes, options=serial_options())


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("file,x0,y0,x1,y1\na.JPEG,1,2,30,40\nb.JPEG,1,2,x,40\n", r"boxes.csv line 3: x0,y0,x1,y1 must be whole numbers"),
        ("file,x0,y0,x1\na.JPEG,1,2,30\n", r"boxes.csv: line 1: expected a header .* missing y1"),
        ("file,x0,y0,x1,y1\na.JPEG,30,2,30,40\n", r"boxes.csv line 2: box 30,2,30,40 is empty or negative"),
        ("file,x0,y0,x1,y1\na.JPEG,1,2,30,40\na.JPEG,1,2,30,41\n", r"boxes.csv line 3: a.JPEG already has a box \(.*boxes.csv line 2\)"),
        ("file,x0,y0,x1,y1\n,1,2,30,40\n", r"boxes.csv line 2: no file name"),
    ],
)
def test_bad_box_rows_name_file_and_line(text: str, error: str, tmp_path: Path) -> None:
    (tmp_path / "boxes.csv").write_text(text, encoding="utf-8")
    with pytest.raises(IngestError, match=error):
        read_boxes(tmp_path / "boxes.csv")


def test_the_fixture_is_a_boxes_file() -> None:
    boxes = read_boxes(FIXTURE)
    assert len(boxes) == 69 and "n02129165_lion.JPEG" not in boxes  # the lion row has no head
    assert boxes[HUSKY].box == (212, 170, 290, 253) and boxes[HUSKY].where.endswith("animal_heads.csv line 64")


def test_manual_box_outside_the_image_is_rejected(imagenet: Path, tmp_path: Path) -> None:
    boxes = write_boxes(tmp_path / "boxes.csv", ["n02110185_2.JPEG,400,300,900,700", "n02110185_1.JPEG,212,170,290,253"])
    out = tmp_path / "ds"
    ingest_animals(str(imagenet), DEFAULT_TEMPLATES, out, classes=parse_classes(["siberian_husky"]), threshold=99, boxes=boxes,
                   options=serial_options())
    reason = rejections(out)[str(imagenet / "n02110185" / "n02110185_2.JPEG")]
    assert reason == f"manual box [400, 300, 900, 700] ({tmp_path / 'boxes.csv'} line 2) lies outside the 500x375 image"


def test_rerun_reuses_crops_and_their_boxes(imagenet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ds"
    boxes = write_boxes(tmp_path / "boxes.csv", ["n02110185_1.JPEG,212,170,290,253", "n02106662_1.JPEG,211,54,279,106"])

    def ingest() -> None:
        ingest_animals(str(imagenet), DEFAULT_TEMPLATES, out, classes=parse_classes(["siberian_husky", "german_shepherd"]),
                       threshold=99, boxes=boxes, options=serial_options())

    ingest()
    first = tree_bytes(out)
    decoded = []
    real_process_image = pipeline.process_image
    monkeypatch.setattr(pipeline, "process_image", lambda task: decoded.append(task) or real_process_image(task))
    ingest()
    assert tree_bytes(out) == first, "manifest keeps each reused crop's boxes and score"
    assert len(decoded) == len(rejections(out)) == 1, "only the rejected photo is matched again"
    write_boxes(boxes, ["n02110185_1.JPEG,200,160,300,260", "n02106662_1.JPEG,211,54,279,106"])
    ingest()
    assert len(decoded) == 3, "a changed manual box rebuilds its crop"


def test_the_head_box_fixture_fits_its_real_images(shared_data: Path) -> None:
    """tests/fixtures/animal_heads.csv: one row per real image, boxes inside the image, a disjoint split."""
    from PIL import Image

    rows = list(fixture_rows().values())
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
        x0, y0, x1, y1 = true_box(row)
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, row


def test_templates_come_from_development_rows_only() -> None:
    rows = fixture_rows()
    for path in DEFAULT_TEMPLATES.glob("*/*"):
        row = next(row for name, row in rows.items() if Path(name).stem == path.stem)
        assert row["split"] == "development" and row["kind"] == path.parent.name, path
