"""What each Ray Train worker runs: one rank of ``unit_core.training.fit`` under DDP.

Every worker trains on its own share of the sample stream and keeps a private scratch
folder; rank 0 writes checkpoints there and reports each one to Ray Train, which copies
it to the run's storage and registers it only once the copy is complete. After a
worker or node dies, Ray restarts all workers and ``ray.train.get_checkpoint()`` gives
them the last registered checkpoint, so a half-written one is never resumed from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import socket
from pathlib import Path
from typing import Any

import pyarrow.fs
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn

from unit_core.checkpoint import link_or_copy_atomic
from unit_core.config import config_from_dict
from unit_core.scratch import scratch_dir
from unit_core.trainer import UNITTrainer
from unit_core.training import DataParallel, fit
from unit_distributed.storage import (
    CHECKPOINT_FILE,
    GRID_FILE,
    INITIAL_CHECKPOINT_FILE,
    LOG_FILE,
    REPLICAS_FILE,
    RunStorage,
    checkpoint_dir_name,
)

logger = logging.getLogger(__name__)

ECHOED_METRICS = ("gen/total", "dis/total", "gen/recon_a", "gen/recon_b", "pairs_per_sec")


class ReplicasDivergedError(RuntimeError):
    """The workers' weights differ, which DDP should make impossible; the run restarts from the last checkpoint."""


def train_worker(config: dict[str, Any]) -> dict[str, Any]:
    """``train_loop_per_worker`` of the TorchTrainer (see ``runner.train_distributed`` for ``config``).

    Returns the step reached and the checkpoint this attempt started from (Ray keeps
    rank 0's value as ``Result.return_value``).
    """
    cfg = config_from_dict(config["unit_config"], "the distributed run's configuration")
    storage: RunStorage = config["storage"]
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        # As many intra-op threads as CPUs Ray reserved, so workers sharing a node do not oversubscribe it.
        torch.set_num_threads(max(1, int(cfg.distributed.cpus_per_worker)))

    with scratch_dir(None, f"unit-rank{rank}") as scratch:
        run_dir = scratch / "run"
        resume, started_from = _starting_point(storage, config["initial_checkpoint"], scratch, run_dir, rank)
        worker_cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"out_dir": str(run_dir)})})
        reporter = RayReporter(rank, world_size, run_dir, echo=config["progress"] and rank == 0,
                               max_steps=cfg.train.max_steps)
        parallel = DataParallel(rank=rank, world_size=world_size, device=device, wrap=synchronised,
                                replica_callbacks=(reporter,))
        result = fit(worker_cfg, resume=resume or False, callbacks=tuple(config["callbacks"]) if rank == 0 else (),
                     progress=False, parallel=parallel)
    return {"step": result.step, "started_from": started_from}


def synchronised(module: nn.Module) -> nn.Module:
    """DistributedDataParallel over the run's process group (``device_ids`` on a GPU)."""
    return ray.train.torch.prepare_model(module, move_to_device=False)


def _starting_point(storage: RunStorage, initial: str | None, scratch: Path, run_dir: Path,
                    rank: int) -> tuple[Path | None, str | None]:
    """The checkpoint file this attempt resumes from and where it came from (None, None: from scratch).

    After a restart that is Ray's latest registered checkpoint; on a run's first attempt,
    the checkpoint it was asked to start from, if any.
    """
    latest = ray.train.get_checkpoint()
    if latest is not None:
        restored = Path(latest.to_directory(str(scratch / "restored")))
        if rank == 0:
            # The log continues where the checkpoint's copy of it ends.
            run_dir.mkdir(parents=True)
            shutil.copyfile(restored / LOG_FILE, run_dir / LOG_FILE)
        return restored / CHECKPOINT_FILE, storage.uri(latest.path)
    if initial is not None:
        local = scratch / INITIAL_CHECKPOINT_FILE
        pyarrow.fs.copy_files(initial, str(local), source_filesystem=storage.filesystem)
        return local, storage.uri(initial)
    return None, None


def weights_digest(trainer: UNITTrainer) -> str:
    """SHA-256 of every parameter of gen and dis: equal on all ranks exactly when their weights are.

    Buffers (batch-norm statistics) are left out: each rank updates them from its own
    batch, and DDP copies rank 0's to the others at the next forward.
    """
    digest = hashlib.sha256()
    for network in (trainer.gen, trainer.dis):
        for name, parameter in network.named_parameters():
            digest.update(name.encode())
            digest.update(parameter.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def gather_replicas(trainer: UNITTrainer, rank: int, world_size: int) -> list[dict[str, Any]]:
    """Rank, node, device and weight digest of every worker (a collective call)."""
    record = {
        "rank": rank,
        "node_id": ray.get_runtime_context().get_node_id(),
        "host": socket.gethostname(),
        "device": str(trainer.device),
        "weights_sha256": weights_digest(trainer),
    }
    if world_size == 1:
        return [record]
    records: list[Any] = [None] * world_size
    dist.all_gather_object(records, record)
    return records


class RayReporter:
    """ReplicaCallback: metrics and checkpoints to Ray Train.

    ``ray.train.report`` is collective in Ray Train, so every rank calls it at the same
    steps; only rank 0 attaches a checkpoint, and Ray keeps rank 0's metrics.
    """

    def __init__(self, rank: int, world_size: int, run_dir: Path, echo: bool, max_steps: int):
        self.rank, self.world_size = rank, world_size
        self.run_dir = run_dir
        self.echo = echo
        self.max_steps = max_steps
        self.metrics: dict[str, float] = {}

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        self.metrics = metrics
        ray.train.report({"step": step, **metrics})
        if self.echo:
            shown = "  ".join(f"{name} {metrics[name]:.4g}" for name in ECHOED_METRICS if name in metrics)
            logger.info("step %d/%d  %s", step, self.max_steps, shown)

    def on_checkpoint(self, step: int, trainer: UNITTrainer, checkpoint: Path | None, grid: Path | None) -> None:
        replicas = gather_replicas(trainer, self.rank, self.world_size)
        digests = sorted({replica["weights_sha256"] for replica in replicas})
        if len(digests) > 1:
            raise ReplicasDivergedError(f"step {step}: the workers' weights differ ({len(digests)} distinct digests); "
                                        f"this step is not checkpointed")
        metrics = {**self.metrics, "step": step}
        name = checkpoint_dir_name(step)
        if checkpoint is None or grid is None:
            ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=name)
            return
        with scratch_dir(self.run_dir.parent, "report") as folder:
            link_or_copy_atomic(checkpoint, folder / CHECKPOINT_FILE)
            link_or_copy_atomic(grid, folder / GRID_FILE)
            shutil.copyfile(self.run_dir / LOG_FILE, folder / LOG_FILE)
            (folder / REPLICAS_FILE).write_text(json.dumps(replicas, indent=1) + "\n", encoding="utf-8")
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(folder)),
                             checkpoint_dir_name=name)
