"""The pipeline end to end: real local services, the served Prefect deployments, MLflow registry."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

from servers import BIN, free_port

REPO = Path(__file__).resolve().parents[1]
SERVICES = REPO / "infra" / "local" / "services.py"
TINY = [
    'ingest.train=12', "ingest.test=4", "ingest.size=32", "data.image_size=32", "model.width=8",
    "model.dis_width=8", "model.dis_layers=3", "model.res_blocks=2", "train.max_steps=4", "train.log_every=2",
    "train.checkpoint_every=2",
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory):
    """S3 store, MLflow and Prefect servers and the deployment process, started as a user would."""
    work = tmp_path_factory.mktemp("pipeline")
    shutil.copy(REPO / "params.yaml", work)
    shutil.copytree(REPO / "presets", work / "presets")
    env = {
        **os.environ,
        "UNIT_WORKDIR": str(work), "UNIT_SERVICES_DIR": str(work / ".services"),
        "UNIT_PREFECT_PORT": str(free_port()), "UNIT_MLFLOW_PORT": str(free_port()), "UNIT_S3_PORT": str(free_port()),
        "UNIT_RUNNER_PORT": str(free_port()),
    }
    started = subprocess.run([sys.executable, SERVICES, "start", "--with-s3"], env=env, capture_output=True, text=True, timeout=300)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        exported = subprocess.run([sys.executable, SERVICES, "env"], env=env, capture_output=True, text=True, check=True)
        for line in exported.stdout.splitlines():
            key, value = line.removeprefix("export ").split("=", 1)
            env[key] = value
        yield work, env
    finally:
        stopped = subprocess.run([sys.executable, SERVICES, "stop"], env=env, capture_output=True, text=True, timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        assert not list((work / ".services" / "pids").glob("*.pid")), "a PID file outlived stop"


def run_deployment(env: dict[str, str], name: str, overrides: list[str]) -> subprocess.CompletedProcess:
    parameter = f"overrides={json.dumps(overrides)}"
    return subprocess.run([str(BIN / "prefect"), "deployment", "run", f"unit/{name}", "--watch", "--watch-timeout", "500",
                           "-p", parameter], env=env, capture_output=True, text=True, timeout=600)


def test_street_scenes_deployment_trains_evaluates_and_registers(services):
    work, env = services
    result = run_deployment(env, "street-scenes", TINY)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    champion = client.get_model_version_by_alias("unit-street-scenes", "champion")
    assert champion.version == "1"
    run = client.get_run(champion.run_id)
    assert 0.0 <= run.data.metrics["a2b/pixel_accuracy"] <= 1.0
    assert run.data.params["train.max_steps"] == "4"
    assert "gen/total" in run.data.metrics  # training curves logged with steps
    artifacts = {item.path for item in client.list_artifacts(champion.run_id, "evaluation/report")}
    assert "evaluation/report/a2b.png" in artifacts
    # artifacts went through the MLflow server into the local S3 store, as plain files
    assert list((work / ".services" / "s3" / "unit").rglob("a2b.png"))
    assert (work / "runs" / "street-scenes" / "checkpoints" / "latest.pt").is_file()
    # Progress while it runs: a line per train.log_every in the flow run's log, and the progress artifact.
    log = (work / ".services" / "logs" / "deployments.log").read_text()
    assert "step 2/4: G " in log and "step 4/4: G " in log and "pairs/s, ETA" in log
    inspected = subprocess.run([str(BIN / "prefect"), "artifact", "inspect", "street-scenes-progress"], env=env,
                               capture_output=True, text=True, timeout=60)
    assert inspected.returncode == 0 and "registered unit-street-scenes v1" in inspected.stdout, inspected.stdout
    # The evaluation grid's artifact carries its own small copy, so it shows while MLflow is down.
    grid = subprocess.run([str(BIN / "prefect"), "artifact", "inspect", "street-scenes-evaluation-grid"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert grid.returncode == 0 and "data:image/png;base64,iVBOR" in grid.stdout, grid.stdout[:500]


def test_a_repeated_run_skips_the_finished_stages(services):
    work, env = services
    checkpoint = work / "runs" / "street-scenes" / "checkpoints" / "latest.pt"
    before = checkpoint.stat().st_mtime_ns
    result = run_deployment(env, "street-scenes", TINY)
    assert result.returncode == 0, result.stdout[-3000:]
    assert checkpoint.stat().st_mtime_ns == before
    log = (work / ".services" / "logs" / "deployments.log").read_text()
    assert log.count("Flow run") >= 2
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    assert [v.version for v in client.search_model_versions("name='unit-street-scenes'")] == ["1"]


def test_a_preset_without_its_data_fails_first_and_says_what_to_provide(services):
    work, env = services
    result = run_deployment(env, "dogs", [])
    assert result.returncode != 0
    log = (work / ".services" / "logs" / "deployments.log").read_text()
    assert "preset dogs: ingest failed" in log and "ImageNet training images" in log
    assert not (work / "runs" / "dogs").exists()


def test_the_store_key_is_private_and_health_is_asked_of_the_serving_process(services):
    work, env = services
    credentials = work / ".services" / "aws-credentials"
    assert credentials.stat().st_mode & 0o777 == 0o600
    secret = next(line.split("=", 1)[1].strip() for line in credentials.read_text().splitlines()
                  if line.startswith("aws_secret_access_key"))
    exported = subprocess.run([sys.executable, SERVICES, "env"], env=env, capture_output=True, text=True, check=True)
    assert secret not in exported.stdout and f"AWS_SHARED_CREDENTIALS_FILE={credentials}" in exported.stdout
    for pid_file in (work / ".services" / "pids").glob("*.pid"):
        group = int(pid_file.read_text())
        for process in psutil.process_iter(["cmdline"]):
            if os.getpgid(process.pid) == group:
                assert secret not in " ".join(process.info["cmdline"] or []), pid_file.stem
    # Kill the process serving the deployments: their records stay in Prefect's database,
    # but the health check asks the process itself.
    os.killpg(int((work / ".services" / "pids" / "deployments.pid").read_text()), signal.SIGKILL)
    status = subprocess.run([sys.executable, SERVICES, "status"], env=env, capture_output=True, text=True, check=True)
    line = next(row for row in status.stdout.splitlines() if row.startswith("deployments"))
    assert "healthy" not in line.split()[1:2], status.stdout
    restarted = subprocess.run([sys.executable, SERVICES, "start", "--with-s3"], env=env, capture_output=True,
                               text=True, timeout=300)
    assert restarted.returncode == 0 and "deployments: running" in restarted.stdout, restarted.stdout + restarted.stderr


def test_deployments_of_presets_without_their_data_say_what_is_missing(monkeypatch, tmp_path):
    from flows import serve

    monkeypatch.chdir(tmp_path)  # no data/raw here: every preset that reads files lacks them
    monkeypatch.setattr(serve, "PARAMS_FILE", str(REPO / "params.yaml"))
    descriptions = {deployment.name: deployment.description for deployment in serve.deployments()}
    assert "missing on this machine" in descriptions["dogs"] and "data/raw/imagenet/train" in descriptions["dogs"]
    assert "ImageNet training images" in descriptions["dogs"]  # the preset's ingest.requires
    assert "missing" not in descriptions["street-scenes"]  # generated, needs no files
    assert "street-conditions" in descriptions
