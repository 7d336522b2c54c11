"""Safe extraction of zip and tar(.gz/.bz2/.xz) archives.

Refused with :class:`IngestError` (nothing extracted is kept): absolute member paths, ``..``
components, links whose target leaves the extraction folder, device files and FIFOs, encrypted
or duplicate members, and archives over the file-count or size limits. Only regular files and
folders are written, without the archive's permissions or owners; links that stay inside are
not created (their targets are extracted anyway) and are listed as skipped.
"""

from __future__ import annotations

import posixpath
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from preprocessing.errors import IngestError
from unit_core.ingest_settings import MAX_ARCHIVE_FILES, MAX_ARCHIVE_GB

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    max_files: int = MAX_ARCHIVE_FILES  # the settings' defaults (unit_core.ingest_settings)
    max_total_bytes: int = MAX_ARCHIVE_GB * 1024**3
    max_file_bytes: int = 1024**3


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def safe_extract(archive: Path, target: Path, limits: ArchiveLimits = ArchiveLimits()) -> list[tuple[str, str]]:
    """Extract ``archive`` into the empty folder ``target``; returns (member, reason) of skipped members.

    On a refused archive the partly extracted content is removed before the error is raised.
    """
    target.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            return _extract_zip(archive, target, limits)
        if tarfile.is_tarfile(archive):
            return _extract_tar(archive, target, limits)
    except IngestError:
        shutil.rmtree(target, ignore_errors=True)
        raise
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise IngestError(f"{archive}: cannot extract: {exc}") from None
    raise IngestError(f"{archive}: not a zip or tar archive")


def _member_path(archive: Path, name: str) -> str:
    """The member's normalised relative path; hostile names raise."""
    if "\x00" in name:
        raise IngestError(f"{archive}: member {name!r} has a NUL byte in its name; refusing the archive")
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        raise IngestError(f"{archive}: member {name!r} has an absolute path; refusing the archive")
    parts = [part for part in unified.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise IngestError(f"{archive}: member {name!r} leaves the extraction folder ('..'); refusing the archive")
    return "/".join(parts)


def _check_link_target(archive: Path, member: str, link_target: str, relative_to_member: bool) -> None:
    target = link_target.replace("\\", "/")
    base = posixpath.dirname(member) if relative_to_member else ""
    resolved = posixpath.normpath(posixpath.join(base, target))
    if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
        raise IngestError(
            f"{archive}: member {member!r} is a link to {link_target!r}, outside the extraction folder; refusing the archive"
        )


class _Budget:
    """Counts files and bytes actually written, so lying headers cannot exceed the limits."""

    def __init__(self, archive: Path, limits: ArchiveLimits) -> None:
        self.archive = archive
        self.limits = limits
        self.files = 0
        self.total_bytes = 0

    def add_file(self, member: str, declared_size: int) -> None:
        self.files += 1
        if self.files > self.limits.max_files:
            raise IngestError(f"{self.archive}: more than {self.limits.max_files} files; refusing the archive")
        if declared_size > self.limits.max_file_bytes:
            raise IngestError(
                f"{self.archive}: member {member!r} is {declared_size} bytes, over the limit of "
                f"{self.limits.max_file_bytes}; refusing the archive"
            )

    def copy(self, member: str, source: IO[bytes], destination: Path) -> None:
        written = 0
        with destination.open("xb") as out:
            while chunk := source.read(_COPY_CHUNK):
                written += len(chunk)
                self.total_bytes += len(chunk)
                if written > self.limits.max_file_bytes:
                    raise IngestError(
                        f"{self.archive}: member {member!r} expands past {self.limits.max_file_bytes} bytes; refusing the archive"
                    )
                if self.total_bytes > self.limits.max_total_bytes:
                    raise IngestError(
                        f"{self.archive}: expands past {self.limits.max_total_bytes} bytes in total; refusing the archive"
                    )
                out.write(chunk)


def _prepare_destination(archive: Path, target: Path, member: str) -> Path:
    destination = target / member
    destination.parent.mkdir(parents=True, exist_ok=True)
    # Defence in depth: no component of the path may resolve outside (we never create links).
    if not destination.parent.resolve().is_relative_to(target.resolve()):
        raise IngestError(f"{archive}: member {member!r} resolves outside the extraction folder; refusing the archive")
    if destination.exists():
        raise IngestError(f"{archive}: member {member!r} appears twice; refusing the archive")
    return destination


def _extract_zip(archive: Path, target: Path, limits: ArchiveLimits) -> list[tuple[str, str]]:
    skipped: list[tuple[str, str]] = []
    budget = _Budget(archive, limits)
    with zipfile.ZipFile(archive) as zipped:
        infos = zipped.infolist()
        if len(infos) > limits.max_files:
            raise IngestError(f"{archive}: {len(infos)} members, more than {limits.max_files}; refusing the archive")
        declared_total = sum(info.file_size for info in infos)
        if declared_total > limits.max_total_bytes:
            raise IngestError(
                f"{archive}: would expand to {declared_total} bytes, over the limit of {limits.max_total_bytes}; refusing the archive"
            )
        for info in infos:
            member = _member_path(archive, info.filename)
            if not member:
                continue
            unix_mode = info.external_attr >> 16
            if stat.S_ISLNK(unix_mode):
                _check_link_target(archive, member, zipped.read(info).decode("utf-8", "replace"), relative_to_member=True)
                skipped.append((member, "symbolic link inside the archive: not created"))
                continue
            if info.is_dir():
                (target / member).mkdir(parents=True, exist_ok=True)
                continue
            # Many zip writers store permission bits only; no file-type bits means a regular file.
            if stat.S_IFMT(unix_mode) not in (0, stat.S_IFREG):
                raise IngestError(f"{archive}: member {member!r} is a special file; refusing the archive")
            if info.flag_bits & 0x1:
                raise IngestError(f"{archive}: member {member!r} is encrypted; not supported")
            budget.add_file(member, info.file_size)
            destination = _prepare_destination(archive, target, member)
            with zipped.open(info) as source:
                budget.copy(member, source, destination)
    return skipped


def _extract_tar(archive: Path, target: Path, limits: ArchiveLimits) -> list[tuple[str, str]]:
    skipped: list[tuple[str, str]] = []
    budget = _Budget(archive, limits)
    with tarfile.open(archive, mode="r:*") as tarred:
        for info in tarred:  # streaming: the count limit stops a huge archive early
            member = _member_path(archive, info.name)
            if not member:
                continue
            if info.issym() or info.islnk():
                _check_link_target(archive, member, info.linkname, relative_to_member=info.issym())
                if info.islnk():
                    # A hard link's data is another member's data: extract it as a plain copy.
                    budget.add_file(member, info.size)
                    try:
                        source = tarred.extractfile(info)
                    except KeyError:
                        skipped.append((member, f"hard link to {info.linkname!r}, which is not in the archive"))
                        continue
                    if source is not None:
                        budget.copy(member, source, _prepare_destination(archive, target, member))
                        continue
                skipped.append((member, "symbolic link inside the archive: not created"))
                continue
            if info.isdir():
                (target / member).mkdir(parents=True, exist_ok=True)
                continue
            if not info.isfile():
                raise IngestError(f"{archive}: member {member!r} is a device file or FIFO; refusing the archive")
            budget.add_file(member, info.size)
            source = tarred.extractfile(info)
            if source is None:
                raise IngestError(f"{archive}: member {member!r} has no data")
            budget.copy(member, source, _prepare_destination(archive, target, member))
    return skipped
