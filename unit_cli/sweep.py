"""``unit sweep SWEEP.yaml [--resume]``: every setting x seed of a sweep file as a trial on Ray Tune, then the summary."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="run a sweep file's settings x seeds on Ray Tune and summarise them",
        description="Run every setting x seed of a sweep file (format: unit_pipeline/sweep.py, examples in sweeps/) "
                    "as a training run with its own run folder and MLflow run, nested under one parent run; "
                    "then print and write the mean +- std of the sweep's metric per setting.",
    )
    parser.add_argument("sweep", type=Path, metavar="SWEEP.yaml", help="the sweep file, e.g. sweeps/maps-ablation.yaml")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted sweep in its folder: finished trials are kept, the others "
                             "resume from their run folder's latest checkpoint")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="configuration file (default: params.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting of every trial, after the sweep's own, e.g. --set train.max_steps=200 "
                             "(repeatable; a resume needs the same ones)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unit_core.errors import UserError
    from unit_pipeline.sweep import SweepError, load_sweep, run_sweep, summary_table

    try:
        sweep = load_sweep(args.sweep, args.params, args.overrides)
        summary = run_sweep(sweep, resume=args.resume)
    except SweepError as exc:
        raise UserError(str(exc)) from None
    print(summary_table(summary))
    print(json.dumps({"summary": str(sweep.folder / "summary.md"), "parent_run_id": summary["parent_run_id"]}))
    return 0
