"""The Prefect flow ``unit``: ingest -> train (Ray Train) -> evaluate -> register (MLflow).

Thin on purpose: each task calls one function of :mod:`unit_pipeline.stages`, the same
ones ``unit stage`` and DVC run. A stage whose output is complete for the same settings
returns at once, so a retried or repeated run skips the finished stages; stages that talk
to S3 or MLflow are retried on failure.

    prefect deployment run unit/street-scenes
    prefect deployment run unit/maps -p 'overrides=["train.max_steps=200"]'
"""

from __future__ import annotations

import base64
import io
import logging
import os
import time
from pathlib import Path
from typing import Any
from uuid import UUID

from PIL import Image
from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_image_artifact,
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.exceptions import MissingContextError

from unit_core.config import UnitConfig, config_from_dict, load_config
from unit_pipeline import stages

PARAMS_FILE = os.environ.get("UNIT_PARAMS", "params.yaml")  # relative to the working directory


def _config(config: dict[str, Any]) -> UnitConfig:
    return config_from_dict(config, source="flow parameters")


#: Share of the progress artifact reached when each stage is done (training fills its span step by step).
#: Width of the evaluation grid's copy inside the Prefect artifact.
THUMBNAIL_WIDTH = 480
PROGRESS = {"start": 0.0, "ingest": 10.0, "train": 90.0, "evaluate": 95.0, "register": 100.0}


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except MissingContextError:  # a Ray worker: outside the flow run, Ray forwards its output
        return logging.getLogger("unit.progress")


class PrefectProgress:
    """Training callback: a line per ``train.log_every`` in the flow run's log, and the progress artifact.

    Picklable (Ray Train runs callbacks on rank 0 inside a worker).
    """

    def __init__(self, max_steps: int, artifact_id: UUID | None):
        self.max_steps, self.artifact_id = max_steps, artifact_id
        self.first: tuple[int, float] | None = None

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = (step - 1, now - 1.0 / max(metrics.get("pairs_per_sec", 1.0), 1e-9))
        first_step, started = self.first
        seconds_per_step = (now - started) / max(step - first_step, 1)
        eta = (self.max_steps - step) * seconds_per_step
        line = (f"step {step}/{self.max_steps}: G {metrics['gen/total']:.3f}, D {metrics['dis/total']:.3f}, "
                f"recon {metrics['gen/recon_a']:.3f}/{metrics['gen/recon_b']:.3f}, "
                f"{metrics['pairs_per_sec']:.2f} pairs/s, ETA {eta / 60:.1f} min")
        _logger().info(line)
        if self.artifact_id is not None:
            span = PROGRESS["train"] - PROGRESS["ingest"]
            update_progress_artifact(self.artifact_id, PROGRESS["ingest"] + span * step / self.max_steps, description=line)

    def on_checkpoint(self, step: int, checkpoint: Path, grid: Path) -> None:
        """Checkpoints show in the log lines' step count; nothing more to report."""


def _advance(artifact_id: UUID | None, stage: str, description: str) -> None:
    _logger().info(description)
    if artifact_id is not None:
        update_progress_artifact(artifact_id, PROGRESS[stage], description=description)


@task(name="ingest", retries=2, retry_delay_seconds=10)
def ingest_task(config: dict[str, Any]) -> dict[str, Any]:
    return stages.ingest(_config(config))


@task(name="train", retries=1, retry_delay_seconds=10)
def train_task(config: dict[str, Any], data: dict[str, Any], progress_id: UUID | None = None) -> dict[str, Any]:
    # ``data`` (the ingested manifest's hash) is an input so the task graph shows the dependency.
    cfg = _config(config)
    get_run_logger().info("training on %s (manifest %s)", data["data_root"], data["manifest_sha256"])
    return stages.train(cfg, callbacks=(PrefectProgress(cfg.train.max_steps, progress_id),))


@task(name="evaluate", retries=1, retry_delay_seconds=5)
def evaluate_task(config: dict[str, Any], trained: dict[str, Any]) -> dict[str, Any]:
    return stages.evaluate(_config(config), trained["checkpoint"])


@task(name="register", retries=3, retry_delay_seconds=10)
def register_task(config: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
    registration = stages.register(_config(config))
    _publish(_config(config), registration, evaluation)
    return registration


def thumbnail_data_url(image_path: Path, width: int = THUMBNAIL_WIDTH) -> str:
    """A ``data:`` URL of the image scaled down to ``width`` pixels, as PNG."""
    with Image.open(image_path) as image:
        image = image.convert("RGB")
        if image.width > width:
            image = image.resize((width, max(1, round(image.height * width / image.width))), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _publish(cfg: UnitConfig, registration: dict[str, Any], evaluation: dict[str, Any]) -> None:
    """Prefect artifacts: the MLflow run, the evaluation grid and the metrics, linked from the flow run."""
    from unit_tracking.mlflow_store import resolve_tracking_uri

    uri = resolve_tracking_uri(cfg.tracking.tracking_uri)
    key = cfg.name.lower()
    if uri.startswith("http"):
        create_link_artifact(key=f"{key}-mlflow-run", link=f"{uri}/#/runs/{registration['run_id']}",
                             link_text=f"MLflow run of {registration['registered_model']} v{registration['version']}")
    grids = [Path(path) for path in evaluation["report"] if str(path).endswith(".png")]
    if grids:  # a2b.png of two-domain models, <first domain>.png of N-domain ones
        # A small copy inside the artifact itself: it shows whether or not the MLflow server is up.
        create_image_artifact(key=f"{key}-evaluation-grid", image_url=thumbnail_data_url(grids[0]),
                              description=f"{grids[0].name} (full size in the MLflow run, evaluation/report/)")
    rows = "\n".join(f"| {name} | {value:.4f} |" for name, value in sorted(evaluation["metrics"].items()))
    create_markdown_artifact(
        key=f"{key}-summary",
        markdown=(
            f"# {cfg.name}\n\nModel `{registration['model_uri']}`, registered as "
            f"**{registration['registered_model']} v{registration['version']}** "
            f"({'champion' if registration['champion'] else 'not champion'}: {registration['reason']}).\n\n"
            f"Evaluation grid: `{evaluation['report'][0] if evaluation['report'] else 'none'}`\n\n"
            f"| metric | value |\n|---|---|\n{rows}\n"
        ),
    )


@flow(name="unit", log_prints=True)
def unit(preset: str = "street-scenes", overrides: list[str] | None = None) -> dict[str, Any]:
    """Run the whole pipeline for ``preset`` (presets/<preset>.yaml over params.yaml), with optional overrides."""
    cfg = load_config(PARAMS_FILE, overrides or [], preset=preset)
    config = cfg.to_dict()
    progress_id = create_progress_artifact(PROGRESS["start"], key=f"{cfg.name.lower()}-progress",
                                           description=f"{cfg.name}: ingesting {cfg.data.root}")
    data = ingest_task(config)
    _advance(progress_id, "ingest", f"{cfg.name}: ingested {data['data_root']}; training {cfg.train.max_steps} steps")
    trained = train_task(config, data, progress_id)
    _advance(progress_id, "train", f"{cfg.name}: trained to step {trained['step']}; evaluating")
    evaluation = evaluate_task(config, trained)
    _advance(progress_id, "evaluate", f"{cfg.name}: evaluated; registering in MLflow")
    registration = register_task(config, evaluation)
    _advance(progress_id, "register", f"{cfg.name}: registered {registration['registered_model']} "
                                      f"v{registration['version']}")
    return {"data": data, "trained": trained, "metrics": evaluation["metrics"], "registration": registration}
