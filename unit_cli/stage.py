"""``unit stage <ingest|train|evaluate|register> --preset P``: one stage of the pipeline (DVC runs these)."""

from __future__ import annotations

import argparse
import json

from unit_cli.settings import add_settings_arguments, load_settings
from unit_pipeline.stages import STAGES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stage",
        help="run one pipeline stage of a preset",
        description="Run one stage of the pipeline for a preset (presets/<name>.yaml over params.yaml). "
                    "A stage whose output is complete for the same settings returns at once.",
    )
    parser.add_argument("stage", choices=STAGES)
    add_settings_arguments(parser)
    parser.add_argument("--no-track", action="store_true", help="train without MLflow tracking")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unit_core.errors import UserError
    from unit_pipeline.stages import StageError, run_stage

    cfg = load_settings(args)
    try:
        outcome = run_stage(args.stage, cfg, track=not args.no_track)
    except StageError as exc:
        raise UserError(str(exc)) from None
    print(json.dumps(outcome, default=str))
    return 0
