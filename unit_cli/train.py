"""``unit train``: UNIT training on a folder data set, in one process or on Ray Train workers."""

from __future__ import annotations

import argparse
import json

from unit_cli.settings import add_settings_arguments, load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a UNIT model",
        description="Train UNIT on <data.root>/<domain>/train (or the CycleGAN layout trainA/trainB).",
    )
    add_settings_arguments(parser)
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                        help="continue from CHECKPOINT, or from <train.out_dir>/checkpoints/latest.pt if none is given; "
                             "with several workers: continue the run in distributed.storage_path, or start a new run "
                             "from CHECKPOINT (a file, or a checkpoint folder or URI in storage)")
    parser.add_argument("--workers", type=_positive_int, metavar="N",
                        help="DDP workers on Ray Train (default: distributed.workers); 1 = one process without Ray. "
                             "Joins the cluster at RAY_ADDRESS if set, else starts Ray on this machine")
    parser.add_argument("--gpus", action="store_true",
                        help="one GPU per Ray worker, NCCL (default: distributed.use_gpu; CPU workers use gloo)")
    parser.add_argument("--track", action="store_true",
                        help="log params, losses and sample grids to MLflow (tracking.tracking_uri, MLFLOW_TRACKING_URI "
                             "or the local store); the server is checked before training starts")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to train_log.jsonl)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unit_core.errors import UserError
    from unit_core.checkpoint import CheckpointError
    from unit_distributed import DistributedError, train
    from unit_pipeline.stages import tracked_callbacks
    from unit_tracking import TrackingError

    overrides = []
    if args.workers is not None:
        overrides.append(f"distributed.workers={args.workers}")
    if args.gpus:
        overrides.append("distributed.use_gpu=true")
    cfg = load_settings(args, *overrides)
    try:
        with tracked_callbacks(cfg, args.track) as callbacks:
            result = train(cfg, resume=args.resume, callbacks=callbacks, progress=not args.no_progress)
    except (CheckpointError, FileNotFoundError, ValueError, DistributedError, TrackingError) as exc:
        raise UserError(str(exc)) from None
    summary = {"step": result.step, "checkpoint": str(result.checkpoint), "samples": str(result.grid)}
    for extra in ("storage_checkpoint", "started_from"):  # distributed runs only
        if hasattr(result, extra):
            summary[extra] = getattr(result, extra)
    print(json.dumps(summary))
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
