"""Score the head detector of `unit ingest animals` against hand-drawn head boxes (tests/fixtures/animal_heads.csv).

A detection is accepted when its score reaches the threshold; an accepted detection is right
when its head box overlaps the true box with IoU >= 0.5. Precision: right / accepted. Recall:
right / images that show a head. Milliseconds per image: detection alone, one thread.

The threshold is calibrated on the development rows only: each development photo is scored
with the templates of the other photos (its own crop left out), and the chosen threshold is
the lowest one whose development precision reaches --precision. When none does, it is set
just above every development score: precision comes first, so nothing the development set
cannot vouch for is accepted.

    python bench/head_detection.py                                   # held-out scores, shipped templates
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

from preprocessing.head_detector import (
    DEFAULT_TEMPLATES,
    DEFAULT_THRESHOLD,
    TEMPLATE_CONTEXT,
    TemplateBank,
    detect_heads,
    load_template_bank,
    matched_kinds,
    measure_background,
    save_background,
)
from preprocessing.images import decode_image, resize
from preprocessing.output import encode_image

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "animal_heads.csv"
TEMPLATE_SIDE = 96
IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "animals"


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
    for threshold in sorted({value for value, _, _ in results}):
        accepted, right = at(results, threshold)
        if right / accepted >= precision:
            return threshold
    return math.floor(max(value for value, _, _ in results) * 100 + 1) / 100


def describe(name: str, results: list[tuple[float, bool, bool]], threshold: float) -> str:
    heads = sum(has_head for _, _, has_head in results)
    accepted, right = at(results, threshold)
    precision = f"{right / accepted:.3f}" if accepted else "n/a (nothing accepted)"
    return f"{name}: threshold {threshold}: accepted {accepted}, right {right}, precision {precision}, recall {right / heads:.3f} ({right}/{heads})"


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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
