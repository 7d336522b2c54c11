"""How fast a fresh discriminator learns to tell real maps from a checkpoint's translations (docs/results.md).

The generator of ``--checkpoint`` is frozen; its satellite->map translations of the first
training tiles are the fakes. A new map discriminator of the checkpoint's architecture is
trained against them on random crops (the checkpoint's ``data.image_size``) for ``--steps``
steps, and every 100 steps scored on held-out tiles (the last ``--held-out`` of the ones
read): the mean logit gap between real and translated, and the accuracy of the logit's sign.
A discriminator that cannot learn this against a frozen generator gives the generator no
signal in training either.

    python bench/maps_discriminator_probe.py runs/maps-val/crops32/checkpoints/step_00004000.pt --batch 8
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from unit_core.data import resize_and_crop
from unit_core.images import load_image, pil_to_tensor
from unit_core.layout import domain_images
from unit_core.losses import discriminator_loss
from unit_core.networks import UNITDiscriminators
from unit_core.trainer import init_weights
from unit_core.translate import translator_from_checkpoint


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--tiles", type=int, default=300, help="training tiles read per domain")
    parser.add_argument("--held-out", type=int, default=50, help="of those, the last ones, scored only")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=1, help="real and translated crops per step, each")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--init", choices=["paper", "pytorch"], default="paper",
                        help="paper: N(0, 0.02) as training uses; pytorch: the layers' default initialisation")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    translator, cfg = translator_from_checkpoint(args.checkpoint, "cpu")
    data, (source, target) = cfg.data, tuple(cfg.domains().values())
    scale = data.load_size or data.image_size

    def tiles(domain: str) -> torch.Tensor:
        files = domain_images(data.root, domain, "train")[: args.tiles]
        # At the training scale, centre-cropped square, as the training data and the evaluation read tiles.
        return torch.stack([pil_to_tensor(resize_and_crop(load_image(path, 3, scale), scale, scale, None, False))
                            for path in files])

    real = tiles(target)
    with torch.no_grad():
        fake = translator.generator.translate(tiles(source), "a", "b")
    train_count = len(real) - args.held_out
    dis = UNITDiscriminators(cfg.model, cfg.channels())
    if args.init == "paper":
        dis.apply(init_weights)
    opt = torch.optim.Adam(dis.parameters(), lr=args.lr, betas=(cfg.optim.beta1, cfg.optim.beta2))
    crop = data.image_size

    def crops(images: torch.Tensor) -> torch.Tensor:
        picks = []
        for index in rng.integers(0, train_count, args.batch):
            top, left = rng.integers(0, scale - crop + 1, 2)
            picks.append(images[index, :, top : top + crop, left : left + crop])
        return torch.stack(picks)

    for step in range(1, args.steps + 1):
        logits = dis({"b": torch.cat([crops(real), crops(fake)])})["b"]
        loss = discriminator_loss([o[: args.batch] for o in logits], [o[args.batch :] for o in logits], cfg.loss.gan_mode)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            with torch.no_grad():
                scores = [dis({"b": x[train_count:, :, :crop, :crop]})["b"][0].flatten(1).mean(1) for x in (real, fake)]
            accuracy = ((scores[0] > 0).float().mean() + (scores[1] < 0).float().mean()).item() / 2
            print(f"step {step}: held-out logit gap {(scores[0].mean() - scores[1].mean()).item():.2f}, "
                  f"accuracy {accuracy:.2f}", flush=True)


if __name__ == "__main__":
    main()
