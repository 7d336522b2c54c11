"""CelebA attribute splits on the real images and the real attribute file (CRLF, padded columns)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import pytest
from ingest_helpers import rejections, report, serial_options

from preprocessing.celeba import PAPER_ATTRIBUTES, ingest_celeba, parse_attributes, parse_partition
from preprocessing.errors import IngestError

# Read off the real file with awk, independently of the parser under test.
BLOND = {"000013", "000018", "000019", "000022", "000024", "000029"}
COUNTS = {"Blond_Hair": (6, 26), "Smiling": (16, 16), "Goatee": (1, 31), "Eyeglasses": (0, 32)}


@pytest.fixture(scope="module")
def celeba(shared_data: Path) -> Path:
    return shared_data / "celeba"


def names_in(folder: Path) -> set[str]:
    return {path.stem for path in folder.iterdir()} if folder.is_dir() else set()


def test_real_attribute_file_is_parsed_exactly(celeba: Path) -> None:
    raw = (celeba / "list_attr_celeba.txt").read_bytes()
    assert b"\r\n" in raw and raw.split(b"\r\n")[1].endswith(b" "), "the real quirks are present"
    table = parse_attributes(celeba / "list_attr_celeba.txt")
    assert table.declared_count == 202599 and len(table.values) == 32
    assert len(table.names) == 40 and table.names[0] == "5_o_Clock_Shadow" and table.names[-1] == "Young"
    assert set(PAPER_ATTRIBUTES) <= set(table.names)
    assert table.values["000001.jpg"][table.names.index("Smiling")] == 1
    assert table.lines["000001.jpg"] == 3


@pytest.mark.parametrize("attribute", [name for name in PAPER_ATTRIBUTES if COUNTS[name][0]])
def test_paper_attributes_split_the_faces(celeba: Path, tmp_path: Path, attribute: str) -> None:
    out = tmp_path / "ds"
    summary = ingest_celeba(
        str(celeba / "img_align_celeba"), celeba / "list_attr_celeba.txt", out, attribute=attribute, options=serial_options()
    )
    with_count, without_count = COUNTS[attribute]
    domain = attribute.lower()
    assert len(names_in(out / domain / "train")) == with_count
    assert len(names_in(out / f"not_{domain}" / "train")) == without_count
    assert summary.rejected == 0
    assert report(out)["notes"]["attribute_rows"] == {"declared": 202599, "present": 32}
    if attribute == "Blond_Hair":
        assert names_in(out / "blond_hair" / "train") == BLOND
        assert cv2.imread(str(out / "blond_hair/train/000013.png")).shape == (128, 128, 3)


def test_an_empty_or_tiny_domain_is_an_error_naming_it(celeba: Path, tmp_path: Path) -> None:
    """Eyeglasses: none of the 32 faces present wears them; Goatee: one does."""
    with pytest.raises(IngestError, match=r"domain 'eyeglasses' \(Eyeglasses = 1\) gets 0 training image\(s\)"):
        ingest_celeba(str(celeba / "img_align_celeba"), celeba / "list_attr_celeba.txt", tmp_path / "glasses",
                      attribute="Eyeglasses", options=serial_options())
    with pytest.raises(IngestError, match=r"domain 'goatee' \(Goatee = 1\) gets 1 training image\(s\) .* at least 5"):
        ingest_celeba(str(celeba / "img_align_celeba"), celeba / "list_attr_celeba.txt", tmp_path / "goatee",
                      attribute="Goatee", min_images=5, options=serial_options())
    assert not (tmp_path / "glasses").exists() and not (tmp_path / "goatee").exists()
    assert not list(tmp_path.iterdir()), "nothing written, no scratch left"


def test_a_partial_image_set_counts_rows_without_images_and_skips_malformed_rows_of_absent_images(
        celeba: Path, tmp_path: Path) -> None:
    """The real header (declaring 202,599 rows) with 20,000 rows, the last one truncated; 32 images present."""
    lines = (celeba / "list_attr_celeba.txt").read_bytes().decode().splitlines()
    rows = lines[2:] + [f"{index:06d}.jpg " + " ".join(["-1"] * 40) for index in range(33, 20001)]
    rows[-1] = rows[-1][:40]  # a crash while the file was written
    attributes = tmp_path / "list_attr_celeba.txt"
    attributes.write_bytes(("\r\n".join(lines[:2] + rows) + "\r\n").encode())
    out = tmp_path / "ds"
    summary = ingest_celeba(str(celeba / "img_align_celeba"), attributes, out, attribute="Smiling", options=serial_options())
    assert summary.rejected == 0 and sum(sum(splits.values()) for splits in summary.counts.values()) == 32
    notes = report(out)["notes"]
    assert notes["rows_without_image"]["count"] == 20000 - 32 - 1 and notes["rows_without_image"]["first"][0] == "000033.jpg"
    assert notes["malformed_rows_skipped"]["count"] == 1 and notes["malformed_rows_skipped"]["first"][0].startswith("line 20002:")
    assert len((out / "report.json").read_bytes()) < 20_000, "no listing of 19,967 absent images"
    assert "19967 row(s) of list_attr_celeba.txt have no image" in summary.describe()
    present = tmp_path / "present-row-broken.txt"
    broken = lines[:2] + lines[2:]
    broken[5] = broken[5][:30]  # the row of an image that is present
    present.write_bytes(("\r\n".join(broken) + "\r\n").encode())
    with pytest.raises(IngestError, match=rf"{present}: line 6: expected a file name and 40 values, got \d+ \(the row of .*000004.jpg"):
        ingest_celeba(str(celeba / "img_align_celeba"), present, tmp_path / "ds2", attribute="Smiling", options=serial_options())


def test_attribute_by_any_case_and_unknown_names(celeba: Path, tmp_path: Path) -> None:
    ingest_celeba(str(celeba / "img_align_celeba"), celeba / "list_attr_celeba.txt", tmp_path / "ds", attribute="blond_HAIR",
                  domain_a="blond", domain_b="not_blond", size=64, options=serial_options())
    assert (tmp_path / "ds" / "not_blond" / "train").is_dir()
    with pytest.raises(IngestError, match=r"unknown attribute 'Smile'; valid attributes: 5_o_Clock_Shadow, .*Blond_Hair, Blurry, .*Young$"):
        ingest_celeba(str(celeba / "img_align_celeba"), celeba / "list_attr_celeba.txt", tmp_path / "ds2", attribute="Smile")
    assert not (tmp_path / "ds2").exists()


def test_partition_file_decides_the_splits(celeba: Path, tmp_path: Path) -> None:
    partition = tmp_path / "list_eval_partition.txt"
    rows = [f"{index:06d}.jpg {0 if index <= 20 else 1 if index <= 26 else 2}" for index in range(1, 33)]
    partition.write_bytes(("\r\n".join(rows) + "\r\n").encode())
    assert parse_partition(partition)["000021.jpg"] == 1
    for validation, expected in (("test", {"train": 20, "test": 12}), ("train", {"train": 26, "test": 6})):
        out = tmp_path / f"ds-{validation}"
        summary = ingest_celeba(str(celeba / "img_align_celeba"), celeba / "list_attr_celeba.txt", out, attribute="Smiling",
                                partition_file=partition, validation_split=validation, options=serial_options())
        totals: dict[str, int] = {}
        for splits in summary.counts.values():
            for split, count in splits.items():
                totals[split] = totals.get(split, 0) + count
        assert totals == expected


def test_missing_images_and_missing_rows_are_reported(celeba: Path, tmp_path: Path) -> None:
    archive = tmp_path / "img_align_celeba.zip"
    images = sorted((celeba / "img_align_celeba").iterdir())
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in images[:30]:
            zipped.write(path, f"img_align_celeba/{path.name}")
        zipped.write(images[0], "img_align_celeba/999999.jpg")
    out = tmp_path / "ds"
    summary = ingest_celeba(str(archive), celeba / "list_attr_celeba.txt", out, attribute="Smiling", options=serial_options())
    assert sum(count for splits in summary.counts.values() for count in splits.values()) == 30
    reasons = rejections(out)
    assert reasons == {f"{archive}!/img_align_celeba/999999.jpg": "no row for 999999.jpg in list_attr_celeba.txt"}
    assert report(out)["notes"]["rows_without_image"] == {"count": 2, "first": ["000031.jpg", "000032.jpg"]}


def test_malformed_rows_are_kept_aside(tmp_path: Path) -> None:
    path = tmp_path / "list_attr_celeba.txt"
    path.write_bytes("\r\n".join(["3", "A B ", "1.jpg  1", "2.jpg  1  0", "3.jpg  1 -1"]).encode() + b"\r\n")
    table = parse_attributes(path)
    assert table.values == {"3.jpg": (1, -1)}
    assert table.malformed == {"1.jpg": (3, "expected a file name and 2 values, got 1"),
                               "2.jpg": (4, "values must be 1 or -1, got 0")}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["3", "A B ", "1.jpg  1 -1"], None),
        (["3", "A B ", "1.jpg  1  1", "1.jpg  1  1"], "line 4: 1.jpg already listed on line 3"),
        (["many", "A B "], "line 1: expected the image count"),
        (["3"], "expected a count line and a header line"),
    ],
)
def test_malformed_attribute_files(tmp_path: Path, lines: list[str], message: str | None) -> None:
    path = tmp_path / "list_attr_celeba.txt"
    path.write_bytes("\r\n".join(lines).encode() + b"\r\n")
    if message is None:
        assert parse_attributes(path).values == {"1.jpg": (1, -1)}
    else:
        with pytest.raises(IngestError, match=f"{path}: {message}"):
            parse_attributes(path)
