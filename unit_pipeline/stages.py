"""The pipeline's four stages as plain functions of one configuration.

The same functions run from ``unit stage <name> --preset P`` (and so from DVC) and as the
tasks of the Prefect flow ``unit``. Each returns a small JSON-able dict and is idempotent:
rerun with the same configuration it finds its output complete and returns it.

Where the outputs go, for a preset:

    ingest    data.root                           manifest.jsonl, report.json, <domain>/<split>/
    train     <train.out_dir>/                    config.yaml, checkpoints/, samples/, train_log.jsonl (+ .json)
    evaluate  <train.out_dir>/evaluation/         metrics.json, evaluation.json, report/
    register  <train.out_dir>/registration.json   the MLflow model version and champion decision

Stages record what they were run on (a hash of their settings and input files) beside
their output, and a rerun with the same record returns the recorded outcome with
``"reused": true``: a retried flow run or a repeated ``unit stage`` skips finished work.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from unit_core.checkpoint import CheckpointError, load_checkpoint
from unit_core.config import UnitConfig
from unit_core.layout import run_paths
from unit_core.scratch import atomic_write

STAGES = ("ingest", "train", "evaluate", "register")


class StageError(RuntimeError):
    """A stage cannot run or failed; the message says what to provide or fix."""


def run_folder(cfg: UnitConfig) -> Path:
    return Path(cfg.train.out_dir)


def evaluation_folder(cfg: UnitConfig) -> Path:
    return run_folder(cfg) / "evaluation"


def _stamp_key(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def _reuse(stamp: Path, inputs: dict[str, Any]) -> dict[str, Any] | None:
    """The outcome recorded by the last run of a stage if it had exactly these inputs."""
    try:
        recorded = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if recorded.get("key") != _stamp_key(inputs):
        return None
    return {**recorded["outcome"], "reused": True}


def _record(stamp: Path, inputs: dict[str, Any], outcome: dict[str, Any]) -> dict[str, Any]:
    atomic_write(stamp, json.dumps({"key": _stamp_key(inputs), "outcome": outcome}, indent=2, default=str) + "\n")
    return {**outcome, "reused": False}


def ingest(cfg: UnitConfig) -> dict[str, Any]:
    """``unit ingest <ingest.kind> --out <data.root>`` with the preset's typed ``ingest`` settings.

    Generated (demo) data sets are a pure function of their settings and are not redone;
    other sources are read again, and the ingestion itself skips unchanged files by hash.
    """
    from preprocessing.run import run_ingest
    from unit_core.evaluation import manifest_sha256

    stamp = Path(cfg.data.root) / ".stage-ingest.json"
    inputs = {"ingest": cfg.ingest.model_dump(mode="json"), "root": cfg.data.root}
    if cfg.ingest.kind.startswith("demo-") and (reused := _reuse(stamp, inputs)):
        return reused
    try:
        summary = run_ingest(cfg.ingest, cfg.data.root)
    except (ValueError, OSError) as exc:  # IngestError is a ValueError
        needs = f"\nThis preset needs: {cfg.ingest.requires}" if cfg.ingest.requires else ""
        raise StageError(f"preset {cfg.name}: ingest failed: {exc}{needs}") from None
    print(summary.describe())
    return _record(stamp, inputs, {"data_root": cfg.data.root, "manifest_sha256": manifest_sha256(cfg.data.root)})


def missing_ingest_inputs(cfg: UnitConfig) -> list[str]:
    """The local files and folders named in the ``ingest`` settings that do not exist here."""
    return cfg.ingest.missing_inputs()


@contextlib.contextmanager
def tracked_callbacks(cfg: UnitConfig, track: bool) -> Iterator[tuple]:
    """Training callbacks: an MLflow run's (checked reachable first) if ``track``, else none."""
    if not track:
        yield ()
        return
    from unit_tracking.mlflow_store import training_run

    with training_run(cfg) as callback:
        yield (callback,)


def _finished_checkpoint(cfg: UnitConfig) -> Path | None:
    """``latest.pt`` of the run folder if it is this configuration's run, trained to the end.

    A run folder holding another configuration's run is an error, not overwritten.
    """
    latest = run_paths(run_folder(cfg))["latest"]
    if not latest.exists():
        return None
    payload = load_checkpoint(latest)
    saved, current = payload["config"], cfg.to_dict()
    # What defines the model being trained; max_steps may grow (the run is then resumed).
    defining = {section: list(current[section]) for section in ("model", "loss", "optim", "data")}
    defining["train"] = ["batch_size", "precision"]
    differing = [f"{section}.{key}" for section, keys in defining.items() for key in keys
                 if saved.get(section, {}).get(key) != current[section][key]]
    if saved.get("seed") != current["seed"]:
        differing.append("seed")
    if differing:
        raise StageError(
            f"{run_folder(cfg)} holds a run with other settings ({', '.join(differing)}); "
            f"set another train.out_dir or remove that folder"
        )
    return latest if payload["step"] >= cfg.train.max_steps else None


def train(cfg: UnitConfig, track: bool = True, progress: bool = False, callbacks: tuple = ()) -> dict[str, Any]:
    """Train (Ray Train when ``distributed.workers > 1``), resuming an unfinished run of the same settings.

    ``callbacks``: more ``TrainingCallback`` objects (e.g. a progress reporter), beside MLflow's.
    """
    from unit_distributed import DistributedError
    from unit_distributed import train as run_training

    try:
        finished = _finished_checkpoint(cfg)
    except CheckpointError as exc:
        raise StageError(str(exc)) from None
    if finished is not None:
        return {"run_dir": str(run_folder(cfg)), "checkpoint": str(finished), "step": cfg.train.max_steps, "reused": True}
    resume = run_paths(run_folder(cfg))["latest"].exists()
    errors: tuple[type[Exception], ...] = (CheckpointError, FileNotFoundError, DistributedError)
    if track:
        from unit_tracking.mlflow_store import TrackingError

        errors += (TrackingError,)
    try:
        with tracked_callbacks(cfg, track) as tracking:
            result = run_training(cfg, resume=resume, callbacks=(*tracking, *callbacks), progress=progress)
    except errors as exc:
        raise StageError(f"preset {cfg.name}: training failed: {exc}") from None
    _write_plottable_log(run_folder(cfg))
    return {"run_dir": str(run_folder(cfg)), "checkpoint": str(result.checkpoint), "step": result.step, "reused": False}


def _write_plottable_log(run_dir: Path) -> None:
    """``train_log.json``: the JSON-lines log as one JSON list, the form DVC plots read."""
    lines = run_paths(run_dir)["log"].read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    (run_dir / "train_log.json").write_text(json.dumps(records) + "\n", encoding="utf-8")


def evaluate(cfg: UnitConfig, checkpoint: str | Path | None = None) -> dict[str, Any]:
    """Metrics of the run's model on ``data.root`` / ``evaluation.split``; writes metrics.json and the report."""
    from unit_core.adaptation import classifier_from_checkpoint
    from unit_core.evaluation import evaluate as run_evaluation
    from unit_core.evaluation import file_sha256, load_for_evaluation, manifest_sha256, training_scale

    checkpoint = Path(checkpoint) if checkpoint else run_paths(run_folder(cfg))["latest"]
    if not checkpoint.is_file():
        raise StageError(f"preset {cfg.name}: no trained model at {checkpoint}; run the train stage first")
    stamp = evaluation_folder(cfg) / ".stage-evaluate.json"
    inputs = {"evaluation": cfg.evaluation.model_dump(), "data": cfg.data.model_dump(),
              "checkpoint": file_sha256(checkpoint), "manifest": manifest_sha256(cfg.data.root)}
    if reused := _reuse(stamp, inputs):
        return reused
    try:
        translator, model_cfg = load_for_evaluation(checkpoint)
        result = run_evaluation(translator, cfg, evaluation_folder(cfg), scale=training_scale(model_cfg),
                                model_source=str(checkpoint),
                                classifier=classifier_from_checkpoint(  # domain adaptation only
                                    checkpoint, how=cfg.evaluation.adaptation_classifier))
    except (FileNotFoundError, ValueError) as exc:
        raise StageError(f"preset {cfg.name}: evaluation failed: {exc}") from None
    return _record(stamp, inputs, {"metrics_path": str(result.metrics_path), "metrics": result.metrics,
                                   "report": [str(path) for path in result.report], "notes": list(result.notes)})


def register(cfg: UnitConfig) -> dict[str, Any]:
    """Log the model and its metrics to MLflow, register a version, move ``champion`` if it is better."""
    from unit_core.evaluation import file_sha256
    from unit_tracking.mlflow_store import TrackingError, register_model, resolve_tracking_uri

    checkpoint = run_paths(run_folder(cfg))["latest"]
    metrics = evaluation_folder(cfg) / "metrics.json"
    for needed, stage in ((checkpoint, "train"), (metrics, "evaluate")):
        if not needed.is_file():
            raise StageError(f"preset {cfg.name}: {needed} is missing; run the {stage} stage first")
    stamp = run_folder(cfg) / "registration.json"
    inputs = {"tracking": cfg.tracking.model_dump(), "uri": resolve_tracking_uri(cfg.tracking.tracking_uri),
              "checkpoint": file_sha256(checkpoint), "metrics": file_sha256(metrics)}
    if reused := _reuse(stamp, inputs):  # registering the same model twice would add a duplicate version
        return reused
    try:
        registration = register_model(cfg, checkpoint, metrics, run_dir=run_folder(cfg))
    except (TrackingError, CheckpointError) as exc:
        raise StageError(f"preset {cfg.name}: registration failed: {exc}") from None
    return _record(stamp, inputs, registration.summary())


def run_stage(name: str, cfg: UnitConfig, track: bool = True) -> dict[str, Any]:
    if name == "ingest":
        return ingest(cfg)
    if name == "train":
        return train(cfg, track=track, progress=True)
    if name == "evaluate":
        return evaluate(cfg)
    if name == "register":
        return register(cfg)
    raise StageError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")

