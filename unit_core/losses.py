"""Loss terms of the paper, eq. (2)-(8), as plain functions of tensors.

Exact forms used (weights are applied by the trainer, by name, from ``LossConfig``):

* KL: q(z|x) = N(mu, I) against p(z) = N(0, I) gives KL = 0.5 * sum(mu^2). We use
  ``mean(mu^2)`` over all latent elements, i.e. KL * 2 / (C*H*W) averaged over the batch:
  the normalisation of the paper's released code, under which lambda1 = lambda3 = 0.1 were set.
* Reconstruction: -log p_G(x|z) for a Laplacian decoder is |x - G(z)| up to scale and a
  constant; we use ``mean(|x - G(z)|)`` (pixels in [-1, 1]).
* GAN, with logits D(x) per patch, averaged over patches, summed over discriminator scales:
  ``bce`` (the paper's log loss; the generator uses the non-saturating form -log D(G(z))),
  ``lsgan`` (targets 1 / 0) and ``hinge``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def kl_loss(mu: torch.Tensor) -> torch.Tensor:
    return mu.float().pow(2).mean()


def l1_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (output.float() - target.float()).abs().mean()


def discriminator_loss(real_logits: Sequence[torch.Tensor], fake_logits: Sequence[torch.Tensor], mode: str) -> torch.Tensor:
    """Loss of one discriminator: real images are labelled 1, translations 0."""
    total = real_logits[0].new_zeros((), dtype=torch.float32)
    for real, fake in zip(real_logits, fake_logits, strict=True):
        real, fake = real.float(), fake.float()
        if mode == "bce":
            total = total + F.softplus(-real).mean() + F.softplus(fake).mean()
        elif mode == "lsgan":
            total = total + (real - 1).pow(2).mean() + fake.pow(2).mean()
        elif mode == "hinge":
            total = total + F.relu(1 - real).mean() + F.relu(1 + fake).mean()
        else:
            raise ValueError(f"unknown GAN mode {mode!r}")
    return total


def generator_gan_loss(fake_logits: Sequence[torch.Tensor], mode: str) -> torch.Tensor:
    """Loss of the generator for translations judged by one discriminator."""
    total = fake_logits[0].new_zeros((), dtype=torch.float32)
    for fake in fake_logits:
        fake = fake.float()
        if mode == "bce":
            total = total + F.softplus(-fake).mean()
        elif mode == "lsgan":
            total = total + (fake - 1).pow(2).mean()
        elif mode == "hinge":
            total = total - fake.mean()
        else:
            raise ValueError(f"unknown GAN mode {mode!r}")
    return total
