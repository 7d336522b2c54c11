"""``unit ingest <kind>``: every kind end to end through the real command line entry point."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from ingest_helpers import report

from unit_cli.main import build_parser, main

FAST = ["--workers", "1", "--no-progress"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["ingest", *argv, *FAST])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("kind", ["folders", "street", "cyclegan", "celeba", "animals", "digits", "pairs"])
def test_ingest_kinds_are_registered(capsys: pytest.CaptureFixture[str], kind: str) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["ingest", kind, "--help"])
    assert caught.value.code == 0
    assert f"usage: unit ingest {kind}" in capsys.readouterr().out


def test_street_and_folders(capsys: pytest.CaptureFixture[str], shared_data: Path, tmp_path: Path) -> None:
    street = shared_data / "street" / "summer2winter"
    status, out, _ = run(capsys, "street", "--domain", f"summer={street / 'summer'}", "--domain", f"winter={street / 'winter'}",
                         "--size", "160x120", "--out", str(tmp_path / "street"))
    assert status == 0 and out.strip() == f"{tmp_path / 'street'}: summer: 2 train; winter: 2 train; 0 rejected (see report.json)"
    assert report(tmp_path / "street")["parameters"]["size"] == [160, 120]
    status, _, _ = run(capsys, "folders", "--domain", f"summer={street / 'summer'}", "--format", "jpg", "--out", str(tmp_path / "plain"))
    assert status == 0 and (tmp_path / "plain" / "summer" / "train" / "summer01.jpg").is_file()


def test_cyclegan(capsys: pytest.CaptureFixture[str], shared_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "layout"
    for folder, source in (("trainA", "summer"), ("trainB", "winter")):
        (root / folder).mkdir(parents=True)
        for path in (shared_data / "street" / "summer2winter" / source).iterdir():
            (root / folder / path.name).symlink_to(path)
    status, out, _ = run(capsys, "cyclegan", str(root), "--domain-a", "summer", "--domain-b", "winter", "--size", "64",
                         "--out", str(tmp_path / "ds"))
    assert status == 0 and "summer: 2 train; winter: 2 train" in out


def test_celeba(capsys: pytest.CaptureFixture[str], shared_data: Path, tmp_path: Path) -> None:
    celeba = shared_data / "celeba"
    status, out, _ = run(capsys, "celeba", str(celeba / "img_align_celeba"), "--attributes", str(celeba / "list_attr_celeba.txt"),
                         "--attribute", "Blond_Hair", "--size", "64", "--out", str(tmp_path / "ds"))
    assert status == 0 and "blond_hair: 6 train; not_blond_hair: 26 train" in out


def test_animals(capsys: pytest.CaptureFixture[str], shared_data: Path, tmp_path: Path) -> None:
    samples = str(shared_data / "animals" / "imagenet_samples")
    boxes = str(Path(__file__).parent / "fixtures" / "animal_heads.csv")
    drop = tmp_path / "drop.txt"
    drop.write_text("n02111889_Samoyed.JPEG\n", encoding="utf-8")
    status, _, err = run(capsys, "animals", samples, "--class", "siberian_husky", "--class", "samoyed", "--class", "pembroke_corgi",
                         "--drop", str(drop), "--threshold", "99", "--boxes", boxes, "--size", "64", "--out", str(tmp_path / "ds"))
    # The Samoyed was dropped, so its class is short: an error naming it, with the rejections counted.
    assert status == 2 and "'samoyed' has 0; nothing was written. Rejections: dropped 1;" in err
    status, out, _ = run(capsys, "animals", samples, "--class", "siberian_husky", "--class", "pembroke_corgi", "--boxes", boxes,
                         "--size", "64", "--out", str(tmp_path / "ds"))
    assert status == 0 and "pembroke_corgi: 1 train; siberian_husky: 1 train" in out
    assert f"accepted 2; rejected: none; contact sheet {tmp_path / 'ds' / 'review.png'}" in out
    assert "67 name(s) in --boxes match no input file" in out


def test_digits(capsys: pytest.CaptureFixture[str], shared_data: Path, tmp_path: Path) -> None:
    digits = shared_data / "digits"
    status, out, _ = run(capsys, "digits", "--mnist", str(digits / "mnist"), "--usps", str(digits / "usps" / "usps.h5"),
                         "--size", "32", "--limit", "5", "--out", str(tmp_path / "ds"))
    assert status == 0 and "mnist: 5 test, 5 train; usps: 5 test, 5 train" in out
    assert "usps: padded " in out and "squared distance of the mean digits" in out
    status, out, _ = run(capsys, "digits", "--usps", str(digits / "usps" / "usps.h5"), "--usps-pad", "2",
                         "--limit", "5", "--out", str(tmp_path / "usps-only"))
    assert status == 0 and (tmp_path / "usps-only" / "usps" / "train" / "00000.png").is_file()


def test_pairs(capsys: pytest.CaptureFixture[str], shared_data: Path, tmp_path: Path) -> None:
    pairs = shared_data / "pairs" / "edges2handbags"
    status, out, _ = run(capsys, "pairs", "--a", str(pairs / "edges"), "--b", str(pairs / "photos"), "--domain-a", "edges",
                         "--domain-b", "photos", "--out", str(tmp_path / "ds"))
    assert status == 0 and "edges: 9 test_paired; photos: 9 test_paired" in out


def test_user_errors_exit_2_without_traceback(capsys: pytest.CaptureFixture[str], shared_data: Path, tmp_path: Path) -> None:
    celeba = shared_data / "celeba"
    status, _, err = run(capsys, "celeba", str(celeba / "img_align_celeba"), "--attributes", str(celeba / "list_attr_celeba.txt"),
                         "--attribute", "Smile", "--out", str(tmp_path / "ds"))
    assert status == 2 and err.startswith("unit ingest: error: ") and "unknown attribute 'Smile'" in err and "Traceback" not in err
    hostile = tmp_path / "hostile.zip"
    with zipfile.ZipFile(hostile, "w") as archive:
        archive.writestr("../../evil.jpg", b"x")
    status, _, err = run(capsys, "folders", "--domain", f"day={hostile}", "--out", str(tmp_path / "ds"))
    assert status == 2 and "refusing the archive" in err
    status, _, err = run(capsys, "folders", "--domain", f"day={tmp_path / 'missing'}", "--out", str(tmp_path / "ds"))
    assert status == 2 and "no such file or folder" in err
    status, _, err = run(capsys, "folders", "--domain", f"../up={tmp_path}", "--out", str(tmp_path / "ds"))
    assert status == 2 and "invalid domain name '../up'" in err


def test_bad_arguments_are_argparse_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = (
        ["street", "--domain", "nolocation"],
        ["street", "--domain", "a=b", "--size", "big"],
        ["digits", "--limit", "0"],
        ["digits", "--usps-pad", "-1"],
        ["digits", "--usps-pad", "wide"],
        ["folders", "--domain", "a=b", "--test-fraction", "1.5"],
    )
    for argv in bad:
        with pytest.raises(SystemExit) as caught:
            main(["ingest", *argv, "--out", str(tmp_path)])
        assert caught.value.code == 2
    assert "expected NAME=LOCATION" in capsys.readouterr().err
