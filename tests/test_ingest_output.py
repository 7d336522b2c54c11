"""DatasetWriter: layout, manifest, report, atomic replacement, reuse by hash."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from ingest_helpers import photo, report, tree_bytes

from preprocessing.errors import IngestError
from preprocessing.output import DatasetWriter, read_manifest, recipe_hash


def write_small_dataset(out: Path, *, seed: int = 0, recipe: str | None = "r1") -> None:
    with DatasetWriter(out, kind="unit-test", parameters={"seed": seed}) as writer:
        writer.add_image(photo(8, 6, seed), domain="day", split="train", name="b", source="src/b.jpg", source_sha256="bb", recipe=recipe)
        writer.add_image(photo(8, 6, seed + 1), domain="day", split="train", name="a", source="src/a.jpg", source_sha256="aa", recipe=recipe)
        gray = photo(8, 6, seed + 2)[:, :, 0]
        writer.add_image(gray, domain="night", split="test_paired", name="a", source="src/n.png", label=3, extra_field="x")
        writer.reject("src/bad.jpg", "corrupt")


def test_layout_manifest_and_report(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    write_small_dataset(out)
    assert sorted(path.relative_to(out).as_posix() for path in out.rglob("*.png")) == [
        "day/train/a.png", "day/train/b.png", "night/test_paired/a.png"
    ]
    rgb = cv2.imread(str(out / "day/train/a.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(rgb[:, :, ::-1], photo(8, 6, 1)), "stored as RGB, read back exactly (PNG is lossless)"
    assert cv2.imread(str(out / "night/test_paired/a.png"), cv2.IMREAD_UNCHANGED).ndim == 2, "gray stays one channel"

    entries = read_manifest(out / "manifest.jsonl")
    assert [entry["output"] for entry in entries] == ["day/train/a.png", "day/train/b.png", "night/test_paired/a.png"]
    assert list(entries[0])[:6] == ["source", "sha256", "output", "domain", "split", "label"]
    assert entries[0]["sha256"] == "aa" and entries[0]["recipe"] == "r1"
    assert entries[2]["label"] == 3 and entries[2]["extra_field"] == "x" and len(entries[2]["sha256"]) == 64

    summary = report(out)
    assert summary["counts"] == {"day": {"train": 2}, "night": {"test_paired": 1}}
    assert summary["images"] == 3
    assert summary["rejected"] == [{"source": "src/bad.jpg", "reason": "corrupt"}]
    assert summary["parameters"] == {"seed": 0} and summary["kind"] == "unit-test"
    assert set(summary["libraries"]) == {"opencv", "pillow", "numpy"}
    assert not list(tmp_path.glob("ds.tmp-*")) and not list(tmp_path.glob("ds.old-*"))


def test_rerun_is_byte_identical(tmp_path: Path) -> None:
    write_small_dataset(tmp_path / "first")
    write_small_dataset(tmp_path / "second")
    assert tree_bytes(tmp_path / "first") == tree_bytes(tmp_path / "second")


def test_failed_run_keeps_previous_output(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    write_small_dataset(out)
    before = tree_bytes(out)
    with pytest.raises(RuntimeError, match="boom"):
        with DatasetWriter(out) as writer:
            writer.add_image(photo(4, 4), domain="day", split="train", name="new", source="new")
            raise RuntimeError("boom")
    assert tree_bytes(out) == before
    assert not list(tmp_path.glob("ds.tmp-*")), "temporary folder removed"


def test_empty_run_is_an_error_and_keeps_previous_output(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    write_small_dataset(out)
    before = tree_bytes(out)
    with pytest.raises(IngestError, match="no image was written.*x.jpg: unreadable"):
        with DatasetWriter(out) as writer:
            writer.reject("x.jpg", "unreadable")
    assert tree_bytes(out) == before


def test_refuses_to_replace_a_folder_it_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    with pytest.raises(IngestError, match="refusing to replace"):
        with DatasetWriter(out) as writer:
            writer.add_image(photo(4, 4), domain="day", split="train", name="x", source="x")
    assert (out / "thesis.tex").read_text() == "do not delete"


def test_invalid_names_and_duplicates(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="duplicate output path day/train/x.png"):
        with DatasetWriter(tmp_path / "ds") as writer:
            writer.add_image(photo(4, 4), domain="day", split="train", name="x", source="one")
            writer.add_image(photo(4, 4, 1), domain="day", split="train", name="x", source="two")
    with DatasetWriter(tmp_path / "ds2") as writer:
        for bad in ({"domain": "../up"}, {"domain": ".hidden"}, {"name": "a/b"}, {"split": "val"}, {"name": ""}):
            with pytest.raises(ValueError):
                writer.add_image(photo(4, 4), **{"domain": "d", "split": "train", "name": "n", "source": "s", **bad})
        with pytest.raises(ValueError, match="uint8"):
            writer.add_image(photo(4, 4).astype(np.float32), domain="d", split="train", name="n", source="s")
        writer.add_image(photo(4, 4), domain="d", split="train", name="ok", source="s")
    assert not (tmp_path / "up").exists()


def test_reuse_copies_previous_output_by_hash_and_recipe(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    write_small_dataset(out)
    previous = (out / "day/train/a.png").read_bytes()
    with DatasetWriter(out) as writer:
        assert writer.reuse("aa", "other-recipe", domain="day", split="train", name="a", source="src/a.jpg") is None
        assert writer.reuse("zz", "r1", domain="day", split="train", name="a", source="src/a.jpg") is None
        path = writer.reuse("aa", "r1", domain="day", split="train", name="renamed", source="moved/a.jpg")
    assert path == Path("day/train/renamed.png")
    assert (out / "day/train/renamed.png").read_bytes() == previous
    assert [entry["source"] for entry in read_manifest(out / "manifest.jsonl")] == ["moved/a.jpg"]


def test_reuse_ignores_a_damaged_previous_file(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    write_small_dataset(out)
    (out / "day/train/a.png").write_bytes(b"damaged")
    with DatasetWriter(out) as writer:
        assert writer.previous_output("aa", "r1") is None
        assert writer.previous_output("bb", "r1") is not None
        writer.add_image(photo(4, 4), domain="d", split="train", name="n", source="s")


def test_previous_false_disables_reuse(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    write_small_dataset(out)
    with DatasetWriter(out, previous=False) as writer:
        assert writer.previous_output("aa", "r1") is None
        writer.add_image(photo(4, 4), domain="d", split="train", name="n", source="s")


def test_metadata_files_and_notes(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    with DatasetWriter(out, image_format="jpg") as writer:
        writer.add_image(photo(16, 16), domain="d", split="train", name="n", source="s")
        writer.add_metadata_file("d/labels-train.csv", b"file,label\nn.jpg,1\n")
        writer.note("rows", {"declared": 10, "present": 1})
        with pytest.raises(ValueError, match="clash"):
            writer.add_metadata_file("d/train/labels.csv", b"")
    assert (out / "d/train/n.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert (out / "d/labels-train.csv").read_text() == "file,label\nn.jpg,1\n"
    summary = report(out)
    assert summary["metadata_files"] == ["d/labels-train.csv"] and summary["notes"] == {"rows": {"declared": 10, "present": 1}}


def test_recipe_hash_is_stable_and_sensitive() -> None:
    assert recipe_hash({"size": [640, 480], "a": 1}) == recipe_hash({"a": 1, "size": [640, 480]})
    assert recipe_hash({"size": [640, 480]}) != recipe_hash({"size": [640, 481]})
    assert all(char in "0123456789abcdef" for char in recipe_hash({}))
