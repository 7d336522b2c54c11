"""Street scenes from the real GTA-V / Cityscapes / summer-winter frames; re-runs; parallel runs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from ingest_helpers import manifest_by_source, report, serial_options, tree_bytes

import preprocessing.pipeline as pipeline
from preprocessing.errors import IngestError
from preprocessing.folders import ingest_cyclegan, ingest_folders, ingest_street
from preprocessing.images import cover_resize, decode_image
from preprocessing.pipeline import output_names, split_for_hash


@pytest.fixture(scope="module")
def street(shared_data: Path) -> Path:
    return shared_data / "street"


def gta_city(street: Path) -> dict[str, str]:
    return {"gta": str(street / "gta2city" / "gta"), "city": str(street / "gta2city" / "cityscapes")}


def test_gta_to_cityscapes_at_the_papers_size(street: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    summary = ingest_street(gta_city(street), out, options=serial_options())
    assert summary.counts == {"city": {"train": 5}, "gta": {"train": 5}} and summary.rejected == 0
    for path in out.rglob("*.png"):
        assert cv2.imread(str(path)).shape == (480, 640, 3)
    # 933x512 GTA frame: scale 480/512 -> centred 683x512 box of the source, nothing squashed.
    source = street / "gta2city" / "gta" / "00001.jpg"
    expected, _ = cover_resize(decode_image(source.read_bytes()), width=640, height=480)
    assert np.array_equal(cv2.imread(str(out / "gta/train/00001.png"))[:, :, ::-1], expected)
    entry = manifest_by_source(out)[str(source)]
    assert entry["output"] == "gta/train/00001.png" and entry["domain"] == "gta" and entry["split"] == "train"
    assert report(out)["parameters"]["size"] == [640, 480]


def test_summer_to_winter_with_a_configured_size(street: Path, tmp_path: Path) -> None:
    domains = {"summer": str(street / "summer2winter" / "summer"), "winter": str(street / "summer2winter" / "winter")}
    ingest_street(domains, tmp_path / "ds", size=(320, 240), options=serial_options())
    outputs = sorted(path.relative_to(tmp_path / "ds").as_posix() for path in (tmp_path / "ds").rglob("*.png"))
    assert outputs == ["summer/train/summer01.png", "summer/train/summer02.png", "winter/train/winter01.png", "winter/train/winter02.png"]
    assert cv2.imread(str(tmp_path / "ds/winter/train/winter01.png")).shape == (240, 320, 3)


def test_rerun_is_byte_identical_and_skips_decoding(street: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ds"
    ingest_street(gta_city(street), out, test_fraction=0.3, options=serial_options())
    first = tree_bytes(out)

    def must_not_decode(task: object) -> None:
        raise AssertionError("unchanged input was decoded again")

    monkeypatch.setattr(pipeline, "process_image", must_not_decode)
    ingest_street(gta_city(street), out, test_fraction=0.3, options=serial_options())
    assert tree_bytes(out) == first
    monkeypatch.undo()

    # A changed parameter changes the recipe: everything is rebuilt at the new size.
    ingest_street(gta_city(street), out, size=(320, 240), test_fraction=0.3, options=serial_options())
    assert cv2.imread(str(next(out.rglob("*.png")))).shape == (240, 320, 3)
    ingest_street(gta_city(street), out, test_fraction=0.3, options=serial_options(reuse_previous=False))
    assert tree_bytes(out) == first, "a full rebuild gives the same bytes as reuse"


def test_parallel_run_equals_serial_run(street: Path, tmp_path: Path) -> None:
    ingest_street(gta_city(street), tmp_path / "serial", options=serial_options())
    ingest_street(gta_city(street), tmp_path / "parallel", options=serial_options(workers=2))
    assert tree_bytes(tmp_path / "serial") == tree_bytes(tmp_path / "parallel")


def test_test_split_is_chosen_by_content(street: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    ingest_street(gta_city(street), out, size=(64, 48), test_fraction=0.5, options=serial_options())
    entries = manifest_by_source(out).values()
    assert {entry["split"] for entry in entries} == {"train", "test"}
    for entry in entries:
        assert entry["split"] == split_for_hash(entry["sha256"], 0.5)


def test_cyclegan_layout_from_folders(street: Path, tmp_path: Path) -> None:
    root = tmp_path / "gta2city"
    for folder, source, picked in (("trainA", "gta", slice(0, 2)), ("trainB", "cityscapes", slice(0, 2)), ("testA", "gta", slice(2, 4))):
        (root / folder).mkdir(parents=True)
        for path in sorted((street / "gta2city" / source).iterdir())[picked]:
            (root / folder / path.name).symlink_to(path)
    (root / "README.txt").write_text("not part of the data")
    out = tmp_path / "ds"
    summary = ingest_cyclegan(str(root), out, domain_a="gta", domain_b="city", size=(64, 32), options=serial_options())
    assert summary.counts == {"city": {"train": 2}, "gta": {"test": 2, "train": 2}}
    assert "not an image file name" in report(out)["rejected"][0]["reason"]


def test_cyclegan_layout_needs_both_train_folders(street: Path, tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="not a CycleGAN layout: no images in trainA or trainB"):
        ingest_cyclegan(str(street / "gta2city"), tmp_path / "ds", options=serial_options())


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match=r"nowhere: no such file or folder"):
        ingest_folders({"day": str(tmp_path / "nowhere")}, tmp_path / "ds", options=serial_options())


def test_output_names() -> None:
    assert output_names(["a.jpg", "sub/b.png", "c.jpg", "c.png"]) == ["a", "sub__b", "c_jpg", "c_png"]
    names = output_names(["x__y.jpg", "x/y.jpg"])
    assert len(set(names)) == 2 and all(name.startswith("x__y_jpg-") for name in names)
    assert output_names([".hidden.jpg", "tab\tname.jpg"]) == ["hidden", "tab_name"]
