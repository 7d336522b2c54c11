"""Run one ingest from its typed settings (``unit_core.ingest_settings``): the one entry point of
``unit ingest <kind>`` and of the pipeline's ingest stage.

``run_ingest(settings, out_dir)`` calls the kind's function (``ingest_folders``,
``ingest_celeba``, ..., or the synthetic data sets' ``generate_demo_dataset``) with the
settings' values; no command-line strings on the way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from preprocessing.animals import ingest_animals, parse_classes
from preprocessing.archives import ArchiveLimits
from preprocessing.celeba import ingest_celeba
from preprocessing.digits import ingest_digits
from preprocessing.folders import ingest_cyclegan, ingest_folders, ingest_street
from preprocessing.head_detector import DEFAULT_TEMPLATES
from preprocessing.pairs import ingest_pairs
from preprocessing.pipeline import IngestOptions, IngestSummary, default_workers
from preprocessing.sources import S3Options
from preprocessing.synthetic.dataset import generate_demo_dataset
from unit_core.ingest_settings import (
    AnimalsIngest,
    CelebaIngest,
    CycleganIngest,
    DemoIngest,
    DigitsIngest,
    FoldersIngest,
    IngestKind,
    PairsIngest,
    RawIngest,
    StreetIngest,
)


def options_of(settings: RawIngest) -> IngestOptions:
    """The options every ingest of raw data shares, from its settings."""
    return IngestOptions(
        image_format=settings.format,
        workers=settings.workers or default_workers(),
        max_pixels=settings.max_pixels,
        max_file_bytes=settings.max_file_mb * 2**20,
        allow_upscale=settings.allow_upscale,
        reuse_previous=settings.reuse,
        progress=settings.progress,
        s3=S3Options(endpoint_url=settings.endpoint_url, region=settings.region, max_attempts=settings.s3_attempts),
        archive_limits=ArchiveLimits(max_files=settings.max_archive_files, max_total_bytes=settings.max_archive_gb * 2**30),
    )


def run_ingest(settings: IngestKind, out_dir: str | Path) -> IngestSummary:
    """Write the data set these settings describe to ``out_dir`` (replaced atomically on success).

    Raises ``IngestError`` (a ValueError) for bad input, naming the file or option.
    """
    if isinstance(settings, DemoIngest):
        return _demo(settings, Path(out_dir))
    if not isinstance(settings, RawIngest):
        raise TypeError(f"not ingest settings: {settings!r}")
    options = options_of(settings)
    s: Any = settings
    if isinstance(settings, StreetIngest):
        return ingest_street(dict(s.domains), out_dir, size=s.size, test_fraction=s.test_fraction, options=options)
    if isinstance(settings, FoldersIngest):
        return ingest_folders(dict(s.domains), out_dir, size=s.size, test_fraction=s.test_fraction, options=options)
    if isinstance(settings, CycleganIngest):
        return ingest_cyclegan(s.location, out_dir, domain_a=s.domain_a, domain_b=s.domain_b, size=s.size, options=options)
    if isinstance(settings, CelebaIngest):
        return ingest_celeba(s.images, s.attributes, out_dir, attribute=s.attribute, partition_file=s.partition,
                             validation_split=s.validation_split, size=s.size, domain_a=s.domain_a, domain_b=s.domain_b,
                             test_fraction=s.test_fraction, min_images=s.min_images, options=options)
    if isinstance(settings, AnimalsIngest):
        detector = {name: getattr(s, name) for name in ("size", "margin", "threshold", "cat_face_threshold")
                    if getattr(s, name) is not None}  # unset: the detector's own defaults
        return ingest_animals(s.location, s.templates or DEFAULT_TEMPLATES, out_dir, classes=parse_classes(list(s.classes)),
                              **detector, min_crop=s.min_crop, test_fraction=s.test_fraction, boxes=s.boxes, drop=s.drop,
                              min_images=s.min_images, options=options)
    if isinstance(settings, DigitsIngest):
        return ingest_digits(out_dir, mnist=s.mnist, usps=s.usps, size=s.size, limit=s.limit, usps_pad=s.usps_pad,
                             options=options)
    if isinstance(settings, PairsIngest):
        return ingest_pairs(out_dir, side_by_side=s.side_by_side, folder_a=s.folder_a, folder_b=s.folder_b,
                            domain_a=s.domain_a, domain_b=s.domain_b, a_side=s.a_side, size=s.size, options=options)
    raise TypeError(f"no ingest function for kind {settings.kind!r}")


def _demo(settings: DemoIngest, out_dir: Path) -> IngestSummary:
    kind = settings.kind.removeprefix("demo-")
    generate_demo_dataset(kind, out_dir, train_count=settings.train, test_count=settings.test,  # type: ignore[arg-type]
                          size=settings.size, seed=settings.seed, domains=tuple(settings.domains), val_count=settings.val)
    splits = {"train": settings.train, "test_paired": settings.test} | ({"val_paired": settings.val} if settings.val else {})
    counts = {domain: dict(splits) for domain in settings.domains}
    return IngestSummary(out_dir, counts, 0, (f"synthetic {kind} scenes, seed {settings.seed}",))
