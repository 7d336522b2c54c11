"""Serve the deployments of the flow ``unit``, one per preset, from this long-running process.

    python -m flows.serve          # from the repository root, with PREFECT_API_URL set

Then ``prefect deployment run unit/<preset>`` starts a run here. infra/local/services.py
starts this process with the local Prefect server; on a cluster, run it (or a process
work pool worker) wherever the training may start Ray jobs.
"""

from __future__ import annotations

from prefect import serve
from prefect.deployments.runner import RunnerDeployment

from flows.unit_flow import PARAMS_FILE, unit
from unit_core.config import load_config, preset_names


def deployments() -> list[RunnerDeployment]:
    listed = []
    for name in preset_names(PARAMS_FILE):
        cfg = load_config(PARAMS_FILE, preset=name)  # a broken preset fails here, not at run time
        listed.append(unit.to_deployment(
            name=name,
            parameters={"preset": name},
            description=f"UNIT pipeline for {name}: data in {cfg.data.root}, run in {cfg.train.out_dir}, "
                        f"registered as {cfg.tracking.registered_model}",
            tags=["unit", cfg.ingest.kind],
        ))
    return listed


if __name__ == "__main__":
    serve(*deployments())
