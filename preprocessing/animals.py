"""ImageNet dog breeds and cat species: head crops found by template matching, reviewed by a person.

:mod:`preprocessing.head_detector` finds the best head candidate of each photo; a candidate
scoring below the threshold is rejected with its box and score. For cats, OpenCV's cat-face
cascade is asked first: a face scoring at least its own threshold is the head. The accepted head box, widened
by a margin, gives a square crop resized to the output size. Every manifest entry records
``transform.head_box`` (the head in source pixels, before the margin) and ``transform.crop_box``
(the box actually cut), both ``[x0, y0, x1, y1]``.

A person stays in charge: ``boxes`` (a CSV ``file,x0,y0,x1,y1``) gives head boxes that replace
detection for the listed files, ``drop`` lists files to leave out, and ``review.png`` in the
data set is a contact sheet of the accepted crops and the rejected photos with their best box.
"""

from __future__ import annotations

import csv
import heapq
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np

from preprocessing.errors import IngestError
from preprocessing.head_detector import (
    CAT_FACE_CASCADE,
    CAT_FACE_KINDS,
    DEFAULT_CAT_FACE_THRESHOLD,
    DEFAULT_THRESHOLD,
    Detection,
    detect_cat_faces,
    detect_heads,
    kind_of_wnid,
    load_template_bank,
    matched_kinds,
)
from preprocessing.images import RejectedImage, decode_image, resize
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
from preprocessing.review import TILE, Tile, contact_sheet
from preprocessing.sources import SourceFile, UnreadableSource

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
#: Every preset class by its one name: ``--class siberian_husky`` is that class.
PRESET_CLASSES = {**DOG_PRESET, **CAT_PRESET}

#: Share of the head box added on each side of the crop.
DEFAULT_MARGIN = 0.25
DEFAULT_SIZE = 128
REVIEW_NAME = "review.png"
#: Tiles per section of the review sheet: the weakest accepted, the best-scored rejected.
REVIEW_TILES = 64
_WNID = re.compile(r"^n\d{8}$")
_WNID_PREFIX = re.compile(r"^(n\d{8})_")
NO_HEAD = "no head found"
TOO_SMALL = "head crop too small"
DROPPED = "dropped"
# How a rejection names its best candidate, so the review sheet can draw it.
_CANDIDATE = re.compile(r"best candidate \[(-?\d+), (-?\d+), (-?\d+), (-?\d+)\] score (-?\d+(?:\.\d+)?)")


def _candidate(detection: Detection) -> str:
    return f"best candidate [{', '.join(map(str, detection.box))}] score {detection.score:.2f}"


def crop_box(head: tuple[int, int, int, int], margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The square around the head box widened by ``margin`` per side, shifted (and shrunk if need be) to lie inside the image."""
    x0, y0, x1, y1 = head
    side = min(round(max(x1 - x0, y1 - y0) * (1 + 2 * margin)), width, height)
    left = int(min(max(round((x0 + x1 - side) / 2), 0), width - side))
    top = int(min(max(round((y0 + y1 - side) / 2), 0), height - side))
    return left, top, left + side, top + side


def head_crop(
    image: np.ndarray,
    *,
    matcher: Mapping[tuple[int, int], np.ndarray],
    size: int,
    margin: float,
    threshold: float,
    min_crop: int,
    cat_faces: bool = False,
    cat_face_threshold: float = DEFAULT_CAT_FACE_THRESHOLD,
    manual_box: tuple[int, int, int, int] | None = None,
    manual_from: str = "",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Transform for :class:`ImageTask`: the square head crop, or a rejection naming the best candidate.

    ``cat_faces``: the cat-face cascade is asked first; its best face, when it scores at least
    ``cat_face_threshold``, is the head. Otherwise (and for dogs) the template match decides.
    """
    height, width = image.shape[:2]
    detector = "template"
    if manual_box is not None:
        _, _, x1, y1 = manual_box
        if x1 > width or y1 > height:
            raise RejectedImage(f"manual box {list(manual_box)} ({manual_from}) lies outside the {width}x{height} image")
        head, score, where, detector = manual_box, None, f"manual box ({manual_from})", "manual"
    else:
        face = next(iter(detect_cat_faces(image)), None) if cat_faces else None
        if face is not None and face.score >= cat_face_threshold:
            head, score, where, detector = face.box, face.score, f"cat face {list(face.box)} score {face.score:.2f}", "cat_face"
        else:
            best = detect_heads(image, matcher, limit=1)[0]
            if best.score < threshold:
                also = "" if face is None else f"; best cat face {list(face.box)} score {face.score:.2f} < {cat_face_threshold}"
                raise RejectedImage(f"{NO_HEAD}: {_candidate(best)} < threshold {threshold}{also}")
            head, score, where = best.box, best.score, _candidate(best)
    left, top, right, bottom = crop_box(head, margin, width, height)
    if right - left < min_crop:
        raise RejectedImage(f"{TOO_SMALL}: {right - left}x{bottom - top} < minimum {min_crop} ({where})")
    info = {"head_box": list(head), "crop_box": [left, top, right, bottom], "score": score, "detector": detector}
    return resize(image[top:bottom, left:right], size, size), info


def parse_classes(specs: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``["dogs", "siberian_husky", "n02129604", "big_cat=n02129604,n02129165"]`` -> domain name -> WordNet IDs.

    A preset name expands to its classes, a preset class name (or its bare WordNet ID) is that
    class. A preset class has one name everywhere: ``husky=n02110185`` is an error naming
    ``siberian_husky``.
    """
    preset_name = {wnids: name for name, wnids in PRESET_CLASSES.items()}
    classes: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        if spec in PRESETS:
            classes.update(PRESETS[spec])
            continue
        if spec in PRESET_CLASSES:
            classes[spec] = PRESET_CLASSES[spec]
            continue
        name, _, ids = spec.partition("=") if "=" in spec else (spec, "", spec)
        wnids = tuple(item.strip() for item in ids.split(",") if item.strip())
        bad = [wnid for wnid in wnids if not _WNID.match(wnid)]
        if not wnids or bad:
            raise IngestError(
                f"class {spec!r}: expected a preset ({', '.join(PRESETS)}), a preset class ({', '.join(PRESET_CLASSES)}), "
                "a WordNet ID like n02110185, or name=wnid[,wnid...]"
            )
        name = name.strip()
        known = preset_name.get(wnids)
        if known is not None and "=" in spec and name != known:
            raise IngestError(f"class {spec!r}: {','.join(wnids)} is the preset class {known!r}; use --class {known} (one name everywhere)")
        classes[known or name] = wnids
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


def template_kinds(wnids: Sequence[str]) -> tuple[str, ...] | None:
    """Template kinds for a class's synsets (see ``matched_kinds``); None when mixed or unknown: all templates."""
    kinds = {matched_kinds(kind_of_wnid(wnid)) for wnid in wnids}
    return kinds.pop() if len(kinds) == 1 else None


@dataclass(frozen=True)
class ManualBox:
    box: tuple[int, int, int, int]
    where: str  # "FILE line N"


def read_boxes(path: str | Path) -> dict[str, ManualBox]:
    """File name (or path below the input location) -> manual head box, from a CSV ``file,x0,y0,x1,y1``.

    Other columns are ignored (tests/fixtures/animal_heads.csv can be passed as it is); a row
    with ``no_head`` = 1 and no box is skipped (use ``drop`` to leave such files out).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise IngestError(f"{path}: cannot read the boxes file: {exc}") from None
    reader = csv.DictReader(text.splitlines())
    missing = [column for column in ("file", "x0", "y0", "x1", "y1") if column not in (reader.fieldnames or [])]
    if missing:
        raise IngestError(f"{path}: line 1: expected a header with file,x0,y0,x1,y1; missing {', '.join(missing)}")
    boxes: dict[str, ManualBox] = {}
    for row in reader:
        where = f"{path} line {reader.line_num}"
        name = (row.get("file") or "").strip()
        values = [(row.get(key) or "").strip() for key in ("x0", "y0", "x1", "y1")]
        if not name:
            raise IngestError(f"{where}: no file name")
        if not any(values) and (row.get("no_head") or "").strip() == "1":
            continue
        try:
            x0, y0, x1, y1 = (int(value) for value in values)
        except ValueError:
            raise IngestError(f"{where}: x0,y0,x1,y1 must be whole numbers of pixels, got {','.join(values)}") from None
        if not (0 <= x0 < x1 and 0 <= y0 < y1):
            raise IngestError(f"{where}: box {x0},{y0},{x1},{y1} is empty or negative (need 0 <= x0 < x1 and 0 <= y0 < y1)")
        if name in boxes:
            raise IngestError(f"{where}: {name} already has a box ({boxes[name].where})")
        boxes[name] = ManualBox((x0, y0, x1, y1), where)
    return boxes


def read_drop_list(path: str | Path) -> set[str]:
    """File names (or paths below the input location), one per line; blank lines and ``#`` comments ignored."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise IngestError(f"{path}: cannot read the drop list: {exc}") from None
    return {line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")}


def _listed(file: SourceFile, names: Mapping[str, Any] | set[str]) -> str | None:
    """The key under which a file is listed: its path below the location, else its file name."""
    for key in (file.relative, PurePosixPath(file.relative).name):
        if key in names:
            return key
    return None


class _Review:
    """Collects what the contact sheet shows, a bounded number of tiles whatever the ingest's size."""

    def __init__(self) -> None:
        self.accepted: list[tuple[float, int, Tile]] = []  # keyed by -score: the strongest is dropped first
        self.rejected: list[tuple[float, int, str, SourceFile, tuple[int, int, int, int], str]] = []  # keyed by score: the weakest is dropped first
        self._order = 0

    def add(self, outcome: Outcome) -> None:
        self._order += 1
        name = PurePosixPath(outcome.job.file.relative).name
        if outcome.encoded is not None:
            info = outcome.info
            score = info.get("score")
            label = "manual" if score is None else f"{score:.2f}"
            crop = cv2.cvtColor(cv2.imdecode(np.frombuffer(outcome.encoded, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            small = resize(crop, 96, 96)
            key = -(float("inf") if score is None else score)
            heapq.heappush(self.accepted, (key, self._order, Tile(small, (f"{label} {outcome.job.domain}", name))))
            if len(self.accepted) > REVIEW_TILES:
                heapq.heappop(self.accepted)
            return
        reason = outcome.reason or "rejected"
        candidate = _CANDIDATE.search(reason)
        if candidate is None:
            return
        x0, y0, x1, y1 = (int(value) for value in candidate.groups()[:4])
        score = float(candidate.group(5))
        label = f"{score:.2f} crop too small" if reason.startswith(TOO_SMALL) else f"{score:.2f} < threshold"
        heapq.heappush(self.rejected, (score, self._order, name, outcome.job.file, (x0, y0, x1, y1), label))
        if len(self.rejected) > REVIEW_TILES:
            heapq.heappop(self.rejected)

    def sheet(self, accepted_total: int, candidates: int) -> bytes:
        accepted = [tile for _, _, tile in sorted(self.accepted, key=lambda item: (-item[0], item[1]))]
        rejected = []
        for _, _, name, file, box, label in sorted(self.rejected, key=lambda item: (-item[0], item[1])):
            try:
                image = decode_image(file.read())
            except (RejectedImage, UnreadableSource) as exc:
                rejected.append(Tile(np.full((64, 64, 3), 200, np.uint8), (f"unreadable now: {exc}", name)))
                continue
            # Shrunk at once: the sheet needs tiles, not dozens of full-size photos in memory.
            shrink = min(1.0, 2 * TILE / max(image.shape[:2]))
            small = resize(image, max(1, round(image.shape[1] * shrink)), max(1, round(image.shape[0] * shrink)))
            rejected.append(Tile(small, (label, name), tuple(round(value * shrink) for value in box)))
        return contact_sheet([
            (f"accepted: {len(accepted)} of {accepted_total}, weakest score first", accepted),
            (f"rejected with a candidate: {len(rejected)} of {candidates}, best candidate box in red, highest score first", rejected),
        ])


def ingest_animals(
    location: str,
    templates_dir: str | Path,
    out_dir: str | Path,
    *,
    classes: Mapping[str, Sequence[str]],
    size: int = DEFAULT_SIZE,
    margin: float = DEFAULT_MARGIN,
    threshold: float = DEFAULT_THRESHOLD,
    cat_face_threshold: float = DEFAULT_CAT_FACE_THRESHOLD,
    min_crop: int | None = None,
    test_fraction: float = 0.0,
    boxes: str | Path | None = None,
    drop: str | Path | None = None,
    min_images: int = 1,
    options: IngestOptions = IngestOptions(),
) -> IngestSummary:
    """Head crops of the chosen ImageNet classes, one domain per class (see :func:`parse_classes`).

    ``templates_dir``: head templates (see :mod:`preprocessing.head_detector`; the shipped ones
    are ``preprocessing.head_detector.DEFAULT_TEMPLATES``). Classes of cats (house or big) ask
    OpenCV's cat-face cascade first and accept its face from ``cat_face_threshold`` up (see
    :func:`head_crop`). ``min_crop``: smallest accepted crop side in source pixels
    (default ``size // 2``; smaller crops would be blown up more than 2x). ``boxes``: CSV of
    manual head boxes (see :func:`read_boxes`); ``drop``: list of files to leave out. A class
    with fewer than ``min_images`` training images is an error naming it; nothing is written
    then, and the review sheet goes beside the output as ``<out>.review.png``.
    """
    if margin < 0:
        raise IngestError(f"margin must be >= 0, got {margin}")
    if min_images < 1:
        raise IngestError(f"min_images must be at least 1, got {min_images}")
    bank = load_template_bank(templates_dir)
    manual = read_boxes(boxes) if boxes is not None else {}
    dropped = read_drop_list(drop) if drop is not None else set()
    owner = {wnid: domain for domain, wnids in classes.items() for wnid in wnids}
    matchers = {domain: bank.matcher(template_kinds(wnids)) for domain, wnids in classes.items()}
    # The cat-face cascade runs for classes that are all cats; a mixed class is matched by the templates alone.
    cat_faces = {domain: set(template_kinds(wnids) or ("dog",)) <= CAT_FACE_KINDS for domain, wnids in classes.items()}
    min_crop = size // 2 if min_crop is None else min_crop
    settings = {"size": size, "margin": margin, "threshold": threshold, "min_crop": min_crop}
    recipe_base = {"transform": "head_crop", "templates": list(bank.sha256), "image_format": options.image_format, **settings}
    parameters = {
        "location": location,
        "templates": str(templates_dir),
        "classes": {domain: list(wnids) for domain, wnids in classes.items()},
        "test_fraction": test_fraction,
        "boxes": None if boxes is None else str(boxes),
        "drop": None if drop is None else str(drop),
        "min_images": min_images,
        "cat_face_threshold": cat_face_threshold,
        **settings,
    }
    out_dir = Path(out_dir)
    review = _Review()
    with ExitStack() as stack, DatasetWriter(
        out_dir, options.image_format, options.reuse_previous, kind="animals", parameters=parameters
    ) as writer:
        listing = open_images(stack, location, out_dir, options)
        reject_skipped(writer, listing)
        selected = []
        other_classes = 0
        used_boxes, used_drops = set(), set()
        inputs: Counter[str] = Counter()  # files per class before the drop list
        for file in listing.files:
            wnid = wnid_of(file.relative)
            if wnid is None:
                writer.reject(file.source, "no WordNet ID in the path (expected n########/... or n########_*.JPEG)")
                continue
            if wnid not in owner:
                other_classes += 1
                continue
            inputs[owner[wnid]] += 1
            listed = _listed(file, dropped)
            if listed is not None:
                used_drops.add(listed)
                writer.reject(file.source, f"{DROPPED}: listed in {drop}", domain=owner[wnid])
            else:
                selected.append((file, owner[wnid]))
        writer.note("files_of_other_classes", other_classes)
        if not selected:
            raise IngestError(f"{location}: no images of the classes {', '.join(sorted(owner))} (after the drop list)")
        names = output_names([PurePosixPath(file.relative).name for file, _ in selected])
        jobs = []
        for (file, domain), name in zip(selected, names):
            box_key = _listed(file, manual)
            transform = partial(head_crop, matcher=matchers[domain], **settings)
            recipe = recipe_hash(recipe_base)
            if cat_faces[domain]:
                transform = partial(transform, cat_faces=True, cat_face_threshold=cat_face_threshold)
                recipe = recipe_hash({**recipe_base, "cat_face": [CAT_FACE_CASCADE, cat_face_threshold]})
            if box_key is not None:
                used_boxes.add(box_key)
                box = manual[box_key]
                transform = partial(transform, manual_box=box.box, manual_from=box.where)
                recipe = recipe_hash({**recipe_base, "manual_box": list(box.box)})  # the box decides: no detector runs
            jobs.append(ImageJob(file, domain, name, transform, recipe))
        write_outcomes(writer, _reviewed(run_jobs(jobs, writer, options, test_fraction=test_fraction, description="animals"), review))
        unused = {"boxes_not_found": sorted(set(manual) - used_boxes), "drop_not_found": sorted(dropped - used_drops)}
        for key, files in unused.items():
            writer.note(key, files)
        accepted_total = sum(sum(splits.values()) for splits in writer.counts.values())
        reasons = Counter(_reason_kind(item["reason"]) for item in writer.rejected)
        sheet = review.sheet(accepted_total, reasons[NO_HEAD] + reasons[TOO_SMALL])
        short = {domain: writer.counts.get(domain, {}).get("train", 0) for domain in classes}
        short = {domain: count for domain, count in short.items() if count < min_images}
        beside = out_dir.with_name(f"{out_dir.name}.review.png")
        if short:
            beside.write_bytes(sheet)
            shortfall = ", ".join(
                f"{domain!r} has {count}" + ("" if inputs[domain] else " (no input files)") for domain, count in sorted(short.items())
            )
            raise IngestError(
                f"too few training images (at least {min_images} needed per class): {shortfall}; nothing was written. "
                f"Rejections: {_counted(reasons)}; review them in {beside}, then add head boxes (--boxes) or lower --threshold"
            )
        writer.add_metadata_file(REVIEW_NAME, sheet)
        beside.unlink(missing_ok=True)  # the sheet of an earlier failed run
    details = [
        f"accepted {accepted_total}; rejected: {_counted(reasons) or 'none'}; contact sheet {out_dir / REVIEW_NAME}",
        *(f"{len(files)} name(s) in --{key.split('_')[0]} match no input file: {', '.join(files[:5])}" for key, files in unused.items() if files),
    ]
    return summary_of(writer, details)


def _reason_kind(reason: str) -> str:
    """A rejection reason without its particulars, for counting."""
    return "duplicate" if reason.startswith("duplicate of ") else reason.split(":")[0]


def _counted(reasons: Counter[str]) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in sorted(reasons.items(), key=lambda item: -item[1]))


def _reviewed(outcomes: Iterator[Outcome], review: _Review) -> Iterator[Outcome]:
    for outcome in outcomes:
        review.add(outcome)
        yield outcome
