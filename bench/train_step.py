"""Benchmark one UNIT training iteration (D step + G step): speed, FLOP and memory.

Not a test: prints figures for docs/performance.md. Inputs are random tensors already
in memory, so the figure is the model's iteration alone (data loading excluded).

    python bench/train_step.py --size 128 --batch 1 --precision bf16
    python bench/train_step.py --params params.yaml --set model.n_shared=0 --device cuda --batch 8
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from unit_core.config import load_config
from unit_core.trainer import UNITTrainer, resolve_device, set_deterministic


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--size", type=int, default=128, help="square image side")
    parser.add_argument("--batch", type=int, default=1, help="images per domain per step")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    return parser.parse_args()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    args = parse_args()
    overrides = [
        f"data.image_size={args.size}", f"train.batch_size={args.batch}", f"train.device={args.device}",
        f"train.precision={args.precision}", f"train.channels_last={str(args.channels_last).lower()}",
        f"train.compile={str(args.compile).lower()}", *args.overrides,
    ]
    cfg = load_config(args.params if args.params.exists() else None, overrides)
    device = resolve_device(cfg.train.device)
    set_deterministic(False)
    trainer = UNITTrainer(cfg, device)
    shape_a = (args.batch, cfg.model.channels_a, args.size, args.size)
    shape_b = (args.batch, cfg.model.channels_b, args.size, args.size)
    x_a = torch.rand(shape_a, device=device) * 2 - 1
    x_b = torch.rand(shape_b, device=device) * 2 - 1

    for _ in range(args.warmup):
        trainer.train_step(x_a, x_b)
    synchronize(device)

    with FlopCounterMode(display=False) as counter:
        trainer.train_step(x_a, x_b)
    gflop = counter.get_total_flops() / 1e9

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        losses = trainer.train_step(x_a, x_b)
    synchronize(device)
    seconds = (time.perf_counter() - start) / args.steps
    assert all(torch.isfinite(v).all() for v in losses.values()), "non-finite loss"

    if device.type == "cuda":
        memory = f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB (GPU, peak allocated)"
        device_name = torch.cuda.get_device_name(device)
    else:
        memory = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (process peak RSS)"
        device_name = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    print(f"device            {device_name}")
    print(f"torch             {torch.__version__}")
    print(f"setting           {args.size}x{args.size}, batch {args.batch}, {args.precision}"
          f"{', channels_last' if args.channels_last else ''}{', compile' if args.compile else ''}"
          f"{' ' + ' '.join(args.overrides) if args.overrides else ''}")
    print(f"s/iteration       {seconds:.4f}")
    print(f"pairs/s           {args.batch / seconds:.3f}")
    print(f"GFLOP/iteration   {gflop:.1f}")
    print(f"achieved GFLOP/s  {gflop / seconds:.1f}")
    print(f"peak memory       {memory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
