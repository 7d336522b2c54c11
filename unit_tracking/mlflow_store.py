"""All MLflow calls of the pipeline: tracking runs, the training callback, model registry.

* :func:`check_tracking_reachable` first, so an unreachable server fails a command before
  it trains for hours, with a short timeout and an error naming the URI.
* :func:`training_run` opens a run in the preset's experiment (``tracking.experiment``)
  with the whole configuration as params, provenance (git commit, data manifest hash,
  ``dvc.lock``) and a :class:`MlflowTrainingCallback` for ``unit_core.training.fit``. The run
  id is kept in ``<train.out_dir>/mlflow_run.json`` so that registering that run later
  adds the evaluation and the model to the same run.
* :func:`register_model` logs evaluation metrics, the report and the model (an MLflow
  pyfunc, see unit_tracking.pyfunc_model), registers a version of
  ``tracking.registered_model`` tagged with its metrics and data hashes, and moves the
  ``champion`` alias to it only when it beats the current champion on
  ``tracking.primary_metric``.
* :func:`downloaded_checkpoint` fetches the weights behind ``models:/NAME@ALIAS`` for
  ``unit translate --model`` and ``unit evaluate --model``, without running any code from
  the registry.

Tracking URI: ``tracking.tracking_uri``; empty means ``MLFLOW_TRACKING_URI``, else MLflow's
default (``sqlite:///mlflow.db`` in the working folder, or ``./mlruns`` where that holds runs).
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.async_logging.run_operations import RunOperations
from PIL import Image

import unit_core
import unit_tracking
from unit_core.checkpoint import (atomic_torch_save, inference_weights, load_checkpoint, make_checkpoint, restore_weights,
                                   stored_config)
from unit_core.config import UnitConfig
from unit_core.evaluation import PAIRS_TABLE, manifest_sha256
from unit_core.layout import run_paths
from unit_core.networks import UNITGenerator
from unit_core.scratch import atomic_write
from unit_tracking import TrackingError, pyfunc_model

CHAMPION = "champion"
RUN_RECORD = "mlflow_run.json"
MODEL_NAME = "model"
# Not imported: it registers the model object with MLflow when run, which MLflow does when logging and loading.
MODEL_CODE = Path(unit_tracking.__file__).parent / "model_code.py"
REACHABILITY_TIMEOUT_S = 5.0
METRIC_TAG_PREFIX = "metric."
DATA_TAG = "unit.data_manifest_sha256"
EVAL_DATA_TAG = "unit.eval_data_manifest_sha256"
EVAL_SETTINGS_TAG = "unit.evaluation_settings"
#: The entries of evaluation.json that change what a metric means; versions compare only when these agree.
METRIC_DEFINING_SETTINGS = ("split", "scale", "pixel_tolerance")
DEFAULT_DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


# --------------------------------------------------------------------- connection
def resolve_tracking_uri(configured: str) -> str:
    """``configured`` if set, else MLflow's own resolution (MLFLOW_TRACKING_URI, then its local default)."""
    if configured:
        mlflow.set_tracking_uri(configured)
    return mlflow.get_tracking_uri()


def _local_store_folder(uri: str) -> Path | None:
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "sqlite":
        # sqlite:///relative.db and sqlite:////absolute.db
        database = uri[len("sqlite:///"):]
        return Path(database).parent if database and database != ":memory:" else None
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme == "":  # a plain folder path
        return Path(uri)
    return None


def check_uri_reachable(uri: str, timeout_s: float = REACHABILITY_TIMEOUT_S) -> None:
    """Fail fast, with :class:`TrackingError` naming ``uri``, when the tracking store cannot be reached.

    HTTP(S): GET ``<uri>/health`` answered below 500 within ``timeout_s``. Databases with a
    host: a TCP connection to it. Local stores (sqlite file, folder): their folder exists or
    can be created. Other schemes (e.g. databricks) are left to MLflow.
    """
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("http", "https"):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s):
                return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return  # it answered (e.g. auth or a proxy without /health): reachable
            raise TrackingError(f"MLflow tracking server {uri} is unhealthy: {url} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({reason}); start it, or set tracking.tracking_uri "
                f"/ MLFLOW_TRACKING_URI to a reachable one"
            ) from None
    folder = _local_store_folder(uri)
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(f"MLflow tracking store {uri}: cannot create its folder {folder}: {exc.strerror or exc}") from None
        return
    database = parsed.scheme.split("+")[0]
    if parsed.hostname and database in DEFAULT_DB_PORTS:
        try:
            with socket.create_connection((parsed.hostname, parsed.port or DEFAULT_DB_PORTS[database]), timeout=timeout_s):
                return
        except OSError as exc:
            raise TrackingError(f"MLflow tracking database {uri} is unreachable: {exc}") from None


def check_tracking_reachable(cfg: UnitConfig, timeout_s: float = REACHABILITY_TIMEOUT_S) -> str:
    """Resolve the tracking URI of ``cfg``, check it answers, and make it MLflow's current URI."""
    uri = resolve_tracking_uri(cfg.tracking.tracking_uri)
    check_uri_reachable(uri, timeout_s)
    return uri


def _experiment_id(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name)
    if experiment.lifecycle_stage == "deleted":
        raise TrackingError(f"experiment {name!r} is deleted on {mlflow.get_tracking_uri()}; restore it or choose another tracking.experiment")
    return experiment.experiment_id


# --------------------------------------------------------------------- provenance
def git_commit(folder: Path | None = None) -> str | None:
    """HEAD of the git work tree holding ``folder`` (default: the working folder), None outside one."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def provenance(cfg: UnitConfig) -> dict[str, str | None]:
    return {
        "git_commit": git_commit(),
        "data_root": cfg.data.root,
        "data_manifest_sha256": manifest_sha256(cfg.data.root),
        "dvc_lock": str(Path("dvc.lock").resolve()) if Path("dvc.lock").is_file() else None,
    }


def _provenance_tags(origin: dict[str, str | None]) -> dict[str, str]:
    tags = {}
    if origin["git_commit"]:
        tags["mlflow.source.git.commit"] = origin["git_commit"]
    if origin["data_manifest_sha256"]:
        tags[DATA_TAG] = origin["data_manifest_sha256"]
    return tags


def _log_run_inputs(client: MlflowClient, run_id: str, cfg: UnitConfig, origin: dict[str, str | None]) -> None:
    """Params (the flattened configuration), config.yaml, provenance.json and dvc.lock of a new run."""
    # log_batch splits what exceeds one request (100 params, 1,000 metrics) into several itself.
    client.log_batch(run_id, params=[Param(key, str(value)) for key, value in cfg.flat().items()])
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "config.yaml"
        config.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
        client.log_artifact(run_id, str(config))
    client.log_dict(run_id, origin, "provenance.json")
    if origin["dvc_lock"]:
        client.log_artifact(run_id, origin["dvc_lock"])


def _new_run(client: MlflowClient, cfg: UnitConfig, run_name: str, extra_tags: dict[str, str]) -> str:
    origin = provenance(cfg)
    tags = {**_provenance_tags(origin), **extra_tags}
    run = client.create_run(_experiment_id(client, cfg.tracking.experiment), run_name=run_name, tags=tags)
    _log_run_inputs(client, run.info.run_id, cfg, origin)
    return run.info.run_id


def read_run_record(out_dir: Path, tracking_uri: str) -> str | None:
    """The run id kept in ``<out_dir>/mlflow_run.json`` if it is of this tracking URI, else None."""
    record = out_dir / RUN_RECORD
    if not record.is_file():
        return None
    try:
        saved = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TrackingError(f"{record}: unreadable run record: {exc}") from None
    if not isinstance(saved, dict) or saved.get("tracking_uri") != tracking_uri:
        return None
    return saved.get("run_id")


def _write_run_record(out_dir: Path, tracking_uri: str, run_id: str) -> None:
    atomic_write(out_dir / RUN_RECORD, json.dumps({"tracking_uri": tracking_uri, "run_id": run_id}) + "\n")


# ----------------------------------------------------------------------- training
#: Key of the sample grids logged as stepped images.
SAMPLES_IMAGE_KEY = "samples"


class MlflowTrainingCallback:
    """``TrainingCallback`` logging every loss term, pairs/s and lr with their step, and the sample grids
    (as files under ``samples/`` and as the stepped image ``samples``).

    fit() calls it only every ``train.log_every`` steps with plain floats it has already
    synchronised; metrics are queued with MLflow's asynchronous logging, so the training
    loop does not wait for the server (:meth:`flush` waits at the end). Grids are uploaded
    at checkpoints.
    """

    def __init__(self, client: MlflowClient, run_id: str):
        self.client = client
        self.run_id = run_id
        self._pending: list[RunOperations] = []

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        entries = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        self._pending.append(self.client.log_batch(self.run_id, metrics=entries, synchronous=False))

    def on_checkpoint(self, step: int, checkpoint: Path, grid: Path) -> None:
        self.client.log_artifact(self.run_id, str(grid), "samples")
        # Also as a stepped image: the run page's Images view shows it by step beside the metrics.
        with Image.open(grid) as image:
            self.client.log_image(self.run_id, image.convert("RGB"), key=SAMPLES_IMAGE_KEY, step=step)

    def flush(self) -> None:
        """Wait until every queued metric has reached the tracking store."""
        for operation in self._pending:
            operation.wait()
        self._pending.clear()


@contextmanager
def training_run(cfg: UnitConfig, run_name: str | None = None,
                 tags: dict[str, str] | None = None) -> Iterator[MlflowTrainingCallback]:
    """A tracked training: yields the callback to pass to fit(); ends the run FINISHED or FAILED.

    ``tags``: more tags of the new run (a sweep's trial: ``mlflow.parentRunId``).

    A resumed training (``<train.out_dir>/mlflow_run.json`` present) opens a new run tagged
    ``unit.resumed_from_run``: params never change within an MLflow run, and a resume may
    change some (e.g. ``train.max_steps``). Steps continue, so the curves join up.
    """
    uri = check_tracking_reachable(cfg)
    client = MlflowClient(uri)
    out_dir = Path(cfg.train.out_dir)
    previous = read_run_record(out_dir, uri)
    extra = {"unit.resumed_from_run": previous} if previous else {}
    run_id = _new_run(client, cfg, run_name or out_dir.name, {**extra, **(tags or {})})
    _write_run_record(out_dir, uri, run_id)
    callback = MlflowTrainingCallback(client, run_id)
    status = "FAILED"
    try:
        yield callback
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        callback.flush()
        client.set_terminated(run_id, status)


def replay_training_log(client: MlflowClient, run_id: str, log: Path) -> None:
    """Log the lines of a run's ``train_log.jsonl`` as stepped metrics (for runs trained untracked)."""
    entries: list[Metric] = []
    now = int(time.time() * 1000)
    for number, line in enumerate(log.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step = int(record.pop("step"))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise TrackingError(f"{log}: line {number}: not a training log record: {exc}") from None
        entries += [Metric(key, float(value), now, step) for key, value in record.items() if isinstance(value, (int, float))]
    client.log_batch(run_id, metrics=entries)


def log_finished_run(cfg: UnitConfig, run_name: str, curves: dict[str, list[tuple[int, float]]],
                     metrics: dict[str, float], artifacts: tuple[Path, ...] = ()) -> str:
    """Record a training that ran untracked (e.g. a benchmark): params, its train_log.jsonl, stepped curves, metrics.

    ``curves``: metric name -> (step, value) points, logged as stepped metrics beside the
    loss curves; ``metrics``: final values, logged at the run's last step. Returns the run id.
    """
    uri = check_tracking_reachable(cfg)
    client = MlflowClient(uri)
    out_dir = Path(cfg.train.out_dir)
    run_id = _new_run(client, cfg, run_name, {})
    status = "FAILED"
    try:
        log = run_paths(out_dir)["log"]
        if log.is_file():
            replay_training_log(client, run_id, log)
        now = int(time.time() * 1000)
        points = [Metric(name, float(value), now, step) for name, curve in curves.items() for step, value in curve]
        last_step = max((step for curve in curves.values() for step, _ in curve), default=0)
        points += [Metric(name, float(value), now, last_step) for name, value in metrics.items()]
        client.log_batch(run_id, metrics=points)
        for artifact in artifacts:
            client.log_artifact(run_id, str(artifact))
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status)
    return run_id


# ----------------------------------------------------------------------- registry
@dataclass
class Registration:
    run_id: str
    model_uri: str
    registered_model: str
    version: str
    champion: bool
    champion_version: str
    reason: str

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def read_metrics(path: Path) -> dict[str, float]:
    """A ``metrics.json`` of ``unit evaluate``: a flat JSON object of finite numbers."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TrackingError(f"{path}: cannot read metrics: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise TrackingError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(loaded, dict) or not loaded:
        raise TrackingError(f"{path}: expected a non-empty JSON object of metric name -> number")
    for key, value in loaded.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TrackingError(f"{path}: metric {key!r} is {value!r}, not a finite number")
    return {key: float(value) for key, value in loaded.items()}


def _measured_differently(champion: dict[str, str], candidate: dict[str, str]) -> str:
    """What makes two versions' metrics incomparable ('' when they were measured alike)."""
    if EVAL_SETTINGS_TAG not in champion:
        return "it records no evaluation settings (registered before they were recorded)"
    theirs, ours = json.loads(champion[EVAL_SETTINGS_TAG]), json.loads(candidate[EVAL_SETTINGS_TAG])
    # A setting one side did not record (metrics.json without its evaluation.json) is not held against it.
    differing = [f"{key} {theirs[key]!r} vs {ours[key]!r}" for key in sorted(set(theirs) & set(ours))
                 if None not in (theirs[key], ours[key]) and theirs[key] != ours[key]]
    if differing:
        return "evaluated with other settings (champion vs this version: " + ", ".join(differing) + ")"
    if None not in (champion.get(EVAL_DATA_TAG), candidate.get(EVAL_DATA_TAG)) and champion[EVAL_DATA_TAG] != candidate[EVAL_DATA_TAG]:
        return "evaluated on other test data (the test manifests' sha256 differ)"
    return ""


def is_better(candidate: float, incumbent: float, higher_is_better: bool) -> bool:
    """Strictly better: a tie keeps the current champion."""
    return candidate > incumbent if higher_is_better else candidate < incumbent


def _champion_decision(client: MlflowClient, name: str, value: float, cfg: UnitConfig,
                       tags: dict[str, str]) -> tuple[bool, str]:
    """Whether a new version scoring ``value`` on the primary metric takes the alias, and why.

    Only numbers measured alike are compared: the champion must have been evaluated with
    the same metric-defining settings and on the same test data (manifest hash) as the new
    version (``tags``), otherwise the alias stays and the reason says what differs.
    Read-then-set is not atomic: registrations of one model must not run concurrently.
    """
    metric = cfg.tracking.primary_metric
    current = client.get_registered_model(name).aliases.get(CHAMPION)
    if current is None:
        return True, f"first champion of {name} ({metric} = {value:g})"
    champion_tags = client.get_model_version(name, current).tags
    unlike = _measured_differently(champion_tags, tags)
    if unlike:
        return False, (f"not compared with champion v{current}: {unlike}; evaluate the champion as this version was "
                       f"(unit evaluate --model models:/{name}@{CHAMPION} ...) and register that, or evaluate this one "
                       f"as the champion was")
    incumbent_tag = champion_tags.get(METRIC_TAG_PREFIX + metric)
    try:
        incumbent = float(incumbent_tag)
    except (TypeError, ValueError):
        return True, f"champion v{current} has no {metric} to compare with (tag {METRIC_TAG_PREFIX + metric} is {incumbent_tag!r})"
    comparison = "higher" if cfg.tracking.higher_is_better else "lower"
    if is_better(value, incumbent, cfg.tracking.higher_is_better):
        return True, f"{metric} {value:g} beats champion v{current} ({incumbent:g}; {comparison} is better)"
    return False, f"{metric} {value:g} does not beat champion v{current} ({incumbent:g}; {comparison} is better)"


def _inference_checkpoint(payload: dict[str, Any], folder: Path) -> Path:
    """The generator of a training checkpoint alone: what translation needs, a fraction of the size."""
    state = {"networks": {"gen": payload["networks"][inference_weights(payload, "gen")]}}
    return atomic_torch_save(make_checkpoint(payload["config"], payload["step"], state), folder / "generator.pt")


def log_translator_model(checkpoint_payload: dict[str, Any]) -> str:
    """Log the translator pyfunc into the active run; returns its model URI."""
    with tempfile.TemporaryDirectory() as folder:
        weights = _inference_checkpoint(checkpoint_payload, Path(folder))
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=str(MODEL_CODE),
            artifacts={pyfunc_model.CHECKPOINT_ARTIFACT: str(weights)},
            # The packages themselves travel with the model: a serving environment needs only pip_requirements.
            code_paths=[str(Path(unit_core.__file__).parent), str(Path(unit_tracking.__file__).parent)],
            signature=pyfunc_model.model_signature(),
            input_example=pyfunc_model.input_example(list(stored_config(checkpoint_payload, "checkpoint").domains().values())),
            pip_requirements=pyfunc_model.pip_requirements(),
        )
    return info.model_uri


def _open_run_for_registration(client: MlflowClient, cfg: UnitConfig, uri: str, run_dir: Path | None, run_name: str) -> str:
    """The training run of ``run_dir`` if it was tracked on this server; else a new run filled from the folder."""
    if run_dir is not None:
        recorded = read_run_record(run_dir, uri)
        if recorded is not None:
            try:
                if client.get_run(recorded).info.lifecycle_stage == "active":
                    return recorded
            except MlflowException:
                pass  # gone, e.g. a store recreated at the same URI: start afresh below
    run_id = _new_run(client, cfg, run_name, {})
    if run_dir is not None:
        log, samples = run_paths(run_dir)["log"], run_paths(run_dir)["samples"]
        if log.is_file():
            replay_training_log(client, run_id, log)
        if samples.is_dir():
            client.log_artifacts(run_id, str(samples), "samples")
    return run_id


def register_model(
    cfg: UnitConfig,
    checkpoint: str | Path,
    metrics_path: str | Path,
    run_dir: str | Path | None = None,
    run_name: str | None = None,
) -> Registration:
    """Log the evaluation and the model, register a version, and maybe make it the champion.

    ``cfg`` supplies the tracking and evaluation settings (the preset); the model's own
    configuration comes from the checkpoint. Files beside ``metrics_path`` written by
    ``unit evaluate`` (``evaluation.json``, ``pairs.md``, ``report/``) are logged too.
    """
    uri = check_tracking_reachable(cfg)
    checkpoint, metrics_path = Path(checkpoint), Path(metrics_path)
    run_dir = Path(run_dir) if run_dir is not None else None
    metrics = read_metrics(metrics_path)
    primary = cfg.tracking.primary_metric
    if primary not in metrics:
        raise TrackingError(
            f"{metrics_path}: no {primary!r} (tracking.primary_metric) to rank the model by; it has "
            f"{', '.join(sorted(metrics))}"
        )
    evaluation_info = metrics_path.parent / "evaluation.json"
    record: dict[str, Any] = {"split": cfg.evaluation.split, "pixel_tolerance": cfg.evaluation.pixel_tolerance}
    if evaluation_info.is_file():
        try:
            record = json.loads(evaluation_info.read_text(encoding="utf-8"))
            if not isinstance(record, dict):
                raise TypeError("not a JSON object")
        except (OSError, json.JSONDecodeError, TypeError) as exc:
            raise TrackingError(f"{evaluation_info}: unreadable evaluation record: {exc}") from None
    eval_data_hash = record.get("data_manifest_sha256")
    eval_settings = json.dumps({key: record.get(key) for key in METRIC_DEFINING_SETTINGS}, sort_keys=True)
    payload = load_checkpoint(checkpoint, map_location="cpu")
    stored = stored_config(payload, checkpoint)
    # What the logged model will load.
    restore_weights(UNITGenerator(stored.model, stored.channels()), payload, inference_weights(payload, "gen"), checkpoint)
    # What trained the model, with the preset's evaluation and tracking settings it is judged by.
    model_cfg = stored.model_copy(update={"evaluation": cfg.evaluation, "tracking": cfg.tracking})
    client = MlflowClient(uri)
    name = cfg.tracking.registered_model
    default_name = run_dir.name if run_dir is not None else checkpoint.stem
    run_id = _open_run_for_registration(client, model_cfg, uri, run_dir, run_name or default_name)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(metrics, step=int(payload["step"]))
        mlflow.log_artifact(str(metrics_path), "evaluation")
        if evaluation_info.is_file():
            mlflow.log_artifact(str(evaluation_info), "evaluation")
        pairs = metrics_path.parent / PAIRS_TABLE  # N-domain models: the per-pair tables
        if pairs.is_file():
            mlflow.log_artifact(str(pairs), "evaluation")
        report = metrics_path.parent / "report"
        if report.is_dir():
            mlflow.log_artifacts(str(report), "evaluation/report")
        model_uri = log_translator_model(payload)

    tags = {METRIC_TAG_PREFIX + key: repr(value) for key, value in metrics.items()}
    tags["unit.primary_metric"] = primary
    train_data_hash = manifest_sha256(stored.data.root)
    if train_data_hash:
        tags[DATA_TAG] = train_data_hash
    if eval_data_hash:
        tags[EVAL_DATA_TAG] = eval_data_hash
    tags[EVAL_SETTINGS_TAG] = eval_settings
    try:
        version = mlflow.register_model(model_uri, name, tags=tags).version
    except MlflowException as exc:
        raise TrackingError(f"registering {model_uri} as {name!r} on {uri} failed: {exc.message}") from None
    promote, reason = _champion_decision(client, name, metrics[primary], cfg, tags)
    if promote:
        client.set_registered_model_alias(name, CHAMPION, str(version))
    champion = client.get_registered_model(name).aliases.get(CHAMPION, "")
    return Registration(run_id, model_uri, name, str(version), promote, str(champion), reason)


# ------------------------------------------------------------------------ loading
@contextmanager
def downloaded_checkpoint(model_uri: str, tracking_uri: str = "") -> Iterator[Path]:
    """The generator checkpoint of a logged translator (``models:/NAME@ALIAS``, ``runs:/...``), in a temporary folder.

    Only the weights are read (by the caller, through load_checkpoint); the model's code is
    not run, so this is safe on models from a registry one does not fully trust.
    """
    uri = resolve_tracking_uri(tracking_uri)
    check_uri_reachable(uri)
    with tempfile.TemporaryDirectory(prefix="unit-model-") as folder:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=folder))
        except MlflowException as exc:
            raise TrackingError(f"{model_uri}: cannot fetch from {uri}: {exc.message}") from None
        try:
            description = yaml.safe_load((local / "MLmodel").read_text(encoding="utf-8"))
            relative = description["flavors"]["python_function"]["artifacts"][pyfunc_model.CHECKPOINT_ARTIFACT]["path"]
        except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
            raise TrackingError(f"{model_uri}: not a UNIT translator model (no checkpoint artifact in MLmodel: {exc})") from None
        yield local / relative
