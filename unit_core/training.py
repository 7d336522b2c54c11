"""The training loop: data stream, periodic logs, checkpoints and sample grids, resume.

Outside concerns (experiment tracking, distributed reporting) plug in through
:class:`TrainingCallback` and :class:`DataParallel`; this module knows nothing of them.
A data-parallel runner (``unit_distributed``) starts one process per rank, initialises
``torch.distributed`` and calls :func:`fit` in each with its :class:`DataParallel`.
:func:`fit` is :func:`prepare_run` (all that comes before the first step) then
:func:`train_loop` (the steps, log lines, checkpoints and callbacks).

Run folder layout::

    <train.out_dir>/config.yaml                  the validated configuration of the run
    <train.out_dir>/train_log.jsonl              one line of losses and speed every log_every steps
    <train.out_dir>/checkpoints/step_00001000.pt numbered checkpoints (the last keep_checkpoints kept)
    <train.out_dir>/checkpoints/latest.pt        the newest checkpoint
    <train.out_dir>/samples/step_00001000.png    input | reconstruction | translation | cycle grids
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from unit_core.checkpoint import CheckpointError, atomic_torch_save, link_or_copy_atomic, load_checkpoint, make_checkpoint
from unit_core.config import ModelConfig, UnitConfig
from unit_core.data import StepSampler, UnpairedSamples, fixed_samples, image_labels
from unit_core.layout import domain_folder, domain_images, run_paths
from unit_core.images import save_grid
from unit_core.scratch import atomic_write, remove_stale
from unit_core.trainer import UNITTrainer, Wrap, resolve_device, set_deterministic


#: Columns of the sample grids (UNITTrainer.sample_rows).
SAMPLE_HEADINGS = ("input", ("reconstruction", "recon."), ("translation", "transl."), "cycle")
#: Fewer training images than this in a domain draws a warning.
FEW_IMAGES = 20


class TrainingCallback(Protocol):
    def on_log(self, step: int, metrics: dict[str, float]) -> None: ...

    def on_checkpoint(self, step: int, checkpoint: Path, grid: Path) -> None: ...


class ReplicaCallback(Protocol):
    """Called on every rank at the same steps, so it may run collective operations.

    ``on_checkpoint`` comes after rank 0 has written the checkpoint and grid, whose paths
    it gets; other ranks get None.
    """

    def on_log(self, step: int, metrics: dict[str, float]) -> None: ...

    def on_checkpoint(self, step: int, trainer: UNITTrainer, checkpoint: Path | None, grid: Path | None) -> None: ...


@dataclass(frozen=True)
class DataParallel:
    """This process's place in a data-parallel run; the default is the single process.

    The runner initialises the ``torch.distributed`` process group before :func:`fit`.
    Every rank reads its interleaved share of the sample stream (``StepSampler``); rank 0
    alone writes the run folder and calls ``fit``'s callbacks.
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device | None = None  # None: train.device
    # Wraps gen and dis for gradient synchronisation, e.g. in DistributedDataParallel (see UNITTrainer).
    wrap: Wrap | None = None
    replica_callbacks: tuple[ReplicaCallback, ...] = ()

    @property
    def writes_files(self) -> bool:
        return self.rank == 0


@dataclass
class TrainingResult:
    out_dir: Path
    step: int
    checkpoint: Path
    grid: Path
    last_metrics: dict[str, float] = field(default_factory=dict)


def check_same_model(cfg: UnitConfig, checkpoint_config: dict, source: Path) -> None:
    """The architecture: model.*, and data.domains, which names the networks of an N-domain model."""
    # Keys a checkpoint predates take their defaults, as when its configuration is loaded.
    saved_model = {**ModelConfig().model_dump(mode="json"), **checkpoint_config.get("model", {})}
    saved = {f"model.{key}": value for key, value in saved_model.items()}
    saved["data.domains"] = checkpoint_config.get("data", {}).get("domains", [])
    current = {f"model.{key}": value for key, value in cfg.model.model_dump(mode="json").items()}
    current["data.domains"] = list(cfg.data.domains)
    differing = sorted(key for key in current if saved.get(key) != current[key])
    if differing:
        details = ", ".join(f"{key}: checkpoint {saved.get(key)!r} vs params {current[key]!r}" for key in differing)
        raise CheckpointError(f"{source}: the checkpoint's architecture differs from the configuration: {details}")


def _truncate_log(log: Path, after_step: int) -> None:
    """Drop log lines past the resumed step so the log reads as one continuous run.

    A line that is not a whole record (a crash while appending tears the last one) is
    dropped too, with a warning naming the file and line; the checkpoint, not the log, is
    what resume trusts.
    """
    if not log.exists():
        return
    kept, torn = [], []
    for number, line in enumerate(log.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            step = json.loads(line)["step"]
        except (json.JSONDecodeError, KeyError, TypeError):
            torn.append(number)
            continue
        if isinstance(step, int) and step <= after_step:
            kept.append(line)
    if torn:
        warnings.warn(f"{log}: dropped {len(torn)} torn line(s) (line {', '.join(map(str, torn))}), "
                      f"left by a crash while appending; resuming from the checkpoint at step {after_step}")
    atomic_write(log, "".join(line + "\n" for line in kept))


def _prune(checkpoint_dir: Path, keep: int) -> None:
    numbered = sorted(checkpoint_dir.glob("step_*.pt"))
    for old in numbered[:-keep]:
        old.unlink(missing_ok=True)


def save_training_state(trainer: UNITTrainer, paths: dict[str, Path], keep: int, fixed: dict[str, torch.Tensor]) -> tuple[Path, Path]:
    """Write the numbered checkpoint + latest.pt and the sample grid of the current step."""
    name = f"step_{trainer.step:08d}"
    payload = make_checkpoint(trainer.cfg.to_dict(), trainer.step, trainer.state_dict())
    checkpoint = atomic_torch_save(payload, paths["checkpoints"] / f"{name}.pt")
    link_or_copy_atomic(checkpoint, paths["latest"])
    _prune(paths["checkpoints"], keep)
    names = trainer.cfg.domains()
    if len(names) == 2:
        (a, name_a), (b, name_b) = names.items()
        headings = SAMPLE_HEADINGS
        labels = [f"{name_a} > {name_b}"] * len(fixed[a]) + [f"{name_b} > {name_a}"] * len(fixed[b])
    else:
        headings = ("input", *names.values())
        labels = [names[domain] for domain, images in fixed.items() for _ in range(len(images))]
    grid = save_grid(trainer.sample_rows(fixed), paths["samples"] / f"{name}.png", headings=headings, row_labels=labels)
    return checkpoint, grid


def _seed_latent_noise(seed: int, step: int, rank: int) -> None:
    """Give ranks > 0 their own latent-noise stream; otherwise every rank would draw rank 0's noise."""
    torch.manual_seed(int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0]))


def training_loader(cfg: UnitConfig, samples: UnpairedSamples, start_step: int, rank: int = 0, world_size: int = 1,
                    pin_memory: bool = False) -> DataLoader:
    """The batches of steps ``start_step..max_steps-1`` for one worker (rank) of ``world_size``."""
    return DataLoader(
        samples,
        batch_size=cfg.train.batch_size,
        sampler=StepSampler(start_step, cfg.train.max_steps, cfg.train.batch_size, rank, world_size),
        num_workers=cfg.data.loader_workers,
        # Its own generator: creating the iterator would otherwise draw from the global
        # RNG, whose state a resumed run has just restored for the latent noise.
        generator=torch.Generator().manual_seed(cfg.seed),
        pin_memory=pin_memory,
        persistent_workers=False,
    )


def fit(
    cfg: UnitConfig,
    resume: bool | str | Path = False,
    callbacks: tuple[TrainingCallback, ...] = (),
    progress: bool = True,
    parallel: DataParallel = DataParallel(),
) -> TrainingResult:
    """Train from scratch or from a checkpoint (``True``: the run's latest.pt), as one rank of ``parallel``.

    With several ranks, ``resume`` must name a checkpoint file every rank can read, and the
    returned paths are those rank 0 writes.
    """
    return train_loop(prepare_run(cfg, resume, parallel), callbacks, progress)


@dataclass
class PreparedRun:
    """What :func:`prepare_run` sets up for :func:`train_loop`: one rank's trainer and the batches of its steps left."""

    cfg: UnitConfig
    parallel: DataParallel
    paths: dict[str, Path]
    trainer: UNITTrainer
    loader: DataLoader
    with_labels: bool  # each batch ends with the class labels of the source domain's images
    fixed: dict[str, torch.Tensor] | None  # the sample grids' images per domain (the writing rank only)


def prepare_run(cfg: UnitConfig, resume: bool | str | Path = False, parallel: DataParallel = DataParallel()) -> PreparedRun:
    """Everything before the first step: device and determinism settings, the training images, the trainer
    (wrapped by ``parallel.wrap``, compiled with ``train.compile``), the checkpoint resumed from, the run
    folder (rank 0) and the loader of the steps left."""
    out_dir = Path(cfg.train.out_dir)
    paths = run_paths(out_dir)
    device = parallel.device or resolve_device(cfg.train.device)
    set_deterministic(cfg.train.deterministic)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    writer = parallel.writes_files

    data, domains, channels = cfg.data, cfg.domains(), cfg.channels()
    files = {slot: domain_images(data.root, name, "train") for slot, name in domains.items()}
    for slot, domain in domains.items():
        if writer and len(files[slot]) < FEW_IMAGES:
            warnings.warn(f"{domain_folder(data.root, domain, 'train')}: only {len(files[slot])} training image(s) in domain "
                          f"{domain!r}; a translation is learnt from hundreds or more (fewer than {FEW_IMAGES} is almost "
                          f"certainly a mistake in the data)")
    # Domain adaptation learns classes from the first (source) domain only; the target's labels are never read.
    first, first_name = next(iter(domains.items()))
    labels = image_labels(data.root, first_name, "train", files[first], cfg.model.num_classes) if cfg.model.num_classes else None
    fixed = {slot: fixed_samples(data.root, name, channels[slot], data, cfg.train.sample_count)
             for slot, name in domains.items()} if writer else None

    trainer = UNITTrainer(cfg, device, wrap=parallel.wrap)
    if resume:
        _resume(trainer, paths["latest"] if resume is True else Path(resume), paths["log"] if writer else None)
    elif writer and paths["latest"].exists():
        raise CheckpointError(
            f"{out_dir}: already holds a run (checkpoints/latest.pt); resume it with --resume "
            f"or choose another train.out_dir"
        )
    if parallel.rank:
        _seed_latent_noise(cfg.seed, trainer.step, parallel.rank)

    if writer:
        out_dir.mkdir(parents=True, exist_ok=True)
        for folder in (out_dir, paths["checkpoints"], paths["samples"]):
            remove_stale(folder)  # what a killed run was writing
        paths["config"].write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")

    samples = UnpairedSamples(list(files.values()), data, list(channels.values()), cfg.seed, labels)
    loader = training_loader(cfg, samples, trainer.step, parallel.rank, parallel.world_size, pin_memory=device.type == "cuda")
    return PreparedRun(cfg, parallel, paths, trainer, loader, labels is not None, fixed)


def _resume(trainer: UNITTrainer, source: Path, log: Path | None) -> None:
    """Load the checkpoint ``source`` (its architecture checked against the configuration) and cut ``log`` back to its step."""
    payload = load_checkpoint(source, map_location=trainer.device)
    check_same_model(trainer.cfg, payload["config"], source)
    trainer.load_state_dict(payload, source=source)
    if log is not None:
        _truncate_log(log, trainer.step)


def train_loop(run: PreparedRun, callbacks: tuple[TrainingCallback, ...] = (), progress: bool = True) -> TrainingResult:
    """The steps left: a training step each; every ``log_every`` steps a log line, every ``checkpoint_every`` a checkpoint.

    The writing rank (0) writes the log, checkpoints and grids and calls ``callbacks``;
    every rank calls ``parallel.replica_callbacks``.
    """
    cfg, parallel, paths, trainer = run.cfg, run.parallel, run.paths, run.trainer
    writer, count, train = parallel.writes_files, len(cfg.domains()), cfg.train
    first = next(iter(cfg.domains()))
    # Unchanged if no step is left to run (resuming a finished run).
    checkpoint, grid = paths["latest"], paths["samples"] / f"step_{trainer.step:08d}.png"
    metrics: dict[str, float] = {}
    window = LossWindow(train.batch_size * parallel.world_size, parallel.world_size)
    bar = tqdm(total=train.max_steps, initial=trainer.step, disable=not (progress and writer), unit="step", dynamic_ncols=True)
    with bar, (paths["log"].open("a", encoding="utf-8") if writer else contextlib.nullcontext()) as log:
        for batch in run.loader:  # an image batch per domain, then with labels those of the source domain's images
            window.add(trainer.train_step(batch[:count], batch[count] if run.with_labels else None))
            bar.update(1)
            step = trainer.step
            if step % train.log_every == 0 or step == train.max_steps:
                metrics = window.metrics(trainer.last_lr)
                if writer:
                    log.write(json.dumps({"step": step, **metrics}) + "\n")
                    log.flush()
                    bar.set_postfix(G=f"{metrics['gen/total']:.3f}", D=f"{metrics['dis/total']:.3f}",
                                    recon=f"{metrics[f'gen/recon_{first}']:.3f}", pairs_s=f"{metrics['pairs_per_sec']:.2f}")
                    for callback in callbacks:
                        callback.on_log(step, metrics)
                for replica_callback in parallel.replica_callbacks:
                    replica_callback.on_log(step, metrics)
                window = LossWindow(train.batch_size * parallel.world_size, parallel.world_size)  # timed from here
            if step % train.checkpoint_every == 0 or step == train.max_steps:
                if writer:
                    checkpoint, grid = save_training_state(trainer, paths, train.keep_checkpoints, run.fixed)
                    for callback in callbacks:
                        callback.on_checkpoint(step, checkpoint, grid)
                for replica_callback in parallel.replica_callbacks:
                    replica_callback.on_checkpoint(step, trainer, checkpoint if writer else None, grid if writer else None)
    return TrainingResult(out_dir=Path(cfg.train.out_dir), step=trainer.step, checkpoint=checkpoint, grid=grid,
                          last_metrics=metrics)


class LossWindow:
    """The losses of the steps since the last log line, summed on the device (no sync per step), and their time."""

    def __init__(self, pairs_per_step: int, world_size: int):
        self.pairs_per_step, self.world_size = pairs_per_step, world_size
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.start = time.perf_counter()

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        for name, value in losses.items():
            self.sums[name] = self.sums[name] + value if name in self.sums else value.clone()
        self.steps += 1

    def metrics(self, lr: float) -> dict[str, float]:
        """Each loss's mean over the window and all ranks, image pairs per second (all ranks) and ``lr``."""
        elapsed = time.perf_counter() - self.start
        metrics = _window_means(self.sums, self.steps, self.world_size)
        metrics["pairs_per_sec"] = self.steps * self.pairs_per_step / max(elapsed, 1e-9)
        metrics["lr"] = lr
        return metrics


def _window_means(sums: dict[str, torch.Tensor], window_steps: int, world_size: int) -> dict[str, float]:
    """Mean of each loss over the window and over all ranks (one device sync, one all-reduce)."""
    names = sorted(sums)
    totals = torch.stack([sums[name].float() for name in names])
    if world_size > 1:
        dist.all_reduce(totals)
    return {name: total / (window_steps * world_size) for name, total in zip(names, totals.tolist())}
