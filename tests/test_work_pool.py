"""prefect.yaml: the deployments on a process work pool, run by a real worker against a real Prefect server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from servers import BIN, prefect_server, stop
from test_pipeline import TINY
from unit_core.config import preset_names

REPO = Path(__file__).resolve().parents[1]
#: What a flow run on the worker needs of a checkout: the code, the settings, the head templates.
CHECKOUT = ("flows", "unit_core", "unit_pipeline", "unit_tracking", "unit_distributed", "preprocessing", "templates",
            "presets", "params.yaml", "prefect.yaml")


def test_prefect_yaml_has_one_pool_deployment_per_preset():
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))
    deployments = spec["deployments"]
    assert [d["name"] for d in deployments] == preset_names(REPO / "params.yaml")
    assert all(d["parameters"] == {"preset": d["name"]} and d["work_pool"]["name"] == "unit" for d in deployments)
    assert all(d["entrypoint"] == "flows/unit_flow.py:unit" for d in deployments)


@pytest.mark.slow
def test_a_run_submitted_to_the_pool_is_picked_up_by_a_worker_and_completes(tmp_path):
    work = tmp_path / "checkout"
    for name in CHECKOUT:
        source = REPO / name
        (shutil.copytree(source, work / name) if source.is_dir() else shutil.copy(source, work / name))
    checkout_env = {**os.environ, "UNIT_WORKDIR": str(work), "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
                    "OMP_NUM_THREADS": "1"}
    with prefect_server(tmp_path / "prefect", checkout_env) as env:

        def prefect(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
            return subprocess.run([str(BIN / "prefect"), *args], cwd=work, env=env, capture_output=True, text=True,
                                  timeout=timeout)

        created = prefect("work-pool", "create", "unit", "--type", "process")
        assert created.returncode == 0, created.stdout + created.stderr
        deployed = prefect("--no-prompt", "deploy", "--all", timeout=300)
        assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
        with (tmp_path / "worker.log").open("w") as log:
            worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "unit"], cwd=tmp_path,
                                      env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                parameter = f"overrides={json.dumps(TINY)}"
                ran = prefect("deployment", "run", "unit/street-scenes", "--watch", "--watch-timeout", "500",
                              "-p", parameter, timeout=600)
            finally:
                stop(worker)
        worker_log = (tmp_path / "worker.log").read_text()
        assert ran.returncode == 0, ran.stdout[-3000:] + worker_log[-3000:]
        assert (work / "runs" / "street-scenes" / "checkpoints" / "latest.pt").is_file()  # trained in the checkout
        assert "street-scenes" in worker_log  # the worker, not a served runner, ran it
