"""Speed of the official UNIT code's ``test.py --trainer UNIT`` on a folder of photos, for docs/performance.md.

Not a test: prints figures to set beside ``bench/translate_speed.py``. The official code is
not installable from a package registry: pass a checkout of it with ``--official-code`` (the
folder holding its ``networks.py``: UNIT master, or NVlabs/MUNIT, whose code base UNIT master
shares). Its ``networks.py`` is imported unchanged; what its ``test.py`` does for one photo is
repeated here step by step, each step timed:

* build: two ``VAEGen`` generators from the configuration's ``gen`` settings and
  ``load_state_dict`` of a checkpoint in its layout (``{"a": ..., "b": ...}``, fresh weights:
  speed does not depend on them), once, as ``test.py`` does per photo;
* read: ``Image.open(...).convert("RGB")``, the shorter side resized to ``new_size`` (bilinear,
  torchvision's ``Resize``) and scaled to [-1, 1] (``ToTensor`` + ``Normalize(0.5, 0.5)``);
* forward: ``gen_a.encode`` then ``gen_b.decode``, in fp32. ``test.py`` wraps the input in
  ``Variable(..., volatile=True)``, which PyTorch ignores since 0.4, so autograd records the
  pass as it would there; ``--no-grad`` runs it under ``torch.no_grad`` instead;
* save: ``(out + 1) / 2``, min-max normalised (``save_image(..., normalize=True)``), written as JPEG.

torchvision is replaced by the PIL and torch calls above, since the CPU build of torch here
cannot load torchvision's compiled operators. ``test.py`` calls ``.cuda()`` on the model and
``networks.py`` on its noise tensors; this script turns ``Tensor.cuda`` / ``Module.cuda`` into
no-ops so the same code runs on a CPU.

    python bench/official_translate_speed.py ../shared/data/street/summer2winter/summer --official-code ../MUNIT \\
        --new-size 256 0 --threads 2
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unit_core.images import list_images

# configs/unit_summer2winter_yosemite256_folder.yaml of UNIT master: the generator settings.
OFFICIAL_GEN = {"dim": 64, "mlp_dim": 256, "style_dim": 8, "activ": "relu", "n_downsample": 2, "n_res": 4,
                "pad_type": "reflect"}
PHASES = ("read", "forward", "save")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", type=Path, help="a folder of photos")
    parser.add_argument("--official-code", type=Path, required=True, help="folder holding the official networks.py")
    parser.add_argument("--new-size", nargs="+", type=int, default=[256],
                        help="shorter side the photo is resized to, as test.py's new_size (0: the photo's own size)")
    parser.add_argument("--limit", type=int, default=4, help="photos translated per setting")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-grad", action="store_true", help="forward under torch.no_grad (test.py does not)")
    return parser.parse_args()


def import_networks(folder: Path):
    path = folder / "networks.py"
    if not path.is_file():
        raise SystemExit(f"{path}: not found; --official-code must name the folder holding the official networks.py")
    spec = importlib.util.spec_from_file_location("official_networks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_on_cpu() -> None:
    """Make the official code's hard-coded ``.cuda()`` calls leave tensors and modules where they are."""
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self


def read(path: Path, new_size: int) -> torch.Tensor:
    image = Image.open(path).convert("RGB")
    if new_size:
        width, height = image.size
        scale = new_size / min(width, height)
        image = image.resize((round(width * scale), round(height * scale)), Image.BILINEAR)
    array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return ((array - 0.5) / 0.5).unsqueeze(0)


def save(output: torch.Tensor) -> None:
    picture = (output + 1) / 2.0
    picture = (picture - picture.min()) / (picture.max() - picture.min()).clamp_min(1e-5)
    array = (picture[0].permute(1, 2, 0).mul(255).add(0.5).clamp(0, 255)).to(torch.uint8).numpy()
    Image.fromarray(array).save(io.BytesIO(), format="JPEG")


def main() -> int:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run_on_cpu()
    networks = import_networks(args.official_code)
    files = list_images(args.images)[: args.limit]
    if not files:
        raise SystemExit(f"{args.images}: no images")
    sizes = sorted({Image.open(path).size for path in files})
    print(f"{len(files)} photos of {', '.join(f'{w}x{h}' for w, h in sizes)}; official VAEGen {OFFICIAL_GEN}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "gen.pt"
        torch.save({"a": networks.VAEGen(3, OFFICIAL_GEN).state_dict(),
                    "b": networks.VAEGen(3, OFFICIAL_GEN).state_dict()}, checkpoint)
        print(f"checkpoint {checkpoint.stat().st_size / 2**20:.1f} MiB")
        print(f"autograd {'off (--no-grad)' if args.no_grad else 'on, as in test.py'}")
        print("| new_size | translated at | build + load s | " + " | ".join(f"{p} ms/img" for p in PHASES)
              + " | images/s (after load) |")
        print("|---" * (4 + len(PHASES)) + "|")
        for new_size in args.new_size:
            start = time.perf_counter()
            gen_a, gen_b = networks.VAEGen(3, OFFICIAL_GEN), networks.VAEGen(3, OFFICIAL_GEN)
            state = torch.load(checkpoint)
            gen_a.load_state_dict(state["a"])
            gen_b.load_state_dict(state["b"])
            gen_a.eval()
            gen_b.eval()
            build = time.perf_counter() - start
            seconds = dict.fromkeys(PHASES, 0.0)
            shapes = set()
            with torch.set_grad_enabled(not args.no_grad):
                gen_b.decode(gen_a.encode(read(files[0], new_size))[0])  # warm-up: oneDNN picks its kernels
                for path in files:
                    start = time.perf_counter()
                    image = read(path, new_size)
                    seconds["read"] += time.perf_counter() - start
                    shapes.add(f"{image.shape[3]}x{image.shape[2]}")
                    start = time.perf_counter()
                    content, _ = gen_a.encode(image)
                    output = gen_b.decode(content)
                    seconds["forward"] += time.perf_counter() - start
                    start = time.perf_counter()
                    save(output.detach())
                    seconds["save"] += time.perf_counter() - start
            per_image = {phase: 1000 * value / len(files) for phase, value in seconds.items()}
            print(f"| {new_size or 'none'} | {', '.join(sorted(shapes))} | {build:.2f} | "
                  + " | ".join(f"{per_image[p]:,.0f}" for p in PHASES)
                  + f" | {len(files) / sum(seconds.values()):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
