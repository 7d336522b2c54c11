"""Benchmark one UNIT training iteration (D step + G step): speed, FLOP and memory.

Not a test: prints figures for docs/performance.md. Inputs are random tensors already
in memory, so the figure is the model's iteration alone (data loading excluded).
``--workers N`` runs N DDP processes on this machine (gloo on CPU, each with its share of
the cores; NCCL on one GPU each), wrapped as unit_distributed wraps them, and reports
the iteration of all of them together (global batch = N x --batch).

    python bench/train_step.py --size 128 --batch 1 --precision bf16
    python bench/train_step.py --params params.yaml --set model.n_shared=0 --device cuda --batch 8
    python bench/train_step.py --workers 2 --device cpu --size 32 --set model.width=8
    python bench/train_step.py --preset digits-mnist2usps --size 32 --batch 64 --precision bf16 --channels-last --threads 1
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import socket
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing
from torch.nn.parallel import DistributedDataParallel
from torch.utils.flop_counter import FlopCounterMode

from unit_core.config import load_config
from unit_core.trainer import UNITTrainer, resolve_device, set_deterministic


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--preset", help="presets/<name>.yaml merged over --params (e.g. digits-mnist2usps)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--size", type=int, default=128, help="square image side")
    parser.add_argument("--batch", type=int, default=1, help="images per domain per step")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1, help="DDP processes on this machine (default 1: no DDP)")
    return parser.parse_args()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    args = parse_args()
    if args.workers == 1:
        measure(0, args, port=0)
        return 0
    with socket.socket() as probe:  # a free port for the process group's rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torch.multiprocessing.spawn(measure, args=(args, port), nprocs=args.workers)
    return 0


def join_process_group(rank: int, world_size: int, port: int, device: torch.device) -> torch.device:
    """Initialise gloo (CPU) or NCCL (one GPU per rank); returns this rank's device."""
    if device.type == "cuda":
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    return device


def measure(rank: int, args: argparse.Namespace, port: int) -> None:
    overrides = [
        f"data.image_size={args.size}", f"train.batch_size={args.batch}", f"train.device={args.device}",
        f"train.precision={args.precision}", f"train.channels_last={str(args.channels_last).lower()}",
        f"train.compile={str(args.compile).lower()}", *args.overrides,
    ]
    cfg = load_config(args.params if args.params.exists() else None, overrides, preset=args.preset)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(cfg.train.device)
    if args.workers > 1:
        device = join_process_group(rank, args.workers, port, device)
    set_deterministic(False)
    ids = [device] if device.type == "cuda" else None
    wrap = (lambda module: DistributedDataParallel(module, device_ids=ids)) if args.workers > 1 else None
    trainer = UNITTrainer(cfg, device, wrap=wrap)
    images = [torch.rand((args.batch, channels, args.size, args.size), device=device) * 2 - 1
              for channels in cfg.channels().values()]
    # The domain-adaptation variant (model.num_classes > 0) trains its classifier on the source domain's labels.
    labels = torch.randint(cfg.model.num_classes, (args.batch,), device=device) if cfg.model.num_classes else None

    for _ in range(args.warmup):
        trainer.train_step(images, labels)
    synchronize(device)

    with FlopCounterMode(display=False) as counter:
        trainer.train_step(images, labels)
    gflop = counter.get_total_flops() / 1e9

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        losses = trainer.train_step(images, labels)
    synchronize(device)
    seconds = (time.perf_counter() - start) / args.steps
    assert all(torch.isfinite(v).all() for v in losses.values()), "non-finite loss"

    if args.workers > 1:
        dist.destroy_process_group()
    if rank:
        return
    if device.type == "cuda":
        memory = f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB (GPU, peak allocated)"
        device_name = torch.cuda.get_device_name(device)
    else:
        memory = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (process peak RSS)"
        device_name = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    per_worker = " per worker" if args.workers > 1 else ""
    print(f"device            {device_name}{per_worker}")
    print(f"torch             {torch.__version__}")
    print(f"setting           {args.size}x{args.size}, batch {args.batch}, {args.precision}"
          f"{', channels_last' if args.channels_last else ''}{', compile' if args.compile else ''}"
          f"{' ' + ' '.join(args.overrides) if args.overrides else ''}")
    global_batch = f" (DDP, global batch {args.workers * args.batch})" if args.workers > 1 else ""
    print(f"workers           {args.workers}{global_batch}")
    print(f"s/iteration       {seconds:.4f}")
    print(f"pairs/s           {args.workers * args.batch / seconds:.3f}")
    print(f"GFLOP/iteration   {gflop:.1f}{per_worker}")
    print(f"achieved GFLOP/s  {args.workers * gflop / seconds:.1f}")
    print(f"peak memory       {memory}{' (rank 0)' if args.workers > 1 else ''}")


if __name__ == "__main__":
    sys.exit(main())
