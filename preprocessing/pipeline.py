"""The parallel engine shared by all ingest kinds: read -> hash -> reuse or process -> write.

The parent process reads inputs (a thread pool, so S3 latency overlaps), hashes them, drops
duplicates, reuses previous outputs by (source sha256, recipe), and sends the rest to a process
pool running :func:`preprocessing.images.process_image`. Results come back in input order, so
the output never depends on scheduling.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import multiprocessing
import os
import signal
import threading
import time
import unicodedata
from contextlib import ExitStack
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from tqdm import tqdm

from preprocessing.archives import ArchiveLimits
from preprocessing.errors import IngestError
from preprocessing.images import DEFAULT_MAX_PIXELS, ImageResult, ImageTask, ImageTransform, process_image
from preprocessing.output import DatasetWriter, sha256_bytes
from preprocessing.sources import DEFAULT_MAX_FILE_BYTES, Listing, S3Options, SourceFile, UnreadableSource, open_location

T = TypeVar("T")
R = TypeVar("R")
#: Manifest key holding what the transform found (e.g. the head box), so a reused file keeps it.
TRANSFORM_KEY = "transform"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Concurrent reads: enough to hide S3 round trips, harmless for local disks.
_READ_THREADS = 8


def _die_with_parent(parent: int) -> None:
    """Pool-worker initializer: end this worker when the ingest process dies, even by kill -9.

    Linux delivers SIGKILL on the parent's death (prctl PR_SET_PDEATHSIG); elsewhere a
    daemon thread notices that the parent has changed.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        watched_by_kernel = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) == 0
    except (OSError, AttributeError):
        watched_by_kernel = False
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
    if not watched_by_kernel:
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` fresh processes (spawn: no inherited threads or locks) that die with this process."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_die_with_parent, initargs=(os.getpid(),))


def default_workers() -> int:
    """Worker processes: one per core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class IngestOptions:
    """Options every ingest kind shares (output format, parallelism, limits, S3 access)."""

    image_format: str = "png"
    workers: int = field(default_factory=default_workers)
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    allow_upscale: bool = False
    reuse_previous: bool = True
    progress: bool = True
    s3: S3Options = S3Options()
    archive_limits: ArchiveLimits = ArchiveLimits()

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise IngestError(f"workers must be at least 1, got {self.workers}")
        if self.max_pixels < 1:
            raise IngestError(f"max_pixels must be at least 1, got {self.max_pixels}")


@dataclass(frozen=True)
class ImageJob:
    """One input file and what to make of it."""

    file: SourceFile
    domain: str
    name: str
    transform: ImageTransform
    recipe: str  # recipe_hash() of the parameters that decide the output bytes
    split: str | None = None  # None: chosen from the content hash (see split_for_hash)


@dataclass(frozen=True)
class Outcome:
    job: ImageJob
    split: str
    sha256: str | None
    encoded: bytes | None
    reason: str | None
    info: Mapping[str, Any]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class IngestSummary:
    out_dir: Path
    counts: dict[str, dict[str, int]]
    rejected: int
    details: tuple[str, ...] = ()  # lines about choices the ingest made (e.g. the digits' USPS padding)

    def describe(self) -> str:
        parts = [
            f"{domain}: " + ", ".join(f"{count} {split}" for split, count in splits.items())
            for domain, splits in self.counts.items()
        ]
        head = f"{self.out_dir}: " + "; ".join(parts) + f"; {self.rejected} rejected (see report.json)"
        return "\n".join((head, *self.details))


def open_images(stack: ExitStack, location: str, out_dir: Path, options: IngestOptions) -> Listing:
    """List a location's image files (archives extracted next to ``out_dir`` until ``stack`` closes).

    A location without a single image file is an error: it is almost always a wrong path.
    """
    listing = stack.enter_context(
        open_location(
            location,
            scratch_dir=out_dir.parent,
            s3=options.s3,
            archive_limits=options.archive_limits,
            max_file_bytes=options.max_file_bytes,
        )
    )
    if not listing.files:
        skipped = f" ({len(listing.skipped)} other files skipped)" if listing.skipped else ""
        raise IngestError(f"{location}: no image files found{skipped}")
    return listing


def summary_of(writer: DatasetWriter, details: Sequence[str] = ()) -> IngestSummary:
    return IngestSummary(writer.out_dir, writer.counts, len(writer.rejected), tuple(details))


def safe_name(text: str) -> str:
    """A file name the writer accepts: NFC Unicode kept, separators/control characters replaced."""
    cleaned = "".join(
        "_" if char in "/\\" or unicodedata.category(char) == "Cc" else char for char in unicodedata.normalize("NFC", text)
    )
    return cleaned.lstrip(".") or "_"


def output_names(relatives: Sequence[str]) -> list[str]:
    """Output file names (without extension) for paths relative to a domain's root.

    Sub-folders are joined with '__' and the extension is dropped. Names that would clash
    (x.jpg and x.png) keep their extension ('x_jpg'); any clash left gets a hash of the path.
    """
    paths = [PurePosixPath(relative) for relative in relatives]
    names = [safe_name("__".join((*path.parent.parts, path.stem))) for path in paths]
    clashes = Counter(names)
    names = [
        f"{name}_{path.suffix[1:].lower()}" if clashes[name] > 1 and path.suffix else name
        for name, path in zip(names, paths)
    ]
    clashes = Counter(names)
    return [
        f"{name}-{hashlib.sha256(relative.encode()).hexdigest()[:8]}" if clashes[name] > 1 else name
        for name, relative in zip(names, relatives)
    ]


def split_for_hash(sha256: str, test_fraction: float) -> str:
    """Deterministic train/test assignment from the content: stable when files are added or renamed."""
    return "test" if int(sha256[:8], 16) / 2**32 < test_fraction else "train"


def _ordered(items: Iterable[T], submit: Callable[[T], Future[R]], window: int) -> Iterator[tuple[T, Future[R]]]:
    """Submit items with at most ``window`` in flight; yield (item, future) in submission order."""
    pending: deque[tuple[T, Future[R]]] = deque()
    for item in items:
        pending.append((item, submit(item)))
        if len(pending) >= window:
            yield pending.popleft()
    while pending:
        yield pending.popleft()


def _done(value: R) -> Future[R]:
    future: Future[R] = Future()
    future.set_result(value)
    return future


def _read(file: SourceFile) -> bytes | str:
    """The file's bytes, or the reason it could not be read."""
    try:
        return file.read()
    except UnreadableSource as exc:
        return str(exc)


def run_jobs(
    jobs: Sequence[ImageJob],
    writer: DatasetWriter,
    options: IngestOptions,
    *,
    test_fraction: float = 0.0,
    deduplicate: bool = True,
    description: str = "images",
) -> Iterator[Outcome]:
    """Process ``jobs`` in parallel and yield one :class:`Outcome` per job, in job order.

    Duplicates (same sha256 within a domain) are rejected, previous outputs are reused when
    the writer allows it, and everything else goes through :func:`process_image`.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise IngestError(f"test_fraction must be in [0, 1), got {test_fraction}")
    first_seen: dict[tuple[str, str], str] = {}
    pool: Executor | None = None
    if options.workers > 1 and len(jobs) > 1:
        pool = worker_pool(options.workers)

    def prepare(read: tuple[ImageJob, Future[bytes | str]]) -> tuple[ImageJob, str, str | None, Future[ImageResult]]:
        job, future = read
        data = future.result()
        if isinstance(data, str):
            return job, job.split or "train", None, _done(ImageResult(None, data))
        sha256 = sha256_bytes(data)
        split = job.split or split_for_hash(sha256, test_fraction)
        if deduplicate:
            original = first_seen.setdefault((job.domain, sha256), job.file.source)
            if original != job.file.source:
                return job, split, sha256, _done(ImageResult(None, f"duplicate of {original} (same sha256)"))
        previous = writer.previous_output(sha256, job.recipe) if options.reuse_previous else None
        if previous is not None:
            encoded, entry = previous
            return job, split, sha256, _done(ImageResult(encoded, info=entry.get(TRANSFORM_KEY) or {}))
        task = ImageTask(data, job.transform, writer.image_format, options.max_pixels)
        return job, split, sha256, pool.submit(process_image, task) if pool else _done(process_image(task))

    window = 4 * options.workers
    with ThreadPoolExecutor(_READ_THREADS) as readers, tqdm(
        total=len(jobs), desc=description, unit="img", disable=not options.progress, dynamic_ncols=True
    ) as progress:
        try:
            reads = _ordered(jobs, lambda job: readers.submit(_read, job.file), window + _READ_THREADS)
            prepared = (prepare(read) for read in reads)
            # prepare() has already submitted the work; _ordered only bounds how much is in flight.
            for (job, split, sha256, future), _ in _ordered(prepared, lambda item: item[3], window):
                result = future.result()
                yield Outcome(job, split, sha256, result.encoded, result.reason, result.info, result.warnings)
                progress.update()
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)


def write_outcomes(writer: DatasetWriter, outcomes: Iterable[Outcome]) -> None:
    """Add each converted image to the writer and record each rejected input with its reason."""
    for outcome in outcomes:
        job = outcome.job
        if outcome.encoded is None:
            writer.reject(job.file.source, outcome.reason or "rejected", domain=job.domain, sha256=outcome.sha256)
            continue
        for message in outcome.warnings:
            writer.warn(job.file.source, message)
        extra = {TRANSFORM_KEY: dict(outcome.info)} if outcome.info else {}
        writer.add_encoded(
            outcome.encoded,
            domain=job.domain,
            split=outcome.split,
            name=job.name,
            source=job.file.source,
            source_sha256=outcome.sha256 or "",
            recipe=job.recipe,
            **extra,
        )


def reject_skipped(writer: DatasetWriter, listing: Listing) -> None:
    """Record the files a listing skipped (non-image names, links, oversize files)."""
    for source, reason in listing.skipped:
        writer.reject(source, reason)
