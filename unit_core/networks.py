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


def norm_layer(kind: str, channels: int) -> nn.Module:
    return instance_norm(channels) if kind == "instance" else nn.BatchNorm2d(channels)


class ResBlock(nn.Module):
    """conv3x3-norm-LeakyReLU-conv3x3-norm plus identity."""

    def __init__(self, channels: int, cfg: ModelConfig):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, padding_mode=cfg.padding),
            norm_layer(cfg.norm, channels),
            nn.LeakyReLU(cfg.leaky_slope, inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1, padding_mode=cfg.padding),
            norm_layer(cfg.norm, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _res_stack(count: int, channels: int, cfg: ModelConfig) -> nn.Sequential:
    return nn.Sequential(*[ResBlock(channels, cfg) for _ in range(count)])


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

        Under instance norm (per sample) this is the same maths as running E/G per stream,
        with less work: both domains pass the shared blocks as one batch, and the shared
        decoder blocks run once per code, not once per target domain. Under batch norm
        (the digits presets) the shared blocks and each decoder's own layers normalise over
        the codes of both domains together: batch statistics mixed across domains, the
        shared-latent-space assumption applied to the statistics too.
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


def _dis_stack(in_channels: int | None, cfg: ModelConfig, first: int, stop: int) -> nn.Sequential:
    """Layers ``first..stop-1`` of the discriminator: 3x3 stride-2 convs, widths doubling up to dis_max_width."""
    width = lambda index: min(cfg.dis_width * 2**index, cfg.dis_max_width)  # noqa: E731
    layers: list[nn.Module] = []
    for index in range(first, stop):
        channels = in_channels if index == 0 else width(index - 1)
        layers += [nn.Conv2d(channels, width(index), 3, 2, 1), nn.LeakyReLU(cfg.leaky_slope, inplace=True)]
    return nn.Sequential(*layers)


def dis_feature_channels(cfg: ModelConfig) -> int:
    return min(cfg.dis_width * 2 ** (cfg.dis_layers - 1), cfg.dis_max_width)


class PatchDiscriminator(nn.Module):
    """Stack of 3x3 stride-2 convs with LeakyReLU, then a 1x1 conv to one logit per patch.

    ``trunk`` and ``judge``, when given, are the tied high-level layers shared with the
    other domain's discriminator (domain-adaptation variant).
    """

    def __init__(self, in_channels: int, cfg: ModelConfig, trunk: nn.Sequential | None = None, judge: nn.Conv2d | None = None):
        super().__init__()
        private_layers = cfg.dis_layers - cfg.dis_shared_layers if trunk is not None else cfg.dis_layers
        self.front = _dis_stack(in_channels, cfg, 0, private_layers)
        self.trunk = trunk if trunk is not None else nn.Sequential()
        self.judge = judge if judge is not None else nn.Conv2d(dis_feature_channels(cfg), 1, 1, 1, 0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Highest-layer features (before the real/fake logits)."""
        return self.trunk(self.front(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.judge(self.features(x))


class MultiScaleDiscriminator(nn.Module):
    """D_i: one patch discriminator per scale, each on a 2x average-pooled copy of the previous input."""

    def __init__(self, in_channels: int, cfg: ModelConfig, trunk: nn.Sequential | None = None, judge: nn.Conv2d | None = None):
        super().__init__()
        self.scales = nn.ModuleList(
            PatchDiscriminator(in_channels, cfg, trunk, judge) if index == 0 else PatchDiscriminator(in_channels, cfg)
            for index in range(cfg.dis_scales)
        )

    def forward(self, x: torch.Tensor, with_features: bool = False):
        """Logits per scale; with ``with_features`` also the first scale's highest-layer features."""
        outputs, features = [], None
        for index, dis in enumerate(self.scales):
            if index:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            if index == 0 and with_features:
                features = dis.features(x)
                outputs.append(dis.judge(features))
            else:
                outputs.append(dis(x))
        return (outputs, features) if with_features else outputs


class UNITDiscriminators(nn.Module):
    """D1 judges real x_a against translations x_ba; D2 real x_b against x_ab.

    Domain-adaptation variant (``model.num_classes > 0``, paper section 4): the last
    ``dis_shared_layers`` layers and the real/fake head are tied between D1 and D2, and a
    classifier head reads the tied features (trained on labelled domain-a images).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        trunk = judge = None
        if cfg.dis_shared_layers:
            trunk = _dis_stack(None, cfg, cfg.dis_layers - cfg.dis_shared_layers, cfg.dis_layers)
            judge = nn.Conv2d(dis_feature_channels(cfg), 1, 1, 1, 0)
        self.dis_a = MultiScaleDiscriminator(cfg.channels_a, cfg, trunk, judge)
        self.dis_b = MultiScaleDiscriminator(cfg.channels_b, cfg, trunk, judge)
        self.classifier = nn.Linear(dis_feature_channels(cfg), cfg.num_classes) if cfg.num_classes else None

    def forward(self, x_a: torch.Tensor, x_b: torch.Tensor, with_features: bool = False):
        return self.dis_a(x_a, with_features), self.dis_b(x_b, with_features)

    def classify(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        """Class logits of images of either domain, through that domain's first layers and the tied trunk."""
        dis = (self.dis_a if domain == "a" else self.dis_b).scales[0]
        return self.class_logits(dis.features(x))

    def class_logits(self, features: torch.Tensor) -> torch.Tensor:
        if self.classifier is None:
            raise ValueError("this model has no classifier (model.num_classes is 0)")
        return self.classifier(features.mean(dim=(2, 3)))
