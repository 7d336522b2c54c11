"""Where the time of ``unit translate`` goes, per phase, in fp32 and bf16, one image at a time and batched.

Not a test: prints figures for docs/performance.md. The model is the configuration's
generator with fresh weights (speed does not depend on the weights), written as a
checkpoint so that loading it is measured too. Each phase is timed as ``unit translate``
runs it: read (decode + EXIF turn), tensor (mode + to tensor), forward (pad, E_s, G_t,
crop), image (tensor to PIL) and PNG (encode, in memory). ``--cli`` also times the whole
command, interpreter start and imports included, on the same images.

    python bench/translate_speed.py ../shared/data/street/summer2winter/summer --threads 2
    python bench/translate_speed.py photos/ --preset street-scenes --precision fp32 bf16 --batch-size 1 4 --cli
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageOps

from unit_core.checkpoint import atomic_torch_save, make_checkpoint
from unit_core.config import load_config
from unit_core.images import list_images, pil_to_tensor, tensor_to_pil, to_mode
from unit_core.trainer import UNITTrainer, cpu_has_bf16
from unit_core.translate import batches_by_size, translator_from_checkpoint

PHASES = ("read", "tensor", "forward", "image", "png")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", type=Path, help="a folder of photos")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--preset")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    parser.add_argument("--batch-size", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--limit", type=int, default=4, help="photos translated per setting")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--cli", action="store_true", help="also time the whole 'unit translate' command")
    return parser.parse_args()


def timed_translation(translator, files: list[Path], batch_size: int) -> dict[str, float]:
    """Seconds spent in each phase over ``files``, translating domain a to domain b."""
    source, target = translator.domains[0], translator.domains[1]
    seconds = dict.fromkeys(PHASES, 0.0)

    def read():
        for path in files:
            start = time.perf_counter()
            with Image.open(path) as handle:
                image = ImageOps.exif_transpose(handle)
                image.load()
            seconds["read"] += time.perf_counter() - start
            yield path, image

    for batch in batches_by_size(read(), batch_size):
        start = time.perf_counter()
        tensor = torch.stack([pil_to_tensor(to_mode(image, translator.channels[source])) for _, image in batch])
        seconds["tensor"] += time.perf_counter() - start
        start = time.perf_counter()
        outputs = translator.translate_tensor(tensor, source, target)
        seconds["forward"] += time.perf_counter() - start
        for output in outputs:
            start = time.perf_counter()
            picture = tensor_to_pil(output)
            seconds["image"] += time.perf_counter() - start
            start = time.perf_counter()
            picture.save(io.BytesIO(), format="PNG")
            seconds["png"] += time.perf_counter() - start
    return seconds


def cli_seconds(checkpoint: Path, files: list[Path], precision: str, batch_size: int, threads: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "unit_cli", "translate", *map(str, files), "--checkpoint", str(checkpoint),
                   "--direction", "a2b", "--out", out, "--precision", precision, "--batch-size", str(batch_size)]
        env = {"OMP_NUM_THREADS": str(threads)} if threads else {}
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env={**os.environ, **env})
        return time.perf_counter() - start


def main() -> int:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    files = list_images(args.images)[: args.limit]
    if not files:
        raise SystemExit(f"{args.images}: no images")
    sizes = sorted({Image.open(path).size for path in files})
    cfg = load_config(args.params, args.overrides, preset=args.preset)
    print(f"{len(files)} photos of {', '.join(f'{w}x{h}' for w, h in sizes)}; generator width {cfg.model.width}, "
          f"{cfg.model.res_blocks} residual blocks; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, bf16 instructions: {cpu_has_bf16()}")
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "model.pt"
        trainer = UNITTrainer(cfg)
        atomic_torch_save(make_checkpoint(cfg.to_dict(), 0, trainer.state_dict()), checkpoint)
        del trainer
        print(f"checkpoint {checkpoint.stat().st_size / 2**20:.1f} MiB")
        print("| precision | batch | load s | " + " | ".join(f"{phase} ms/img" for phase in PHASES)
              + " | images/s (after load) |" + (" CLI s, all photos |" if args.cli else ""))
        print("|---" * (4 + len(PHASES) + args.cli) + "|")
        for precision in args.precision:
            for batch_size in args.batch_size:
                start = time.perf_counter()
                translator, _ = translator_from_checkpoint(checkpoint, "cpu", precision)
                load = time.perf_counter() - start
                timed_translation(translator, files[:1], 1)  # warm-up: oneDNN picks its kernels on the first call
                seconds = timed_translation(translator, files, batch_size)
                per_image = {phase: 1000 * value / len(files) for phase, value in seconds.items()}
                row = (f"| {precision} | {batch_size} | {load:.2f} | " + " | ".join(f"{per_image[p]:.0f}" for p in PHASES)
                       + f" | {len(files) / sum(seconds.values()):.2f} |")
                if args.cli:
                    row += f" {cli_seconds(checkpoint, files, precision, batch_size, args.threads):.1f} |"
                print(row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
