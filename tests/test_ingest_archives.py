"""zip and tar archives: normal ones are ingested, hostile ones are refused with a clear error."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from ingest_helpers import encode, manifest_by_source, photo, serial_options, tree_bytes

from preprocessing.archives import ArchiveLimits, safe_extract
from preprocessing.errors import IngestError
from preprocessing.folders import ingest_cyclegan, ingest_folders

JPEG = encode(photo(80, 60), "JPEG")


def make_zip(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return path


def make_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                archive.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return path


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def test_zip_and_tar_gz_are_ingested(tmp_path: Path) -> None:
    members = {"street/a.jpg": JPEG, "street/sub/b.jpg": encode(photo(80, 60, 1), "JPEG"), "street/notes.txt": b"x"}
    zipped = make_zip(tmp_path / "day.zip", members)
    tarred = make_tar(tmp_path / "night.tar.gz", [(name, data) for name, data in members.items()])
    out = tmp_path / "ds"
    ingest_folders({"day": str(zipped), "night": str(tarred)}, out, size=(40, 30), options=serial_options())
    sources = sorted(manifest_by_source(out))
    assert sources == [f"{zipped}!/street/a.jpg", f"{zipped}!/street/sub/b.jpg", f"{tarred}!/street/a.jpg", f"{tarred}!/street/sub/b.jpg"]
    assert (out / "day/train/street__sub__b.png").is_file()
    assert not list(tmp_path.glob("*.extract-*")), "scratch extraction removed"


def test_cyclegan_layout_inside_an_archive(tmp_path: Path) -> None:
    members = {f"horse2zebra/{folder}/{index}.jpg": encode(photo(80, 60, index + 10 * n), "JPEG")
               for n, folder in enumerate(("trainA", "trainB", "testA", "testB")) for index in range(2)}
    out = tmp_path / "ds"
    ingest_cyclegan(str(make_zip(tmp_path / "h2z.zip", members)), out, domain_a="horse", domain_b="zebra", options=serial_options())
    for domain in ("horse", "zebra"):
        for split in ("train", "test"):
            assert sorted(path.name for path in (out / domain / split).iterdir()) == ["0.png", "1.png"]


@pytest.mark.parametrize(
    ("builder", "message"),
    [
        (lambda d: make_zip(d / "a.zip", {"ok.jpg": JPEG, "../../escape.jpg": JPEG}), "leaves the extraction folder"),
        (lambda d: make_zip(d / "a.zip", {"/etc/cron.d/evil": JPEG}), "absolute path"),
        (lambda d: make_zip(d / "a.zip", {"..\\..\\evil.jpg": JPEG}), "leaves the extraction folder"),
        (lambda d: make_zip(d / "a.zip", {"ok.jpg": JPEG}, links={"passwd.jpg": "/etc/passwd"}), "outside the extraction folder"),
        (lambda d: make_zip(d / "a.zip", {"ok.jpg": JPEG}, links={"up.jpg": "../../../secret"}), "outside the extraction folder"),
        (lambda d: make_tar(d / "a.tgz", [("ok.jpg", JPEG), ("../escape.jpg", JPEG)]), "leaves the extraction folder"),
        (lambda d: make_tar(d / "a.tgz", [link("etc", "/etc"), ("etc/evil.jpg", JPEG)]), "outside the extraction folder"),
        (lambda d: make_tar(d / "a.tgz", [link("dir/up", "../../outside")]), "outside the extraction folder"),
        (lambda d: make_tar(d / "a.tgz", [link("hard.jpg", "../../etc/shadow", tarfile.LNKTYPE)]), "outside the extraction folder"),
        (lambda d: make_tar(d / "a.tgz", [link("dev.jpg", "", tarfile.CHRTYPE)]), "device file or FIFO"),
        (lambda d: make_tar(d / "a.tgz", [("same.jpg", JPEG), ("./same.jpg", JPEG)]), "appears twice"),
    ],
    ids=["zip-dotdot", "zip-absolute", "zip-backslash", "zip-symlink-absolute", "zip-symlink-up", "tar-dotdot",
         "tar-symlink-then-write-through", "tar-symlink-up", "tar-hardlink-out", "tar-device", "tar-duplicate"],
)
def test_hostile_archives_are_refused(tmp_path: Path, builder, message: str) -> None:
    archive = builder(tmp_path)
    target = tmp_path / "extract" / "here"
    with pytest.raises(IngestError, match=message) as caught:
        safe_extract(archive, target)
    assert str(archive) in str(caught.value)
    assert not target.exists(), "partial extraction removed"
    assert sorted(path.name for path in tmp_path.iterdir()) == [archive.name, "extract"], "nothing written outside"


def test_limits_stop_archive_bombs(tmp_path: Path) -> None:
    many = make_zip(tmp_path / "many.zip", {f"{index}.jpg": JPEG for index in range(20)})
    with pytest.raises(IngestError, match="more than 10"):
        safe_extract(many, tmp_path / "x1", ArchiveLimits(max_files=10))
    zeros = make_zip(tmp_path / "zeros.zip", {"big.jpg": b"\0" * 5_000_000})
    assert zeros.stat().st_size < 50_000, "highly compressed, like a zip bomb"
    with pytest.raises(IngestError, match="would expand to 5000000 bytes"):
        safe_extract(zeros, tmp_path / "x2", ArchiveLimits(max_total_bytes=1_000_000))
    with pytest.raises(IngestError, match="over the limit of 1000000"):
        safe_extract(zeros, tmp_path / "x3", ArchiveLimits(max_file_bytes=1_000_000))
    tar_many = make_tar(tmp_path / "many.tgz", [(f"{index}.jpg", JPEG) for index in range(20)])
    with pytest.raises(IngestError, match="more than 10 files"):
        safe_extract(tar_many, tmp_path / "x4", ArchiveLimits(max_files=10))
    tar_big = make_tar(tmp_path / "big.tgz", [("a.jpg", b"\0" * 600_000), ("b.jpg", b"\0" * 600_000)])
    with pytest.raises(IngestError, match="expands past 1000000 bytes in total"):
        safe_extract(tar_big, tmp_path / "x5", ArchiveLimits(max_total_bytes=1_000_000))


def test_links_inside_the_archive_are_not_created(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "a.tgz", [("real.jpg", JPEG), link("alias.jpg", "real.jpg"), link("copy.jpg", "real.jpg", tarfile.LNKTYPE)])
    skipped = safe_extract(archive, tmp_path / "x")
    assert skipped == [("alias.jpg", "symbolic link inside the archive: not created")]
    assert not (tmp_path / "x" / "alias.jpg").exists()
    assert (tmp_path / "x" / "copy.jpg").read_bytes() == JPEG, "hard link extracted as a plain copy"


def test_a_refused_archive_keeps_the_previous_output(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    good = make_zip(tmp_path / "good.zip", {"a.jpg": JPEG})
    ingest_folders({"day": str(good)}, out, options=serial_options())
    before = tree_bytes(out)
    hostile = make_zip(tmp_path / "hostile.zip", {"a.jpg": JPEG, "../evil.jpg": JPEG})
    with pytest.raises(IngestError, match="refusing the archive"):
        ingest_folders({"day": str(hostile)}, out, options=serial_options())
    assert tree_bytes(out) == before
    assert not (tmp_path / "evil.jpg").exists()


def test_not_an_archive(tmp_path: Path) -> None:
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"not a zip at all")
    with pytest.raises(IngestError, match="not a zip or tar archive"):
        safe_extract(fake, tmp_path / "x")
