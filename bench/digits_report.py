"""Markdown tables of digits adaptation runs from the JSON lines of bench/digits_adaptation.py --report.

Two protocols, labelled as what they are: the **final model** (this project's headline: the
last checkpoint, chosen by nothing) and the **best checkpoint on target test labels** (what
the reference codes of the paper and of CoGAN report: the highest accuracy seen at any
checkpoint, which selects on the target test labels).

    python bench/digits_report.py docs/results/digits-cpu-padded.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

DIRECTIONS = {"digits-mnist2usps": ("MNIST→USPS", 0.9597), "digits-usps2mnist": ("USPS→MNIST", 0.9358)}


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "–"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="JSON lines: curve points and final summaries")
    args = parser.parse_args()
    curves: dict[str, dict[int, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    finals: dict[str, dict[int, dict]] = defaultdict(dict)
    for number, line in enumerate(args.results.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        if record.get("final"):
            finals[record["preset"]][record["seed"]] = record
        else:
            curves[record["preset"]][record["seed"]][record["step"]] = record["accuracy"]

    print("| direction | steps | seeds | final model (mean ± std) | best checkpoint on target test labels | paper |")
    print("|---|---|---|---|---|---|")
    for preset, (label, paper) in DIRECTIONS.items():
        if preset not in finals:
            continue
        runs = finals[preset]
        final = [runs[seed]["accuracy"] for seed in sorted(runs)]
        best = [max(curves[preset][seed].values()) for seed in sorted(runs) if curves[preset][seed]]
        steps = sorted({runs[seed]["steps"] for seed in runs})
        per_seed = ", ".join(f"{runs[seed]['accuracy']:.4f}" for seed in sorted(runs))
        print(f"| {label} | {'/'.join(map(str, steps))} | {len(runs)} ({per_seed}) | **{mean_std(final)}** | "
              f"{mean_std(best)} | {paper} |")

    print()
    steps = sorted({step for preset in curves for seed in curves[preset] for step in curves[preset][seed]})
    presets = [preset for preset in DIRECTIONS if preset in curves]
    header = " | ".join(f"{DIRECTIONS[p][0]} s{seed}" for p in presets for seed in sorted(curves[p])) + " | " + \
        " | ".join(f"{DIRECTIONS[p][0]} mean" for p in presets)
    print(f"| step | {header} |")
    print("|---" * (1 + sum(len(curves[p]) for p in presets) + len(presets)) + "|")
    for step in steps:
        cells = [f"{curves[p][seed][step]:.3f}" if step in curves[p][seed] else "" for p in presets for seed in sorted(curves[p])]
        means = []
        for p in presets:
            values = [curves[p][seed][step] for seed in curves[p] if step in curves[p][seed]]
            means.append(f"{statistics.mean(values):.3f}" if len(values) == len(curves[p]) else "")
        print(f"| {step} | " + " | ".join(cells + means) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
