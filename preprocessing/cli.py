"""``unit ingest <kind> ...``: one subcommand per source kind, its flags built from the kind's settings model.

Registered by ``unit_cli.main`` through :func:`register`. Each kind's flags, defaults and help
come from its model in ``unit_core.ingest_settings`` (the settings a preset's ``ingest:``
section holds); the parsed flags are validated by that model, so a bad value is an argparse
error (exit status 2) naming the flag, and the same object a preset would give is run by
:func:`preprocessing.run.run_ingest`. Input problems (:class:`IngestError`) are re-raised as
``unit_core.errors.UserError``: printed without a traceback, exit status 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from preprocessing.animals import DEFAULT_MARGIN as ANIMALS_MARGIN
from preprocessing.animals import DEFAULT_SIZE as ANIMALS_SIZE
from preprocessing.errors import IngestError
from preprocessing.head_detector import DEFAULT_CAT_FACE_THRESHOLD, DEFAULT_THRESHOLD
from preprocessing.run import run_ingest
from unit_core.errors import UserError
from unit_core.ingest_settings import KIND_MODELS, IngestKind, choices_of, cli_form, flag_of

#: Defaults the settings leave to the ingestion code (None in the model), shown in the help.
LIBRARY_DEFAULTS = {("animals", "size"): ANIMALS_SIZE, ("animals", "margin"): ANIMALS_MARGIN,
                    ("animals", "threshold"): DEFAULT_THRESHOLD,
                    ("animals", "cat_face_threshold"): DEFAULT_CAT_FACE_THRESHOLD}


def _shown(value: Any) -> str:
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(item, int) for item in value):
        return f"{value[0]}x{value[1]}"
    if isinstance(value, (tuple, list)):
        return " ".join(str(item) for item in value)
    return str(value)


def _help(kind: str, name: str, field: Any) -> str:
    text = field.description or ""
    if field.annotation is bool and field.default:
        text = f"do not {text}"  # the flag (--no-progress) turns off what the setting (progress) describes
    if (kind, name) in LIBRARY_DEFAULTS:
        text += f" (default {LIBRARY_DEFAULTS[kind, name]})"
    elif not field.is_required() and field.default is not None and not isinstance(field.default, bool):
        text += f" (default {_shown(field.default)})"
    return text


def add_settings_arguments(parser: argparse.ArgumentParser, kind: str, model: type[IngestKind]) -> None:
    """One argument per field of ``model`` that has a command-line form; unset flags stay unset (the model's default)."""
    groups: dict[str, Any] = {}
    fields = [(name, field) for name, field in model.model_fields.items() if cli_form(field) is not None]
    for name, field in sorted(fields, key=lambda item: bool(cli_form(item[1]).get("group"))):  # the kind's own first
        form = cli_form(field)
        group = form.get("group")
        target = groups.setdefault(group, parser.add_argument_group(group)) if group else parser
        options: dict[str, Any] = {"help": _help(kind, name, field)}
        if form.get("metavar"):
            options["metavar"] = form["metavar"]
        if choices := choices_of(field.annotation):
            options["choices"] = choices
        if form.get("positional"):
            target.add_argument(name, **options)
            continue
        options.update(dest=name, default=argparse.SUPPRESS)
        if field.annotation is bool:
            options["action"] = "store_false" if field.default else "store_true"
        elif form.get("repeat"):
            options["action"] = "append"
        elif form.get("several"):
            options["nargs"] = "+"
        if field.is_required():
            options["required"] = True
        target.add_argument(flag_of(name, field), **options)


def _flag_errors(model: type[IngestKind], error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        name = str(item["loc"][0]) if item["loc"] else ""
        field = model.model_fields.get(name)
        where = f"argument {name if (cli_form(field) or {}).get('positional') else flag_of(name, field)}: " if field else ""
        lines.append(where + item["msg"].removeprefix("Value error, "))
    return "; ".join(lines)


def settings_from(parser: argparse.ArgumentParser, model: type[IngestKind], args: argparse.Namespace) -> IngestKind:
    """The kind's settings from parsed flags; a value the model rejects is ``parser.error`` (exit 2) naming the flag."""
    given = {name: getattr(args, name) for name in model.model_fields if hasattr(args, name)}
    try:
        return model.model_validate({**given, "kind": model.model_fields["kind"].default})
    except ValidationError as exc:
        parser.error(_flag_errors(model, exc))


def _command(parser: argparse.ArgumentParser, model: type[IngestKind]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        settings = settings_from(parser, model, args)
        try:
            summary = run_ingest(settings, args.out)
        except IngestError as exc:
            raise UserError(str(exc)) from None
        print(summary.describe())
        return 0

    return run


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``unit ingest`` and its kinds (each sets ``func``) to the top-level subparsers."""
    ingest = subparsers.add_parser(
        "ingest",
        help="turn raw images into a data set folder <out>/<domain>/<split>/",
        description="Convert raw data (folders, zip/tar archives, s3:// prefixes) into <out>/<domain>/<split>/ "
        "with manifest.jsonl and report.json, or generate a synthetic one (demo-*). Bad images are rejected "
        "and listed in report.json; unchanged inputs are reused from the previous output. Each kind's options "
        "are the keys of a preset's ingest: section (e.g. --test-fraction is test_fraction).",
    )
    kinds = ingest.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, model in KIND_MODELS.items():
        summary = (model.__doc__ or kind).strip()
        parser = kinds.add_parser(kind, help=summary, description=summary)
        parser.add_argument("--out", required=True, type=Path, help="data set folder to write (replaced atomically on success)")
        add_settings_arguments(parser, kind, model)
        parser.set_defaults(func=_command(parser, model))
