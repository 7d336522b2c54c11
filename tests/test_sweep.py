"""``unit sweep`` through real Ray Tune and a real MLflow server, on a tiny model and procedural maps.

The slow tests share one sweep (2 settings x 2 seeds, 2 trials at once): a ``unit sweep``
subprocess killed with SIGKILL once a trial has finished and another has written a
checkpoint, then ``unit sweep --resume`` to the end. The numbers of the summary are
checked against the trials' own evaluation/metrics.json files.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient
from servers import prefect_server
from test_mlflow import mlflow_server, restore_tracking_uri  # noqa: F401  (fixtures)

from preprocessing.synthetic.dataset import generate_demo_dataset
from unit_pipeline.sweep import SweepError, load_sweep, run_sweep, summarise

# Importing ray.tune warns about Ray Data's own deprecated settings.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"
METRIC = "a2b/l1"  # varies between trials even after a few steps (pixel accuracy is still 0 there)
SETTINGS = {"full": {"variant": "full"}, "no-cycle": {"variant": "no-cycle"}}
SEEDS = [0, 1]
TRIALS = [f"{setting}-seed{seed}" for setting in SETTINGS for seed in SEEDS]
MAX_STEPS = 60
SWEEP_TIMEOUT_S = 480


@pytest.fixture(scope="module")
def maps_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_demo_dataset("maps", tmp_path_factory.mktemp("maps"), train_count=8, test_count=4, size=32)


def tiny_sweep(folder: Path, data_root: Path, tracking_uri: str, **changes) -> Path:
    """A sweep file on the maps preset at test size (width 8, 32 px, MAX_STEPS steps), sweep folder in ``folder``."""
    spec = {
        "preset": "maps",
        "overrides": [
            f"data.root={data_root}", "data.image_size=32", "model.width=8", "model.dis_width=8", "model.dis_layers=3",
            "model.res_blocks=2", f"train.max_steps={MAX_STEPS}", "train.log_every=1", "train.checkpoint_every=5",
            "train.sample_count=2", "train.device=cpu", "train.precision=fp32", "train.deterministic=true",
            "evaluation.report_images=2", "tracking.experiment=sweep-test", f"tracking.tracking_uri={tracking_uri}",
        ],
        "settings": SETTINGS,
        "seeds": SEEDS,
        "metric": METRIC,
        "resources": {"cpus": 1, "gpus": 0},
        "concurrent_trials": 2,
        "out_dir": str(folder / "sweep"),
        **changes,
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def unit_sweep(log: Path, *args: str) -> subprocess.Popen:
    """``unit sweep ARGS`` in its own session, output to ``log`` (a pipe left unread would stop it)."""
    env = {key: value for key, value in os.environ.items() if key not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    with log.open("w") as output:
        return subprocess.Popen([sys.executable, "-m", "unit_cli", "sweep", *args], cwd=REPO, text=True,
                                env={**env, "OMP_NUM_THREADS": "1"}, stdout=output, stderr=subprocess.STDOUT,
                                start_new_session=True)


def finish(process: subprocess.Popen, log: Path) -> str:
    try:
        process.wait(timeout=SWEEP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill_session(process)
        pytest.fail(f"unit sweep did not finish within {SWEEP_TIMEOUT_S} s:\n{log.read_text()[-5000:]}")
    output = log.read_text()
    assert process.returncode == 0, output[-5000:]
    return output


def kill_session(process: subprocess.Popen) -> None:
    """SIGKILL the process (Popen.kill), then every process it started (its session: the Ray instance and the trials)."""
    process.kill()
    process.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = [p for p in psutil.process_iter() if _session(p) == process.pid]
        if not left:
            return
        for leftover in left:
            try:
                leftover.kill()
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.5)
    pytest.fail(f"processes of the killed sweep still run: {left}")


def _session(process: psutil.Process) -> int | None:
    try:
        return os.getsid(process.pid)
    except (ProcessLookupError, PermissionError):
        return None


def tune_statuses(sweep_folder: Path) -> dict[str, str]:
    """Each trial's status as the Ray Tune experiment on disk records it."""
    from ray.tune import ExperimentAnalysis

    if not (sweep_folder / "tune").is_dir() or not list((sweep_folder / "tune").glob("experiment_state-*.json")):
        return {}
    try:
        trials = ExperimentAnalysis(str(sweep_folder / "tune")).trials
    except ValueError:  # read while Tune was writing it: not known yet
        return {}
    return {trial.config["trial"]: trial.status for trial in trials}


def mid_training(sweep_folder: Path) -> list[str]:
    """The trials that have written a checkpoint but not yet their last one."""
    last = f"step_{MAX_STEPS:08d}.pt"
    return [name for name in TRIALS if (sweep_folder / name / "checkpoints" / "latest.pt").exists()
            and not (sweep_folder / name / "checkpoints" / last).exists()]


def trial_metrics(sweep_folder: Path, trial: str) -> dict[str, float]:
    return json.loads((sweep_folder / trial / "evaluation" / "metrics.json").read_text())


@pytest.fixture(scope="module")
def interrupted_sweep(maps_root: Path, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    """The tiny sweep killed (SIGKILL) once Tune has recorded a finished trial and an unfinished one has a
    checkpoint, then resumed. Returns (sweep file, sweep folder, what the kill left, resumed output)."""
    folder = tmp_path_factory.mktemp("sweep")
    path = tiny_sweep(folder, maps_root, mlflow_server)
    sweep_folder = folder / "sweep"
    process = unit_sweep(folder / "first.log", str(path))
    deadline = time.monotonic() + SWEEP_TIMEOUT_S
    try:
        while True:
            assert process.poll() is None, f"the sweep ended before it was killed:\n{(folder / 'first.log').read_text()[-5000:]}"
            assert time.monotonic() < deadline, "no trial finished in time"
            finished = [name for name, status in tune_statuses(sweep_folder).items() if status == "TERMINATED"]
            if finished and mid_training(sweep_folder):
                break
            time.sleep(0.2)
    finally:
        kill_session(process)
    interrupted = mid_training(sweep_folder)
    assert interrupted, "the trial in training finished it before the kill"
    left = {
        "finished": finished,
        "interrupted": interrupted,
        "checkpoints": {name: (sweep_folder / name / "checkpoints" / "latest.pt").stat().st_mtime_ns for name in finished},
    }
    output = finish(unit_sweep(folder / "resumed.log", str(path), "--resume"), folder / "resumed.log")
    return path, sweep_folder, left, output


@pytest.mark.slow
def test_every_trial_has_a_run_folder_and_a_nested_mlflow_run(interrupted_sweep, mlflow_server: str):  # noqa: F811
    _, sweep_folder, _, _ = interrupted_sweep
    summary = json.loads((sweep_folder / "summary.json").read_text())
    client = MlflowClient(mlflow_server)
    parent = client.get_run(summary["parent_run_id"])
    assert parent.info.status == "FINISHED"
    experiment = parent.info.experiment_id
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    for trial in TRIALS:
        run_folder = sweep_folder / trial
        assert (run_folder / "checkpoints" / "latest.pt").is_file(), trial
        assert (run_folder / "evaluation" / "metrics.json").is_file(), trial
        record = json.loads((run_folder / "mlflow_run.json").read_text())
        [run] = [child for child in children if child.info.run_id == record["run_id"]]
        assert run.info.status == "FINISHED", trial
        assert run.data.tags["unit.sweep.setting"] == trial.rsplit("-seed", 1)[0]
        assert run.data.params["seed"] == trial.rsplit("-seed", 1)[1]
        assert run.data.metrics[METRIC] == trial_metrics(sweep_folder, trial)[METRIC]
        # The curves reach the last step, in this run or (trained before an interruption) an earlier one of the trial.
        attempts = [child for child in children if child.data.tags["unit.sweep.setting"] == run.data.tags["unit.sweep.setting"]
                    and child.data.params["seed"] == run.data.params["seed"]]
        steps = [point.step for attempt in attempts for point in client.get_metric_history(attempt.info.run_id, "gen/total")]
        assert max(steps) == MAX_STEPS, trial
    # The variant reached the trial: no cycle terms in the no-cycle runs.
    assert json.loads((sweep_folder / "sweep.json").read_text())["trials"]["no-cycle-seed0"]["loss"]["cycle"] == 0
    assert parent.data.params["metric"] == METRIC


@pytest.mark.slow
def test_summary_equals_the_trials_metrics(interrupted_sweep, mlflow_server: str):  # noqa: F811
    _, sweep_folder, _, output = interrupted_sweep
    summary = json.loads((sweep_folder / "summary.json").read_text())
    markdown = (sweep_folder / "summary.md").read_text()
    parent = MlflowClient(mlflow_server).get_run(summary["parent_run_id"])
    rows = {row["setting"]: row for row in summary["settings"]}
    assert list(rows) == list(SETTINGS)
    for setting in SETTINGS:
        values = [trial_metrics(sweep_folder, f"{setting}-seed{seed}")[METRIC] for seed in SEEDS]
        mean = sum(values) / len(values)
        std = (sum((value - mean) ** 2 for value in values) / (len(values) - 1)) ** 0.5
        assert rows[setting]["n"] == len(SEEDS)
        assert rows[setting]["mean"] == pytest.approx(mean, rel=1e-12)
        assert rows[setting]["std"] == pytest.approx(std, rel=1e-9)
        assert std > 0, "the seeds should give different models"
        line = f"| {setting} | {SETTINGS[setting]['variant']} | - | 2 | {mean:.4f} ± {std:.4f} |"
        assert line in markdown and line in output
        assert parent.data.metrics[f"{setting}/{METRIC}/mean"] == pytest.approx(mean, rel=1e-12)
        assert parent.data.metrics[f"{setting}/{METRIC}/std"] == pytest.approx(std, rel=1e-9)
        assert parent.data.metrics[f"{setting}/{METRIC}/n"] == 2
    artifacts = {item.path for item in MlflowClient(mlflow_server).list_artifacts(parent.info.run_id)}
    assert {"summary.md", "summary.json", "sweep.json", "tiny.yaml"} <= artifacts


@pytest.mark.slow
def test_a_killed_sweep_resumes_without_rerunning_finished_trials(interrupted_sweep, mlflow_server: str):  # noqa: F811
    path, sweep_folder, left, _ = interrupted_sweep
    client = MlflowClient(mlflow_server)
    assert tune_statuses(sweep_folder) == {name: "TERMINATED" for name in TRIALS}
    for name in left["finished"]:
        # Not trained again, not run again by Tune, one MLflow run.
        assert (sweep_folder / name / "checkpoints" / "latest.pt").stat().st_mtime_ns == left["checkpoints"][name], name
        assert len((sweep_folder / "tune" / name / "result.json").read_text().splitlines()) == 1, name
        runs = client.search_runs([client.get_experiment_by_name("sweep-test").experiment_id],
                                  f"tags.`unit.sweep.setting` = '{name.rsplit('-seed', 1)[0]}' "
                                  f"and params.seed = '{name.rsplit('-seed', 1)[1]}'")
        assert len(runs) == 1, name
    for name in left["interrupted"]:
        # The second attempt continued from the checkpoint: its curves start after step 1.
        record = json.loads((sweep_folder / name / "mlflow_run.json").read_text())
        resumed = client.get_run(record["run_id"])
        assert "unit.resumed_from_run" in resumed.data.tags, name
        first_step = min(point.step for point in client.get_metric_history(record["run_id"], "gen/total"))
        assert first_step > 1, name
        steps = [json.loads(line)["step"] for line in (sweep_folder / name / "train_log.jsonl").read_text().splitlines()]
        assert steps == list(range(1, MAX_STEPS + 1)), name
    # Two trials ran at once (Tune's record of each: when it ended and for how long it ran).
    results = [json.loads((sweep_folder / "tune" / name / "result.json").read_text()) for name in TRIALS]
    spans = sorted((result["timestamp"] - result["time_total_s"], result["timestamp"]) for result in results)
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans)), spans
    # Resuming a finished sweep again runs nothing and gives the same summary.
    summary = (sweep_folder / "summary.json").read_text()
    finish(unit_sweep(sweep_folder.parent / "again.log", str(path), "--resume"), sweep_folder.parent / "again.log")
    assert json.loads((sweep_folder / "summary.json").read_text())["settings"] == json.loads(summary)["settings"]


@pytest.mark.slow
def test_a_started_sweep_is_not_started_again_nor_resumed_with_other_trials(interrupted_sweep):
    path, _, _, _ = interrupted_sweep
    with pytest.raises(SweepError, match="already holds this sweep; continue it with --resume"):
        run_sweep(load_sweep(path, PARAMS))
    with pytest.raises(SweepError, match=r"its trials are not those of the sweep .*full-seed0"):
        run_sweep(load_sweep(path, PARAMS, ["optim.lr=0.001"]), resume=True)


def test_resume_needs_a_started_sweep(tmp_path: Path, maps_root: Path):
    path = tiny_sweep(tmp_path, maps_root, f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(SweepError, match="no interrupted sweep to resume; start it without --resume"):
        run_sweep(load_sweep(path, PARAMS), resume=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"setings": {}}, "setings: unknown key"),
        ({"settings": {"full": {"variant": "no-sharring"}}}, "settings.full.variant: Input should be"),
        ({"settings": {"full": {"overrides": ["model.n_shared"]}}}, "settings.full.overrides: Value error, 'model.n_shared' is not key=value"),
        ({"settings": {"bad name": {}}}, "settings.bad name.\\[key\\]: String should match pattern"),
        ({"seeds": [0, 0]}, "seeds: Value error, seed 0 listed more than once"),
        ({"resources": {"cpus": 0}}, "resources.cpus: Input should be greater than 0"),
        ({"concurrent_trials": 0}, "concurrent_trials: Input should be greater than or equal to 1"),
        # The settings are checked as configurations too, before anything runs.
        ({"settings": {"wide": {"overrides": ["model.n_shared=3"]}}}, "settings.wide: .*model: Value error, n_shared \\(3\\) cannot exceed res_blocks \\(2\\)"),
        ({"settings": {"typo": {"overrides": ["model.widht=8"]}}}, "settings.typo: .*model.widht: unknown key"),
        ({"preset": "mapz"}, "preset 'mapz' .*no such preset"),
    ],
)
def test_a_bad_sweep_file_is_an_error_naming_the_file_and_key(tmp_path: Path, change: dict, message: str):
    path = tiny_sweep(tmp_path, tmp_path / "data", f"sqlite:///{tmp_path / 'mlflow.db'}", **change)
    with pytest.raises(SweepError, match=f"^{re.escape(str(path))}: {message}"):
        load_sweep(path, PARAMS)


def test_the_cli_reports_a_bad_sweep_file(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("preset: maps\nsettings: {full: {}}\nseeds: [0]\nconcurrent: 2\n")
    result = subprocess.run([sys.executable, "-m", "unit_cli", "sweep", str(path)], cwd=REPO, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 2
    assert f"unit sweep: error: {path}: concurrent: unknown key" in result.stderr


def test_summary_is_mean_and_sample_std_per_setting(tmp_path: Path, maps_root: Path):
    sweep = load_sweep(tiny_sweep(tmp_path, maps_root, "sqlite:///unused.db", seeds=[0, 1, 2]), PARAMS)
    values = {"full-seed0": 0.1, "full-seed1": 0.4, "full-seed2": 0.25, "no-cycle-seed0": 0.3}
    summary = summarise(sweep, {name: {METRIC: value, "other": 1.0} for name, value in values.items()})
    full, no_cycle = summary["settings"]
    assert (full["n"], no_cycle["n"]) == (3, 1)
    assert full["mean"] == pytest.approx(0.25)
    assert full["std"] == pytest.approx(statistics.stdev([0.1, 0.4, 0.25]))  # n - 1
    assert full["std"] == pytest.approx(0.15)
    assert (no_cycle["mean"], no_cycle["std"]) == (0.3, None)
    assert [trial["trial"] for trial in summary["trials"]] == list(values)
    with pytest.raises(SweepError, match=f"metric '{METRIC}' is not among the evaluation metrics of full-seed0 \\(has other\\)"):
        summarise(sweep, {"full-seed0": {"other": 1.0}})


def test_the_shipped_sweeps_are_the_papers():
    from unit_core.config import VARIANTS

    def sweep(name: str):
        return load_sweep(REPO / "sweeps" / f"{name}.yaml", PARAMS)

    ablation = sweep("maps-ablation")
    assert {name: setting.variant for name, setting in ablation.spec.settings.items()} == {
        "full": "full", "no-sharing": "no-sharing", "no-cycle": "no-cycle"}
    assert ablation.spec.seeds == [0, 1, 2, 3, 4] and ablation.metric == "a2b/pixel_accuracy"
    no_sharing = next(trial.config for trial in ablation.trials if trial.setting == "no-sharing")
    assert (no_sharing.model.n_shared, no_sharing.loss.recon, no_sharing.loss.kl) == (0, 0, 0)
    assert set(VARIANTS["no-sharing"]) >= {"model.n_shared=0", "loss.recon=0", "loss.kl=0"}

    layers = sweep("maps-shared-layers")
    grid = {(trial.config.model.n_shared, trial.config.model.dis_layers, trial.config.model.res_blocks)
            for trial in layers.trials}
    assert grid == {(shared, depth, 4) for shared in range(1, 5) for depth in range(3, 7)}

    weights = sweep("maps-loss-weights")
    tied = {(trial.config.loss.kl, trial.config.loss.kl_cycle, trial.config.loss.recon, trial.config.loss.cycle)
            for trial in weights.trials}
    assert tied == {(l1, l1, l2, l2) for l1 in (0.1, 0.01) for l2 in (1, 10, 100, 1000)}
    for loaded in (ablation, layers, weights):
        assert loaded.spec.preset == "maps"
        assert {trial.config.seed for trial in loaded.trials} == set(loaded.spec.seeds)
        assert len({trial.config.train.out_dir for trial in loaded.trials}) == len(loaded.trials)


def test_each_sweep_file_is_a_deployment_of_the_sweep_flow(monkeypatch: pytest.MonkeyPatch):
    from flows import serve

    monkeypatch.setattr(serve, "PARAMS_FILE", str(PARAMS))
    served = {deployment.name: deployment for deployment in serve.deployments()
              if deployment.flow_name == "unit-sweep"}
    assert sorted(served) == sorted(path.stem for path in (REPO / "sweeps").glob("*.yaml"))
    assert served["maps-ablation"].parameters == {"sweep": str(REPO / "sweeps" / "maps-ablation.yaml")}


@pytest.mark.slow
def test_the_prefect_flow_runs_the_same_sweep(interrupted_sweep, tmp_path: Path):
    """The flow ``unit-sweep`` on the finished sweep: it continues it (nothing left to run) and returns its summary."""
    path, sweep_folder, _, _ = interrupted_sweep
    program = ("import json, sys\nfrom flows.sweep_flow import unit_sweep\n"
               "print('SUMMARY', json.dumps(unit_sweep(sweep=sys.argv[1])))")
    env = {key: value for key, value in os.environ.items() if key not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env.update(OMP_NUM_THREADS="1", UNIT_PARAMS=str(PARAMS))
    with prefect_server(tmp_path / "prefect", env) as server_env:
        result = subprocess.run([sys.executable, "-c", program, str(path)], cwd=REPO, env=server_env,
                                capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S, check=False)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("SUMMARY "))
    returned = json.loads(line.removeprefix("SUMMARY "))
    assert returned == json.loads((sweep_folder / "summary.json").read_text())
    assert "Flow run" in result.stdout + result.stderr
