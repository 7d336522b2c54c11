"""The pixel accuracy of a translator that has learned nothing but the target domain's commonest colour.

Not a test: prints the floor that a translation's pixel accuracy has to clear before it shows
any learning. The colour is the most frequent one of the target domain's *training* images
(unpaired, so no test truth is used to choose it); every pixel of every paired image of the
split is painted with it and scored as ``unit evaluate`` scores a translation
(``unit_core.metrics.pixel_accuracy``, tolerance 16, mean over images).

    python bench/pixel_accuracy_floor.py data/maps --target map --split val_paired test_paired
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
from PIL import Image

from unit_core.layout import domain_images
from unit_core.metrics import pixel_accuracy


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def commonest_colour(files: list[Path]) -> tuple[np.ndarray, float]:
    """The most frequent RGB colour over all pixels of ``files`` and its share of them."""
    counts: dict[int, int] = {}
    total = 0
    for path in files:
        packed = rgb(path).astype(np.int64) @ np.array([1 << 16, 1 << 8, 1])
        colours, numbers = np.unique(packed, return_counts=True)
        for colour, number in zip(colours.tolist(), numbers.tolist()):
            counts[colour] = counts.get(colour, 0) + number
        total += packed.size
    colour = max(counts, key=counts.__getitem__)
    return np.array([colour >> 16, (colour >> 8) & 255, colour & 255], dtype=np.uint8), counts[colour] / total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="data set folder (<root>/<domain>/<split>/)")
    parser.add_argument("--target", required=True, help="the domain translated into, e.g. map")
    parser.add_argument("--split", nargs="+", default=["test_paired"], help="paired splits to score")
    parser.add_argument("--tolerance", type=int, default=16)
    args = parser.parse_args()
    colour, share = commonest_colour(domain_images(args.root, args.target, "train"))
    print(f"commonest colour of {args.target}/train: RGB {tuple(colour.tolist())} ({share:.1%} of its pixels)")
    for split in args.split:
        truths = [rgb(path) for path in domain_images(args.root, args.target, split)]
        scores = [pixel_accuracy(np.broadcast_to(colour, truth.shape), truth, args.tolerance) for truth in truths]
        print(f"{split}: pixel accuracy of that colour everywhere {statistics.mean(scores):.3f} ({len(scores)} images)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
