"""``unit <command>``: each stage registers its own subcommand.

Stages are imported lazily so that ``unit translate`` does not pay for importing Ray,
Prefect or MLflow.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from unit_core.errors import UserError
from unit_core.config import ConfigError

# subcommand -> module with ``register(subparsers)``; each registered parser sets ``func``.
STAGES = {
    "train": "unit_cli.train",
    "translate": "unit_cli.translate",
    "ingest": "preprocessing.cli",
    "evaluate": "unit_cli.evaluate",
    "register": "unit_cli.register",
    "stage": "unit_cli.stage",
    "sweep": "unit_cli.sweep",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unit", description="UNIT unpaired image-to-image translation")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in STAGES.values():
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, ConfigError) as exc:
        print(f"unit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unit {args.command}: interrupted", file=sys.stderr)
        return 130
