"""``unit register``: log a trained model and its evaluation to MLflow, register it, maybe promote it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from unit_cli.settings import add_settings_arguments, load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "register",
        help="log, register and maybe promote a model in MLflow",
        description=(
            "Log the evaluation metrics (and evaluation.json, report/ beside them) and the model as an MLflow pyfunc "
            "into the training run, register a version of tracking.registered_model, and move the 'champion' alias "
            "to it if it beats the current champion on tracking.primary_metric."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run-dir", type=Path, help="a unit train output folder (uses checkpoints/latest.pt, its log and samples)")
    source.add_argument("--checkpoint", type=Path, help="a checkpoint written by unit train")
    parser.add_argument("--metrics", type=Path, required=True, help="metrics.json written by unit evaluate")
    add_settings_arguments(parser, example="tracking.tracking_uri=http://127.0.0.1:5000")
    parser.add_argument("--run-name", help="name of a new MLflow run (default: the run folder or checkpoint name)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unit_core.errors import UserError
    from unit_core.checkpoint import CheckpointError
    from unit_core.layout import run_paths
    from unit_tracking.mlflow_store import TrackingError, register_model

    cfg = load_settings(args)
    checkpoint = args.checkpoint
    if args.run_dir is not None:
        if not args.run_dir.is_dir():
            raise UserError(f"{args.run_dir}: no such run folder")
        checkpoint = run_paths(args.run_dir)["latest"]
    try:
        registration = register_model(cfg, checkpoint, args.metrics, run_dir=args.run_dir, run_name=args.run_name)
    except (TrackingError, CheckpointError) as exc:
        raise UserError(str(exc)) from None
    print(f"unit register: {registration.registered_model} v{registration.version}: {registration.reason}")
    print(json.dumps(registration.summary()))
    return 0
