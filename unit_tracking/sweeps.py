"""MLflow runs of a sweep: one parent run per sweep, the trials' training runs nested under it.

* :func:`open_sweep_run` creates the parent run in the preset's experiment (or reopens
  the one recorded in ``<sweep folder>/mlflow_run.json``, so a resumed sweep keeps its
  parent), with the sweep's description as params and the sweep file as an artifact.
* A trial's run is an ordinary training run (:func:`unit_tracking.mlflow_store.training_run`)
  tagged ``mlflow.parentRunId``, which is what nests it in the MLflow UI;
  :func:`log_trial_evaluation` adds the trial's evaluation to it.
* :func:`close_sweep_run` logs the summary (metrics per setting, files as artifacts) and
  ends the parent run.
"""

from __future__ import annotations

import time
from pathlib import Path

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from unit_core.config import UnitConfig
from unit_tracking import TrackingError
from unit_tracking.mlflow_store import (
    _experiment_id,
    _write_run_record,
    check_tracking_reachable,
    git_commit,
    read_metrics,
    read_run_record,
)

PARENT_RUN_TAG = "mlflow.parentRunId"
SWEEP_TAG = "unit.sweep"
SETTING_TAG = "unit.sweep.setting"
SEED_TAG = "unit.sweep.seed"


def open_sweep_run(cfg: UnitConfig, folder: Path, sweep_name: str, params: dict[str, str], sweep_file: Path) -> str:
    """The sweep's parent run, RUNNING: the one recorded in ``folder`` if it is on this server, else a new one."""
    uri = check_tracking_reachable(cfg)
    client = MlflowClient(uri)
    recorded = read_run_record(folder, uri)
    if recorded is not None:
        try:
            if client.get_run(recorded).info.lifecycle_stage == "active":
                client.update_run(recorded, status="RUNNING")
                return recorded
        except MlflowException:
            pass  # gone, e.g. a store recreated at the same URI: a new parent below
    tags = {SWEEP_TAG: sweep_name}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    try:
        run = client.create_run(_experiment_id(client, cfg.tracking.experiment), run_name=f"sweep {sweep_name}", tags=tags)
    except MlflowException as exc:
        raise TrackingError(f"cannot create the parent run of sweep {sweep_name} on {uri}: {exc.message}") from None
    run_id = run.info.run_id
    client.log_batch(run_id, params=[Param(key, value) for key, value in params.items()])
    client.log_artifact(run_id, str(sweep_file))
    _write_run_record(folder, uri, run_id)
    return run_id


def trial_tags(parent_run_id: str, sweep_name: str, setting: str, seed: int) -> dict[str, str]:
    """Tags of a trial's training run: nested under the parent, with its setting and seed."""
    return {PARENT_RUN_TAG: parent_run_id, SWEEP_TAG: sweep_name, SETTING_TAG: setting, SEED_TAG: str(seed)}


def log_trial_evaluation(client: MlflowClient, run_id: str, evaluation_folder: Path, step: int) -> dict[str, float]:
    """The evaluation of a trial's model (metrics.json at the last step, the rest as artifacts) into its run."""
    metrics = read_metrics(evaluation_folder / "metrics.json")
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(key, value, now, step) for key, value in metrics.items()])
    client.log_artifacts(run_id, str(evaluation_folder), "evaluation")
    return metrics


def close_sweep_run(cfg: UnitConfig, run_id: str, metrics: dict[str, float], artifacts: list[Path], status: str) -> None:
    """Log the summary into the parent run and end it with ``status`` (FINISHED or FAILED)."""
    client = MlflowClient(check_tracking_reachable(cfg))
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(key, value, now, 0) for key, value in metrics.items()])
    for artifact in artifacts:
        client.log_artifact(run_id, str(artifact))
    client.set_terminated(run_id, status)
