"""``unit train``: single-process UNIT training on a folder data set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from unit_core.config import load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a UNIT model",
        description="Train UNIT on <data.root>/<domain>/train (or the CycleGAN layout trainA/trainB).",
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="configuration file (default: params.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. --set train.max_steps=2000 (repeatable)")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                        help="continue from CHECKPOINT, or from <train.out_dir>/checkpoints/latest.pt if none is given")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to train_log.jsonl)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unit_cli.errors import UserError
    from unit_core.checkpoint import CheckpointError
    from unit_core.training import fit

    cfg = load_config(args.params, args.overrides)
    try:
        result = fit(cfg, resume=args.resume, progress=not args.no_progress)
    except (CheckpointError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    print(json.dumps({"step": result.step, "checkpoint": str(result.checkpoint), "samples": str(result.grid)}))
    return 0
