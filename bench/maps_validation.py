"""One maps run scored on the paired validation tiles at every checkpoint, for choosing a setting (docs/results.md).

Trains the ``maps`` preset (with ``--set`` overrides) through :func:`unit_core.training.fit`
and, at every checkpoint, evaluates the checkpoint on ``evaluation.split=val_paired``,
never on the test tiles. Each point (pixel accuracy and L1 of both directions, the
discriminators' and the cycle losses of the last log window, wall time) is appended to
``--report`` as it comes, tagged with ``--name``, so a killed run keeps what it measured.

    python bench/maps_validation.py --name "32 px crops" --out runs/maps-val/crops \\
        --report runs/maps-val/points.jsonl --set data.image_size=32 --set data.load_size=64
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from unit_core.config import load_config
from unit_core.evaluation import evaluate, load_for_evaluation, training_scale
from unit_core.training import fit

LOGGED = ("dis/a", "dis/b", "gen/gan_a", "gen/gan_b", "gen/cycle_a", "gen/cycle_b", "gen/recon_a", "gen/recon_b")
SCORED = ("a2b/pixel_accuracy", "a2b/l1", "b2a/pixel_accuracy", "b2a/l1", "a2b/cycle_l1")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--preset", default="maps")
    parser.add_argument("--name", required=True, help="label of the setting in the report")
    parser.add_argument("--out", type=Path, required=True, help="run folder (train.out_dir)")
    parser.add_argument("--report", type=Path, required=True, help="JSON-lines file the points are appended to")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return parser.parse_args()


class ValidationCurve:
    """Scores each checkpoint on the validation tiles and appends the point to the report."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.logged: dict[str, float] = {}
        self.started = time.perf_counter()

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        self.logged = metrics

    def on_checkpoint(self, step: int, checkpoint: Path, grid: Path) -> None:
        # Building the translator draws initial weights from the global generator: fork it, so the
        # training's latent noise is the same with or without the scoring.
        with torch.random.fork_rng(devices=[]):
            translator, model_cfg = load_for_evaluation(checkpoint, device="cpu")
            cfg = model_cfg.model_copy(deep=True)
            cfg.evaluation.split = "val_paired"
            result = evaluate(translator, cfg, self.args.out / "eval-val" / f"step_{step:08d}",
                              scale=training_scale(model_cfg), model_source=str(checkpoint))
        point = {"run": self.args.name, "split": "val_paired", "seed": model_cfg.seed, "step": step,
                 **{key: result.metrics[key] for key in SCORED if key in result.metrics},
                 **{key: self.logged[key] for key in LOGGED if key in self.logged},
                 "wall_s": round(time.perf_counter() - self.started, 1)}
        self.args.report.parent.mkdir(parents=True, exist_ok=True)
        with self.args.report.open("a", encoding="utf-8") as report:
            report.write(json.dumps(point) + "\n")
        print(json.dumps(point), flush=True)


def main() -> None:
    args = parse_args()
    cfg = load_config(args.params, preset=args.preset, overrides=[*args.overrides, f"train.out_dir={args.out}"])
    fit(cfg, resume=args.resume, callbacks=(ValidationCurve(args),), progress=False)


if __name__ == "__main__":
    main()
