"""prefect.yaml: the deployments on a process work pool, run by a real worker against a real Prefect server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.test_pipeline import TINY, free_port
from unit_core.config import preset_names

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
#: What a flow run on the worker needs of a checkout: the code, the settings, the head templates.
CHECKOUT = ("flows", "unit_core", "unit_pipeline", "unit_tracking", "unit_distributed", "preprocessing", "templates",
            "presets", "params.yaml", "prefect.yaml")


def test_prefect_yaml_has_one_pool_deployment_per_preset():
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))
    deployments = spec["deployments"]
    assert [d["name"] for d in deployments] == preset_names(REPO / "params.yaml")
    assert all(d["parameters"] == {"preset": d["name"]} and d["work_pool"]["name"] == "unit" for d in deployments)
    assert all(d["entrypoint"] == "flows/unit_flow.py:unit" for d in deployments)


def wait_healthy(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{url} not healthy after {seconds} s")


@pytest.mark.slow
def test_a_run_submitted_to_the_pool_is_picked_up_by_a_worker_and_completes(tmp_path):
    work = tmp_path / "checkout"
    for name in CHECKOUT:
        source = REPO / name
        (shutil.copytree(source, work / name) if source.is_dir() else shutil.copy(source, work / name))
    port = free_port()
    env = {
        **os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "UNIT_WORKDIR": str(work), "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "OMP_NUM_THREADS": "1",
    }

    def prefect(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "prefect"), *args], cwd=work, env=env, capture_output=True, text=True,
                              timeout=timeout)

    logs = (tmp_path / "server.log").open("w"), (tmp_path / "worker.log").open("w")
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=logs[0], stderr=subprocess.STDOUT, start_new_session=True)
    worker = None
    try:
        wait_healthy(f"http://127.0.0.1:{port}/api/health", 180)
        created = prefect("work-pool", "create", "unit", "--type", "process")
        assert created.returncode == 0, created.stdout + created.stderr
        deployed = prefect("--no-prompt", "deploy", "--all", timeout=300)
        assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
        worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "unit"], cwd=tmp_path, env=env,
                                  stdout=logs[1], stderr=subprocess.STDOUT, start_new_session=True)
        parameter = f"overrides={json.dumps(TINY)}"
        ran = prefect("deployment", "run", "unit/street-scenes", "--watch", "--watch-timeout", "500", "-p", parameter,
                      timeout=600)
        worker_log = (tmp_path / "worker.log").read_text()
        assert ran.returncode == 0, ran.stdout[-3000:] + worker_log[-3000:]
        assert (work / "runs" / "street-scenes" / "checkpoints" / "latest.pt").is_file()  # trained in the checkout
        assert "street-scenes" in worker_log  # the worker, not a served runner, ran it
    finally:
        for process in (worker, server):
            if process is not None:
                os.killpg(process.pid, 15)
                process.wait(timeout=60)
        for log in logs:
            log.close()
