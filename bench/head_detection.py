"""Score the head detector of `unit ingest animals` against hand-drawn head boxes (tests/fixtures/animal_heads.csv).

A detection is accepted when its score reaches the threshold; an accepted detection is right
when its head box overlaps the true box with IoU >= 0.5. Precision: right / accepted. Recall:
right / images that show a head. Milliseconds per image: detection alone, one thread.

The threshold is calibrated on the development rows only: each development photo is scored
with the templates of the other photos (its own crop left out), and the chosen threshold is
the lowest one whose development precision reaches --precision. When none does, it is set
just above every development score: precision comes first, so nothing the development set
cannot vouch for is accepted.

The cat-face cascade (``preprocessing.head_detector.detect_cat_faces``) is scored the same way,
its threshold calibrated on the development cats, alone and with the templates (--cat-faces),
and the detector the ingest runs (cascade first for cats, templates otherwise) per kind.

    python bench/head_detection.py                                   # held-out scores, shipped templates
    python bench/head_detection.py --cat-faces                       # also the cascade, each way it can be used
    python bench/head_detection.py --review-sheet docs/results/head-detection-held-out-review.png
    python bench/head_detection.py --cut-templates templates/heads   # rebuild the templates from the development rows
"""

from __future__ import annotations

import argparse
import csv
import math
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from preprocessing.animals import ingest_animals, parse_classes
from preprocessing.errors import IngestError
from preprocessing.head_detector import (
    CAT_FACE_CASCADE,
    CAT_FACE_KINDS,
    DEFAULT_CAT_FACE_THRESHOLD,
    DEFAULT_TEMPLATES,
    DEFAULT_THRESHOLD,
    GRIDS,
    TEMPLATE_CONTEXT,
    Detection,
    TemplateBank,
    crop_cells,
    detect_cat_faces,
    detect_heads,
    load_template_bank,
    matched_kinds,
    measure_background,
    save_background,
)
from preprocessing.images import decode_image, resize
from preprocessing.output import encode_image
from preprocessing.pipeline import IngestOptions

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "animal_heads.csv"
TEMPLATE_SIDE = 96
IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "animals"
NOTHING = -1e9  # the score of a photo where a way of detecting finds no candidate at all
PLAIN_CASCADE, EXTENDED_CASCADE = "haarcascade_frontalcatface.xml", "haarcascade_frontalcatface_extended.xml"


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    width = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def true_box(row: dict[str, str]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (int(row[key]) for key in ("x0", "y0", "x1", "y1"))
    return x0, y0, x1, y1


def write_template(photo: np.ndarray, row: dict[str, str], out: Path) -> None:
    """The head box plus TEMPLATE_CONTEXT (edges replicated) as ``out/<kind>/<photo>.png``."""
    x0, y0, x1, y1 = true_box(row)
    pad_x, pad_y = round((x1 - x0) * TEMPLATE_CONTEXT), round((y1 - y0) * TEMPLATE_CONTEXT)
    padded = cv2.copyMakeBorder(photo, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_REPLICATE)
    crop = padded[y0 : y1 + 2 * pad_y, x0 : x1 + 2 * pad_x]
    # The features use about 40 pixels a side; TEMPLATE_SIDE keeps the files small and viewable.
    shrink = min(1.0, TEMPLATE_SIDE / max(crop.shape[:2]))
    crop = resize(crop, round(crop.shape[1] * shrink), round(crop.shape[0] * shrink))
    folder = out / row["kind"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{Path(row['file']).stem}.png").write_bytes(encode_image(crop, "png"))


def cut_templates(rows: list[dict[str, str]], images: Path, out: Path) -> None:
    """A template per development head and the background statistics of the development photos."""
    development = [row for row in rows if row["split"] == "development"]
    photos = {row["file"]: decode_image((images / row["folder"] / row["file"]).read_bytes()) for row in development}
    for row in development:
        if row["no_head"] == "0":
            write_template(photos[row["file"]], row, out)
    save_background(measure_background(photos.values()), out / "background.npz")
    print(f"{out}: {sum(row['no_head'] == '0' for row in development)} templates and background.npz from the development rows")


def score(rows: list[dict[str, str]], images: Path, bank: TemplateBank) -> tuple[list[tuple[float, bool, bool]], float]:
    """(score, right, has_head) per row and ms/image; development rows leave their own template out."""
    results, seconds = [], 0.0
    for row in rows:
        image = decode_image((images / row["folder"] / row["file"]).read_bytes())
        own = Path(row["file"]).stem if row["split"] == "development" else None
        matcher = bank.matcher(matched_kinds(row["kind"]), exclude=own)
        started = time.perf_counter()
        best = detect_heads(image, matcher)[0]
        seconds += time.perf_counter() - started
        has_head = row["no_head"] == "0"
        results.append((best.score, has_head and iou(best.box, true_box(row)) >= 0.5, has_head))
    return results, 1000 * seconds / max(1, len(rows))


def own_crop_hits(rows: list[dict[str, str]], images: Path, background: Path) -> tuple[int, int]:
    """Diagnostic: photos whose head is found when their own head crop is the only template (an upper bound)."""
    hits = 0
    heads = [row for row in rows if row["no_head"] == "0"]
    for row in heads:
        image = decode_image((images / row["folder"] / row["file"]).read_bytes())
        with tempfile.TemporaryDirectory() as folder:
            write_template(image, row, Path(folder))
            shutil.copy(background, folder)
            best = detect_heads(image, load_template_bank(folder).matcher())[0]
        hits += iou(best.box, true_box(row)) >= 0.5
    return hits, len(heads)


def at(results: list[tuple[float, bool, bool]], threshold: float) -> tuple[int, int]:
    accepted = [right for value, right, _ in results if value >= threshold]
    return len(accepted), sum(accepted)


def calibrate(results: list[tuple[float, bool, bool]], precision: float) -> float:
    """The lowest score with precision >= ``precision`` from it up, else just above every score (inf: no candidates)."""
    values = sorted({value for value, _, _ in results if value > NOTHING})
    for threshold in values:
        accepted, right = at(results, threshold)
        if right / accepted >= precision:
            return threshold
    return math.floor(values[-1] * 100 + 1) / 100 if values else math.inf


def describe(name: str, results: list[tuple[float, bool, bool]], threshold: float) -> str:
    heads = sum(has_head for _, _, has_head in results)
    accepted, right = at(results, threshold)
    precision = f"{right / accepted:.3f}" if accepted else "n/a (nothing accepted)"
    return f"{name}: threshold {threshold}: accepted {accepted}, right {right}, precision {precision}, recall {right / heads:.3f} ({right}/{heads})"


def padded_crop(photo: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The box plus TEMPLATE_CONTEXT per side, edges replicated: how templates are cut."""
    x0, y0, x1, y1 = box
    pad_x, pad_y = max(1, round((x1 - x0) * TEMPLATE_CONTEXT)), max(1, round((y1 - y0) * TEMPLATE_CONTEXT))
    padded = cv2.copyMakeBorder(photo, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_REPLICATE)
    return padded[y0 : y1 + 2 * pad_y, x0 : x1 + 2 * pad_x]


def box_score(photo: np.ndarray, box: tuple[int, int, int, int], matcher: dict[tuple[int, int], np.ndarray]) -> float:
    """The template score of one given box (best window shape), in the units of detect_heads."""
    crop = padded_crop(photo, box)
    return max(float(crop_cells(crop, grid) @ matcher[grid]) for grid in GRIDS)


def faces_by(cascade: str, photo: np.ndarray) -> list[Detection]:
    """detect_cat_faces with the named cascade of cv2.data.haarcascades, for the comparison."""
    import preprocessing.head_detector as detector

    chosen = detector.CAT_FACE_CASCADE
    detector.CAT_FACE_CASCADE = cascade
    detector.cat_face_cascade.cache_clear()
    try:
        return detect_cat_faces(photo)
    finally:
        detector.CAT_FACE_CASCADE = chosen
        detector.cat_face_cascade.cache_clear()


def cat_face_ways(rows: list[dict[str, str]], images: Path, bank: TemplateBank) -> tuple[dict[str, list[tuple[dict[str, str], float, bool, bool]]], dict[str, float]]:
    """Every way of using the cascade: way -> (row, score, right, has_head) per row; ms/image of each cascade."""
    ways: dict[str, list[tuple[dict[str, str], float, bool, bool]]] = {}
    seconds = {"plain": 0.0, "extended": 0.0}
    for row in rows:
        photo = decode_image((images / row["folder"] / row["file"]).read_bytes())
        own = Path(row["file"]).stem if row["split"] == "development" else None
        matcher = bank.matcher(matched_kinds(row["kind"]), exclude=own)
        has_head = row["no_head"] == "0"
        truth = true_box(row) if has_head else None

        def add(way: str, found: Detection | None) -> None:
            right = found is not None and truth is not None and iou(found.box, truth) >= 0.5
            ways.setdefault(way, []).append((row, NOTHING if found is None else found.score, right, has_head))

        started = time.perf_counter()
        plain = faces_by(PLAIN_CASCADE, photo)
        seconds["plain"] += time.perf_counter() - started
        started = time.perf_counter()
        extended = faces_by(EXTENDED_CASCADE, photo)
        seconds["extended"] += time.perf_counter() - started
        both = sorted(extended + plain, key=lambda face: -face.score)
        add(f"cascade alone ({PLAIN_CASCADE})", next(iter(plain), None))
        add(f"cascade alone ({EXTENDED_CASCADE})", next(iter(extended), None))
        add("cascade alone (both, best score)", next(iter(both), None))
        rescored = [Detection(face.box, round(box_score(photo, face.box, matcher), 3)) for face in both]
        add("faces of both re-scored by the templates", max(rescored, key=lambda face: face.score, default=None))
        candidates = detect_heads(photo, matcher, limit=5)
        agreed = next((c for c in candidates if any(iou(c.box, face.box) >= 0.5 for face in both)), None)
        add("template top-5 candidate a face agrees with (IoU >= 0.5)", agreed)
    return ways, {name: 1000 * value / max(1, len(rows)) for name, value in seconds.items()}


def report_cat_faces(rows: list[dict[str, str]], images: Path, bank: TemplateBank, split: str, precision: float) -> None:
    """Each way of using the cascade on cats (and, for the record, on dogs): dev-calibrated threshold, then the split."""
    for kinds, label in ((CAT_FACE_KINDS, "cats (house and big)"), ({"dog"}, "dogs")):
        chosen = [row for row in rows if row["kind"] in kinds]
        ways, ms = cat_face_ways(chosen, images, bank)
        print(f"\ncat-face cascades on {label}: ms/image {PLAIN_CASCADE} {ms['plain']:.1f}, {EXTENDED_CASCADE} {ms['extended']:.1f} (one thread)")
        for way, results in ways.items():
            development = [(value, right, has) for row, value, right, has in results if row["split"] == "development"]
            held = [(value, right, has) for row, value, right, has in results if split in ("all", row["split"])]
            threshold = calibrate(development, precision)
            print(f"  {way}: {describe('development', development, threshold)}; {describe(split, held, threshold)}")
            for name, items in (("development", development), (split, held)):
                ranked = " ".join(f"{value:.2f}{'+' if right else '-'}" for value, right, _ in sorted(items, key=lambda item: -item[0]) if value > NOTHING)
                print(f"    {name} scores, best first: {ranked or 'none'}")


def ingest_detector(rows: list[dict[str, str]], images: Path, bank: TemplateBank, threshold: float, face_threshold: float) -> None:
    """What the ingest does, per kind: cats ask the cascade first, then the templates; dogs the templates."""
    results: dict[str, list[tuple[float, bool, bool]]] = {}
    seconds: dict[str, float] = {}
    cpu: dict[str, float] = {}  # CPU time of this thread: the cost on one core however busy the machine is
    for row in rows:
        photo = decode_image((images / row["folder"] / row["file"]).read_bytes())
        own = Path(row["file"]).stem if row["split"] == "development" else None
        matcher = bank.matcher(matched_kinds(row["kind"]), exclude=own)
        started, started_cpu = time.perf_counter(), time.thread_time()
        face = next(iter(detect_cat_faces(photo)), None) if row["kind"] in CAT_FACE_KINDS else None
        if face is not None and face.score >= face_threshold:
            found, accepted = face, True
        else:
            found = detect_heads(photo, matcher, limit=1)[0]
            accepted = found.score >= threshold
        seconds[row["kind"]] = seconds.get(row["kind"], 0.0) + time.perf_counter() - started
        cpu[row["kind"]] = cpu.get(row["kind"], 0.0) + time.thread_time() - started_cpu
        has_head = row["no_head"] == "0"
        right = has_head and iou(found.box, true_box(row)) >= 0.5
        # Scored as accepted (1) or not (0): describe() then counts at threshold 1.
        results.setdefault(row["kind"], []).append((1.0 if accepted else 0.0, right, has_head))
    everything = [item for kind in results for item in results[kind]]
    for kind, items in [*results.items(), ("all", everything)]:
        count, heads = len(items), sum(has_head for _, _, has_head in items)
        accepted, right = at(items, 1.0)
        ms = 1000 * (sum(seconds.values()) if kind == "all" else seconds[kind]) / count
        ms_cpu = 1000 * (sum(cpu.values()) if kind == "all" else cpu[kind]) / count
        print(f"  {kind}: {count} photos, accepted {accepted}, right {right}, precision {right}/{accepted}, recall {right}/{heads}, "
              f"ms/image {ms:.1f} (CPU {ms_cpu:.1f})")


def review_sheet(rows: list[dict[str, str]], images: Path, templates: Path, out: Path) -> None:
    """The contact sheet of `unit ingest animals` on these photos, one class per synset."""
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "photos"
        source.mkdir()
        for row in rows:
            (source / row["file"]).symlink_to((images / row["folder"] / row["file"]).resolve())
        classes = parse_classes(sorted({row["file"].split("_")[0] for row in rows}))
        dataset = Path(folder) / "ds"
        try:
            ingest_animals(str(source), templates, dataset, classes=classes, options=IngestOptions(workers=1, progress=False))
            sheet = dataset / "review.png"
        except IngestError:  # some class got no crop: the sheet is written beside
            sheet = Path(folder) / "ds.review.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        # 256 colours: a third of the bytes, for a file kept in the repository.
        Image.open(sheet).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    print(f"contact sheet of the ingest on {len(rows)} photos: {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--templates", type=Path, default=DEFAULT_TEMPLATES)
    parser.add_argument("--images", type=Path, default=IMAGES, help="folder holding imagenet_dev/ and imagenet_samples/")
    parser.add_argument("--labels", type=Path, default=FIXTURE)
    parser.add_argument("--split", default="held_out", help="development, held_out or all (default held_out)")
    parser.add_argument("--precision", type=float, default=0.9, help="development precision the threshold must reach")
    parser.add_argument("--threshold", type=float, help="score this threshold instead of the calibrated one")
    parser.add_argument("--own-crop", action="store_true", help="also the diagnostic: each photo matched with its own head crop only")
    parser.add_argument("--cut-templates", type=Path, metavar="DIR", help="write templates from the development rows to DIR first")
    parser.add_argument("--cat-faces", action="store_true", help="also score the cat-face cascade alone and with the templates")
    parser.add_argument("--review-sheet", type=Path, metavar="PNG", help="write the ingest's contact sheet of the split's photos here")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    with args.labels.open(encoding="utf-8") as labels:
        rows = list(csv.DictReader(labels))
    if args.cut_templates:
        cut_templates(rows, args.images, args.cut_templates)
        args.templates = args.cut_templates
    bank = load_template_bank(args.templates)
    development, development_ms = score([row for row in rows if row["split"] == "development"], args.images, bank)
    calibrated = calibrate(development, args.precision)
    print(f"templates {args.templates}: {len(bank.templates)} ({', '.join(sorted(bank.kinds()))}); ingest default threshold {DEFAULT_THRESHOLD}")
    print("development (each photo without its own template), precision/recall over thresholds:")
    print("threshold  accepted  right  precision  recall")
    heads = sum(has_head for _, _, has_head in development)
    for threshold in sorted({value for value, _, _ in development}, reverse=True):
        accepted, right = at(development, threshold)
        print(f"{threshold:9.3f}  {accepted:8d}  {right:5d}  {right / accepted:9.3f}  {right / heads:6.3f}")
    print(f"chosen threshold {calibrated}: the lowest with development precision >= {args.precision}, "
          "else just above every development score")
    threshold = calibrated if args.threshold is None else args.threshold
    print(describe("development", development, threshold) + f", ms/image {development_ms:.1f}")
    if args.split != "development":
        scored = [row for row in rows if args.split in ("all", row["split"])]
        results, ms = score(scored, args.images, bank)
        print(describe(args.split, results, threshold) + f", ms/image {ms:.1f} (one thread)")
        ranked = sorted(results, key=lambda item: -item[0])
        print(f"{args.split}, best-scored first: " + " ".join(f"{value:.2f}{'+' if right else '-'}" for value, right, _ in ranked))
        print(f"{args.split}: right top candidates at any threshold {sum(right for _, right, _ in results)}/{sum(h for _, _, h in results)}")
        if args.own_crop:
            hits, heads = own_crop_hits(scored, args.images, args.templates / "background.npz")
            print(f"{args.split}, diagnostic: own head crop as the only template finds {hits}/{heads} heads (not a detector result)")
    if args.cat_faces:
        report_cat_faces(rows, args.images, bank, args.split, args.precision)
    print(f"\nthe ingest's detector ({CAT_FACE_CASCADE} from {DEFAULT_CAT_FACE_THRESHOLD} for cats, then templates from {threshold}), {args.split}:")
    ingest_detector([row for row in rows if args.split in ("all", row["split"])], args.images, bank, threshold, DEFAULT_CAT_FACE_THRESHOLD)
    if args.review_sheet:
        review_sheet([row for row in rows if args.split in ("all", row["split"])], args.images, args.templates, args.review_sheet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
