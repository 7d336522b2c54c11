"""The development tasks of the digits adaptation (docs/results.md), data sets in ``unit ingest digits``'s layout.

Settings of the MNIST<->USPS presets are compared on these, never on MNIST<->USPS target labels:

* ``usps-to-inverted-mnist``: USPS -> MNIST drawn black on white (domain ``mnist_inverted``), a gap
  of appearance like the test tasks' but not one of them; USPS is padded as ``unit ingest digits``
  pads it (the pad chosen against plain MNIST, no labels read).
* ``mnist-to-sklearn-digits``: MNIST -> the 8x8 digits that ship inside scikit-learn
  (``sklearn.datasets.load_digits``, 1,797 digits, domain ``sklearn_digits``), a source of MNIST
  like MNIST->USPS's. They are split at random (seed 0) into 1,000 train and 797 test digits and
  padded by the pad whose mean digit lies closest to MNIST's, as USPS is.

    python bench/digits_dev_data.py --mnist RAW/mnist --usps RAW/usps/usps.h5 --out data/digits-dev
    python bench/digits_dev_data.py --task mnist-to-sklearn-digits --mnist RAW/mnist --out data/digits-dev-sklearn
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from preprocessing.digits import DigitSplit, choose_usps_pad, load_mnist, load_usps, write_digit_split
from preprocessing.output import DatasetWriter
from preprocessing.pipeline import IngestOptions, summary_of

SKLEARN_TRAIN = 1000


def sklearn_digits() -> dict[str, DigitSplit]:
    """scikit-learn's 8x8 digits (ink 0..16, white on black) as uint8, split at random into train and test."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255 / 16)).astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(images))
    parts = {"train": order[:SKLEARN_TRAIN], "test": order[SKLEARN_TRAIN:]}
    return {split: DigitSplit(images[index], bunch.target[index].astype(np.int64), "sklearn.datasets.load_digits")
            for split, index in parts.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=("usps-to-inverted-mnist", "mnist-to-sklearn-digits"),
                        default="usps-to-inverted-mnist")
    parser.add_argument("--mnist", type=Path, required=True)
    parser.add_argument("--usps", type=Path, help="usps.h5 (usps-to-inverted-mnist)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    mnist = load_mnist(args.mnist)
    options = IngestOptions(progress=False)
    if args.task == "usps-to-inverted-mnist":
        if args.usps is None:
            parser.error("--usps is required for usps-to-inverted-mnist")
        usps = load_usps(args.usps)
        pad, _ = choose_usps_pad(mnist["train"].images, usps["train"].images, args.size)
        with DatasetWriter(args.out, "png", True, kind="digits-dev", parameters={"usps_pad": pad, "size": args.size}) as writer:
            for split, digits in usps.items():
                write_digit_split(writer, "usps", split, digits, args.size, pad, options)
            for split, digits in mnist.items():
                inverted = DigitSplit(255 - digits.images, digits.labels, digits.source)
                write_digit_split(writer, "mnist_inverted", split, inverted, args.size, 0, options)
        print(summary_of(writer, [f"usps: padded {pad} px per side"]).describe())
        return 0
    target = sklearn_digits()
    pad, distances = choose_usps_pad(mnist["train"].images, target["train"].images, args.size)
    parameters = {"sklearn_digits_pad": pad, "size": args.size, "sklearn_train": SKLEARN_TRAIN}
    with DatasetWriter(args.out, "png", True, kind="digits-dev-sklearn", parameters=parameters) as writer:
        for split, digits in mnist.items():
            write_digit_split(writer, "mnist", split, digits, args.size, 0, options)
        for split, digits in target.items():
            write_digit_split(writer, "sklearn_digits", split, digits, args.size, pad, options)
    distance_text = ", ".join(f"{candidate}: {value:.1f}" for candidate, value in distances.items())
    print(summary_of(writer, [f"sklearn_digits: padded {pad} px per side (mean-digit distances {distance_text})"]).describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
