"""The settings options every command shares: ``--params``, ``--preset``, ``--variant`` and ``--set``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from unit_core.config import UnitConfig


def add_settings_arguments(parser: argparse.ArgumentParser, example: str = "train.max_steps=2000") -> None:
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="configuration file (default: params.yaml)")
    parser.add_argument("--preset", help="apply presets/<PRESET>.yaml over the params file")
    parser.add_argument("--variant",
                        help="one of the paper's ablations over the preset: no-sharing (the paper's: no shared blocks, "
                             "no reconstruction streams), no-sharing-keep-vae, no-cycle; full is the model itself")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a setting after the preset, e.g. --set {example} (repeatable)")


def load_settings(args: argparse.Namespace, *extra_overrides: str) -> UnitConfig:
    """The validated configuration the options name (extra overrides last)."""
    from unit_core.config import load_config

    return load_config(args.params, [*args.overrides, *extra_overrides], preset=args.preset,
                       variant=getattr(args, "variant", None))
