"""``unit ingest <kind> ...``: one subcommand per source kind, each a thin wrapper over a function.

Registered by ``unit_cli.main`` through :func:`register`. Input problems (:class:`IngestError`)
are re-raised as ``unit_core.errors.UserError``: printed without a traceback, exit status 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import wraps
from pathlib import Path

from preprocessing.animals import DEFAULT_MARGIN, PRESET_CLASSES, PRESETS, ingest_animals, parse_classes
from preprocessing.archives import ArchiveLimits
from preprocessing.celeba import DEFAULT_SIZE as CELEBA_SIZE
from preprocessing.celeba import PAPER_ATTRIBUTES, ingest_celeba
from preprocessing.digits import DEFAULT_SIZE as DIGITS_SIZE
from preprocessing.demo import add_demo_commands
from preprocessing.digits import ingest_digits
from preprocessing.errors import IngestError
from preprocessing.folders import STREET_SIZE, ingest_cyclegan, ingest_folders, ingest_street
from preprocessing.head_detector import DEFAULT_TEMPLATES, DEFAULT_THRESHOLD
from preprocessing.images import DEFAULT_MAX_PIXELS
from preprocessing.pairs import ingest_pairs
from preprocessing.pipeline import IngestOptions, IngestSummary, default_workers
from preprocessing.sources import DEFAULT_MAX_FILE_BYTES, S3Options

Handler = Callable[[argparse.Namespace], IngestSummary]


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> (640, 480); ``"128"`` -> (128, 128)."""
    width, _, height = text.lower().partition("x")
    try:
        size = (int(width), int(height or width))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT or N, got {text!r}") from None
    if min(size) < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return size


def _domain(text: str) -> tuple[str, str]:
    name, separator, location = text.partition("=")
    if not separator or not name or not location:
        raise argparse.ArgumentTypeError(f"expected NAME=LOCATION (folder, archive or s3://bucket/prefix), got {text!r}")
    return name, location


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _usps_pad(text: str) -> int | None:
    if text == "auto":
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of pixels (0 or more) or 'auto', got {text!r}")
    return int(text)


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("output and processing")
    group.add_argument("--out", required=True, type=Path, help="data set folder to write (replaced atomically on success)")
    group.add_argument("--format", choices=("png", "jpg"), default="png", help="image format of the output (default png)")
    group.add_argument("--workers", type=_positive, default=default_workers(), help="worker processes (default: one per core)")
    group.add_argument(
        "--max-pixels", type=_positive, default=DEFAULT_MAX_PIXELS, help=f"reject larger images (default {DEFAULT_MAX_PIXELS})"
    )
    group.add_argument("--max-file-mb", type=_positive, default=DEFAULT_MAX_FILE_BYTES // 2**20, help="skip larger input files")
    group.add_argument("--allow-upscale", action="store_true", help="enlarge images smaller than the target instead of rejecting them")
    group.add_argument("--no-reuse", action="store_true", help="rebuild every file instead of reusing unchanged ones")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    s3 = common.add_argument_group("S3 (credentials from the standard AWS chain)")
    s3.add_argument("--endpoint-url", help="S3-compatible endpoint, e.g. http://127.0.0.1:9000")
    s3.add_argument("--region", help="AWS region")
    s3.add_argument("--s3-attempts", type=_positive, default=S3Options.max_attempts, help="attempts per request (retries)")
    archives = common.add_argument_group("archives")
    archives.add_argument("--max-archive-files", type=_positive, default=ArchiveLimits.max_files, help="refuse archives with more files")
    archives.add_argument(
        "--max-archive-gb", type=_positive, default=ArchiveLimits.max_total_bytes // 2**30, help="refuse archives that expand to more"
    )
    return common


def options_from(args: argparse.Namespace) -> IngestOptions:
    return IngestOptions(
        image_format=args.format,
        workers=args.workers,
        max_pixels=args.max_pixels,
        max_file_bytes=args.max_file_mb * 2**20,
        allow_upscale=args.allow_upscale,
        reuse_previous=not args.no_reuse,
        progress=not args.no_progress,
        s3=S3Options(endpoint_url=args.endpoint_url, region=args.region, max_attempts=args.s3_attempts),
        archive_limits=ArchiveLimits(max_files=args.max_archive_files, max_total_bytes=args.max_archive_gb * 2**30),
    )


def _command(handler: Handler) -> Callable[[argparse.Namespace], int]:
    @wraps(handler)
    def run(args: argparse.Namespace) -> int:
        from unit_core.errors import UserError

        try:
            summary = handler(args)
        except IngestError as exc:
            raise UserError(str(exc)) from None
        print(summary.describe())
        return 0

    return run


def _folders(args: argparse.Namespace) -> IngestSummary:
    return ingest_folders(dict(args.domain), args.out, size=args.size, test_fraction=args.test_fraction, options=options_from(args))


def _street(args: argparse.Namespace) -> IngestSummary:
    return ingest_street(dict(args.domain), args.out, size=args.size, test_fraction=args.test_fraction, options=options_from(args))


def _cyclegan(args: argparse.Namespace) -> IngestSummary:
    return ingest_cyclegan(
        args.location, args.out, domain_a=args.domain_a, domain_b=args.domain_b, size=args.size, options=options_from(args)
    )


def _celeba(args: argparse.Namespace) -> IngestSummary:
    return ingest_celeba(
        args.images,
        args.attributes,
        args.out,
        attribute=args.attribute,
        partition_file=args.partition,
        validation_split=args.validation_split,
        size=args.size,
        domain_a=args.domain_a,
        domain_b=args.domain_b,
        test_fraction=args.test_fraction,
        min_images=args.min_images,
        options=options_from(args),
    )


def _animals(args: argparse.Namespace) -> IngestSummary:
    return ingest_animals(
        args.location,
        args.templates,
        args.out,
        classes=parse_classes(args.classes),
        size=args.size,
        margin=args.margin,
        threshold=args.threshold,
        min_crop=args.min_crop,
        test_fraction=args.test_fraction,
        boxes=args.boxes,
        drop=args.drop,
        min_images=args.min_images,
        options=options_from(args),
    )


def _digits(args: argparse.Namespace) -> IngestSummary:
    return ingest_digits(args.out, mnist=args.mnist, usps=args.usps, size=args.size, limit=args.limit,
                         usps_pad=args.usps_pad, options=options_from(args))


def _pairs(args: argparse.Namespace) -> IngestSummary:
    return ingest_pairs(
        args.out,
        side_by_side=args.side_by_side,
        folder_a=args.a,
        folder_b=args.b,
        domain_a=args.domain_a,
        domain_b=args.domain_b,
        a_side=args.a_side,
        size=args.size,
        options=options_from(args),
    )


def ingest_parser() -> argparse.ArgumentParser:
    """``unit ingest`` alone, for callers below the command line (the pipeline's ingest stage)."""
    parser = argparse.ArgumentParser(prog="unit")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``unit ingest`` and its kinds (each sets ``func``) to the top-level subparsers."""
    ingest = subparsers.add_parser(
        "ingest",
        help="turn raw images into a data set folder <out>/<domain>/<split>/",
        description="Convert raw data (folders, zip/tar archives, s3:// prefixes) into <out>/<domain>/<split>/ "
        "with manifest.jsonl and report.json. Bad images are rejected and listed in report.json; "
        "unchanged inputs are reused from the previous output.",
    )
    kinds = ingest.add_subparsers(dest="kind", required=True, metavar="KIND")
    common = _common_options()

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        parser = kinds.add_parser(name, parents=[common], help=help_text, description=help_text)
        parser.set_defaults(func=_command(handler))
        return parser

    for name, handler, default_size, help_text in (
        ("folders", _folders, None, "one domain per folder, archive or S3 prefix (any images)"),
        ("street", _street, STREET_SIZE, "street scenes: one domain per location, resized and centre-cropped to 640x480"),
    ):
        parser = add(name, handler, help_text)
        parser.add_argument("--domain", action="append", type=_domain, required=True, metavar="NAME=LOCATION", help="repeat per domain")
        default_text = f"{default_size[0]}x{default_size[1]}" if default_size else "keep the size"
        parser.add_argument(
            "--size", type=parse_size, default=default_size, metavar="WxH",
            help=f"resize keeping the aspect ratio, then centre-crop (default: {default_text})",
        )
        parser.add_argument("--test-fraction", type=_fraction, default=0.0, help="share of each domain put in test, by content hash")

    parser = add("cyclegan", _cyclegan, "a CycleGAN-layout data set (trainA/ trainB/ testA/ testB/)")
    parser.add_argument("location", help="folder, archive or s3:// prefix holding trainA/ etc.")
    parser.add_argument("--domain-a", default="A", help="domain name for trainA/testA (default A)")
    parser.add_argument("--domain-b", default="B", help="domain name for trainB/testB (default B)")
    parser.add_argument("--size", type=parse_size, metavar="WxH", help="resize and centre-crop (default: keep)")

    parser = add("celeba", _celeba, "CelebA split by one attribute: with it (domain A) and without it (domain B)")
    parser.add_argument("images", help="img_align_celeba folder, archive or s3:// prefix")
    parser.add_argument("--attributes", required=True, type=Path, help="list_attr_celeba.txt")
    parser.add_argument("--attribute", required=True, help=f"attribute name, e.g. {', '.join(PAPER_ATTRIBUTES)}")
    parser.add_argument("--partition", type=Path, help="list_eval_partition.txt (0 train, 1 validation, 2 test)")
    parser.add_argument("--validation-split", choices=("train", "test"), default="test", help="where validation images go (default test)")
    parser.add_argument("--size", type=_positive, default=CELEBA_SIZE, help=f"side of the square output (default {CELEBA_SIZE})")
    parser.add_argument("--domain-a", help="name of the domain with the attribute (default: attribute in lower case)")
    parser.add_argument("--domain-b", help="name of the domain without it (default: not_<attribute>)")
    parser.add_argument("--test-fraction", type=_fraction, default=0.0, help="without --partition: share put in test")
    parser.add_argument("--min-images", type=_positive, default=1, help="fewest training images a domain may get (default 1)")

    parser = add("animals", _animals, "ImageNet dog breeds / cat species: head crops by template matching")
    parser.add_argument("location", help="ImageNet-layout folder (n02110185/... or n02110185_*.JPEG), archive or s3:// prefix")
    parser.add_argument(
        "--templates", type=Path, default=DEFAULT_TEMPLATES,
        help="folder of head templates: dog/, cat/, big_cat/ crops and background.npz (default: the shipped templates/heads)",
    )
    parser.add_argument(
        "--class", dest="classes", action="append", required=True, metavar="SPEC",
        help=f"preset ({', '.join(PRESETS)}), preset class ({', '.join(PRESET_CLASSES)}), a WordNet ID, "
        "or name=wnid[,wnid...]; repeat",
    )
    parser.add_argument("--size", type=_positive, default=128, help="side of the square head crop (default 128)")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN, help=f"share of the head box added per side (default {DEFAULT_MARGIN})")
    parser.add_argument(
        "--threshold", type=float, default=DEFAULT_THRESHOLD,
        help=f"minimum match score, in background standard deviations (default {DEFAULT_THRESHOLD}, from bench/head_detection.py)",
    )
    parser.add_argument("--min-crop", type=_positive, help="smallest crop side accepted, in source pixels (default size/2)")
    parser.add_argument("--test-fraction", type=_fraction, default=0.0, help="share of each class put in test, by content hash")
    parser.add_argument("--boxes", type=Path, help="CSV file,x0,y0,x1,y1 of head boxes that replace detection for the listed files")
    parser.add_argument("--drop", type=Path, help="text file of file names to leave out, one per line")
    parser.add_argument("--min-images", type=_positive, default=1, help="fewest training images a class may get (default 1)")

    parser = add("digits", _digits, "MNIST (idx files) and/or USPS (HDF5) for domain adaptation, labels kept")
    parser.add_argument("--mnist", type=Path, help="folder with train-images-idx3-ubyte[.gz] etc.")
    parser.add_argument("--usps", type=Path, help="usps.h5 (train/data, train/target, test/...)")
    parser.add_argument("--size", type=_positive, default=DIGITS_SIZE, help=f"common side, usually 28 or 32 (default {DIGITS_SIZE})")
    parser.add_argument("--limit", type=_positive, help="first N images of each split only")
    parser.add_argument(
        "--usps-pad", type=_usps_pad, default=None, metavar="PIXELS|auto",
        help="black pixels added per side of the 16x16 USPS digits before resizing, so their scale matches MNIST's; "
        "auto (default): the pad whose mean digit is closest to MNIST's mean digit, reported",
    )

    parser = add("pairs", _pairs, "aligned pairs into the test_paired split (side by side A|B, or two folders)")
    parser.add_argument("--side-by-side", help="folder/archive/prefix of A|B images (pix2pix format)")
    parser.add_argument("--a", help="folder of domain A images (matched to --b by file name)")
    parser.add_argument("--b", help="folder of domain B images")
    parser.add_argument("--domain-a", default="A", help="name of domain A (default A)")
    parser.add_argument("--domain-b", default="B", help="name of domain B (default B)")
    parser.add_argument("--a-side", choices=("left", "right"), default="left", help="which half is A in side-by-side images")
    parser.add_argument("--size", type=parse_size, metavar="WxH", help="resize each member (default: keep)")
    add_demo_commands(kinds)
