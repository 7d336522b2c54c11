"""Many independent runs as the trials of one Ray Tune experiment: a sweep's grid, run in parallel, resumable.

:func:`run_trials` knows nothing of what a trial does: it gets a table of trial name ->
payload and a picklable function run once per trial (``trial_function(payload)``, which
returns the trial's metrics). It runs every name as one trial of a ``ray.tune.Tuner``
(a grid over the names), each with the given CPUs and GPUs, at most ``concurrent`` at
once, in the experiment folder ``<folder>/tune``.

Resuming (``resume=True``) restores that experiment with ``Tuner.restore``: finished
trials are kept as they are and not run again; unfinished and failed ones are run
again, so a trial function must itself continue from what an interrupted attempt left
(the sweep's trials resume from their run folder's latest checkpoint).

Ray is the instance this process is connected to, the cluster at ``RAY_ADDRESS``, or a
local instance started for the experiment exactly as ``unit train --workers`` starts
one (:func:`unit_distributed.runner.local_ray_instance`: loopback only, token
authentication). Trials on a cluster need the driver's folders at the same paths.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unit_core.config import DistributedConfig
from unit_distributed.errors import DistributedError
from unit_distributed.runner import _ray_for_run

EXPERIMENT_FOLDER = "tune"
TRIAL_KEY = "trial"  # the one entry of each trial's Tune config: its name
REPORTED_METRICS = "trial_metrics"  # the trial function's metrics, kept apart from the entries Tune adds
# How often, in seconds, Tune writes the experiment's state: a trial's end is on disk within about
# this long (Tune's "auto" waits at least 10 s, and a sweep killed in between would run that trial again).
STATE_PERIOD_VARIABLE, STATE_PERIOD_S = "TUNE_GLOBAL_CHECKPOINT_S", "1"

TrialFunction = Callable[[dict[str, Any]], dict[str, float]]


@dataclass(frozen=True)
class TrialOutcome:
    """What one trial ended with: its metrics, or the error that ended it."""

    name: str
    metrics: dict[str, float] | None
    error: str | None
    folder: str  # the trial's folder in the Tune experiment


def experiment_folder(folder: str | Path) -> Path:
    return Path(os.path.abspath(folder)) / EXPERIMENT_FOLDER


def can_resume(folder: str | Path) -> bool:
    """Whether ``folder`` holds a Tune experiment that :func:`run_trials` can continue."""
    from ray.tune import Tuner

    return Tuner.can_restore(str(experiment_folder(folder)))


def run_trials(
    trials: dict[str, dict[str, Any]],
    trial_function: TrialFunction,
    folder: str | Path,
    cpus: float,
    gpus: float,
    concurrent: int,
    resume: bool,
    ray_settings: DistributedConfig,
) -> dict[str, TrialOutcome]:
    """Run ``trial_function(trials[name])`` for every name as a Ray Tune trial; outcomes by name, in order.

    ``ray_settings``: the object store size of a Ray instance started here.
    """
    if not trials:
        raise DistributedError("no trials to run")
    experiment = experiment_folder(folder)
    restorable = can_resume(folder)
    if resume and not restorable:
        raise DistributedError(f"{experiment}: no Ray Tune experiment to resume; start the sweep without --resume")
    if not resume and restorable:
        raise DistributedError(f"{experiment}: already holds a Ray Tune experiment; continue it with --resume, "
                               f"or remove {Path(folder)} to start again")
    with _ray_for_run(ray_settings) as on_local_instance, _tune_state_period():
        if on_local_instance:
            _check_trial_fits(cpus, gpus)
        results = _fit(trials, trial_function, experiment, cpus, gpus, concurrent, resume)
    outcomes = {}
    for result in results:
        name = result.config[TRIAL_KEY]
        error = None if result.error is None else _last_line(result.error)
        metrics = None if error else (result.metrics or {}).get(REPORTED_METRICS)
        if error is None and metrics is None:
            error = "the trial ended without reporting its metrics"
        outcomes[name] = TrialOutcome(name, metrics, error, result.path)
    missing = sorted(set(trials) - set(outcomes))
    if missing:
        raise DistributedError(f"{experiment}: the experiment has no trial {', '.join(missing)}: it was started with "
                               f"other trials; remove {Path(folder)} to start again")
    return {name: outcomes[name] for name in trials}


def _fit(trials: dict[str, dict[str, Any]], trial_function: TrialFunction, experiment: Path, cpus: float,
         gpus: float, concurrent: int, resume: bool) -> Any:
    from ray import tune

    trainable = tune.with_resources(
        tune.with_parameters(_run_trial, trials=trials, trial_function=trial_function, working_dir=os.getcwd()),
        {"cpu": cpus, "gpu": gpus},
    )
    if resume:
        # Failed trials run again too: a trial continues from its own run folder, not from a Tune checkpoint.
        tuner = tune.Tuner.restore(str(experiment), trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={TRIAL_KEY: tune.grid_search(list(trials))},
            tune_config=tune.TuneConfig(max_concurrent_trials=concurrent, trial_name_creator=_trial_name,
                                        trial_dirname_creator=_trial_name),
            run_config=tune.RunConfig(name=experiment.name, storage_path=str(experiment.parent), verbose=1),
        )
    return tuner.fit()


@contextmanager
def _tune_state_period() -> Iterator[None]:
    """TUNE_GLOBAL_CHECKPOINT_S for this experiment (unless set), as before afterwards."""
    saved = os.environ.get(STATE_PERIOD_VARIABLE)
    os.environ.setdefault(STATE_PERIOD_VARIABLE, STATE_PERIOD_S)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(STATE_PERIOD_VARIABLE, None)


def _run_trial(config: dict[str, Any], *, trials: dict[str, dict[str, Any]], trial_function: TrialFunction,
               working_dir: str) -> None:
    """The Tune trainable: one trial function call, its metrics reported once at the end."""
    from ray import tune

    # Tune starts a trial in its own folder; the payload's relative paths are the driver's.
    os.chdir(working_dir)
    metrics = trial_function(trials[config[TRIAL_KEY]])
    tune.report({REPORTED_METRICS: metrics})


def _trial_name(trial: Any) -> str:
    return trial.config[TRIAL_KEY]


def _check_trial_fits(cpus: float, gpus: float) -> None:
    """A local instance never grows: a trial asking for more than it has would wait forever."""
    import ray

    available = ray.cluster_resources()
    for resource, amount in (("CPU", cpus), ("GPU", gpus)):
        if amount > available.get(resource, 0):
            raise DistributedError(
                f"a trial needs {amount:g} {resource}s but this machine's Ray has {available.get(resource, 0):g}: "
                f"lower resources.{resource.lower()}s of the sweep (fractions are allowed), or set RAY_ADDRESS "
                f"to a cluster"
            )


def _last_line(error: BaseException) -> str:
    """The innermost error's own line: Ray wraps a trial's exception in its traceback."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__
