"""Do bf16 loss curves match fp32 within noise? Same preset, same seeds, both precisions.

Trains the preset once per precision and seed with :func:`unit_core.training.fit` and
compares every logged loss term over the second half of the run (the mean of its logged
values there): the gap between the precisions' means against the spread between seeds
of one precision. A term is "within noise" when the precision gap is at most twice the
larger seed standard deviation. Prints a table for docs/performance.md and writes it,
with every run's curve, to ``<out>/precision_curves.json``.

    unit stage ingest --preset street-scenes        # the preset's data first
    python bench/precision_curves.py --preset street-scenes --steps 500 --out runs/precision
    python bench/precision_curves.py --preset maps --steps 2000 --set train.device=cuda --out runs/precision
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from unit_core.config import load_config
from unit_core.trainer import resolve_device
from unit_core.training import fit


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--preset", default="street-scenes")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--precisions", nargs=2, default=["fp32", "bf16"], metavar=("REFERENCE", "OTHER"))
    parser.add_argument("--out", type=Path, required=True, help="runs go to <out>/<precision>/seed<seed>")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return parser.parse_args()


def train_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text(encoding="utf-8").splitlines()]


def late_mean(log: list[dict], term: str) -> float:
    """Mean of a term's logged values over the second half of the run."""
    values = [entry[term] for entry in log[len(log) // 2 :]]
    return sum(values) / len(values)


def main() -> int:
    args = parse_args()
    params = args.params if args.params.exists() else None
    logs: dict[str, dict[int, list[dict]]] = {precision: {} for precision in args.precisions}
    seconds: dict[str, float] = {}
    for precision in args.precisions:
        started = time.perf_counter()
        for seed in args.seeds:
            run_dir = args.out / precision / f"seed{seed}"
            cfg = load_config(params, [
                *args.overrides, f"seed={seed}", f"train.precision={precision}", f"train.out_dir={run_dir}",
                f"train.max_steps={args.steps}", f"train.log_every={args.log_every}",
                f"train.checkpoint_every={args.steps}",
            ], preset=args.preset)
            if not (run_dir / "checkpoints" / "latest.pt").exists():
                fit(cfg, progress=False)
            logs[precision][seed] = train_log(run_dir)
        seconds[precision] = round(time.perf_counter() - started, 1)

    reference, other = args.precisions
    terms = sorted(key for key in logs[reference][args.seeds[0]][0] if key.startswith(("gen/", "dis/")))
    rows = []
    for term in terms:
        means = {precision: [late_mean(logs[precision][seed], term) for seed in args.seeds] for precision in args.precisions}
        spread = max(statistics.stdev(values) if len(values) > 1 else 0.0 for values in means.values())
        gap = statistics.fmean(means[other]) - statistics.fmean(means[reference])
        rows.append({"term": term, reference: statistics.fmean(means[reference]), other: statistics.fmean(means[other]),
                     "gap": gap, "seed_std": spread, "within_noise": abs(gap) <= 2 * spread})

    device = resolve_device(cfg.train.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"preset {args.preset}, {args.steps} steps, seeds {args.seeds}, {device.type} ({name}), torch {torch.__version__}")
    print(f"wall time: {', '.join(f'{p} {s} s' for p, s in seconds.items())}")
    print(f"| term | {reference} | {other} | gap | seed std | within noise |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['term']} | {row[reference]:.4f} | {row[other]:.4f} | {row['gap']:+.4f} | {row['seed_std']:.4f} | "
              f"{'yes' if row['within_noise'] else 'NO'} |")
    report = {"preset": args.preset, "steps": args.steps, "seeds": args.seeds, "overrides": args.overrides,
              "torch": torch.__version__, "seconds": seconds, "terms": rows,
              "curves": {p: {str(s): log for s, log in runs.items()} for p, runs in logs.items()}}
    (args.out / "precision_curves.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
