"""Where a distributed run keeps its checkpoints: a folder every node can reach, or S3.

``distributed.storage_path`` is a folder or a URI (``s3://bucket/prefix``, or any scheme
pyarrow knows); ``distributed.storage_endpoint_url`` points ``s3://`` at an S3-compatible
server (MinIO, Ceph, moto). Credentials come from each process's environment
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a profile or an instance role), never
from the configuration, so they are not pickled into the workers' arguments.

Layout of a run (``<storage>/<run name>/``)::

    step_00001000/checkpoint.pt      the self-contained unit_core checkpoint
    step_00001000/samples.png        the sample grid of that step
    step_00001000/train_log.jsonl    the run's log up to that step
    step_00001000/replicas.json      rank, node and weight digest of every worker
    initial_checkpoint.pt            the checkpoint a new run started from (if any)
    checkpoint_manager_snapshot.json Ray Train's own record (which checkpoints exist)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs

from unit_core.config import UnitConfig
from unit_distributed.errors import DistributedError

CHECKPOINT_FILE = "checkpoint.pt"
GRID_FILE = "samples.png"
LOG_FILE = "train_log.jsonl"
REPLICAS_FILE = "replicas.json"
INITIAL_CHECKPOINT_FILE = "initial_checkpoint.pt"


def checkpoint_dir_name(step: int) -> str:
    return f"step_{step:08d}"


@dataclass(frozen=True)
class RunStorage:
    """The storage filesystem and the run's folder on it (picklable: workers receive it)."""

    filesystem: pyarrow.fs.FileSystem
    root: str  # storage_path on ``filesystem``, without the URI scheme
    scheme: str  # "s3://" etc.; "" for a local or shared folder
    run_name: str

    @property
    def run_path(self) -> str:
        return f"{self.root}/{self.run_name}"

    @property
    def is_local(self) -> bool:
        return not self.scheme

    def uri(self, path: str) -> str:
        """``path`` on the filesystem as the user would write it (s3://bucket/... or a local path)."""
        return f"{self.scheme}{path}"

    def exists(self, path: str) -> bool:
        return self.filesystem.get_file_info(path).type != pyarrow.fs.FileType.NotFound

    def ray_storage(self) -> tuple[str, pyarrow.fs.FileSystem | None]:
        """``(storage_path, storage_filesystem)`` for ``ray.train.RunConfig``."""
        return (self.root, None) if self.is_local else (self.root, self.filesystem)


def run_storage(cfg: UnitConfig) -> RunStorage:
    """Resolve ``distributed.storage_path`` (+ endpoint) and the run name of ``cfg``."""
    settings = cfg.distributed
    run_name = settings.run_name or re.sub(r"[^A-Za-z0-9._-]", "-", Path(os.path.abspath(cfg.train.out_dir)).name)
    location = settings.storage_path
    if "://" not in location:
        return RunStorage(pyarrow.fs.LocalFileSystem(), Path(os.path.abspath(location)).as_posix(), "", run_name)
    scheme = location.split("://", 1)[0] + "://"
    if settings.storage_endpoint_url:
        endpoint = urlparse(settings.storage_endpoint_url)
        filesystem = pyarrow.fs.S3FileSystem(endpoint_override=endpoint.netloc, scheme=endpoint.scheme)
        root = location[len(scheme):]
    else:
        try:
            filesystem, root = pyarrow.fs.FileSystem.from_uri(location)
        except (pyarrow.ArrowInvalid, OSError) as exc:
            raise DistributedError(f"distributed.storage_path {location!r}: cannot open: {exc}") from None
    return RunStorage(filesystem, root.rstrip("/"), scheme, run_name)
