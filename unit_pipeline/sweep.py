"""Sweeps: named settings x seeds of one preset, each trial a full training run, on Ray Tune.

A sweep file (``sweeps/<name>.yaml``)::

    preset: maps                      # presets/<preset>.yaml over the params file
    overrides: [train.max_steps=4000] # --set-style overrides of every trial (optional)
    settings:                         # name -> what the setting changes (at least one)
      full: {variant: full}           #   a variant of unit_core.config.VARIANTS,
      no-cycle: {variant: no-cycle}   #   and/or --set-style overrides, applied after it:
      shared2: {overrides: [model.n_shared=2, model.res_blocks=4]}
    seeds: [0, 1, 2]                  # each setting runs once per seed (the configuration's seed)
    metric: a2b/pixel_accuracy        # summarised; default: the preset's tracking.primary_metric
    resources: {cpus: 1, gpus: 0}     # per trial; each trial's train.threads is its CPUs (at least 1)
    concurrent_trials: 2              # at most this many trials at once (fewer if resources run out)
    out_dir: runs/sweeps/maps-ablation  # default: runs/sweeps/<name>
    name: maps-ablation               # default: the file's name

Unknown keys and bad values are errors naming the file and the key, and every trial's
configuration is validated before anything runs. A trial's settings are, in order: the
preset, the variant, ``overrides``, the setting's overrides, the command line's
``--set``, then the trial's ``seed`` and ``train.out_dir``.

The sweep folder (``out_dir``)::

    <setting>-seed<k>/      each trial's run folder: checkpoints, samples, evaluation/, mlflow_run.json
    tune/                   the Ray Tune experiment (what ``--resume`` restores)
    sweep.json              the trials' configurations (a resume must have the same)
    mlflow_run.json         the parent MLflow run
    summary.md, summary.json  mean +- sample std of the metric per setting, and every trial's value

Each trial trains (:func:`unit_pipeline.stages.train`, resuming its run folder's latest
checkpoint after an interruption) and evaluates (:func:`unit_pipeline.stages.evaluate`)
inside one MLflow training run nested under the sweep's parent run.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from unit_core.config import (
    VARIANTS,
    ConfigError,
    UnitConfig,
    config_from_dict,
    format_errors,
    load_config,
    read_mapping,
)
from unit_core.scratch import atomic_write
from unit_pipeline import stages

SWEEPS_FOLDER = "sweeps"  # beside the params file
TRIAL_RECORD = ".sweep-trial.json"
SWEEP_RECORD = "sweep.json"
SUMMARY_FILES = ("summary.md", "summary.json")

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class SweepError(RuntimeError):
    """A sweep file is wrong, or a sweep cannot run or had failed trials; the message says which."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_overrides(overrides: list[str]) -> list[str]:
    for text in overrides:
        if "=" not in text or not text.split("=", 1)[0].strip():
            raise ValueError(f"{text!r} is not key=value, e.g. train.max_steps=100")
    return overrides


class SweepSetting(_Strict):
    variant: Literal[tuple(VARIANTS)] | None = None  # type: ignore[valid-type]
    overrides: list[str] = []

    _overrides = field_validator("overrides")(_check_overrides)


class TrialResources(_Strict):
    cpus: float = Field(1.0, gt=0.0)
    gpus: float = Field(0.0, ge=0.0)


class SweepSpec(_Strict):
    name: Name
    preset: str = Field(min_length=1)
    overrides: list[str] = []
    settings: dict[Name, SweepSetting] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    metric: str = ""
    resources: TrialResources = TrialResources()
    concurrent_trials: int = Field(1, ge=1)
    out_dir: str = ""

    _overrides = field_validator("overrides")(_check_overrides)

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
        if repeated:
            raise ValueError(f"seed {', '.join(map(str, repeated))} listed more than once")
        return seeds


@dataclass(frozen=True)
class Trial:
    name: str  # <setting>-seed<k>, also its run folder's name
    setting: str
    seed: int
    config: UnitConfig


@dataclass(frozen=True)
class Sweep:
    spec: SweepSpec
    path: Path
    folder: Path
    metric: str
    base: UnitConfig  # the preset with the sweep's overrides: where the parent run is tracked
    trials: list[Trial]


def sweep_names(params_path: str | Path) -> list[str]:
    return sorted(path.stem for path in (Path(params_path).parent / SWEEPS_FOLDER).glob("*.yaml"))


def sweep_file(params_path: str | Path, name: str) -> Path:
    return Path(params_path).parent / SWEEPS_FOLDER / f"{name}.yaml"


def read_sweep_spec(path: str | Path) -> SweepSpec:
    """The validated sweep file; errors name the file and the key."""
    path = Path(path)
    try:
        loaded = read_mapping(path)
    except ConfigError as exc:
        raise SweepError(str(exc)) from None
    try:
        return SweepSpec.model_validate({"name": path.stem, **loaded})
    except ValidationError as exc:
        raise SweepError(format_errors(str(path), exc)) from None


def load_sweep(path: str | Path, params_path: str | Path = "params.yaml", overrides: list[str] | tuple[str, ...] = ()) -> Sweep:
    """The sweep file with every trial's configuration built and validated (``overrides``: the command line's)."""
    from unit_tracking.mlflow_store import resolve_tracking_uri

    path = Path(path)
    spec = read_sweep_spec(path)
    folder = Path(spec.out_dir or f"runs/sweeps/{spec.name}")
    shared = [f"train.threads={max(1, int(spec.resources.cpus))}", *spec.overrides]
    try:
        base = load_config(params_path, [*shared, *overrides], preset=spec.preset)
    except ConfigError as exc:
        raise SweepError(f"{path}: preset {spec.preset!r} with the sweep's overrides: {exc}") from None
    # Every trial logs where the parent run is, even when the URI comes from the environment.
    tracking = [f"tracking.tracking_uri={resolve_tracking_uri(base.tracking.tracking_uri)}"]
    trials = []
    for setting_name, setting in spec.settings.items():
        for seed in spec.seeds:
            name = f"{setting_name}-seed{seed}"
            try:
                config = load_config(params_path, [*shared, *setting.overrides, *overrides, *tracking, f"seed={seed}",
                                                   f"train.out_dir={folder / name}"],
                                     preset=spec.preset, variant=setting.variant)
            except ConfigError as exc:
                raise SweepError(f"{path}: settings.{setting_name}: {exc}") from None
            trials.append(Trial(name, setting_name, seed, config))
    return Sweep(spec, path, folder, spec.metric or base.tracking.primary_metric, base, trials)


def sweep_started(sweep: Sweep) -> bool:
    """Whether the sweep's folder holds a Ray Tune experiment to resume."""
    from unit_distributed.tune import can_resume

    return can_resume(sweep.folder)


def run_sweep(sweep: Sweep, resume: bool = False) -> dict[str, Any]:
    """Run (or, with ``resume``, continue) every trial; write, log and return the summary.

    Trials that fail do not stop the others; the summary of those that finished is
    written, the parent run ends FAILED and :class:`SweepError` names the failed ones.
    """
    from unit_distributed import DistributedError
    from unit_distributed.tune import run_trials
    from unit_tracking import TrackingError
    from unit_tracking.sweeps import close_sweep_run, open_sweep_run

    started = sweep_started(sweep)
    if resume and not started:
        raise SweepError(f"{sweep.folder}: no interrupted sweep to resume; start it without --resume")
    if not resume and started:
        raise SweepError(f"{sweep.folder}: already holds this sweep; continue it with --resume, or remove the folder "
                         f"(or set out_dir) to start again")
    _check_same_trials(sweep, resume)
    try:
        parent = open_sweep_run(sweep.base, sweep.folder, sweep.spec.name, _parent_params(sweep), sweep.path)
    except TrackingError as exc:
        raise SweepError(f"sweep {sweep.spec.name}: {exc}") from None
    payloads = {trial.name: {"sweep": sweep.spec.name, "setting": trial.setting, "seed": trial.seed,
                             "config": trial.config.to_dict(), "parent_run_id": parent} for trial in sweep.trials}
    try:
        outcomes = run_trials(payloads, run_trial, sweep.folder, sweep.spec.resources.cpus, sweep.spec.resources.gpus,
                              sweep.spec.concurrent_trials, resume, sweep.base.distributed)
        summary = {**summarise(sweep, {name: outcome.metrics for name, outcome in outcomes.items()}),
                   "parent_run_id": parent}
    except BaseException as exc:
        close_sweep_run(sweep.base, parent, {}, [], "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        if isinstance(exc, DistributedError):
            raise SweepError(f"sweep {sweep.spec.name}: {exc}") from None
        raise
    files = write_summary(sweep, summary)
    failed = {name: outcome.error for name, outcome in outcomes.items() if outcome.error}
    close_sweep_run(sweep.base, parent, summary_metrics(summary), [*files, sweep.folder / SWEEP_RECORD],
                    "FAILED" if failed else "FINISHED")
    if failed:
        listed = "\n".join(f"  {name}: {error}" for name, error in failed.items())
        raise SweepError(f"sweep {sweep.spec.name}: {len(failed)} of {len(outcomes)} trials failed (the summary has "
                         f"the others); fix the cause and continue with --resume:\n{listed}")
    return summary


def _parent_params(sweep: Sweep) -> dict[str, str]:
    spec = sweep.spec
    params = {"sweep": spec.name, "preset": spec.preset, "metric": sweep.metric, "seeds": json.dumps(spec.seeds),
              "overrides": json.dumps(spec.overrides), "cpus_per_trial": str(spec.resources.cpus),
              "gpus_per_trial": str(spec.resources.gpus), "concurrent_trials": str(spec.concurrent_trials)}
    for name, setting in spec.settings.items():
        params[f"setting.{name}"] = json.dumps(setting.model_dump())
    return params


def _check_same_trials(sweep: Sweep, resume: bool) -> None:
    """Write the trials' configurations, or on resume check they are those of the interrupted sweep."""
    record = sweep.folder / SWEEP_RECORD
    current = {trial.name: trial.config.to_dict() for trial in sweep.trials}
    if resume and record.is_file():
        try:
            recorded = json.loads(record.read_text(encoding="utf-8"))["trials"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SweepError(f"{record}: unreadable sweep record: {exc}") from None
        differing = sorted(name for name in current.keys() | recorded.keys() if current.get(name) != recorded.get(name))
        if differing:
            raise SweepError(f"{sweep.path}: its trials are not those of the sweep in {sweep.folder} "
                             f"({', '.join(differing)} differ): resume with the same file and --set, or set another out_dir")
        return
    atomic_write(record, json.dumps({"sweep": sweep.spec.name, "file": str(sweep.path), "trials": current}, indent=2) + "\n")


def run_trial(payload: dict[str, Any]) -> dict[str, float]:
    """One trial on its Ray Tune worker: train, evaluate, all in one MLflow run under the parent; its metrics.

    A trial run again after it had finished (Tune had not recorded its end) returns its recorded metrics.
    """
    from unit_tracking.mlflow_store import training_run
    from unit_tracking.sweeps import log_trial_evaluation, trial_tags

    trial_name = f"{payload['setting']}-seed{payload['seed']}"
    cfg = config_from_dict(payload["config"], source=f"sweep {payload['sweep']}, trial {trial_name}")
    record = stages.run_folder(cfg) / TRIAL_RECORD
    inputs = {"config": payload["config"], "parent_run_id": payload["parent_run_id"]}
    if reused := stages._reuse(record, inputs):
        return reused["metrics"]
    tags = trial_tags(payload["parent_run_id"], payload["sweep"], payload["setting"], payload["seed"])
    with training_run(cfg, run_name=trial_name, tags=tags) as tracking:
        trained = stages.train(cfg, track=False, callbacks=(tracking,))
        stages.evaluate(cfg, trained["checkpoint"])
        metrics = log_trial_evaluation(tracking.client, tracking.run_id, stages.evaluation_folder(cfg),
                                       int(trained["step"]))
    stages._record(record, inputs, {"metrics": metrics, "mlflow_run_id": tracking.run_id, "run_dir": trained["run_dir"]})
    return metrics


def summarise(sweep: Sweep, metrics: dict[str, dict[str, float] | None]) -> dict[str, Any]:
    """Mean, sample standard deviation and count of the sweep's metric per setting, over the trials that finished."""
    trials, missing = [], []
    for trial in sweep.trials:
        values = metrics.get(trial.name)
        if values is None:
            continue
        if sweep.metric not in values:
            missing.append(f"{trial.name} (has {', '.join(sorted(values))})")
            continue
        trials.append({"trial": trial.name, "setting": trial.setting, "seed": trial.seed,
                       "run_dir": str(trial.config.train.out_dir), "value": values[sweep.metric]})
    if missing:
        raise SweepError(f"{sweep.path}: metric {sweep.metric!r} is not among the evaluation metrics of "
                         f"{'; '.join(missing)}")
    settings = []
    for name, setting in sweep.spec.settings.items():
        values = [trial["value"] for trial in trials if trial["setting"] == name]
        settings.append({
            "setting": name,
            "variant": setting.variant or "full",
            "overrides": setting.overrides,
            "n": len(values),
            "mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None,  # sample std (n - 1)
        })
    return {"sweep": sweep.spec.name, "preset": sweep.spec.preset, "metric": sweep.metric,
            "seeds": sweep.spec.seeds, "settings": settings, "trials": trials}


def summary_table(summary: dict[str, Any]) -> str:
    """The summary as a markdown table: one row per setting."""
    heading = (f"Sweep `{summary['sweep']}` on preset `{summary['preset']}`: {summary['metric']}, "
               f"mean ± sample std over seeds {', '.join(map(str, summary['seeds']))}")
    lines = [heading, "",
             "| setting | variant | overrides | n | mean ± std |", "|---|---|---|---|---|"]
    for row in summary["settings"]:
        mean = "-" if row["mean"] is None else f"{row['mean']:.4f}"
        std = "" if row["std"] is None else f" ± {row['std']:.4f}"
        lines.append(f"| {row['setting']} | {row['variant']} | {' '.join(row['overrides']) or '-'} | {row['n']} | {mean}{std} |")
    return "\n".join(lines) + "\n"


def write_summary(sweep: Sweep, summary: dict[str, Any]) -> list[Path]:
    markdown, data = (sweep.folder / name for name in SUMMARY_FILES)
    atomic_write(markdown, summary_table(summary))
    atomic_write(data, json.dumps(summary, indent=2) + "\n")
    return [markdown, data]


def summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The summary as MLflow metrics of the parent run: ``<setting>/<metric>/mean``, ``.../std`` and ``.../n``."""
    metrics = {}
    for row in summary["settings"]:
        prefix = f"{row['setting']}/{summary['metric']}"
        metrics[f"{prefix}/n"] = float(row["n"])
        for statistic in ("mean", "std"):
            if row[statistic] is not None and math.isfinite(row[statistic]):
                metrics[f"{prefix}/{statistic}"] = row[statistic]
    return metrics
