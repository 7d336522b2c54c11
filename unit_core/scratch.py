"""Scratch files and folders that a crash may leave behind, and their removal on the next start.

Every temporary file or folder the project writes (beside its outputs, or in the system's
temporary folder) is named ``<base>.unit-scratch-<pid>-<random><suffix>``, the pid being
the writing process's. A later start removes the scratch entries whose process is gone
(killed with -9, power loss), never those of a live process, so two commands working side
by side do not disturb each other.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TAG = ".unit-scratch-"


def _owner_pid(name: str) -> int | None:
    _, tag, rest = name.partition(TAG)
    pid, dash, _ = rest.partition("-")
    return int(pid) if tag and dash and pid.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def remove_stale(folder: str | Path) -> list[Path]:
    """Delete the scratch entries of ``folder`` whose process no longer runs; returns what was removed."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        pid = _owner_pid(entry.name)
        if pid is None or pid == os.getpid() or _alive(pid):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _prefix(base: str) -> str:
    return f"{base}{TAG}{os.getpid()}-"


def scratch_file(folder: str | Path, base: str, suffix: str = ".tmp") -> tuple[int, Path]:
    """A new private file ``<folder>/<base>.unit-scratch-<pid>-<random><suffix>``: (open descriptor, path)."""
    descriptor, name = tempfile.mkstemp(prefix=_prefix(base), suffix=suffix, dir=folder)
    return descriptor, Path(name)


def make_scratch_dir(folder: str | Path, base: str) -> Path:
    """A new private folder ``<folder>/<base>.unit-scratch-<pid>-<random>``; the caller removes it."""
    return Path(tempfile.mkdtemp(prefix=_prefix(base), dir=folder))


@contextmanager
def scratch_dir(folder: str | Path | None, base: str) -> Iterator[Path]:
    """A scratch folder in ``folder`` (default: the system's temporary folder), removed on exit; stale ones first."""
    folder = Path(folder) if folder is not None else Path(tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale(folder)
    path = make_scratch_dir(folder, base)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` through a scratch sibling and a rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp = scratch_file(path.parent, f".{path.name}")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(temp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def current_umask() -> int:
    """The process's file-creation mask (read by setting it and putting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
