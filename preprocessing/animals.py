"""ImageNet dog breeds and cat species: head regions found by multi-scale template matching.

Each image is shrunk to a small working size; every template (and its mirror image) is matched
at several scales with OpenCV ``matchTemplate`` (``TM_CCOEFF_NORMED``, colour). Raw correlation
peaks are not comparable across scales (small templates correlate with anything), so the match
is chosen by *prominence*: how many standard deviations the peak stands above the mean of its
response map. The best match, widened by a margin, gives a square crop resized to the output
size; images whose best prominence is below the threshold are rejected with that score.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np

from preprocessing.errors import IngestError
from preprocessing.images import RejectedImage, decode_image, resize
from preprocessing.output import DatasetWriter, check_domain_names, recipe_hash, sha256_bytes
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
from preprocessing.sources import list_folder

#: The paper's dog breeds: domain name -> ImageNet WordNet IDs.
DOG_PRESET: dict[str, tuple[str, ...]] = {
    "siberian_husky": ("n02110185",),
    "german_shepherd": ("n02106662",),
    "pembroke_corgi": ("n02113023",),
    "samoyed": ("n02111889",),
    "old_english_sheepdog": ("n02105641",),
}
#: The paper's cat species; the house cat gathers ImageNet's five domestic cat classes.
CAT_PRESET: dict[str, tuple[str, ...]] = {
    "house_cat": ("n02123045", "n02123159", "n02123394", "n02123597", "n02124075"),
    "tiger": ("n02129604",),
    "lion": ("n02129165",),
    "cougar": ("n02125311",),
    "leopard": ("n02128385",),
    "jaguar": ("n02128925",),
    "cheetah": ("n02130308",),
}
PRESETS = {"dogs": DOG_PRESET, "cats": CAT_PRESET}

#: Template side as a fraction of the image's shorter side.
DEFAULT_SCALES = (0.15, 0.2, 0.25, 0.33, 0.42, 0.52, 0.65, 0.8, 1.0)
#: Minimum peak prominence (standard deviations above the response map's mean) to accept a head.
DEFAULT_THRESHOLD = 3.3
#: Share of the head box added on each side of the crop.
DEFAULT_MARGIN = 0.25
DEFAULT_SIZE = 128
#: Shorter side of the image during matching: heads are coarse shapes, detail only adds noise.
WORKING_SIZE = 128
# Templates are cropped to their central part so the background around the head matters less.
_TEMPLATE_CENTRE = 0.8
_TEMPLATE_SIDE = WORKING_SIZE
_WNID = re.compile(r"^n\d{8}$")
_WNID_PREFIX = re.compile(r"^(n\d{8})_")


@dataclass(frozen=True)
class HeadTemplates:
    names: tuple[str, ...]  # one per image; mirrored copies end with "(mirrored)"
    images: tuple[np.ndarray, ...]  # RGB uint8, square, _TEMPLATE_SIDE wide
    sha256: tuple[str, ...]  # of the template files, for the recipe hash


@dataclass(frozen=True)
class HeadMatch:
    x: int  # square head box in source pixels
    y: int
    side: int
    prominence: float
    correlation: float
    template: str
    scale: float


def load_templates(folder: str | Path) -> HeadTemplates:
    """Every image in ``folder`` becomes a template, plus its mirror image (heads face both ways)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IngestError(f"{folder}: template folder not found")
    names: list[str] = []
    images: list[np.ndarray] = []
    hashes: list[str] = []
    for file in list_folder(folder).files:
        data = file.read()
        try:
            image = decode_image(data)
        except RejectedImage as exc:
            raise IngestError(f"{file.source}: unusable template: {exc}") from None
        height, width = image.shape[:2]
        side = round(min(height, width) * _TEMPLATE_CENTRE)
        top, left = (height - side) // 2, (width - side) // 2
        template = resize(image[top : top + side, left : left + side], _TEMPLATE_SIDE, _TEMPLATE_SIDE)
        names += [file.relative, f"{file.relative} (mirrored)"]
        images += [template, np.ascontiguousarray(template[:, ::-1])]
        hashes.append(sha256_bytes(data))
    if not images:
        raise IngestError(f"{folder}: no template images found")
    return HeadTemplates(tuple(names), tuple(images), tuple(hashes))


def find_head(image: np.ndarray, templates: HeadTemplates, scales: Sequence[float] = DEFAULT_SCALES) -> HeadMatch:
    """The most prominent template match over all templates and scales."""
    height, width = image.shape[:2]
    shrink = WORKING_SIZE / min(height, width)
    small = cv2.resize(image, (max(1, round(width * shrink)), max(1, round(height * shrink))), interpolation=cv2.INTER_AREA)
    small_side = min(small.shape[:2])
    working = small.astype(np.float32)
    best: HeadMatch | None = None
    for scale in scales:
        side = max(8, round(scale * small_side))
        if side > small_side:
            continue
        for name, template in zip(templates.names, templates.images):
            scaled = cv2.resize(template, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
            response = cv2.matchTemplate(working, scaled, cv2.TM_CCOEFF_NORMED)
            _, peak, _, (x, y) = cv2.minMaxLoc(response)
            spread = float(response.std())
            prominence = (peak - float(response.mean())) / spread if spread > 1e-6 else 0.0
            if best is None or prominence > best.prominence:
                best = HeadMatch(
                    round(x / shrink), round(y / shrink), round(side / shrink), prominence, float(peak), name, scale
                )
    if best is None:
        raise RejectedImage(f"image too small for head matching ({width}x{height})")
    return best


def square_box(match: HeadMatch, margin: float, width: int, height: int) -> tuple[int, int, int]:
    """The head box widened by ``margin`` on each side, kept square and shifted to lie inside the image."""
    side = min(round(match.side * (1 + 2 * margin)), width, height)
    centre_x, centre_y = match.x + match.side / 2, match.y + match.side / 2
    left = int(min(max(round(centre_x - side / 2), 0), width - side))
    top = int(min(max(round(centre_y - side / 2), 0), height - side))
    return left, top, side


def head_crop(
    image: np.ndarray,
    *,
    templates: HeadTemplates,
    size: int,
    margin: float,
    threshold: float,
    scales: Sequence[float],
    min_crop: int,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Transform for :class:`ImageTask`: the square head crop, or a rejection with the best score."""
    match = find_head(image, templates, scales)
    where = f"template {match.template}, scale {match.scale}"
    if match.prominence < threshold:
        raise RejectedImage(f"no head found: best match score {match.prominence:.2f} < threshold {threshold} ({where})")
    left, top, side = square_box(match, margin, image.shape[1], image.shape[0])
    if side < min_crop:
        raise RejectedImage(f"head crop too small: {side}x{side} < minimum {min_crop} ({where})")
    crop = image[top : top + side, left : left + side]
    info = {
        "box": [left, top, side, side],
        "score": round(match.prominence, 3),
        "correlation": round(match.correlation, 3),
        "template": match.template,
    }
    return resize(crop, size, size), info


def parse_classes(specs: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``["dogs", "n02110185", "big_cat=n02129604,n02129165"]`` -> domain name -> WordNet IDs.

    A preset name expands to its classes; a bare WordNet ID becomes a domain of that name.
    """
    classes: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        if spec in PRESETS:
            classes.update(PRESETS[spec])
            continue
        name, _, ids = spec.partition("=") if "=" in spec else (spec, "", spec)
        wnids = tuple(item.strip() for item in ids.split(",") if item.strip())
        bad = [wnid for wnid in wnids if not _WNID.match(wnid)]
        if not wnids or bad:
            raise IngestError(
                f"class {spec!r}: expected a preset ({', '.join(PRESETS)}), a WordNet ID like n02110185, "
                "or name=wnid[,wnid...]"
            )
        classes[name.strip()] = wnids
    owners: dict[str, str] = {}
    for domain, wnids in classes.items():
        for wnid in wnids:
            if owners.setdefault(wnid, domain) != domain:
                raise IngestError(f"WordNet ID {wnid} is in two classes: {owners[wnid]} and {domain}")
    if not classes:
        raise IngestError("no classes given: name a preset (dogs, cats) or WordNet IDs")
    check_domain_names(classes)
    return classes


def wnid_of(relative: str) -> str | None:
    """WordNet ID from ImageNet's layouts: a synset folder ``n02110185/...`` or a file ``n02110185_*.JPEG``."""
    path = PurePosixPath(relative)
    for folder in reversed(path.parent.parts):
        if _WNID.match(folder):
            return folder
    match = _WNID_PREFIX.match(path.name)
    return match.group(1) if match else None


def ingest_animals(
    location: str,
    templates_dir: str | Path,
    out_dir: str | Path,
    *,
    classes: Mapping[str, Sequence[str]],
    size: int = DEFAULT_SIZE,
    margin: float = DEFAULT_MARGIN,
    threshold: float = DEFAULT_THRESHOLD,
    scales: Sequence[float] = DEFAULT_SCALES,
    min_crop: int | None = None,
    test_fraction: float = 0.0,
    options: IngestOptions = IngestOptions(),
) -> IngestSummary:
    """Head crops of the chosen ImageNet classes, one domain per class (see :func:`parse_classes`).

    ``min_crop``: smallest accepted crop side in source pixels (default ``size // 2``; smaller
    crops would be blown up more than 2x). Files of other classes are ignored and counted.
    """
    if not scales or any(not 0 < scale <= 1 for scale in scales):
        raise IngestError(f"scales must be in (0, 1], got {list(scales)}")
    if margin < 0:
        raise IngestError(f"margin must be >= 0, got {margin}")
    templates = load_templates(templates_dir)
    owner = {wnid: domain for domain, wnids in classes.items() for wnid in wnids}
    min_crop = size // 2 if min_crop is None else min_crop
    settings = {"size": size, "margin": margin, "threshold": threshold, "scales": list(scales), "min_crop": min_crop}
    transform = partial(head_crop, templates=templates, **settings)
    recipe = recipe_hash(
        {
            "transform": "head_crop",
            "templates": list(templates.sha256),
            "working_size": WORKING_SIZE,
            "image_format": options.image_format,
            **settings,
        }
    )
    parameters = {
        "location": location,
        "templates": str(templates_dir),
        "classes": {domain: list(wnids) for domain, wnids in classes.items()},
        "test_fraction": test_fraction,
        **settings,
    }
    out_dir = Path(out_dir)
    with ExitStack() as stack, DatasetWriter(
        out_dir, options.image_format, options.reuse_previous, kind="animals", parameters=parameters
    ) as writer:
        listing = open_images(stack, location, out_dir, options)
        reject_skipped(writer, listing)
        selected = []
        other_classes = 0
        for file in listing.files:
            wnid = wnid_of(file.relative)
            if wnid is None:
                writer.reject(file.source, "no WordNet ID in the path (expected n########/... or n########_*.JPEG)")
            elif wnid in owner:
                selected.append((file, owner[wnid]))
            else:
                other_classes += 1
        writer.note("files_of_other_classes", other_classes)
        if not selected:
            raise IngestError(f"{location}: no images of the classes {', '.join(sorted(owner))}")
        names = output_names([PurePosixPath(file.relative).name for file, _ in selected])
        jobs = [ImageJob(file, domain, name, transform, recipe) for (file, domain), name in zip(selected, names)]
        write_outcomes(writer, run_jobs(jobs, writer, options, test_fraction=test_fraction, description="animals"))
    return summary_of(writer)
