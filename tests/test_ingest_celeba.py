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


@pytest.mark.parametrize("attribute", PAPER_ATTRIBUTES)
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


def test_attribute_by_any_case_and_unknown_names(celeba: Path, tmp_path: Path) -> None:
    ingest_celeba(str(celeba / "img_align_celeba"), celeba / "list_attr_celeba.txt", tmp_path / "ds", attribute="wearing_hat",
                  domain_a="hat", domain_b="no_hat", size=64, options=serial_options())
    assert (tmp_path / "ds" / "no_hat" / "train").is_dir()
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
    assert reasons[f"{archive}!/img_align_celeba/999999.jpg"] == "no row for 999999.jpg in list_attr_celeba.txt"
    assert reasons[f"{celeba / 'list_attr_celeba.txt'}:33"] == f"row for 000031.jpg, but no such image in {archive}"
    assert reasons[f"{celeba / 'list_attr_celeba.txt'}:34"].startswith("row for 000032.jpg, but no such image")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["3", "A B ", "1.jpg  1 -1"], None),
        (["3", "A B ", "1.jpg  1"], "line 3: expected a file name and 2 values, got 1$"),
        (["3", "A B ", "1.jpg  1  0"], "line 3: values must be 1 or -1, got 0"),
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
