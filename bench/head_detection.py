"""Score the head detector of `unit ingest animals` against hand-drawn head boxes (tests/fixtures/animal_heads.csv).

A detection is accepted when its match score reaches the threshold; an accepted detection is
right when its head box overlaps the true box with IoU >= 0.5. Precision: right / accepted.
Recall: right / images that show a head. Also the precision/recall at every threshold seen,
and milliseconds per image (one thread).

    python bench/head_detection.py --templates ../shared/data/animals/templates --split held_out
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import cv2

from preprocessing.animals import DEFAULT_THRESHOLD, find_head, load_templates
from preprocessing.images import decode_image

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "animal_heads.csv"


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    width = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--templates", type=Path, required=True)
    parser.add_argument("--images", type=Path, default=Path("../shared/data/animals"), help="folder holding imagenet_dev/ etc.")
    parser.add_argument("--labels", type=Path, default=FIXTURE)
    parser.add_argument("--split", default="held_out", help="development, held_out or all")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    templates = load_templates(args.templates)
    rows = [row for row in csv.DictReader(args.labels.open(encoding="utf-8")) if args.split in ("all", row["split"])]
    results = []  # (score, right, has_head)
    seconds = 0.0
    for row in rows:
        image = decode_image((args.images / row["folder"] / row["file"]).read_bytes())
        started = time.perf_counter()
        match = find_head(image, templates)
        seconds += time.perf_counter() - started
        has_head = row["no_head"] == "0"
        right = has_head and iou((match.x, match.y, match.x + match.side, match.y + match.side),
                                 tuple(int(row[key]) for key in ("x0", "y0", "x1", "y1"))) >= 0.5
        results.append((match.prominence, right, has_head))
    heads = sum(has_head for _, _, has_head in results)

    def at(threshold: float) -> tuple[int, int]:
        accepted = [right for score, right, _ in results if score >= threshold]
        return len(accepted), sum(accepted)

    accepted, right = at(args.threshold)
    print(f"images {len(rows)} ({args.split}), with a head {heads}, templates {len(templates.names)}")
    print(f"threshold {args.threshold}: accepted {accepted}, right {right}, "
          f"precision {right / accepted if accepted else float('nan'):.3f}, recall {right / heads if heads else float('nan'):.3f}")
    print(f"ms/image {1000 * seconds / len(rows):.1f} (one thread)")
    print("threshold  accepted  right  precision  recall")
    for threshold in sorted({score for score, _, _ in results}, reverse=True):
        accepted, right = at(threshold)
        print(f"{threshold:9.3f}  {accepted:8d}  {right:5d}  {right / accepted:9.3f}  {right / heads:6.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
