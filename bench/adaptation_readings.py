"""Target accuracy of domain-adaptation checkpoints under each reading of ``evaluation.adaptation_classifier``.

For docs/results.md ("Which path classifies the target digits"): every checkpoint is read as
``target``, ``translated`` and ``ensemble`` on the full ``<data>/<data.domain_b>/<split>`` of its
stored configuration, one JSON line per checkpoint (also appended to ``--report``).

    python bench/adaptation_readings.py runs/dev/digits-usps2mnist/seed0/checkpoints/step_0000{1000,1500}.pt \\
        --data data/digits-dev --report docs/results/digits-adaptation-readings.jsonl --tag task=usps-to-inverted-mnist
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from unit_core.adaptation import classifier_from_checkpoint
from unit_core.checkpoint import load_checkpoint, stored_config
from unit_core.evaluation import classify_split

READINGS = ("target", "translated", "ensemble")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--data", type=Path, required=True, help="data set folder holding the target domain's split")
    parser.add_argument("--split", default="test")
    parser.add_argument("--report", type=Path, help="JSON-lines file to append one line per checkpoint to")
    parser.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="added to every line")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tags = dict(tag.split("=", 1) for tag in args.tag)
    for checkpoint in args.checkpoints:
        payload = load_checkpoint(checkpoint)
        cfg = stored_config(payload, checkpoint)
        line = {**tags, "checkpoint": str(checkpoint), "step": payload["step"], "target_domain": cfg.data.domain_b,
                "split": args.split}
        started = time.perf_counter()
        for reading in READINGS:
            classifier = classifier_from_checkpoint(checkpoint, "cpu", reading)
            line[reading] = classify_split(classifier, args.data, cfg.data.domain_b, args.split, cfg.model.channels_b,
                                           batch_size=500)
        line["seconds"] = round(time.perf_counter() - started, 1)
        print(json.dumps(line), flush=True)
        if args.report:
            args.report.parent.mkdir(parents=True, exist_ok=True)
            with args.report.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
