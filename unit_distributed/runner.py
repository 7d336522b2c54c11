"""The driver side: start or join Ray, run the TorchTrainer, bring the final checkpoint home.

:func:`train` is what the command line and the flows call: ``distributed.workers == 1``
is the plain single-process :func:`unit_core.training.fit`, more workers go through
:func:`train_distributed`. Either way ``train.out_dir`` ends up holding the run's
config.yaml, train_log.jsonl, checkpoints/latest.pt and the last sample grid; a
distributed run also keeps its last ``train.keep_checkpoints`` checkpoints in
``distributed.storage_path``.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.fs
import yaml

from unit_core.checkpoint import CheckpointError, link_or_copy_atomic, load_checkpoint
from unit_core.config import DistributedConfig, UnitConfig
from unit_core.layout import domain_images
from unit_core.scratch import scratch_dir
from unit_core.layout import run_paths
from unit_core.training import TrainingCallback, TrainingResult, check_same_model, fit
from unit_distributed.errors import DistributedError
from unit_distributed.storage import (
    CHECKPOINT_FILE,
    GRID_FILE,
    INITIAL_CHECKPOINT_FILE,
    LOG_FILE,
    RunStorage,
    checkpoint_dir_name,
    run_storage,
)

if TYPE_CHECKING:
    from ray.train import Result

# Settings for a Ray instance this process starts itself (a cluster named by RAY_ADDRESS has its own).
LOCAL_RAY_ENVIRONMENT = {
    # Ray's single-machine mode (its default on macOS and Windows): the node's address is the
    # loopback address, so the GCS, raylet, workers and agents listen on it alone. Passing
    # ray.init(_node_ip_address="127.0.0.1") is not enough: Ray swaps a loopback address for
    # the machine's own, and its servers then listen on every interface.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    # Every connection to the instance must carry its token, even from this machine.
    "RAY_AUTH_MODE": "token",
    "RAY_USAGE_STATS_ENABLED": "0",
}
AUTH_TOKEN_SOURCES = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


@dataclass
class DistributedResult(TrainingResult):
    """A :class:`TrainingResult` whose files in ``out_dir`` are copies of the run's final checkpoint in storage."""

    storage_checkpoint: str = ""  # URI of the final checkpoint folder in storage
    started_from: str | None = None  # checkpoint the final attempt resumed from; None: it ran from step 0


def train(
    cfg: UnitConfig,
    resume: bool | str | Path = False,
    callbacks: tuple[TrainingCallback, ...] = (),
    progress: bool = True,
) -> TrainingResult:
    """Train as ``cfg.distributed`` says: one process without Ray, or a Ray Train run."""
    if cfg.distributed.workers == 1:
        return fit(cfg, resume=resume, callbacks=callbacks, progress=progress)
    return train_distributed(cfg, resume=resume, callbacks=callbacks, progress=progress)


def train_distributed(
    cfg: UnitConfig,
    resume: bool | str | Path = False,
    callbacks: tuple[TrainingCallback, ...] = (),
    progress: bool = True,
) -> DistributedResult:
    """Run UNIT training as a Ray Train ``TorchTrainer`` with ``distributed.workers`` DDP ranks.

    ``resume``: False starts a new run (its name must be free in storage); True continues
    the run of that name in storage from its latest checkpoint; a path or URI (a
    checkpoint file, or a checkpoint folder in storage) starts a new run from that
    checkpoint. ``callbacks`` run on rank 0 inside the workers, so they must be picklable.
    Ray is joined at ``RAY_ADDRESS`` if set, else started on this machine for the run.
    """
    cfg = _with_absolute_paths(cfg)
    storage = run_storage(cfg)
    out_paths = run_paths(Path(cfg.train.out_dir))
    if not resume and out_paths["latest"].exists():
        raise CheckpointError(f"{cfg.train.out_dir}: already holds a run (checkpoints/latest.pt); resume it with "
                              f"--resume or choose another train.out_dir")
    _check_run_folder(storage, resume)
    if _starts_local_ray():
        # The workers will run on this machine: a wrong data path fails here, not in every restarted worker.
        for domain in cfg.domains().values():
            domain_images(cfg.data.root, domain, "train")

    with _ray_for_run(cfg.distributed) as on_local_instance:
        initial = _initial_checkpoint(cfg, storage, resume)
        result = _run_trainer(cfg, storage, initial, callbacks, progress, on_local_instance)
    return _bring_home(cfg, storage, result)


def _with_absolute_paths(cfg: UnitConfig) -> UnitConfig:
    """Ray workers run in their own working folder: give them absolute data and output paths."""
    # abspath, not resolve(): an absolute path is meant for the workers' file system, keep it as written.
    data = cfg.data.model_copy(update={"root": os.path.abspath(cfg.data.root)})
    train = cfg.train.model_copy(update={"out_dir": os.path.abspath(cfg.train.out_dir)})
    return cfg.model_copy(update={"data": data, "train": train})


def _check_run_folder(storage: RunStorage, resume: bool | str | Path) -> None:
    try:
        exists = storage.exists(storage.run_path)
    except OSError as exc:
        raise DistributedError(f"storage {storage.uri(storage.root)}: cannot read: {exc}") from None
    where = storage.uri(storage.run_path)
    if resume is True and not exists:
        raise DistributedError(f"{where}: no run of that name to resume (distributed.run_name, or the name of "
                               f"train.out_dir, selects it)")
    if resume is not True and exists:
        raise DistributedError(f"{where}: already holds a run; continue it with --resume (no checkpoint argument) "
                               f"or choose another distributed.run_name")


def _starts_local_ray() -> bool:
    import ray

    return not ray.is_initialized() and not os.environ.get("RAY_ADDRESS")


@contextmanager
def _ray_for_run(settings: DistributedConfig) -> Iterator[bool]:
    """Ray for one run: the instance this process is already connected to, the cluster at
    RAY_ADDRESS (on that cluster's own network and authentication settings), or a local
    instance started for the run and stopped after it. Yields True for the last."""
    import ray

    if ray.is_initialized():
        yield False
    elif os.environ.get("RAY_ADDRESS"):
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init()
        yield False
    else:
        with local_ray_instance(settings):
            yield True


@contextmanager
def local_ray_instance(settings: DistributedConfig) -> Iterator[None]:
    """Ray on this machine for the duration of the block: loopback only, token authentication on.

    The token is ``RAY_AUTH_TOKEN`` or the file at ``RAY_AUTH_TOKEN_PATH`` if either is set,
    else a new random one that lives only in the environment of this process and of the Ray
    processes it starts.
    """
    import ray

    with _local_ray_settings():
        # address="local": a new instance even when another one runs on this machine (ray.init() would join that one).
        ray.init(address="local", object_store_memory=settings.object_store_memory_mb * 2**20, include_dashboard=False)
        try:
            _check_local_resources(settings)
            yield
        finally:
            ray.shutdown()


@contextmanager
def _local_ray_settings() -> Iterator[None]:
    """LOCAL_RAY_ENVIRONMENT for this process and the Ray processes it starts; all restored afterwards."""
    from ray._private import ray_constants
    from ray._raylet import AuthenticationTokenLoader, Config

    def reload_authentication() -> None:
        # Ray reads RAY_AUTH_MODE when imported and the token when first used. The mode first,
        # as in Ray's own tests: nothing then reloads a token it no longer needs.
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()

    environment = _local_ray_environment()
    saved_environment = {name: os.environ.get(name) for name in environment}
    # The Ray processes read the environment; this one read the single-machine switch when it imported Ray.
    saved_cluster_switch = ray_constants.ENABLE_RAY_CLUSTER
    os.environ.update(environment)
    ray_constants.ENABLE_RAY_CLUSTER = False
    reload_authentication()
    try:
        yield
    finally:
        for name, value in saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        ray_constants.ENABLE_RAY_CLUSTER = saved_cluster_switch
        reload_authentication()


def _local_ray_environment() -> dict[str, str]:
    mode = os.environ.get("RAY_AUTH_MODE", "token")
    if mode != "token":
        raise DistributedError(
            f"RAY_AUTH_MODE={mode}: a Ray instance started by unit train always uses token authentication; "
            f"unset RAY_AUTH_MODE, or set RAY_ADDRESS to join a cluster, which keeps its own settings"
        )
    environment = dict(LOCAL_RAY_ENVIRONMENT)
    # The DDP ranks' own connections (gloo's, and NCCL's bootstrap) on loopback too.
    loopback = _loopback_interface()
    environment.update(GLOO_SOCKET_IFNAME=loopback, NCCL_SOCKET_IFNAME=loopback)
    if not any(os.environ.get(name) for name in AUTH_TOKEN_SOURCES):
        # Not Ray's default, ~/.ray/auth_token: Ray creates it with the default umask, readable by other users.
        environment["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    return environment


def _loopback_interface() -> str:
    import psutil

    for name, addresses in psutil.net_if_addrs().items():
        if any(address.address == "127.0.0.1" for address in addresses):
            return name
    raise DistributedError("no network interface of this machine has the address 127.0.0.1: a local Ray instance "
                           "listens on it alone; set RAY_ADDRESS to a cluster instead")


def _check_local_resources(settings: DistributedConfig) -> None:
    """A local instance never grows: ask for more than it has and Ray would wait forever."""
    import ray

    available = ray.cluster_resources()
    wanted = {"CPU": settings.workers * settings.cpus_per_worker}
    if settings.use_gpu:
        wanted["GPU"] = settings.workers * settings.gpus_per_worker
    for resource, amount in wanted.items():
        if amount > available.get(resource, 0):
            raise DistributedError(
                f"distributed.workers={settings.workers} needs {amount:g} {resource}s but this machine's Ray has "
                f"{available.get(resource, 0):g}: lower distributed.workers or distributed.{resource.lower()}s_per_worker "
                f"(fractions are allowed), or set RAY_ADDRESS to a cluster"
            )


def _initial_checkpoint(cfg: UnitConfig, storage: RunStorage, resume: bool | str | Path) -> str | None:
    """Where the run's first attempt starts from, in storage (workers use it while Ray has no checkpoint)."""
    if isinstance(resume, (str, Path)):
        return _stage_initial_checkpoint(cfg, storage, resume)
    staged = f"{storage.run_path}/{INITIAL_CHECKPOINT_FILE}"
    # A resumed run that failed before its first checkpoint still starts from its initial checkpoint.
    return staged if resume and storage.exists(staged) else None


def _stage_initial_checkpoint(cfg: UnitConfig, storage: RunStorage, source: str | Path) -> str:
    """Check the checkpoint a new run starts from and copy it into the run folder, where every node can read it."""
    text = str(source)
    with scratch_dir(None, "unit-initial") as scratch:
        local = scratch / INITIAL_CHECKPOINT_FILE
        if "://" in text:
            if not text.startswith(storage.scheme):
                raise DistributedError(f"{text}: a checkpoint URI must be on the run's storage ({storage.scheme}...)")
            path = text[len(storage.scheme):]
            info = storage.filesystem.get_file_info(path)
            if info.type == pyarrow.fs.FileType.Directory:
                path = f"{path}/{CHECKPOINT_FILE}"
            try:
                pyarrow.fs.copy_files(path, str(local), source_filesystem=storage.filesystem)
            except OSError as exc:
                raise CheckpointError(f"{text}: cannot read the checkpoint: {exc}") from None
        else:
            given = Path(text)
            file = given / CHECKPOINT_FILE if given.is_dir() else given
            if not file.is_file():
                raise CheckpointError(f"{file}: no such checkpoint file")
            shutil.copyfile(file, local)
        payload = load_checkpoint(local)
        check_same_model(cfg, payload["config"], Path(text))
        staged = f"{storage.run_path}/{INITIAL_CHECKPOINT_FILE}"
        storage.filesystem.create_dir(storage.run_path)
        pyarrow.fs.copy_files(str(local), staged, destination_filesystem=storage.filesystem)
    return staged


def _run_trainer(cfg: UnitConfig, storage: RunStorage, initial: str | None,
                 callbacks: tuple[TrainingCallback, ...], progress: bool, on_local_instance: bool) -> Result:
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.train.v2._internal.constants import is_v2_enabled

    from unit_distributed.rendezvous import LoopbackTorchConfig
    from unit_distributed.worker import train_worker

    if not is_v2_enabled():
        raise DistributedError("RAY_TRAIN_V2_ENABLED=0: unit_distributed needs the Ray Train V2 API (unset it)")
    settings = cfg.distributed
    # Ray Train's rendezvous store listens on every interface: on a local instance, one on loopback instead.
    torch_config_class = LoopbackTorchConfig if on_local_instance else TorchConfig
    resources = {"CPU": settings.cpus_per_worker}
    if settings.use_gpu:
        resources["GPU"] = settings.gpus_per_worker
    storage_path, storage_filesystem = storage.ray_storage()
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={
            "unit_config": cfg.to_dict(),
            "storage": storage,
            "initial_checkpoint": initial,
            "callbacks": list(callbacks),
            "progress": progress,
        },
        torch_config=torch_config_class(backend="nccl" if settings.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=settings.workers,
            use_gpu=settings.use_gpu,
            resources_per_worker=resources,
            placement_strategy=settings.placement_strategy,
        ),
        run_config=ray.train.RunConfig(
            name=storage.run_name,
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=settings.max_failures),
            # Ray Train logs every report at INFO; rank 0 logs a one-line summary per log step instead.
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
    )
    try:
        return trainer.fit()
    except ray.train.TrainingFailedError as exc:
        raise DistributedError(
            f"run {storage.uri(storage.run_path)} failed (distributed.max_failures={settings.max_failures} restarts "
            f"allowed); continue it with --resume once the cause is fixed: {exc}"
        ) from exc


def _bring_home(cfg: UnitConfig, storage: RunStorage, result: Result) -> DistributedResult:
    """Copy the final checkpoint, grid and log from storage into train.out_dir (the single-process layout)."""
    if result.checkpoint is None:
        raise DistributedError(f"run {storage.uri(storage.run_path)} ended without a checkpoint")
    paths = run_paths(Path(cfg.train.out_dir))
    for folder in (paths["checkpoints"], paths["samples"]):
        folder.mkdir(parents=True, exist_ok=True)
    with scratch_dir(cfg.train.out_dir, "unit-final") as scratch:
        final = Path(result.checkpoint.to_directory(str(scratch)))
        step = int(load_checkpoint(final / CHECKPOINT_FILE)["step"])
        name = checkpoint_dir_name(step)
        checkpoint = paths["checkpoints"] / f"{name}.pt"
        grid = paths["samples"] / f"{name}.png"
        os.replace(final / CHECKPOINT_FILE, checkpoint)
        os.replace(final / GRID_FILE, grid)
        os.replace(final / LOG_FILE, paths["log"])
    link_or_copy_atomic(checkpoint, paths["latest"])
    paths["config"].write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
    returned = result.return_value or {}
    return DistributedResult(
        out_dir=Path(cfg.train.out_dir),
        step=step,
        checkpoint=paths["latest"],
        grid=grid,
        last_metrics={k: v for k, v in (result.metrics or {}).items() if k != "step"},
        storage_checkpoint=storage.uri(result.checkpoint.path),
        started_from=returned.get("started_from"),
    )
