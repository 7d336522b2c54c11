"""Aligned pairs for evaluation: the ``test_paired`` split (same file name in both domains).

Two input formats: the pix2pix one (A and B side by side in one image, ``A|B``) and two folders
whose files are matched by name. A pair is written only when both halves convert; otherwise
both are rejected with the reason.
"""

from __future__ import annotations

from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from preprocessing.errors import IngestError
from preprocessing.images import cover_resize, half_then_resize
from preprocessing.output import DatasetWriter, check_domain_names, recipe_hash
from preprocessing.pipeline import (
    ImageJob,
    IngestOptions,
    IngestSummary,
    Outcome,
    open_images,
    output_names,
    reject_skipped,
    run_jobs,
    summary_of,
    write_outcomes,
)

SPLIT = "test_paired"


def pair_member(image: np.ndarray, *, size: tuple[int, int] | None, allow_upscale: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """One image of a two-folder pair; records its output size so mismatched pairs can be refused."""
    if size is not None:
        image, _ = cover_resize(image, width=size[0], height=size[1], allow_upscale=allow_upscale)
    return image, {"width": image.shape[1], "height": image.shape[0]}


def _size(outcome: Outcome) -> tuple[Any, Any]:
    """Output size recorded by :func:`pair_member`; (None, None) for side-by-side halves (equal by construction)."""
    return outcome.info.get("width"), outcome.info.get("height")


def _write_pairs(writer: DatasetWriter, outcomes: list[Outcome], domain_a: str, domain_b: str) -> None:
    """Write pairs whose two members both converted; reject both members of any other pair."""
    by_name: dict[str, dict[str, Outcome]] = {}
    for outcome in outcomes:
        by_name.setdefault(outcome.job.name, {})[outcome.job.domain] = outcome
    for name, members in sorted(by_name.items()):
        first, second = members[domain_a], members[domain_b]
        problems = [f"{domain}: {member.reason}" for domain, member in ((domain_a, first), (domain_b, second)) if member.encoded is None]
        first_size, second_size = _size(first), _size(second)
        if not problems and first_size != second_size:
            problems.append(
                f"sizes differ: {first_size[0]}x{first_size[1]} vs {second_size[0]}x{second_size[1]} (give a size to resize both)"
            )
        if problems:
            for member in (first, second):
                writer.reject(member.job.file.source, f"pair {name} not written: {'; '.join(problems)}", domain=member.job.domain)
        else:
            write_outcomes(writer, [first, second])


def ingest_pairs(
    out_dir: str | Path,
    *,
    side_by_side: str | None = None,
    folder_a: str | None = None,
    folder_b: str | None = None,
    domain_a: str = "A",
    domain_b: str = "B",
    a_side: str = "left",
    size: tuple[int, int] | None = None,
    options: IngestOptions = IngestOptions(),
) -> IngestSummary:
    """Aligned pairs into ``<out>/<domain_a>/test_paired/`` and ``<out>/<domain_b>/test_paired/``.

    Either ``side_by_side`` (images holding A|B; ``a_side`` says which half is A) or both
    ``folder_a`` and ``folder_b`` (matched by file name without extension). ``size``
    (width, height) resizes each member keeping the aspect ratio; None keeps the size.
    """
    if (side_by_side is not None and (folder_a or folder_b)) or (side_by_side is None and not (folder_a and folder_b)):
        raise IngestError("give either side_by_side, or both folder_a and folder_b")
    if a_side not in ("left", "right"):
        raise IngestError(f"a_side must be 'left' or 'right', got {a_side!r}")
    if domain_a == domain_b:
        raise IngestError(f"domain names must differ, both are {domain_a!r}")
    check_domain_names([domain_a, domain_b])
    out_dir = Path(out_dir)
    common = {"size": list(size) if size else None, "allow_upscale": options.allow_upscale, "image_format": options.image_format}
    parameters = {
        "side_by_side": side_by_side,
        "folder_a": folder_a,
        "folder_b": folder_b,
        "domain_a": domain_a,
        "domain_b": domain_b,
        "a_side": a_side,
        **common,
    }

    with ExitStack() as stack, DatasetWriter(
        out_dir, options.image_format, options.reuse_previous, kind="pairs", parameters=parameters
    ) as writer:
        jobs: list[ImageJob] = []
        if side_by_side is not None:
            listing = open_images(stack, side_by_side, out_dir, options)
            reject_skipped(writer, listing)
            halves = [
                (domain, partial(half_then_resize, side=side, size=size, allow_upscale=options.allow_upscale),
                 recipe_hash({"transform": "half_then_resize", "side": side, **common}))
                for domain, side in ((domain_a, a_side), (domain_b, "right" if a_side == "left" else "left"))
            ]
            for file, name in zip(listing.files, output_names([file.relative for file in listing.files])):
                jobs += [ImageJob(file, domain, name, transform, recipe, split=SPLIT) for domain, transform, recipe in halves]
        else:
            transform = partial(pair_member, size=size, allow_upscale=options.allow_upscale)
            recipe = recipe_hash({"transform": "pair_member", **common})
            members: dict[str, dict[str, ImageJob]] = {}
            for domain, location in ((domain_a, folder_a), (domain_b, folder_b)):
                listing = open_images(stack, location, out_dir, options)
                reject_skipped(writer, listing)
                for file, name in zip(listing.files, output_names([file.relative for file in listing.files])):
                    members.setdefault(name, {})[domain] = ImageJob(file, domain, name, transform, recipe, split=SPLIT)
            for name, pair in sorted(members.items()):
                if len(pair) == 2:
                    jobs += [pair[domain_a], pair[domain_b]]
                    continue
                (domain, job), = pair.items()
                other = domain_b if domain == domain_a else domain_a
                writer.reject(job.file.source, f"no file named {name} in {other}'s folder", domain=domain)
        _write_pairs(writer, list(run_jobs(jobs, writer, options, deduplicate=False, description="pairs")), domain_a, domain_b)
    return summary_of(writer)
