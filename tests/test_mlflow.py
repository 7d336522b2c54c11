"""MLflow against a real ``mlflow server`` on 127.0.0.1: tracking, registry, champion alias, loading, serving."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from PIL import Image

from conftest import link_street_frames, tiny_config
from servers import free_port, stop, wait_for_http
from unit_core.evaluation import evaluate, load_for_evaluation, training_scale
from unit_core.training import fit
from unit_tracking.mlflow_store import (
    CHAMPION,
    TrackingError,
    check_tracking_reachable,
    is_better,
    log_finished_run,
    register_model,
    training_run,
)
from unit_tracking.sweeps import open_sweep_run

REPO = Path(__file__).resolve().parents[1]
NAME = "unit-test-street"
SERVER_START_S = 120
SERVE_START_S = 180


def environment_without_tracking_uri() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow server`` with a SQLite store and artifacts on disk, one worker, no job execution."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = folder / "server.log"
    env = {**environment_without_tracking_uri(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=folder, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        uri = f"http://127.0.0.1:{port}"
        wait_for_http(f"{uri}/health", process, log, SERVER_START_S)
        yield uri
    finally:
        stop(process)


@pytest.fixture(scope="module", autouse=True)
def restore_tracking_uri() -> Iterator[None]:
    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; leave other tests the environment they had.
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    mlflow.set_tracking_uri(saved)


@pytest.fixture(scope="module")
def data_root(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GTA/Cityscapes training frames plus a manifest.jsonl, as unit ingest writes one."""
    root = link_street_frames(shared_data, tmp_path_factory.mktemp("tracked-data"))
    (root / "manifest.jsonl").write_text('{"domain": "gta", "split": "train"}\n')
    return root


@pytest.fixture(scope="module")
def paired_root(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pairs")
    for domain in ("edges", "photos"):
        (root / domain).mkdir()
        (root / domain / "test_paired").symlink_to(shared_data / "pairs" / "edges2handbags" / domain)
    return root


def tracked_config(data_root: Path, out_dir: Path, server: str, *overrides: str):
    return tiny_config(
        data_root, out_dir, f"tracking.tracking_uri={server}", f"tracking.experiment={NAME}",
        f"tracking.registered_model={NAME}", "train.max_steps=2", "train.log_every=1", "train.checkpoint_every=1",
        *overrides,
    )


@pytest.fixture(scope="module")
def trained(data_root: Path, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory):
    """Two tracked training steps; returns (config, training result, MLflow run id)."""
    cfg = tracked_config(data_root, tmp_path_factory.mktemp("tracked") / "run", mlflow_server)
    with training_run(cfg) as callback:
        result = fit(cfg, callbacks=(callback,), progress=False)
    return cfg, result, callback.run_id


@pytest.fixture(scope="module")
def evaluation(trained, paired_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg, result, _ = trained
    eval_cfg = cfg.model_copy(deep=True)
    eval_cfg.data.root, eval_cfg.data.domain_a, eval_cfg.data.domain_b = str(paired_root), "edges", "photos"
    translator, model_cfg = load_for_evaluation(result.checkpoint, "cpu")
    out = tmp_path_factory.mktemp("evaluation")
    return evaluate(translator, eval_cfg, out, scale=training_scale(model_cfg), model_source="test").metrics_path


def write_metrics(path: Path, metrics: dict[str, float]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics))
    return path


def unit(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unit_cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env or environment_without_tracking_uri())


def tracking_sets(server: str) -> list[str]:
    values = [f"tracking.tracking_uri={server}", f"tracking.experiment={NAME}", f"tracking.registered_model={NAME}"]
    return [part for value in values for part in ("--set", value)]


@pytest.fixture(scope="module")
def registrations(trained, evaluation: Path, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """v1 from the tracked run folder, v2 worse (Python API), v3 better (``unit register``)."""
    cfg, result, _ = trained
    metrics = json.loads(evaluation.read_text())
    first = register_model(cfg, result.checkpoint, evaluation, run_dir=result.out_dir).summary()
    folder = tmp_path_factory.mktemp("metrics")
    worse = write_metrics(folder / "worse" / "metrics.json", {**metrics, "a2b/pixel_accuracy": metrics["a2b/pixel_accuracy"] - 0.5})
    second = register_model(cfg, result.checkpoint, worse).summary()
    better = write_metrics(folder / "better" / "metrics.json", {**metrics, "a2b/pixel_accuracy": metrics["a2b/pixel_accuracy"] + 0.5})
    command = unit("register", "--checkpoint", str(result.checkpoint), "--metrics", str(better), *tracking_sets(mlflow_server))
    assert command.returncode == 0, command.stderr
    third = json.loads(command.stdout.strip().splitlines()[-1])
    return [first, second, third]


# ------------------------------------------------------------------------ tracking
def test_training_run_logs_configuration_stepped_losses_and_provenance(trained, data_root: Path, mlflow_server: str):
    cfg, result, run_id = trained
    client = MlflowClient(mlflow_server)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == NAME
    assert run.data.params == {key: str(value) for key, value in cfg.flat().items()}
    for key in ("gen/total", "gen/recon_a", "gen/cycle_b", "dis/total", "pairs_per_sec", "lr"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [1, 2], key
    assert all(m.value > 0 for m in client.get_metric_history(run_id, "pairs_per_sec"))
    manifest_hash = hashlib.sha256((data_root / "manifest.jsonl").read_bytes()).hexdigest()
    assert run.data.tags["unit.data_manifest_sha256"] == manifest_hash
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert run.data.tags["mlflow.source.git.commit"] == commit
    artifacts = {item.path for item in client.list_artifacts(run_id)}
    assert {"config.yaml", "provenance.json", "samples"} <= artifacts
    assert sorted(item.path for item in client.list_artifacts(run_id, "samples")) == [
        "samples/step_00000001.png", "samples/step_00000002.png"
    ]
    # and as stepped images (the run page's Images view), one per checkpoint step
    stepped = [item.path for item in client.list_artifacts(run_id, "images") if item.path.endswith(".png")]
    assert sorted(int(path.split("+step+")[1].split("+")[0]) for path in stepped) == [1, 2], stepped
    assert json.loads((result.out_dir / "mlflow_run.json").read_text())["run_id"] == run_id


def test_more_points_and_params_than_one_request_holds_reach_the_server(data_root: Path, mlflow_server: str, tmp_path: Path):
    """Logged in one log_batch call each: MLflow splits them into requests of at most 1,000 metrics and 100 params."""
    cfg = tracked_config(data_root, tmp_path / "run", mlflow_server)
    steps = range(1, 801)
    out_dir = Path(cfg.train.out_dir)
    out_dir.mkdir(parents=True)
    (out_dir / "train_log.jsonl").write_text("".join(json.dumps({"step": s, "gen/total": s / 2, "dis/total": -s}) + "\n"
                                                     for s in steps))
    run_id = log_finished_run(cfg, "many-points", {"a2b/pixel_accuracy": [(s, s / 1000) for s in steps]}, {"final": 1.0})
    client = MlflowClient(mlflow_server)
    for key, value in (("gen/total", lambda s: s / 2), ("dis/total", lambda s: -s), ("a2b/pixel_accuracy", lambda s: s / 1000)):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        assert history == [(s, pytest.approx(value(s))) for s in steps], key  # 2,400 points in all
    params = {f"p{index:03d}": str(index) for index in range(250)}
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text("name: many-params\n")
    (tmp_path / "sweep").mkdir()
    parent = open_sweep_run(cfg, tmp_path / "sweep", "many-params", params, sweep_file)
    assert client.get_run(parent).data.params == params


def test_unreachable_tracking_server_fails_fast_and_names_it(trained, evaluation: Path, tmp_path: Path):
    cfg, result, _ = trained
    dead = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(TrackingError, match=f"MLflow tracking server {dead} is unreachable"):
        check_tracking_reachable(cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"tracking_uri": dead})}))
    assert time.monotonic() - started < 10
    command = unit("register", "--checkpoint", str(result.checkpoint), "--metrics", str(evaluation), *tracking_sets(dead))
    assert command.returncode == 2 and dead in command.stderr and "Traceback" not in command.stderr


# ------------------------------------------------------------------------ registry
def test_champion_moves_only_to_better_models(registrations, trained, data_root: Path, mlflow_server: str):
    first, second, third = registrations
    assert [r["version"] for r in registrations] == ["1", "2", "3"]
    assert first["champion"] and first["reason"].startswith(f"first champion of {NAME}")
    assert not second["champion"] and second["champion_version"] == "1" and "does not beat champion v1" in second["reason"]
    assert third["champion"] and third["champion_version"] == "3" and "beats champion v1" in third["reason"]
    client = MlflowClient(mlflow_server)
    assert client.get_registered_model(NAME).aliases == {CHAMPION: "3"}
    tags = client.get_model_version(NAME, "2").tags
    evaluation_metrics = client.get_run(first["run_id"]).data.metrics
    assert float(tags["metric.a2b/pixel_accuracy"]) == pytest.approx(evaluation_metrics["a2b/pixel_accuracy"] - 0.5)
    assert tags["unit.data_manifest_sha256"] == hashlib.sha256((data_root / "manifest.jsonl").read_bytes()).hexdigest()
    assert tags["unit.primary_metric"] == "a2b/pixel_accuracy"
    # v1 went into the training run itself, with the evaluation report; v2 and v3 got runs of their own.
    assert first["run_id"] == trained[2] and len({r["run_id"] for r in registrations}) == 3
    assert "evaluation/report" in {item.path for item in client.list_artifacts(first["run_id"], "evaluation")}


def test_the_champion_stays_when_the_new_version_was_measured_differently(registrations, trained, evaluation: Path,
                                                                           mlflow_server: str, tmp_path: Path):
    """A looser pixel tolerance inflates pixel accuracy: such a number is not compared with the champion's."""
    cfg, result, _ = trained
    folder = tmp_path / "tolerance-24"
    shutil.copytree(evaluation.parent, folder)
    info = json.loads((folder / "evaluation.json").read_text())
    (folder / "evaluation.json").write_text(json.dumps({**info, "pixel_tolerance": 24}))
    metrics = json.loads(evaluation.read_text())
    write_metrics(folder / "metrics.json", {**metrics, "a2b/pixel_accuracy": metrics["a2b/pixel_accuracy"] + 0.9})
    fourth = register_model(cfg, result.checkpoint, folder / "metrics.json").summary()
    assert not fourth["champion"] and fourth["champion_version"] == "3"
    assert "not compared with champion v3" in fourth["reason"] and "pixel_tolerance 16 vs 24" in fourth["reason"]
    assert MlflowClient(mlflow_server).get_registered_model(NAME).aliases == {CHAMPION: "3"}


def test_is_better_keeps_the_champion_on_ties():
    assert is_better(0.6, 0.5, higher_is_better=True) and not is_better(0.5, 0.5, higher_is_better=True)
    assert is_better(0.4, 0.5, higher_is_better=False) and not is_better(0.6, 0.5, higher_is_better=False)


def test_registering_without_the_primary_metric_is_refused(trained, tmp_path: Path):
    cfg, result, _ = trained
    metrics = write_metrics(tmp_path / "metrics.json", {"a2b/cycle_l1": 0.3})
    with pytest.raises(TrackingError, match=r"metrics.json: no 'a2b/pixel_accuracy' \(tracking.primary_metric\)"):
        register_model(cfg, result.checkpoint, metrics)


# ------------------------------------------------------------------- using the model
def png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 90 if mode == "L" else (200, 120, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_champion_loads_as_pyfunc_with_device_neutral_requirements(registrations, mlflow_server: str, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # loading puts the model's code folder first on the path
    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@{CHAMPION}")
    frame = pd.DataFrame({"image": [png((37, 21)), png((16, 24), "L")]})
    output = model.predict(frame, params={"direction": "b2a"})
    sizes = [Image.open(io.BytesIO(data)).size for data in output["image"]]
    assert sizes == [(37, 21), (16, 24)]
    with pytest.raises(MlflowException, match="unknown direction .sideways."):
        model.predict(frame, params={"direction": "sideways"})
    requirements = Path(mlflow.artifacts.download_artifacts(f"models:/{NAME}@{CHAMPION}/requirements.txt")).read_text()
    lines = requirements.split("\n")
    # Device-neutral: the version without the build label (+cpu, +cu126), no CPU-only wheel index.
    assert f"torch=={torch.__version__.partition('+')[0]}" in lines and "torch" not in lines
    assert not any("+cpu" in line or "extra-index-url" in line for line in lines), lines


def test_translate_and_evaluate_by_alias_on_the_command_line(registrations, paired_root: Path, mlflow_server: str, tmp_path: Path):
    model = f"models:/{NAME}@{CHAMPION}"
    source = paired_root / "edges" / "test_paired" / "00000.jpg"
    translated = unit("translate", "--model", model, "--tracking-uri", mlflow_server, "--direction", "a2b",
                      str(source), "--out", str(tmp_path / "out"))
    assert translated.returncode == 0, translated.stderr
    assert Image.open(tmp_path / "out" / "00000.png").size == Image.open(source).size
    evaluated = unit("evaluate", "--model", model, "--data", str(paired_root), "--out", str(tmp_path / "eval"),
                     "--set", "data.domain_a=edges", "--set", "data.domain_b=photos", *tracking_sets(mlflow_server))
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads((tmp_path / "eval" / "evaluation.json").read_text())["model"] == model
    assert "a2b/pixel_accuracy" in json.loads((tmp_path / "eval" / "metrics.json").read_text())
    missing = unit("translate", "--model", f"models:/{NAME}@nobody", "--tracking-uri", mlflow_server, "--direction", "a2b",
                   str(source), "--out", str(tmp_path / "none"))
    assert missing.returncode == 2 and f"models:/{NAME}@nobody" in missing.stderr and "Traceback" not in missing.stderr


def test_served_champion_translates_over_http(registrations, mlflow_server: str, tmp_path: Path):
    port = free_port()
    log = tmp_path / "serve.log"
    # The scoring server runs the `uvicorn` command: the virtual environment's bin folder must be on PATH.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "PATH": path}
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}@{CHAMPION}", "--env-manager", "local",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", process, log, SERVE_START_S)

        def invoke(direction: str) -> tuple[int, dict]:
            body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(png((30, 18))).decode()]]},
                    "params": {"direction": direction}}
            request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return response.status, json.load(response)
            except urllib.error.HTTPError as error:
                return error.code, json.load(error)

        status, answer = invoke("a2b")
        assert status == 200, answer
        (prediction,) = answer["predictions"]
        assert Image.open(io.BytesIO(base64.b64decode(prediction["image"]))).size == (30, 18)
        status, answer = invoke("sideways")
        assert status == 400 and "direction" in answer["message"]
    finally:
        stop(process)


@pytest.mark.slow
def test_local_default_store_without_a_server(trained, evaluation: Path, shared_data: Path, tmp_path: Path):
    """No tracking URI anywhere: MLflow's local default store in the working folder, registry and alias included.

    The run folder was tracked on the server, not here, so ``--run-dir`` starts a new run and
    replays its training log; a dvc.lock in the working folder is logged with it.
    """
    _, result, _ = trained
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    common = ["--params", str(REPO / "params.yaml"), "--set", f"tracking.registered_model={NAME}-local"]
    registered = unit("register", "--run-dir", str(result.out_dir), "--metrics", str(evaluation), *common, cwd=tmp_path)
    assert registered.returncode == 0, registered.stderr
    summary = json.loads(registered.stdout.strip().splitlines()[-1])
    assert summary["champion"] and summary["version"] == "1"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [m.step for m in client.get_metric_history(summary["run_id"], "gen/total")] == [1, 2]
    artifacts = {item.path for item in client.list_artifacts(summary["run_id"])}
    assert {"dvc.lock", "samples", "config.yaml", "provenance.json", "evaluation"} <= artifacts
    source = shared_data / "pairs" / "edges2handbags" / "photos" / "00001.jpg"
    translated = unit("translate", "--model", f"models:/{NAME}-local@{CHAMPION}", "--direction", "b2a", str(source),
                      "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert translated.returncode == 0, translated.stderr
    assert (tmp_path / "out" / "00001.png").is_file()
