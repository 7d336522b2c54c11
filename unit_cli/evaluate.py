"""``unit evaluate``: metrics.json and report grids of a checkpoint or a registered model on a test split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from unit_cli.settings import add_settings_arguments, load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a trained model on a test split",
        description=(
            "Translate <data>/<domain>/<evaluation.split>/ both ways and write metrics.json (paired pixel accuracy, "
            "L1 and PSNR where the other domain holds a file of the same name; reconstruction and cycle L1; "
            "FID/KID with evaluation.inception_weights), evaluation.json and report/<direction>.png."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a checkpoint written by unit train")
    source.add_argument("--model", metavar="URI", help="a logged model, e.g. models:/unit-street-scenes@champion")
    parser.add_argument("--data", type=Path, required=True, help="data set folder (<data>/<domain>/<split>/); sets data.root")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    add_settings_arguments(parser, example="evaluation.split=test")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--batch-size", type=int, default=8, help="images of equal size translated together")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from unit_core.errors import UserError
    from unit_core.adaptation import classifier_from_checkpoint
    from unit_core.evaluation import evaluate, load_for_evaluation, training_scale

    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    cfg = load_settings(args)
    cfg.data.root = str(args.data)
    if args.model:
        from unit_tracking.mlflow_store import TrackingError, downloaded_checkpoint

        fetched = downloaded_checkpoint(args.model, cfg.tracking.tracking_uri)
        errors: tuple[type[Exception], ...] = (TrackingError,)
    else:
        fetched = nullcontext(args.checkpoint)
        errors = ()
    try:
        with fetched as checkpoint:
            translator, model_cfg = load_for_evaluation(checkpoint, args.device)
            classifier = classifier_from_checkpoint(  # None unless domain adaptation
                checkpoint, args.device, cfg.evaluation.adaptation_classifier)
        result = evaluate(
            translator, cfg, args.out, scale=training_scale(model_cfg), model_source=args.model or str(args.checkpoint),
            batch_size=args.batch_size, classifier=classifier,
        )
    # Bad checkpoints, weights files, images and data layouts raise these, with the file named.
    except (FileNotFoundError, ValueError, *errors) as exc:
        raise UserError(str(exc)) from None
    for note in result.notes:
        print(f"unit evaluate: {note}")
    print(json.dumps({"metrics": str(result.metrics_path), "report": [str(path) for path in result.report], **result.metrics}))
    return 0
