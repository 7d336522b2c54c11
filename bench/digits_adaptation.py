"""One domain-adaptation run on the digits (presets digits-mnist2usps / digits-usps2mnist), for docs/results.md.

Trains with :func:`unit_core.training.fit` to ``train.max_steps``, or, with ``--time-budget``,
up to the last checkpoint after which another ``train.checkpoint_every`` steps would overrun
the budget. At every checkpoint the accuracy on the target test split is recorded: the
accuracy curve, for the report only, never used to choose a model. The reported number is
the final checkpoint's accuracy, computed again through
:func:`unit_core.adaptation.classifier_from_checkpoint`.

    python bench/digits_adaptation.py --preset digits-mnist2usps --seed 0 --out runs/adaptation
    python bench/digits_adaptation.py --preset digits-usps2mnist --seed 1 --out runs/adaptation \\
        --time-budget 150 --report results.jsonl --set data.root=data/digits --set train.device=cuda

Files: ``<out>/<preset>/seed<seed>/`` holds the run (checkpoints, train_log.jsonl,
target_accuracy.jsonl, summary.json); ``--report`` appends one JSON line per curve point
and one with the summary, tagged with preset and seed, so several runs can share it.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from unit_core.adaptation import TargetAccuracyCurve, classifier_from_checkpoint
from unit_core.config import load_config
from unit_core.evaluation import classify_split
from unit_core.trainer import UNITTrainer, resolve_device
from unit_core.training import DataParallel, fit


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--preset", required=True, help="digits-mnist2usps or digits-usps2mnist")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="runs go to <out>/<preset>/seed<seed>")
    parser.add_argument("--time-budget", type=float, default=0.0, metavar="SECONDS",
                        help="stop at the last checkpoint that leaves time for one more interval; 0 = train to max_steps")
    parser.add_argument("--report", type=Path, help="JSON-lines file to append curve points and the summary to")
    parser.add_argument("--track", action="store_true",
                        help="record the finished run in MLflow (tracking.tracking_uri): params, losses, the accuracy "
                        "curve as the stepped metric b/target_accuracy_curve, the final b/classification_accuracy")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in <out>/<preset>/seed<seed> from its latest checkpoint (e.g. with a "
                        "higher train.max_steps); the curve and the training time continue too")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return parser.parse_args()


class OutOfTime(Exception):
    """Raised at a checkpoint (already written and measured) when the next interval would overrun the budget."""

    def __init__(self, step: int):
        super().__init__(f"time budget reached at step {step}")
        self.step = step


class BudgetedCurve:
    """The target-accuracy curve, reported as it grows, and the time budget's stop."""

    def __init__(self, curve: TargetAccuracyCurve, tags: dict, budget: float, report: Path | None):
        self.curve, self.tags, self.budget, self.report = curve, tags, budget, report
        self.started = self.last_checkpoint = time.perf_counter()

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        """Nothing to do between checkpoints."""

    def on_checkpoint(self, step: int, trainer: UNITTrainer, checkpoint: Path | None, grid: Path | None) -> None:
        self.curve.on_checkpoint(step, trainer, checkpoint, grid)
        now = time.perf_counter()
        point = json.loads(self.curve.out_file.read_text(encoding="utf-8").splitlines()[-1])
        append_line(self.report, {**self.tags, **point, "wall_s": round(now - self.started, 1)})
        interval, self.last_checkpoint = now - self.last_checkpoint, now
        if self.budget and now - self.started + interval > self.budget:
            raise OutOfTime(step)


def append_line(path: Path | None, record: dict) -> None:
    print(json.dumps(record), flush=True)
    if path is not None:
        with path.open("a", encoding="utf-8") as handle:  # one short write: lines of parallel runs stay whole
            handle.write(json.dumps(record) + "\n")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def main() -> int:
    args = parse_args()
    run_dir = args.out / args.preset / f"seed{args.seed}"
    cfg = load_config(args.params, [*args.overrides, f"seed={args.seed}", f"train.out_dir={run_dir}"], preset=args.preset)
    curve_file = run_dir / "target_accuracy.jsonl"
    earlier_seconds = 0.0
    if args.resume:
        earlier_seconds = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))["train_wall_s"]
    else:
        curve_file.unlink(missing_ok=True)
    tags = {"preset": args.preset, "seed": args.seed}
    callback = BudgetedCurve(TargetAccuracyCurve(cfg, cfg.evaluation.split, curve_file), tags, args.time_budget, args.report)
    try:
        step = fit(cfg, resume=args.resume, progress=False, parallel=DataParallel(replica_callbacks=(callback,))).step
    except OutOfTime as stop:
        step = stop.step
    train_seconds = earlier_seconds + time.perf_counter() - callback.started

    device = resolve_device(cfg.train.device)
    checkpoint = run_dir / "checkpoints" / "latest.pt"
    classifier = classifier_from_checkpoint(checkpoint, device, cfg.evaluation.adaptation_classifier)
    accuracy = classify_split(classifier, cfg.data.root, cfg.data.domain_b,
                              cfg.evaluation.split, cfg.model.channels_b, batch_size=500)
    summary = {
        **tags, "final": True, "steps": step, "max_steps": cfg.train.max_steps, "batch_size": cfg.train.batch_size,
        "target": cfg.data.domain_b, "split": cfg.evaluation.split,
        "classifier": cfg.evaluation.adaptation_classifier, "accuracy": accuracy,
        "train_wall_s": round(train_seconds, 1), "device": device_name(device), "torch": torch.__version__,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    append_line(args.report, summary)
    if args.track:
        track(cfg, f"{args.preset}-seed{args.seed}", curve_file, summary)
    return 0


def track(cfg, run_name: str, curve_file: Path, summary: dict) -> None:
    from unit_tracking.mlflow_store import log_finished_run  # MLflow only when asked for

    points = [json.loads(line) for line in curve_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    grids = sorted((Path(cfg.train.out_dir) / "samples").glob("*.png"))
    curves = {"b/target_accuracy_curve": [(point["step"], point["accuracy"]) for point in points]}
    if any("accuracy_trained" in point for point in points):  # train.ema_decay: the curve above is the average's
        curves["b/target_accuracy_curve_trained"] = [(p["step"], p["accuracy_trained"]) for p in points if "accuracy_trained" in p]
    run_id = log_finished_run(
        cfg, run_name, curves,
        {"b/classification_accuracy": summary["accuracy"], "train_wall_s": summary["train_wall_s"]},
        artifacts=(curve_file, Path(cfg.train.out_dir) / "summary.json", *grids[-1:]),
    )
    print(f"MLflow run {run_id} ({run_name})", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
