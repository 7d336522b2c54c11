"""Networks of UNIT: two VAE-GANs joined by a shared latent space.

Layout follows the paper (appendix, Table 4) and its NIPS-era code:

    E_i = front_i (7x7 conv, two 3x3 stride-2 convs) -> private res blocks_i -> SHARED res blocks
    G_i = SHARED res blocks -> private res blocks_i -> two 3x3 stride-2 transposed convs -> 1x1 transposed conv -> tanh

The shared blocks are single module objects referenced by both domains, so their
parameters are literally the same tensors and receive gradients from both domains.
``n_shared = 0`` gives the paper's "no weight sharing" ablation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unit_core.config import ModelConfig

DOMAINS = ("a", "b")


def instance_norm(channels: int) -> nn.GroupNorm:
    """Instance norm without affine parameters, as the paper's code.

    GroupNorm with one group per channel is the same normalisation (per sample and
    channel over H x W, same eps); its fused kernels run several times faster than
    InstanceNorm2d, which reshapes into a batch norm with copies, and it keeps channels_last.
    """
    return nn.GroupNorm(channels, channels, eps=1e-5, affine=False)


class ResBlock(nn.Module):
    """conv3x3-IN-LeakyReLU-conv3x3-IN plus identity."""

    def __init__(self, channels: int, slope: float, padding_mode: str):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, padding_mode=padding_mode),
            instance_norm(channels),
            nn.LeakyReLU(slope, inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1, padding_mode=padding_mode),
            instance_norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _res_stack(count: int, channels: int, cfg: ModelConfig) -> nn.Sequential:
    return nn.Sequential(*[ResBlock(channels, cfg.leaky_slope, cfg.padding) for _ in range(count)])


class Encoder(nn.Module):
    """E_i: image -> latent mean mu (B, 4*width, H/4, W/4)."""

    def __init__(self, in_channels: int, cfg: ModelConfig, shared: nn.Sequential):
        super().__init__()
        w, slope, pad = cfg.width, cfg.leaky_slope, cfg.padding
        self.front = nn.Sequential(
            nn.Conv2d(in_channels, w, 7, 1, 3, padding_mode=pad),
            nn.LeakyReLU(slope, inplace=True),
            nn.Conv2d(w, 2 * w, 3, 2, 1, padding_mode=pad),
            nn.LeakyReLU(slope, inplace=True),
            nn.Conv2d(2 * w, 4 * w, 3, 2, 1, padding_mode=pad),
            nn.LeakyReLU(slope, inplace=True),
        )
        self.private = _res_stack(cfg.res_blocks - cfg.n_shared, 4 * w, cfg)
        self.shared = shared

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The domain-specific part, up to the shared blocks."""
        return self.private(self.front(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared(self.features(x))


class Decoder(nn.Module):
    """G_i: latent code z -> image in [-1, 1]."""

    def __init__(self, out_channels: int, cfg: ModelConfig, shared: nn.Sequential):
        super().__init__()
        w, slope = cfg.width, cfg.leaky_slope
        self.shared = shared
        self.private = _res_stack(cfg.res_blocks - cfg.n_shared, 4 * w, cfg)
        self.back = nn.Sequential(
            nn.ConvTranspose2d(4 * w, 2 * w, 3, 2, 1, output_padding=1),
            nn.LeakyReLU(slope, inplace=True),
            nn.ConvTranspose2d(2 * w, w, 3, 2, 1, output_padding=1),
            nn.LeakyReLU(slope, inplace=True),
            nn.ConvTranspose2d(w, out_channels, 1, 1, 0),
            nn.Tanh(),
        )

    def render(self, h: torch.Tensor) -> torch.Tensor:
        """The domain-specific part, from the output of the shared blocks."""
        return self.back(self.private(h))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.render(self.shared(z))


class Streams(dict):
    """Outputs of one generator pass, keyed by name (x_ab = G_b(E_a(x_a)), etc.)."""

    __getattr__ = dict.__getitem__


class UNITGenerator(nn.Module):
    """E1, E2, G1, G2 with the shared latent space; one forward computes every stream the losses need."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        latent = 4 * cfg.width
        # One module object each, referenced by both domains: weight sharing by identity.
        self.enc_shared = _res_stack(cfg.n_shared, latent, cfg)
        self.dec_shared = _res_stack(cfg.n_shared, latent, cfg)
        self.enc_a = Encoder(cfg.channels_a, cfg, self.enc_shared)
        self.enc_b = Encoder(cfg.channels_b, cfg, self.enc_shared)
        self.dec_a = Decoder(cfg.channels_a, cfg, self.dec_shared)
        self.dec_b = Decoder(cfg.channels_b, cfg, self.dec_shared)

    def encode(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        return (self.enc_a if domain == "a" else self.enc_b)(x)

    def decode(self, z: torch.Tensor, domain: str) -> torch.Tensor:
        return (self.dec_a if domain == "a" else self.dec_b)(z)

    def sample(self, mu: torch.Tensor) -> torch.Tensor:
        """z = mu + eps, eps ~ N(0, I): q(z|x) = N(mu, I) (reparameterisation). The mean in eval mode."""
        return mu + torch.randn_like(mu) if self.training else mu

    def translate(self, x: torch.Tensor, source: str, target: str) -> torch.Tensor:
        """F_{source->target}(x) = G_target(E_source(x)), using the latent mean."""
        return self.decode(self.encode(x, source), target)

    def forward(self, x_a: torch.Tensor, x_b: torch.Tensor, with_cycle: bool = True) -> Streams:
        """Reconstruction, translation and (optionally) cycle streams of eq. (2)-(8).

        Same maths as running E/G per stream, with less work: both domains pass the
        shared blocks as one batch (instance norm is per sample), and the shared
        decoder blocks run once per code, not once per target domain.
        """
        sizes = [len(x_a), len(x_b)]
        mu = self.enc_shared(torch.cat([self.enc_a.features(x_a), self.enc_b.features(x_b)]))
        h = self.dec_shared(self.sample(mu))
        out = Streams()
        out["mu_a"], out["mu_b"] = mu.split(sizes)
        out["x_aa"], out["x_ba"] = self.dec_a.render(h).split(sizes)
        out["x_ab"], out["x_bb"] = self.dec_b.render(h).split(sizes)
        if with_cycle:
            # x_a -> E_a -> G_b -> E_b -> G_a and back (eq. 5-6: z2 ~ q2(z2 | x_1->2)).
            mu_cycle = self.enc_shared(
                torch.cat([self.enc_b.features(out["x_ab"]), self.enc_a.features(out["x_ba"])])
            )
            h_ab, h_ba = self.dec_shared(self.sample(mu_cycle)).split(sizes)
            out["mu_ab"], out["mu_ba"] = mu_cycle.split(sizes)
            out["x_aba"] = self.dec_a.render(h_ab)
            out["x_bab"] = self.dec_b.render(h_ba)
        return out


class PatchDiscriminator(nn.Module):
    """Stack of 3x3 stride-2 convs with LeakyReLU, then a 1x1 conv to one logit per patch."""

    def __init__(self, in_channels: int, cfg: ModelConfig):
        super().__init__()
        layers: list[nn.Module] = []
        channels, width = in_channels, cfg.dis_width
        for _ in range(cfg.dis_layers):
            layers += [nn.Conv2d(channels, width, 3, 2, 1), nn.LeakyReLU(cfg.leaky_slope, inplace=True)]
            channels, width = width, min(width * 2, cfg.dis_max_width)
        self.features = nn.Sequential(*layers)
        self.classify = nn.Conv2d(channels, 1, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


class MultiScaleDiscriminator(nn.Module):
    """D_i: one patch discriminator per scale, each on a 2x average-pooled copy of the previous input."""

    def __init__(self, in_channels: int, cfg: ModelConfig):
        super().__init__()
        self.scales = nn.ModuleList(PatchDiscriminator(in_channels, cfg) for _ in range(cfg.dis_scales))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for index, dis in enumerate(self.scales):
            if index:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outputs.append(dis(x))
        return outputs


class UNITDiscriminators(nn.Module):
    """D1 judges real x_a against translations x_ba; D2 real x_b against x_ab."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dis_a = MultiScaleDiscriminator(cfg.channels_a, cfg)
        self.dis_b = MultiScaleDiscriminator(cfg.channels_b, cfg)

    def forward(self, x_a: torch.Tensor, x_b: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return self.dis_a(x_a), self.dis_b(x_b)
