"""How many training pairs per second the data loader delivers, by number of loader workers.

Iterates the DataLoader that training uses (:func:`unit_core.training.training_loader`:
decode, resize, random crop, flip, to tensors, batches) without a model, so the figure is
the ceiling the input pipeline puts on training. Compare with the model's pairs/s from
``bench/train_step.py``: ``data.loader_workers`` must be enough to stay above it.

    python bench/data_loading.py --root data/street --domains gta city --size 256 --workers 0 1 2
    python bench/data_loading.py --root data/street --domains gta city --size 256 --full-decode
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from unit_core import data as data_module
from unit_core.config import load_config
from unit_core.data import UnpairedSamples
from unit_core.layout import domain_images
from unit_core.images import load_image
from unit_core.training import training_loader


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="data set with <root>/<domain>/train/")
    parser.add_argument("--domains", nargs=2, required=True, metavar=("A", "B"))
    parser.add_argument("--size", type=int, default=256, help="crop side (data.image_size)")
    parser.add_argument("--load-size", type=int, default=0, help="shorter side before cropping (data.load_size)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--full-decode", action="store_true",
                        help="decode every JPEG pixel before resizing (the loader's behaviour before reduced-scale decoding)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    torch.set_num_threads(1)  # as in a loader worker process
    if args.full_decode:
        data_module.load_image = lambda path, channels, shorter_side=0: load_image(path, channels)
    for workers in args.workers:
        cfg = load_config(None, [
            f"data.root={args.root}", f"data.domain_a={args.domains[0]}", f"data.domain_b={args.domains[1]}",
            f"data.image_size={args.size}", f"data.load_size={args.load_size}", f"data.loader_workers={workers}",
            f"train.batch_size={args.batch}", f"train.max_steps={args.steps}",
        ])
        files = [domain_images(cfg.data.root, domain, "train") for domain in args.domains]
        samples = UnpairedSamples(files[:2], cfg.data, (3, 3), cfg.seed)
        batches = iter(training_loader(cfg, samples, 0))
        next(batches)  # worker start-up is not part of the rate
        started = time.perf_counter()
        count = sum(1 for _ in batches)
        seconds = time.perf_counter() - started
        print(f"workers {workers}: {count * args.batch / seconds:7.1f} pairs/s "
              f"({args.size}x{args.size} crops, batch {args.batch}, {count} batches)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
