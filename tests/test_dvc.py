"""The DVC pipeline (dvc.yaml): its wiring to the presets, and ``dvc repro`` end to end.

The end-to-end test runs the repository's dvc.yaml, params.yaml, .dvc/config, its plot
template, .dvcignore and .gitignore in a temporary git repository, with each preset of dvc.yaml replaced by a tiny
version of itself (same data set kind and paths, 32 px, width 8, 4 steps) tracked in a
sqlite file there. The sweep stage is left out of that copy: a sweep is many trainings on
Ray Tune, tested by tests/test_sweep.py; here its wiring is checked.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from unit_core.config import UnitConfig, load_config

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the environment's dvc and unit
COPIED = ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", ".dvc/config", ".dvc/plots/terms.json")
SECTIONS = set(UnitConfig.model_fields)


def dvc_spec() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))


def dvc_presets(spec: dict) -> list[str]:
    return spec["vars"][0]["presets"]


def test_dvc_yaml_matches_the_presets():
    spec = dvc_spec()
    presets = dvc_presets(spec)
    assert presets, "dvc.yaml runs no preset"
    curves = [entry for entry in spec["plots"] if isinstance(entry, dict)]
    plotted = {path for entry in curves for definition in entry.values() for path in definition["y"]}
    images = {entry for entry in spec["plots"] if isinstance(entry, str)}
    for name in presets:
        cfg = load_config(REPO / "params.yaml", preset=name)
        assert (cfg.data.root, cfg.train.out_dir) == (f"data/{name}", f"runs/{name}"), name
        assert f"runs/{name}/train_log.json" in plotted, name
        assert {f"runs/{name}/evaluation/report", f"runs/{name}/samples"} <= images, name
    for stage, definition in spec["stages"].items():
        for entry in definition["do"]["params"]:
            sections = entry if isinstance(entry, str) else next(iter(entry.values()))
            unknown = set([sections] if isinstance(sections, str) else sections) - SECTIONS
            assert not unknown, f"stage {stage}: params {unknown} are not sections of the configuration"


def test_dvc_yaml_runs_every_sweep_file():
    from unit_pipeline.sweep import load_sweep, sweep_file, sweep_names

    spec = dvc_spec()
    sweeps = spec["vars"][0]["sweeps"]
    assert sorted(sweeps) == sweep_names(REPO / "params.yaml")
    stage = spec["stages"]["sweep"]
    assert stage["foreach"] == "${sweeps}"
    assert stage["do"]["cmd"] == "unit sweep sweeps/${key}.yaml"
    assert stage["do"]["deps"] == ["sweeps/${key}.yaml", "data/${item.preset}"]
    assert stage["do"]["outs"] == ["runs/sweeps/${key}"]
    for name, entry in sweeps.items():
        sweep = load_sweep(sweep_file(REPO / "params.yaml", name), REPO / "params.yaml")
        assert entry == {"preset": sweep.spec.preset}, name
        assert sweep.folder == Path(f"runs/sweeps/{name}"), name
        assert sweep.base.data.root == f"data/{sweep.spec.preset}", name  # the ingest stage's output


def pipeline_without_sweeps() -> str:
    """dvc.yaml without its sweep stage (and its list of sweeps), for the end-to-end test."""
    spec = dvc_spec()
    del spec["stages"]["sweep"]
    del spec["vars"][0]["sweeps"]
    return yaml.safe_dump(spec, sort_keys=False)


def tiny_preset(name: str, tracking_uri: str) -> dict:
    """The preset ``name`` at test size (same data set kind, paths and model name), tracked at ``tracking_uri``."""
    preset = yaml.safe_load((REPO / "presets" / f"{name}.yaml").read_text(encoding="utf-8"))
    preset["ingest"].update(train=12, test=4, size=32)
    preset["data"]["image_size"] = 32
    preset["model"] = {"width": 8, "dis_width": 8, "dis_layers": 3, "res_blocks": 2}
    preset["train"] = {"out_dir": f"runs/{name}", "max_steps": 4, "checkpoint_every": 1000, "log_every": 1,
                       "sample_count": 2, "device": "cpu", "precision": "fp32"}
    preset["evaluation"]["report_images"] = 2
    preset["tracking"]["tracking_uri"] = tracking_uri
    return preset


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def registered_versions(presets: list[str], tracking_uri: str) -> dict[str, int]:
    """How many model versions the register stage of each preset has created."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    models = {name: tiny_preset(name, tracking_uri)["tracking"]["registered_model"] for name in presets}
    return {name: len(client.search_model_versions(f"name='{model}'")) for name, model in models.items()}


@pytest.mark.slow
def test_dvc_repro_reruns_only_what_changed(tmp_path: Path):
    repo = tmp_path / "repo"
    repo.mkdir()
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com",
    }

    def run(*command: str) -> str:
        result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{output}"
        return output

    def dvc(*args: str) -> str:
        return run(str(BIN / "dvc"), *args)

    def commit(message: str) -> None:
        run("git", "add", "-A")
        run("git", "commit", "-q", "-m", message)

    def edit_preset(name: str, section: str, key: str, value: object) -> None:
        path = repo / "presets" / f"{name}.yaml"
        preset = yaml.safe_load(path.read_text(encoding="utf-8"))
        preset[section][key] = value
        path.write_text(yaml.safe_dump(preset, sort_keys=False), encoding="utf-8")

    run("git", "init", "-q")
    dvc("init", "-q")
    for name in COPIED:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / name, repo / name)
    (repo / "dvc.yaml").write_text(pipeline_without_sweeps(), encoding="utf-8")
    presets = dvc_presets(dvc_spec())
    (repo / "presets").mkdir()
    for name in presets:
        tiny = yaml.safe_dump(tiny_preset(name, tracking_uri), sort_keys=False)
        (repo / "presets" / f"{name}.yaml").write_text(tiny, encoding="utf-8")
    commit("pipeline")

    everything = {f"{stage}@{name}" for stage in ("ingest", "train", "evaluate", "register") for name in presets}
    assert ran_stages(dvc("repro")) == everything
    second = dvc("repro")
    assert ran_stages(second) == set()
    assert "Data and pipelines are up to date." in second
    assert registered_versions(presets, tracking_uri) == {name: 1 for name in presets}
    commit("first run")
    dvc("push")  # to the default remote of .dvc/config, a folder in the repository
    assert any(path.is_file() for path in (repo / ".dvc-storage").rglob("*"))

    # One preset trains longer, another only changes how it is evaluated.
    assert len(presets) >= 2, "the test changes two presets of dvc.yaml differently"
    trained, evaluated = presets[0], presets[-1]
    edit_preset(trained, "train", "max_steps", 5)
    edit_preset(evaluated, "evaluation", "pixel_tolerance", 255)  # every colour is within 255
    assert set(json.loads(dvc("status", "--json"))) == {f"train@{trained}", f"evaluate@{evaluated}"}
    assert ran_stages(dvc("repro")) == {f"train@{trained}", f"evaluate@{trained}", f"register@{trained}",
                                        f"evaluate@{evaluated}", f"register@{evaluated}"}
    changed = (trained, evaluated)
    assert registered_versions(presets, tracking_uri) == {name: 2 if name in changed else 1 for name in presets}

    params = json.loads(dvc("params", "diff", "--json"))
    assert params[f"presets/{trained}.yaml"]["train.max_steps"] == {"old": 4, "new": 5, "diff": 1}
    assert params[f"presets/{evaluated}.yaml"]["evaluation.pixel_tolerance"]["new"] == 255
    metrics_file = f"runs/{evaluated}/evaluation/metrics.json"
    accuracy = json.loads(dvc("metrics", "diff", "--json"))[metrics_file]["a2b/pixel_accuracy"]
    assert accuracy["new"] == 1.0 and accuracy["old"] < 1.0
    shown = json.loads(dvc("metrics", "show", "--json"))[""]["data"]
    assert {f"runs/{name}/evaluation/metrics.json" for name in presets} <= set(shown)
    for name in presets:  # each preset's champion metric, a2b/... or mean/... of N-domain models
        metric = load_config(REPO / "params.yaml", preset=name).tracking.primary_metric
        assert metric in shown[f"runs/{name}/evaluation/metrics.json"]["data"], (name, metric)

    plots = json.loads(dvc("plots", "show", "--json"))
    assert not plots.get("errors"), plots.get("errors")
    for name in presets:
        [plot] = plots["data"][f"Training losses, {name}"]
        steps = [point["step"] for point in plot["content"]["data"]["values"]]
        assert max(steps) == (5 if name == trained else 4)
        # One colour per loss term (not one colour with dashes), one dash per revision.
        assert plot["content"]["encoding"]["color"]["field"] == "field"
        assert plot["content"]["encoding"]["strokeDash"]["field"] == "rev"
        grids = {key for key, entries in plots["data"].items() if entries[0]["type"] == "image"}
        first_grid = "a2b" if len(load_config(REPO / "params.yaml", preset=name).domains()) == 2 else "day"
        assert f"runs/{name}/evaluation/report/{first_grid}.png" in grids, sorted(grids)
        assert any(key.startswith(f"runs/{name}/samples/step_") for key in grids), sorted(grids)

    # A forced rerun evaluates again: DVC removes the stage's reuse record with its outputs.
    assert ran_stages(dvc("repro", "--force", "--single-item", f"evaluate@{evaluated}")) == {f"evaluate@{evaluated}"}
    assert (repo / metrics_file).is_file()
