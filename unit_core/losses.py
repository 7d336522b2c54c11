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

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F


def kl_loss(mu: torch.Tensor) -> torch.Tensor:
    return mu.float().pow(2).mean()


def l1_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (output.float() - target.float()).abs().mean()


#: Per mode, the loss of one logit: labelled real or fake by a discriminator, and the generator's of a fake.
GAN_TERMS: dict[str, dict[str, Callable[[torch.Tensor], torch.Tensor]]] = {
    "bce": {"real": lambda x: F.softplus(-x), "fake": F.softplus,
            "generator": lambda x: F.softplus(-x)},  # the non-saturating -log D(G(z))
    "lsgan": {"real": lambda x: (x - 1).pow(2), "fake": lambda x: x.pow(2), "generator": lambda x: (x - 1).pow(2)},
    "hinge": {"real": lambda x: F.relu(1 - x), "fake": lambda x: F.relu(1 + x), "generator": lambda x: -x},
}


def _gan_sum(logits: Sequence[torch.Tensor], mode: str, role: str) -> torch.Tensor:
    """One GAN term per discriminator scale, averaged over patches, summed over scales (in fp32)."""
    if mode not in GAN_TERMS:
        raise ValueError(f"unknown GAN mode {mode!r}")
    term = GAN_TERMS[mode][role]
    total = logits[0].new_zeros((), dtype=torch.float32)
    for logit in logits:
        total = total + term(logit.float()).mean()
    return total


def discriminator_loss(real_logits: Sequence[torch.Tensor], fake_logits: Sequence[torch.Tensor], mode: str) -> torch.Tensor:
    """Loss of one discriminator: real images are labelled 1, translations 0."""
    if len(real_logits) != len(fake_logits):
        raise ValueError(f"{len(real_logits)} real against {len(fake_logits)} fake discriminator outputs (one per scale)")
    return _gan_sum(real_logits, mode, "real") + discriminator_fake_loss(fake_logits, mode)


def discriminator_fake_loss(fake_logits: Sequence[torch.Tensor], mode: str) -> torch.Tensor:
    """The part of a discriminator's loss for generated images alone (labelled 0)."""
    return _gan_sum(fake_logits, mode, "fake")


def generator_gan_loss(fake_logits: Sequence[torch.Tensor], mode: str) -> torch.Tensor:
    """Loss of the generator for translations judged by one discriminator."""
    return _gan_sum(fake_logits, mode, "generator")
