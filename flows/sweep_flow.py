"""The Prefect flow ``unit-sweep``: one sweep file's trials on Ray Tune, then its summary.

The same :func:`unit_pipeline.sweep.run_sweep` as ``unit sweep``. A run of a sweep whose
folder already holds it (a retried or interrupted flow run) continues it: finished trials
are kept, the others resume from their latest checkpoint.

    prefect deployment run unit-sweep/maps-ablation
    prefect deployment run unit-sweep/maps-ablation -p 'overrides=["train.max_steps=200"]'
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.unit_flow import PARAMS_FILE
from unit_pipeline.sweep import load_sweep, run_sweep, summary_table, sweep_started


@task(name="sweep")
def sweep_task(sweep_path: str, overrides: list[str], resume: bool) -> dict[str, Any]:
    sweep = load_sweep(sweep_path, PARAMS_FILE, overrides)
    started = sweep_started(sweep)
    get_run_logger().info("%s: %d trials (%s) in %s", sweep_path, len(sweep.trials),
                          "continuing" if started else "starting", sweep.folder)
    return run_sweep(sweep, resume=resume and started)


@flow(name="unit-sweep", log_prints=True)
def unit_sweep(sweep: str = "sweeps/maps-ablation.yaml", overrides: list[str] | None = None,
               resume: bool = True) -> dict[str, Any]:
    """Run the sweep file ``sweep`` (with ``overrides`` on every trial); ``resume``: continue it if it was started."""
    summary = sweep_task(sweep, overrides or [], resume)
    create_markdown_artifact(key=f"{summary['sweep'].lower()}-summary", markdown=summary_table(summary))
    return summary
