"""Where input files come from: local folders, zip/tar archives, and S3 prefixes.

:func:`open_location` turns a location string into a sorted :class:`Listing` of image files,
each with a ``read()`` that returns its bytes. Archives are extracted safely into a scratch
folder that lives as long as the ``with`` block.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from preprocessing.archives import ArchiveLimits, is_archive, safe_extract
from preprocessing.errors import IngestError
from unit_core.images import IMAGE_EXTENSIONS
from unit_core.ingest_settings import MAX_FILE_MB, S3_ATTEMPTS
from unit_core.scratch import scratch_dir as scratch_folder

#: Inputs larger than this are skipped without being read (no image we want is this big).
DEFAULT_MAX_FILE_BYTES = MAX_FILE_MB * 1024**2  # the settings' default (unit_core.ingest_settings)
# Folders that archivers add and that never hold data.
_JUNK_FOLDERS = frozenset({"__MACOSX"})


class UnreadableSource(Exception):
    """Reading one input failed (I/O error, object deleted meanwhile); the message is the reason."""


@dataclass(frozen=True)
class S3Options:
    """How to reach S3 or an S3-compatible store; credentials come from boto3's standard chain."""

    endpoint_url: str | None = None
    region: str | None = None
    max_attempts: int = S3_ATTEMPTS  # per request, first try included; "standard" retry mode with backoff
    page_size: int = 1000


@dataclass(frozen=True)
class SourceFile:
    source: str  # as recorded in the manifest: a path, "<archive>!/<member>" or "s3://bucket/key"
    relative: str  # POSIX path below the location root: decides domain/split/name
    size: int
    read: Callable[[], bytes] = field(compare=False, repr=False)


@dataclass(frozen=True)
class Listing:
    files: list[SourceFile]
    skipped: list[tuple[str, str]]  # (source, reason): non-image names, links in archives, oversize files


@contextmanager
def open_location(
    location: str | Path,
    *,
    scratch_dir: Path,
    s3: S3Options = S3Options(),
    archive_limits: ArchiveLimits = ArchiveLimits(),
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> Iterator[Listing]:
    """List the image files at a folder, archive or ``s3://bucket/prefix``, sorted by relative path."""
    text = str(location)
    if text.startswith("s3://"):
        yield list_s3(text, s3, max_file_bytes)
        return
    path = Path(text)
    if path.is_dir():
        yield list_folder(path, max_file_bytes)
        return
    if is_archive(path):
        scratch_dir.mkdir(parents=True, exist_ok=True)
        with scratch_folder(scratch_dir, f"{path.name}.extract") as extracted:
            skipped = [(f"{path}!/{member}", reason) for member, reason in safe_extract(path, Path(extracted), archive_limits)]
            listing = list_folder(Path(extracted), max_file_bytes, shown_as=f"{path}!")
            yield Listing(listing.files, skipped + listing.skipped)
        return
    if not path.exists():
        raise IngestError(f"{path}: no such file or folder")
    raise IngestError(f"{path}: not a folder, a zip/tar archive or an s3:// prefix")


def list_folder(root: Path, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES, shown_as: str | None = None) -> Listing:
    """Image files below ``root`` (hidden files and folders ignored), sorted by relative path."""
    files: list[SourceFile] = []
    skipped: list[tuple[str, str]] = []
    prefix = shown_as if shown_as is not None else str(root)
    for folder, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(name for name in dirnames if not name.startswith(".") and name not in _JUNK_FOLDERS)
        for filename in filenames:
            if filename.startswith("."):
                continue
            path = Path(folder, filename)
            relative = path.relative_to(root).as_posix()
            source = f"{prefix}/{relative}"
            try:
                size = path.stat().st_size
            except OSError as exc:
                skipped.append((source, f"cannot read: {exc.strerror or exc}"))
                continue
            reason = _skip_reason(relative, size, max_file_bytes)
            if reason:
                skipped.append((source, reason))
            else:
                files.append(SourceFile(source, relative, size, _file_reader(path)))
    files.sort(key=lambda item: item.relative)
    skipped.sort()
    return Listing(files, skipped)


def _skip_reason(relative: str, size: int, max_file_bytes: int) -> str | None:
    suffix = PurePosixPath(relative).suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        return f"not an image file name (extension {suffix or 'none'!r})"
    if size > max_file_bytes:
        return f"file too large: {size} bytes > limit {max_file_bytes}"
    return None


def _file_reader(path: Path) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise UnreadableSource(f"cannot read: {exc.strerror or exc}") from None

    return read


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ("bucket", "some/prefix/"); the prefix ends with '/' unless empty."""
    if not uri.startswith("s3://"):
        raise IngestError(f"{uri}: not an s3:// URI")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise IngestError(f"{uri}: no bucket name (expected s3://bucket/prefix)")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def s3_client(options: S3Options) -> Any:
    """A boto3 S3 client with retries; credentials from the standard chain (never logged here)."""
    import boto3
    from botocore.config import Config

    # total_max_attempts counts the first try too (botocore's max_attempts counts retries only).
    config = Config(retries={"total_max_attempts": options.max_attempts, "mode": "standard"}, max_pool_connections=32)
    session = boto3.session.Session(region_name=options.region)
    return session.client("s3", endpoint_url=options.endpoint_url, config=config)


def list_s3(uri: str, options: S3Options, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> Listing:
    """Image objects under an S3 prefix (all pages), sorted by key."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = parse_s3_uri(uri)
    client = s3_client(options)
    files: list[SourceFile] = []
    skipped: list[tuple[str, str]] = []
    paginator = client.get_paginator("list_objects_v2")
    try:
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": options.page_size}):
            for item in page.get("Contents", []):
                key = item["Key"]
                relative = key[len(prefix) :]
                if not relative or key.endswith("/") or any(part.startswith(".") for part in relative.split("/")):
                    continue
                source = f"s3://{bucket}/{key}"
                reason = _skip_reason(relative, item["Size"], max_file_bytes)
                if reason:
                    skipped.append((source, reason))
                else:
                    files.append(SourceFile(source, relative, item["Size"], _s3_reader(client, bucket, key)))
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise IngestError(f"{uri}: cannot list objects: {error.get('Code', 'error')}: {error.get('Message', exc)}") from None
    except BotoCoreError as exc:
        raise IngestError(f"{uri}: cannot list objects: {exc}") from None
    files.sort(key=lambda item: item.relative)
    skipped.sort()
    return Listing(files, skipped)


def _s3_reader(client: Any, bucket: str, key: str) -> Callable[[], bytes]:
    from botocore.exceptions import BotoCoreError, ClientError

    def read() -> bytes:
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise UnreadableSource(f"cannot read: {error.get('Code', 'error')}: {error.get('Message', exc)}") from None
        except BotoCoreError as exc:
            raise UnreadableSource(f"cannot read: {exc}") from None

    return read
