"""Unpaired domains from folders, archives or S3 prefixes; the CycleGAN layout; street scenes.

One location per domain (``{"sunny": "raw/sunny", "rainy": "s3://bucket/rainy"}``), every image
below it goes to that domain, optionally resized keeping the aspect ratio and centre-cropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path

from preprocessing.errors import IngestError
from preprocessing.images import size_transform
from preprocessing.output import DatasetWriter, check_domain_names, recipe_hash
from preprocessing.pipeline import (
    ImageJob,
    IngestOptions,
    IngestSummary,
    open_images,
    output_names,
    reject_skipped,
    run_jobs,
    summary_of,
    write_outcomes,
)
from preprocessing.sources import SourceFile
from unit_core.ingest_settings import STREET_SIZE

CYCLEGAN_FOLDERS = {"trainA": ("A", "train"), "trainB": ("B", "train"), "testA": ("A", "test"), "testB": ("B", "test")}


def _size_parameters(size: tuple[int, int] | None, options: IngestOptions) -> dict[str, object]:
    if size is not None and (size[0] < 1 or size[1] < 1):
        raise IngestError(f"size must be positive, got {size[0]}x{size[1]}")
    return {"size": list(size) if size else None, "allow_upscale": options.allow_upscale, "image_format": options.image_format}


def ingest_folders(
    domains: Mapping[str, str],
    out_dir: str | Path,
    *,
    size: tuple[int, int] | None = None,
    test_fraction: float = 0.0,
    options: IngestOptions = IngestOptions(),
    kind: str = "folders",
) -> IngestSummary:
    """Each domain's images (from a folder, archive or S3 prefix) into ``<out>/<domain>/<split>/``.

    ``size`` (width, height): resize keeping the aspect ratio and centre-crop; None keeps the size.
    ``test_fraction``: share of images put in ``test``, chosen from the content hash.
    """
    if not domains:
        raise IngestError("no domains given")
    check_domain_names(domains)
    out_dir = Path(out_dir)
    transform = size_transform(size, options.allow_upscale)
    recipe = recipe_hash({"transform": "cover_resize", **_size_parameters(size, options)})
    parameters = {"domains": dict(sorted(domains.items())), "test_fraction": test_fraction, **_size_parameters(size, options)}
    with ExitStack() as stack, DatasetWriter(
        out_dir, options.image_format, options.reuse_previous, kind=kind, parameters=parameters
    ) as writer:
        jobs: list[ImageJob] = []
        for domain, location in sorted(domains.items()):
            listing = open_images(stack, location, out_dir, options)
            reject_skipped(writer, listing)
            names = output_names([file.relative for file in listing.files])
            jobs += [ImageJob(file, domain, name, transform, recipe) for file, name in zip(listing.files, names)]
        write_outcomes(writer, run_jobs(jobs, writer, options, test_fraction=test_fraction, description=kind))
    return summary_of(writer)


def ingest_street(
    domains: Mapping[str, str],
    out_dir: str | Path,
    *,
    size: tuple[int, int] = STREET_SIZE,
    test_fraction: float = 0.0,
    options: IngestOptions = IngestOptions(),
) -> IngestSummary:
    """Street scenes (sunny/rainy, day/night, summer/snowy, synthetic/real): one domain per
    folder or prefix, resized keeping the aspect ratio and centre-cropped to the paper's 640x480."""
    return ingest_folders(domains, out_dir, size=size, test_fraction=test_fraction, options=options, kind="street")


def _strip_single_top_folder(files: list[SourceFile]) -> list[tuple[SourceFile, str]]:
    """Archives often wrap everything in one folder (``horse2zebra/trainA/...``): look inside it."""
    relatives = [file.relative for file in files]
    tops = {relative.split("/", 1)[0] for relative in relatives}
    if len(tops) == 1 and tops.isdisjoint(CYCLEGAN_FOLDERS) and all("/" in relative for relative in relatives):
        return [(file, file.relative.split("/", 1)[1]) for file in files]
    return [(file, file.relative) for file in files]


def ingest_cyclegan(
    location: str,
    out_dir: str | Path,
    *,
    domain_a: str = "A",
    domain_b: str = "B",
    size: tuple[int, int] | None = None,
    options: IngestOptions = IngestOptions(),
) -> IngestSummary:
    """A CycleGAN-layout data set (``trainA/ trainB/ testA/ testB/``) into ``<out>/<domain>/<split>/``."""
    if domain_a == domain_b:
        raise IngestError(f"domain names must differ, both are {domain_a!r}")
    check_domain_names([domain_a, domain_b])
    out_dir = Path(out_dir)
    transform = size_transform(size, options.allow_upscale)
    recipe = recipe_hash({"transform": "cover_resize", **_size_parameters(size, options)})
    parameters = {"location": location, "domain_a": domain_a, "domain_b": domain_b, **_size_parameters(size, options)}
    domain_names = {"A": domain_a, "B": domain_b}
    with ExitStack() as stack, DatasetWriter(
        out_dir, options.image_format, options.reuse_previous, kind="cyclegan", parameters=parameters
    ) as writer:
        listing = open_images(stack, location, out_dir, options)
        reject_skipped(writer, listing)
        groups: dict[tuple[str, str], list[tuple[SourceFile, str]]] = {}
        for file, relative in _strip_single_top_folder(listing.files):
            folder, _, rest = relative.partition("/")
            if folder not in CYCLEGAN_FOLDERS or not rest:
                writer.reject(file.source, f"not inside {'/'.join(CYCLEGAN_FOLDERS)}")
                continue
            letter, split = CYCLEGAN_FOLDERS[folder]
            groups.setdefault((domain_names[letter], split), []).append((file, rest))
        missing = [
            folder
            for folder, (letter, split) in CYCLEGAN_FOLDERS.items()
            if split == "train" and (domain_names[letter], split) not in groups
        ]
        if missing:
            raise IngestError(f"{location}: not a CycleGAN layout: no images in {' or '.join(missing)}")
        jobs: list[ImageJob] = []
        for (domain, split), members in sorted(groups.items()):
            names = output_names([relative for _, relative in members])
            jobs += [ImageJob(file, domain, name, transform, recipe, split=split) for (file, _), name in zip(members, names)]
        write_outcomes(writer, run_jobs(jobs, writer, options, description="cyclegan"))
    return summary_of(writer)
