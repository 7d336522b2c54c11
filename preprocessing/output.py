"""Writing a versioned data set directory: ``<out>/<domain>/<split>/<file>`` + manifest + report.

Everything is built in a temporary sibling directory and swapped into place only when the
whole run succeeded, so a failed or interrupted run never damages the previous output.
Files are written in a deterministic way (fixed encoder settings, no timestamps, sorted
manifest and report) so an unchanged input gives a byte-identical data set.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import cv2
import numpy as np
import PIL

from preprocessing.errors import IngestError
from unit_core.layout import MANIFEST_NAME, REPORT_NAME, SPLITS
from unit_core.scratch import current_umask, make_scratch_dir, remove_stale

log = logging.getLogger(__name__)

#: Bumped when the layout or the meaning of manifest/report fields changes.
FORMAT_VERSION = 1
IMAGE_EXTENSIONS = {"png": ".png", "jpg": ".jpg"}
JPEG_QUALITY = 95
# zlib level 3 is several times faster than the maximum and only a few percent larger.
PNG_COMPRESSION = 3

_UNSAFE_NAME = re.compile(r"[/\\\x00-\x1f]")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose output ends up in the files (decoders, resizers, encoders)."""
    return {"opencv": cv2.__version__, "pillow": PIL.__version__, "numpy": np.__version__}


def tool_version() -> str:
    """Version of the installed unit-pipeline package; running from a source checkout says so."""
    try:
        return importlib.metadata.version("unit-pipeline")
    except importlib.metadata.PackageNotFoundError:
        return "source checkout (not installed)"


def recipe_hash(parameters: Mapping[str, Any]) -> str:
    """Hash of everything that decides an output file's bytes besides the source itself.

    A previous output is reused only when both the source sha256 and this hash match, so any
    change of parameters or of the encoding libraries rebuilds the affected files.
    """
    payload = {"format_version": FORMAT_VERSION, "libraries": library_versions(), "parameters": parameters}
    return sha256_bytes(json.dumps(payload, sort_keys=True, ensure_ascii=True).encode())[:16]


def encode_image(image: np.ndarray, image_format: str) -> bytes:
    """Encode an RGB (HxWx3) or gray (HxW) uint8 array; same array in, same bytes out."""
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim != 2:
        raise ValueError(f"expected an HxWx3 (RGB) or HxW (gray) image, got shape {image.shape}")
    if image_format == "png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION]
    elif image_format == "jpg":
        params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    else:
        raise ValueError(f"unknown image format {image_format!r}; expected one of {sorted(IMAGE_EXTENSIONS)}")
    ok, encoded = cv2.imencode(IMAGE_EXTENSIONS[image_format], image, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as {image_format}")
    return encoded.tobytes()


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """The entries of a ``manifest.jsonl``, in file order."""
    path = Path(path)
    entries = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise IngestError(f"{path}: line {number}: not valid JSON: {exc.msg}") from None
    return entries


def _check_path_part(kind: str, value: str) -> None:
    if not value or value in (".", "..") or value.startswith(".") or _UNSAFE_NAME.search(value):
        raise ValueError(f"invalid {kind} {value!r}: must be non-empty, not start with '.', and contain no '/', '\\' or control characters")


def check_domain_names(names: Iterable[str]) -> None:
    """Raise :class:`IngestError` for domain names that cannot be folder names, before any work is done."""
    for name in names:
        try:
            _check_path_part("domain name", name)
        except ValueError as exc:
            raise IngestError(str(exc)) from None


class DatasetWriter:
    """Context manager that builds a data set directory and swaps it into place on success.

    ``previous=True`` lets :meth:`reuse` copy files from the existing output when the source
    sha256 and the recipe hash are unchanged; ``previous=False`` rebuilds everything.
    ``kind`` and ``parameters`` are recorded in ``report.json``.
    """

    def __init__(
        self,
        out_dir: str | Path,
        image_format: str = "png",
        previous: bool = True,
        *,
        kind: str = "images",
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        if image_format not in IMAGE_EXTENSIONS:
            raise IngestError(f"unknown image format {image_format!r}; expected one of {sorted(IMAGE_EXTENSIONS)}")
        self.out_dir = Path(out_dir)
        self.image_format = image_format
        self.kind = kind
        self.parameters = dict(parameters or {})
        self._use_previous = previous
        self._tmp: Path | None = None
        self._entered = False
        self._entries: dict[str, dict[str, Any]] = {}
        self._rejected: list[dict[str, Any]] = []
        self._warnings: list[dict[str, str]] = []
        self._metadata_files: set[str] = set()
        self._notes: dict[str, Any] = {}
        self._created_dirs: set[str] = set()
        self._previous: dict[tuple[str, str], dict[str, Any]] = {}

    # -- context management ------------------------------------------------------------------

    def __enter__(self) -> DatasetWriter:
        if self._entered:
            raise RuntimeError("a DatasetWriter can be entered only once")
        self._entered = True
        self._check_replaceable()
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(self.out_dir.parent)  # what a killed ingest left beside its output
        self._tmp = make_scratch_dir(self.out_dir.parent, self.out_dir.name)
        # mkdtemp makes the folder private (0700); the data set gets the usual permissions.
        self._tmp.chmod(0o777 & ~current_umask())
        if self._use_previous:
            self._previous = self._load_previous_index()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        tmp = self._require_open()
        try:
            if exc_type is None:
                self._write_manifest_and_report(tmp)
                self._swap_into_place(tmp)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
            self._tmp = None

    # -- adding files -------------------------------------------------------------------------

    def add_image(
        self,
        image: np.ndarray,
        *,
        domain: str,
        split: str,
        name: str,
        source: str,
        source_sha256: str | None = None,
        label: int | None = None,
        recipe: str | None = None,
        **extra: Any,
    ) -> Path:
        """Encode and write one image; returns its path relative to the data set root.

        ``source_sha256`` defaults to the hash of the pixels (for generated images).
        ``recipe`` (see :func:`recipe_hash`) makes the file reusable by a later run.
        """
        if source_sha256 is None:
            source_sha256 = sha256_bytes(np.ascontiguousarray(image).tobytes() + repr(image.shape).encode())
        return self.add_encoded(
            encode_image(image, self.image_format),
            domain=domain,
            split=split,
            name=name,
            source=source,
            source_sha256=source_sha256,
            label=label,
            recipe=recipe,
            **extra,
        )

    def add_encoded(
        self,
        encoded: bytes,
        *,
        domain: str,
        split: str,
        name: str,
        source: str,
        source_sha256: str,
        label: int | None = None,
        recipe: str | None = None,
        **extra: Any,
    ) -> Path:
        """Write an image already encoded in this writer's format (by :func:`encode_image`)."""
        tmp = self._require_open()
        _check_path_part("domain", domain)
        _check_path_part("name", name)
        if split not in SPLITS:
            raise ValueError(f"invalid split {split!r}; expected one of {SPLITS}")
        # Plain strings here: this runs once per image (70000 times for MNIST).
        key = f"{domain}/{split}/{name}{IMAGE_EXTENSIONS[self.image_format]}"
        if key in self._entries:
            raise ValueError(f"duplicate output path {key} (from {source} and {self._entries[key]['source']})")
        folder = f"{domain}/{split}"
        if folder not in self._created_dirs:
            (tmp / folder).mkdir(parents=True, exist_ok=True)
            self._created_dirs.add(folder)
        with open(os.path.join(tmp, key), "xb") as out:
            out.write(encoded)
        entry: dict[str, Any] = {
            "source": source,
            "sha256": source_sha256,
            "output": key,
            "domain": domain,
            "split": split,
            "label": label,
        }
        entry.update(sorted(extra.items()))
        entry["output_sha256"] = sha256_bytes(encoded)
        entry["recipe"] = recipe
        self._entries[key] = entry
        return Path(key)

    def previous_output(self, source_sha256: str, recipe: str) -> tuple[bytes, dict[str, Any]] | None:
        """The bytes and manifest entry the previous run wrote for this source and recipe, if still intact."""
        entry = self._previous.get((source_sha256, recipe))
        if entry is None:
            return None
        try:
            data = (self.out_dir / entry["output"]).read_bytes()
        except OSError:
            return None
        return (data, entry) if sha256_bytes(data) == entry["output_sha256"] else None

    def reuse(
        self,
        source_sha256: str,
        recipe: str,
        *,
        domain: str,
        split: str,
        name: str,
        source: str,
        label: int | None = None,
        **extra: Any,
    ) -> Path | None:
        """Copy the previous run's output for this source and recipe; None when there is none."""
        previous = self.previous_output(source_sha256, recipe)
        if previous is None:
            return None
        return self.add_encoded(
            previous[0],
            domain=domain,
            split=split,
            name=name,
            source=source,
            source_sha256=source_sha256,
            label=label,
            recipe=recipe,
            **extra,
        )

    def reject(self, source: str, reason: str, **extra: Any) -> None:
        """Record an input that was not converted; it is listed in report.json with the reason."""
        self._require_open()
        entry = {"source": source, "reason": reason}
        entry.update(sorted(extra.items()))
        self._rejected.append(entry)

    def warn(self, source: str, message: str) -> None:
        """Record what a decoder said of an input that was still converted (listed in report.json)."""
        self._require_open()
        self._warnings.append({"source": source, "warning": message})
        log.warning("%s: %s", source, message)

    def note(self, key: str, value: Any) -> None:
        """Record a fact about the input in report.json under ``notes`` (e.g. rows declared vs present)."""
        self._require_open()
        self._notes[key] = value

    def add_metadata_file(self, relative: str, data: bytes) -> Path:
        """Write a non-image file such as ``<domain>/labels-train.csv`` (not inside a split folder)."""
        tmp = self._require_open()
        parts = Path(relative).parts
        for part in parts:
            _check_path_part("metadata file path", part)
        if relative in (MANIFEST_NAME, REPORT_NAME) or (len(parts) > 1 and parts[1] in SPLITS):
            raise ValueError(f"metadata file {relative!r} would clash with the data set layout")
        if relative in self._metadata_files:
            raise ValueError(f"duplicate metadata file {relative!r}")
        path = tmp / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self._metadata_files.add(relative)
        return Path(relative)

    # -- state --------------------------------------------------------------------------------

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        """Images written so far, per domain and split."""
        counts: dict[str, dict[str, int]] = {}
        for entry in self._entries.values():
            per_domain = counts.setdefault(entry["domain"], {})
            per_domain[entry["split"]] = per_domain.get(entry["split"], 0) + 1
        return {domain: dict(sorted(splits.items())) for domain, splits in sorted(counts.items())}

    @property
    def rejected(self) -> list[dict[str, Any]]:
        return list(self._rejected)

    # -- internals ----------------------------------------------------------------------------

    def _require_open(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("use DatasetWriter as a context manager: with DatasetWriter(out) as writer: ...")
        return self._tmp

    def _check_replaceable(self) -> None:
        """Refuse to replace a directory this tool did not write (e.g. a mistyped --out)."""
        if not self.out_dir.exists():
            return
        if not self.out_dir.is_dir():
            raise IngestError(f"{self.out_dir}: exists and is not a directory")
        ours = (self.out_dir / REPORT_NAME).is_file() and (self.out_dir / MANIFEST_NAME).is_file()
        if not ours and any(self.out_dir.iterdir()):
            raise IngestError(
                f"{self.out_dir}: exists, is not empty and holds no {MANIFEST_NAME}/{REPORT_NAME}; "
                "refusing to replace a directory this tool did not write"
            )

    def _load_previous_index(self) -> dict[tuple[str, str], dict[str, Any]]:
        manifest = self.out_dir / MANIFEST_NAME
        if not manifest.is_file():
            return {}
        try:
            entries = read_manifest(manifest)
        except (IngestError, OSError, UnicodeDecodeError) as exc:
            log.warning("previous manifest unusable, rebuilding everything: %s", exc)
            return {}
        index = {}
        for entry in entries:
            if isinstance(entry, dict) and entry.get("recipe") and entry.get("sha256") and entry.get("output_sha256"):
                index[(entry["sha256"], entry["recipe"])] = entry
        return index

    def _write_manifest_and_report(self, tmp: Path) -> None:
        if not self._entries:
            reasons = "; ".join(f"{item['source']}: {item['reason']}" for item in self._rejected[:5])
            raise IngestError(
                f"no image was written to {self.out_dir} ({len(self._rejected)} rejected"
                + (f": {reasons}" if reasons else "")
                + "); the previous output, if any, is left as it was"
            )
        with (tmp / MANIFEST_NAME).open("w", encoding="utf-8", newline="\n") as manifest:
            for key in sorted(self._entries):
                manifest.write(json.dumps(self._entries[key], ensure_ascii=False, default=str) + "\n")
        rejected = sorted(self._rejected, key=lambda item: (item["source"], item["reason"]))
        report = {
            "format_version": FORMAT_VERSION,
            "tool": {"name": "unit-pipeline", "version": tool_version()},
            "kind": self.kind,
            "image_format": self.image_format,
            "parameters": self.parameters,
            "libraries": library_versions(),
            "counts": self.counts,
            "images": len(self._entries),
            "rejected_count": len(rejected),
            "rejected": rejected,
            "warnings": sorted(self._warnings, key=lambda item: (item["source"], item["warning"])),
            "metadata_files": sorted(self._metadata_files),
            "notes": dict(sorted(self._notes.items())),
        }
        (tmp / REPORT_NAME).write_text(
            json.dumps(report, ensure_ascii=False, indent=2, default=str) + "\n", encoding="utf-8"
        )

    def _swap_into_place(self, tmp: Path) -> None:
        # Two renames: the old output stays complete until the new one is in place, and is put
        # back if the second rename fails.
        old: Path | None = None
        if self.out_dir.exists():
            old = self.out_dir.with_name(f"{self.out_dir.name}.old-{secrets.token_hex(4)}")
            os.rename(self.out_dir, old)
        try:
            os.rename(tmp, self.out_dir)
        except OSError:
            if old is not None:
                os.rename(old, self.out_dir)
            raise
        if old is not None:
            shutil.rmtree(old)
