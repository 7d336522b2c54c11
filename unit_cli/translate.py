"""``unit translate``: apply F_{s->t} of a trained model to image files or folders, to one target domain or to all."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageOps
from tqdm import tqdm

from unit_core.images import list_folder
from unit_core.scratch import atomic_write

#: Outputs written into --out by this command, one relative path a line.
OUTPUTS_RECORD = ".unit-translate-outputs"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "translate",
        help="translate images with a trained model",
        description="Translate images of any size; outputs keep the input's size and relative path, as PNG.",
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files or folders")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a checkpoint written by unit train")
    source.add_argument("--model", metavar="URI", help="a logged model, e.g. models:/unit-street-scenes@champion")
    parser.add_argument("--tracking-uri", default="",
                        help="MLflow tracking URI for --model (default: MLFLOW_TRACKING_URI, else MLflow's local default)")
    parser.add_argument("--direction", choices=("a2b", "b2a"),
                        help="two-domain models: a2b (first domain to second) or b2a; or give --source and --target")
    parser.add_argument("--source", help="domain of the inputs, by name (e.g. husky) or slot (a, b)")
    parser.add_argument("--target", help="domain to translate to, or 'all': every other domain, each into "
                                         "<out>/<domain name>/")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files in --out that unit translate did not write (inputs are never replaced)")
    parser.add_argument("--batch-size", type=int, default=8, help="images of equal size translated together")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="arithmetic of the generator: auto = bf16 on GPUs and CPUs with bf16 instructions "
                             "(outputs within a few grey levels of fp32, about 2x faster on such CPUs), else fp32")
    parser.set_defaults(func=run)


def collect_inputs(inputs: list[Path], problems: list[str]) -> list[tuple[Path, Path]]:
    """(file, output path relative to --out) for every input file and every image inside input folders.

    What cannot be translated (a missing input, a broken link or link loop, a file that is
    not an image) is added to ``problems`` and left out; it never stops the other inputs.
    """
    from unit_core.errors import UserError

    pairs = []
    for item in inputs:
        if item.is_dir():
            files, others, broken = list_folder(item)
            if others:
                suffixes = ", ".join(sorted({path.suffix or "no extension" for path in others}))
                problems.append(f"{item}: {len(others)} file(s) that are not images ({suffixes}), e.g. {others[0]}")
            problems += [f"{path}: not a readable file (broken link or link loop)" for path in broken]
            pairs += [(f, f.relative_to(item).with_suffix(".png")) for f in files]
        elif item.is_file():
            pairs.append((item, Path(item.name).with_suffix(".png")))
        elif item.is_symlink():
            problems.append(f"{item}: not a readable file (broken link or link loop)")
        else:
            problems.append(f"{item}: no such file or folder")
    seen: dict[Path, Path] = {}
    for source, relative in pairs:
        if relative in seen:
            raise UserError(f"{source} and {seen[relative]} would both be written to {relative}")
        seen[relative] = source
    return pairs


def check_targets(pairs: list[tuple[Path, Path]], out: Path, overwrite: bool) -> None:
    """Refuse to write over any input, and over files of --out this command did not write (unless ``overwrite``).

    What this command writes is listed in ``<out>/.unit-translate-outputs`` before any image
    is written, so a later run into the same folder may replace those files again.
    """
    from unit_core.errors import UserError

    inputs = {source.resolve() for source, _ in pairs}
    over_inputs = [(out / relative, source) for source, relative in pairs if (out / relative).resolve() in inputs]
    if over_inputs:
        target, source = over_inputs[0]
        raise UserError(f"{target} would overwrite an input ({source}); choose another --out "
                        f"({len(over_inputs)} output(s) collide with inputs)")
    record = out / OUTPUTS_RECORD
    ours = set(record.read_text(encoding="utf-8").splitlines()) if record.is_file() else set()
    foreign = [out / relative for _, relative in pairs
               if (out / relative).exists() and relative.as_posix() not in ours]
    if foreign and not overwrite:
        raise UserError(f"{foreign[0]} exists and was not written by unit translate; pass --overwrite to replace it "
                        f"({len(foreign)} such file(s)), or choose another --out")
    atomic_write(record, "".join(f"{name}\n" for name in sorted(ours | {r.as_posix() for _, r in pairs})))


def read_images(pairs: list[tuple[Path, Path]], failures: list[str]) -> Iterator[tuple[Path, Image.Image]]:
    for source, relative in pairs:
        try:
            with Image.open(source) as handle:
                image = ImageOps.exif_transpose(handle)
                image.load()
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            failures.append(f"{source}: cannot read image: {exc}")
            continue
        yield relative, image


def translator_of_model(model_uri: str, tracking_uri: str, device: str, precision: str):
    """The translator of a logged model: its weights are downloaded and read as a checkpoint, no model code runs."""
    from unit_core.errors import UserError
    from unit_core.translate import Translator
    from unit_tracking.mlflow_store import TrackingError, downloaded_checkpoint

    try:
        with downloaded_checkpoint(model_uri, tracking_uri) as checkpoint:
            return Translator.from_checkpoint(checkpoint, device, precision)
    except TrackingError as exc:
        raise UserError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from unit_core.errors import UserError
    from unit_core.checkpoint import CheckpointError
    from unit_core.translate import Translator, batches_by_size

    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if bool(args.direction) == bool(args.source or args.target):
        raise UserError("give either --direction (two-domain models) or --source and --target")
    if not args.direction and not (args.source and args.target):
        raise UserError("--source and --target go together")
    failures: list[str] = []
    pairs = collect_inputs(args.inputs, failures)
    try:
        if args.model:
            translator = translator_of_model(args.model, args.tracking_uri, args.device, args.precision)
        else:
            translator = Translator.from_checkpoint(args.checkpoint, args.device, args.precision)
    except (CheckpointError, ValueError) as exc:
        raise UserError(str(exc)) from None
    try:
        source, targets = translation_plan(translator, args)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    check_targets([(path, folder / relative) for path, relative in pairs for folder in targets.values()],
                  args.out, args.overwrite)
    unreadable: list[str] = []
    inputs = {relative: path for path, relative in pairs}
    with tqdm(total=len(pairs), unit="image") as bar:
        for batch in batches_by_size(read_images(pairs, unreadable), args.batch_size):
            images = [image for _, image in batch]
            try:
                translator.check_size(*images[0].size)
            except ValueError as exc:  # one size per batch: the whole batch is skipped
                unreadable += [f"{inputs[relative]}: {exc}" for relative, _ in batch]
                bar.update(len(batch))
                continue
            for target, folder in targets.items():
                outputs = translator.translate_images(images, source, target)
                for (relative, _), output in zip(batch, outputs, strict=True):
                    path = args.out / folder / relative
                    path.parent.mkdir(parents=True, exist_ok=True)
                    output.save(path, format="PNG")
            bar.update(len(batch))
        bar.update(len(pairs) - bar.n)
    failures += unreadable
    for failure in failures:
        print(f"unit translate: skipped {failure}")
    written = len(pairs) - len(unreadable)
    names = ", ".join(translator.names[target] for target in targets)
    print(f"unit translate: wrote {written * len(targets)} image(s) ({written} input(s) to {names}, "
          f"{translator.precision}) to {args.out}")
    return 1 if failures else 0


def translation_plan(translator, args: argparse.Namespace) -> tuple[str, dict[str, Path]]:
    """The source slot, and each target slot with the folder under --out its outputs go to.

    One target: outputs straight into --out. ``--target all``: every domain but the
    source, each into a folder named after the domain.
    """
    if args.direction:
        source, target = translator.direction(args.direction)
        return source, {target: Path()}
    source = translator.domain(args.source)
    if args.target == "all":
        return source, {target: Path(translator.names[target]) for target in translator.domains if target != source}
    target = translator.domain(args.target)
    if target == source:
        raise ValueError(f"--source and --target are both {translator.names[source]!r}: choose another target domain")
    return source, {target: Path()}
