"""The Prefect flow ``unit``: ingest -> train (Ray Train) -> evaluate -> register (MLflow).

Thin on purpose: each task calls one function of :mod:`unit_pipeline.stages`, the same
ones ``unit stage`` and DVC run. A stage whose output is complete for the same settings
returns at once, so a retried or repeated run skips the finished stages; stages that talk
to S3 or MLflow are retried on failure.

    prefect deployment run unit/street-scenes
    prefect deployment run unit/maps -p 'overrides=["train.max_steps=200"]'
"""

from __future__ import annotations

import os
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_image_artifact, create_link_artifact, create_markdown_artifact

from unit_core.config import UnitConfig, config_from_dict, load_config
from unit_pipeline import stages

PARAMS_FILE = os.environ.get("UNIT_PARAMS", "params.yaml")  # relative to the working directory


def _config(config: dict[str, Any]) -> UnitConfig:
    return config_from_dict(config, source="flow parameters")


@task(name="ingest", retries=2, retry_delay_seconds=10)
def ingest_task(config: dict[str, Any]) -> dict[str, Any]:
    return stages.ingest(_config(config))


@task(name="train", retries=1, retry_delay_seconds=10)
def train_task(config: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    # ``data`` (the ingested manifest's hash) is an input so the task graph shows the dependency.
    get_run_logger().info("training on %s (manifest %s)", data["data_root"], data["manifest_sha256"])
    return stages.train(_config(config))


@task(name="evaluate", retries=1, retry_delay_seconds=5)
def evaluate_task(config: dict[str, Any], trained: dict[str, Any]) -> dict[str, Any]:
    return stages.evaluate(_config(config), trained["checkpoint"])


@task(name="register", retries=3, retry_delay_seconds=10)
def register_task(config: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
    registration = stages.register(_config(config))
    _publish(_config(config), registration, evaluation)
    return registration


def _publish(cfg: UnitConfig, registration: dict[str, Any], evaluation: dict[str, Any]) -> None:
    """Prefect artifacts: the MLflow run, the evaluation grid and the metrics, linked from the flow run."""
    from unit_tracking.mlflow_store import resolve_tracking_uri

    uri = resolve_tracking_uri(cfg.tracking.tracking_uri)
    key = cfg.name.lower()
    if uri.startswith("http"):
        create_link_artifact(key=f"{key}-mlflow-run", link=f"{uri}/#/runs/{registration['run_id']}",
                             link_text=f"MLflow run of {registration['registered_model']} v{registration['version']}")
        create_image_artifact(key=f"{key}-evaluation-grid",
                              image_url=f"{uri}/get-artifact?path=evaluation/report/a2b.png&run_uuid={registration['run_id']}")
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
    data = ingest_task(config)
    trained = train_task(config, data)
    evaluation = evaluate_task(config, trained)
    registration = register_task(config, evaluation)
    return {"data": data, "trained": trained, "metrics": evaluation["metrics"], "registration": registration}
