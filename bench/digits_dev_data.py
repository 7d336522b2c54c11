"""The development task of the digits adaptation: USPS -> MNIST with inverted colours (docs/results.md).

Settings of the MNIST<->USPS presets are compared here, never on MNIST<->USPS target labels:
the target domain ``mnist_inverted`` is MNIST drawn black on white, so the task has a gap of
appearance like the test tasks but is not one of them. USPS is padded as ``unit ingest
digits`` pads it (the pad chosen against plain MNIST, no labels read).

    python bench/digits_dev_data.py --mnist RAW/mnist --usps RAW/usps/usps.h5 --out data/digits-dev
"""

from __future__ import annotations

import argparse
from pathlib import Path

from preprocessing.digits import DigitSplit, choose_usps_pad, load_mnist, load_usps, write_digit_split
from preprocessing.output import DatasetWriter
from preprocessing.pipeline import IngestOptions, summary_of


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", type=Path, required=True)
    parser.add_argument("--usps", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    mnist, usps = load_mnist(args.mnist), load_usps(args.usps)
    pad, _ = choose_usps_pad(mnist["train"].images, usps["train"].images, args.size)
    options = IngestOptions(progress=False)
    with DatasetWriter(args.out, "png", True, kind="digits-dev", parameters={"usps_pad": pad, "size": args.size}) as writer:
        for split, digits in usps.items():
            write_digit_split(writer, "usps", split, digits, args.size, pad, options)
        for split, digits in mnist.items():
            inverted = DigitSplit(255 - digits.images, digits.labels, digits.source)
            write_digit_split(writer, "mnist_inverted", split, inverted, args.size, 0, options)
    print(summary_of(writer, [f"usps: padded {pad} px per side"]).describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
