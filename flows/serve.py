"""Serve the deployments of the flows ``unit`` (one per preset) and ``unit-sweep`` (one per sweep file).

    python -m flows.serve          # from the repository root, with PREFECT_API_URL set

Then ``prefect deployment run unit/<preset>`` or ``unit-sweep/<sweep>`` starts a run here.
infra/local/services.py starts this process with the local Prefect server; on a cluster,
run it (or a process work pool worker) wherever the training may start Ray jobs.
"""

from __future__ import annotations

from prefect import serve
from prefect.deployments.runner import RunnerDeployment

from flows.sweep_flow import unit_sweep
from flows.unit_flow import PARAMS_FILE, unit
from unit_core.config import load_config, preset_names
from unit_pipeline import stages
from unit_pipeline.sweep import load_sweep, sweep_file, sweep_names


def deployments() -> list[RunnerDeployment]:
    listed = []
    for name in preset_names(PARAMS_FILE):
        cfg = load_config(PARAMS_FILE, preset=name)  # a broken preset fails here, not at run time
        description = (f"UNIT pipeline for {name}: data in {cfg.data.root}, run in {cfg.train.out_dir}, "
                       f"registered as {cfg.tracking.registered_model}.")
        missing = stages.missing_ingest_inputs(cfg)
        if missing:
            description += (f" Its data is missing on this machine ({', '.join(missing)} not found when this "
                            f"deployment started); a run fails at ingest until it is there. Needs: {cfg.ingest.requires}")
        listed.append(unit.to_deployment(
            name=name,
            parameters={"preset": name},
            description=description,
            tags=["unit", cfg.ingest.kind],
        ))
    for name in sweep_names(PARAMS_FILE):
        path = sweep_file(PARAMS_FILE, name)
        sweep = load_sweep(path, PARAMS_FILE)  # a broken sweep file fails here, not at run time
        listed.append(unit_sweep.to_deployment(
            name=name,
            parameters={"sweep": str(path)},
            description=f"Sweep {name}: {len(sweep.spec.settings)} settings x {len(sweep.spec.seeds)} seeds of preset "
                        f"{sweep.spec.preset} on Ray Tune, in {sweep.folder}, summarised by {sweep.metric}",
            tags=["unit", "sweep"],
        ))
    return listed


if __name__ == "__main__":
    serve(*deployments())
