"""One N-domain model against pairwise two-domain models on the street conditions (docs/results.md).

Trains the ``street-conditions`` preset (day, night, rain, snow around one shared latent
space) for ``--steps`` steps, and one two-domain model per unordered pair of the same
conditions (6 models, 2 ordered pairs each) for ``--steps / 6`` steps each: equal total
training steps. The pairwise models' width (``model.width`` and ``model.dis_width``, scaled
together) is chosen so that the six together hold about as many parameters as the one
N-domain model. Every ordered pair is scored on the same paired test renders (pixel
accuracy within ``evaluation.pixel_tolerance`` and L1 against the true rendering).

    python bench/many_domains.py --out runs/many-domains --steps 4000
    python bench/many_domains.py --out runs/many-domains-small --steps 40 --set data.image_size=32 --set model.width=8
    python bench/many_domains.py --out runs/many-domains --steps 4000 --models pairwise   # in a second process

``--models`` trains only some of the models (two processes can share the work on two cores);
the table is written whenever every model's evaluation is present.

Files: ``<out>/n-domain/`` and ``<out>/pair-<s>-<t>/`` are normal run folders (checkpoints,
samples, evaluation/); ``<out>/results.jsonl`` holds one line per model and ordered pair;
``<out>/table.md`` the comparison. A model already trained to its steps (and evaluated) is reused.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch

from unit_core.config import UnitConfig, load_config
from unit_core.trainer import UNITTrainer
from unit_pipeline import stages

PRESET = "street-conditions"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, required=True, help="steps of the N-domain model; each pairwise model gets steps/6")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for PyTorch; 0 = all cores")
    parser.add_argument("--models", nargs="+", choices=("n-domain", "pairwise"), default=["n-domain", "pairwise"],
                        help="which models to train and evaluate here (default both)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="applied to every model, e.g. data.image_size=32")
    return parser.parse_args()


def parameter_count(cfg: UnitConfig) -> int:
    trainer = UNITTrainer(cfg, "cpu")
    return sum(p.numel() for p in trainer.gen.parameters()) + sum(p.numel() for p in trainer.dis.parameters())


def pair_config(args: argparse.Namespace, source: str, target: str, width: int, dis_width: int, steps: int) -> UnitConfig:
    return load_config(args.params, [
        *args.overrides, "data.domains=[]", f"data.domain_a={source}", f"data.domain_b={target}",
        f"model.width={width}", f"model.dis_width={dis_width}", f"train.max_steps={steps}",
        f"train.out_dir={args.out / f'pair-{source}-{target}'}", f"name=pair-{source}-{target}",
    ], preset=PRESET)


def matching_pair_width(args: argparse.Namespace, n_cfg: UnitConfig, pairs: int) -> tuple[int, int, int]:
    """(width, dis_width, total parameters of the pairwise models) closest to the N-domain model's count."""
    target = parameter_count(n_cfg)
    source, other = n_cfg.data.domains[:2]
    best = None
    for width in range(2, n_cfg.model.width + 1):
        dis_width = max(1, round(n_cfg.model.dis_width * width / n_cfg.model.width))
        total = pairs * parameter_count(pair_config(args, source, other, width, dis_width, 1))
        if best is None or abs(total - target) < abs(best[2] - target):
            best = (width, dis_width, total)
    return best


def main() -> int:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n_cfg = load_config(args.params, [*args.overrides, f"train.max_steps={args.steps}",
                                      f"train.out_dir={args.out / 'n-domain'}"], preset=PRESET)
    domains = n_cfg.data.domains
    unordered = list(itertools.combinations(domains, 2))
    pair_steps = max(1, args.steps // len(unordered))
    width, dis_width, pair_parameters = matching_pair_width(args, n_cfg, len(unordered))
    n_parameters = parameter_count(n_cfg)
    print(f"N-domain: {len(domains)} domains, width {n_cfg.model.width}, {n_parameters:,} parameters, {args.steps} steps; "
          f"pairwise: {len(unordered)} models, width {width} (D {dis_width}), {pair_parameters:,} parameters in all, "
          f"{pair_steps} steps each", flush=True)
    stages.ingest(n_cfg)
    args.out.mkdir(parents=True, exist_ok=True)
    models = {"n-domain": [(n_cfg, None)]}
    models["pairwise"] = [(pair_config(args, s, t, width, dis_width, pair_steps), (s, t)) for s, t in unordered]
    for model in args.models:
        for cfg, _ in models[model]:
            started = time.perf_counter()
            stages.train(cfg, track=False)
            stages.evaluate(cfg)
            print(f"{cfg.name}: trained and evaluated in {time.perf_counter() - started:.0f} s", flush=True)

    lines = []
    for model, runs in models.items():
        for cfg, pair in runs:
            metrics_file = stages.evaluation_folder(cfg) / "metrics.json"
            if not metrics_file.is_file():
                print(f"{cfg.name}: not evaluated yet ({metrics_file}); the table waits for it")
                return 0
            metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
            info = {"steps": cfg.train.max_steps, "parameters": parameter_count(cfg)}
            ordered = itertools.permutations(domains, 2) if pair is None else [pair, pair[::-1]]
            for source, target in ordered:
                prefix = f"{source}2{target}" if pair is None else ("a2b" if (source, target) == pair else "b2a")
                lines.append({"model": model, "pair": f"{source}2{target}", "pixel_accuracy": metrics[f"{prefix}/pixel_accuracy"],
                              "l1": metrics[f"{prefix}/l1"], **info})
    (args.out / "results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    table = comparison_table(lines)
    (args.out / "table.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


def comparison_table(lines: list[dict]) -> str:
    by = {(line["model"], line["pair"]): line for line in lines}
    pairs = [line["pair"] for line in lines if line["model"] == "n-domain"]
    rows = ["| pair | N-domain pixel accuracy | pairwise pixel accuracy | N-domain L1 | pairwise L1 |", "|---|---|---|---|---|"]
    for pair in pairs:
        n, p = by["n-domain", pair], by["pairwise", pair]
        rows.append(f"| {pair} | {n['pixel_accuracy']:.3f} | {p['pixel_accuracy']:.3f} | {n['l1']:.4f} | {p['l1']:.4f} |")
    mean = lambda model, key: sum(by[model, pair][key] for pair in pairs) / len(pairs)  # noqa: E731
    rows.append(f"| mean | **{mean('n-domain', 'pixel_accuracy'):.3f}** | **{mean('pairwise', 'pixel_accuracy'):.3f}** | "
                f"{mean('n-domain', 'l1'):.4f} | {mean('pairwise', 'l1'):.4f} |")
    wins = sum(by["n-domain", pair]["pixel_accuracy"] > by["pairwise", pair]["pixel_accuracy"] for pair in pairs)
    return "\n".join(rows) + f"\n\nN-domain ahead on {wins} of {len(pairs)} ordered pairs.\n"


if __name__ == "__main__":
    raise SystemExit(main())
