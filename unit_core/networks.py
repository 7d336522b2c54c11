"""Networks of UNIT: a VAE-GAN per domain (the paper's two, or N), joined by a shared latent space.

Layout follows the paper (appendix, Table 4) and its NIPS-era code:

    E_i = front_i (7x7 conv, two 3x3 stride-2 convs) -> private res blocks_i -> SHARED res blocks
    G_i = SHARED res blocks -> private res blocks_i -> two 3x3 stride-2 transposed convs -> 1x1 transposed conv -> tanh

The shared blocks are single module objects referenced by every domain, so their
parameters are literally the same tensors and receive gradients from all domains; the
paper's two domains generalise to N encoder/generator pairs around one latent space.
``n_shared = 0`` removes the weight sharing.

``model.generator: conv32`` is instead the NIPS-era code's 32x32 digits generator
(CoVAE32x32), whose latent code is one vector per image:

    E_i = 5x5 stride-2 conv_i -> SHARED 5x5 stride-2 conv, 8x8 conv to 1x1, 1x1 conv, 1x1 conv (the mean)
    G_i = SHARED 4x4 stride-2 transposed convs 1->4->8->16 -> 4x4 stride-2 transposed conv_i -> 1x1 transposed conv_i -> tanh

each conv but the mean's and the last followed by batch norm and LeakyReLU.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unit_core.config import ModelConfig


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


def _bn_lrelu(conv: nn.Module, channels: int, cfg: ModelConfig) -> list[nn.Module]:
    return [conv, nn.BatchNorm2d(channels), nn.LeakyReLU(cfg.leaky_slope, inplace=True)]


def conv32_shared(cfg: ModelConfig) -> tuple[nn.Sequential, nn.Sequential]:
    """The shared layers of the ``conv32`` generator: the encoders' 16x16 -> 1x1 and the generators' 1x1 -> 16x16."""
    w = cfg.width
    encoder = nn.Sequential(
        *_bn_lrelu(nn.Conv2d(w, 2 * w, 5, 2, 2), 2 * w, cfg),
        *_bn_lrelu(nn.Conv2d(2 * w, 4 * w, 8, 1, 0), 4 * w, cfg),
        *_bn_lrelu(nn.Conv2d(4 * w, 8 * w, 1), 8 * w, cfg),
        nn.Conv2d(8 * w, 8 * w, 1),
    )
    decoder = nn.Sequential(
        *_bn_lrelu(nn.ConvTranspose2d(8 * w, 8 * w, 4, 2, 0), 8 * w, cfg),
        *_bn_lrelu(nn.ConvTranspose2d(8 * w, 4 * w, 4, 2, 1), 4 * w, cfg),
        *_bn_lrelu(nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1), 2 * w, cfg),
    )
    return encoder, decoder


class Encoder(nn.Module):
    """E_i: image -> latent mean mu, (B, 4*width, H/4, W/4); ``conv32``: (B, 8*width, 1, 1)."""

    def __init__(self, in_channels: int, cfg: ModelConfig, shared: nn.Sequential):
        super().__init__()
        w, slope, pad = cfg.width, cfg.leaky_slope, cfg.padding
        if cfg.generator == "conv32":
            self.front = nn.Sequential(*_bn_lrelu(nn.Conv2d(in_channels, w, 5, 2, 2), w, cfg))
            self.private = nn.Sequential()
        else:
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
        if cfg.generator == "conv32":
            self.private = nn.Sequential()
            self.back = nn.Sequential(
                *_bn_lrelu(nn.ConvTranspose2d(2 * w, w, 4, 2, 1), w, cfg),
                nn.ConvTranspose2d(w, out_channels, 1, 1, 0),
                nn.Tanh(),
            )
        else:
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
    """Outputs of one generator pass, keyed ``<stream>/<domain>`` for each domain d of the batch:

    ``mu/d`` latent mean of x_d; ``recon/d`` = G_d(z_d); ``trans/d`` = G_t(z_d), x_d translated to
    its target t of the step; ``mu_cycle/d`` and ``cycle/d`` = G_d(z'), z' ~ q_t(z | trans/d).
    """


def shifted_targets(domains: tuple[str, ...], shift: int) -> dict[str, str]:
    """Each domain's translation target: the domain ``shift`` places further in the list, cyclically.

    Every domain is then the target of exactly one other, so each discriminator judges one
    batch of translations per step; with two domains it is always a->b and b->a.
    """
    count = len(domains)
    if not 0 < shift < count:
        raise ValueError(f"shift {shift} must be within 1..{count - 1} for {count} domains")
    return {domain: domains[(index + shift) % count] for index, domain in enumerate(domains)}


class UNITGenerator(nn.Module):
    """An encoder E_d and a generator G_d per domain, joined by the shared latent space.

    ``channels``: image channels of each domain, keyed by domain slot (``a``/``b`` for the
    two-domain model, the domain names for N domains). One forward computes every stream
    the losses need.
    """

    def __init__(self, cfg: ModelConfig, channels: dict[str, int] | None = None):
        super().__init__()
        channels = channels or {"a": cfg.channels_a, "b": cfg.channels_b}
        self.domains = tuple(channels)
        #: The one image side a generator with a vector code takes (None: any multiple of 4).
        self.fixed_size = 32 if cfg.generator == "conv32" else None
        # One module object each, referenced by every domain: weight sharing by identity.
        if cfg.generator == "conv32":
            self.enc_shared, self.dec_shared = conv32_shared(cfg)
        else:
            self.enc_shared = _res_stack(cfg.n_shared, 4 * cfg.width, cfg)
            self.dec_shared = _res_stack(cfg.n_shared, 4 * cfg.width, cfg)
        self.encoders = nn.ModuleDict({d: Encoder(c, cfg, self.enc_shared) for d, c in channels.items()})
        self.decoders = nn.ModuleDict({d: Decoder(c, cfg, self.dec_shared) for d, c in channels.items()})

    def encode(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        return self.encoders[domain](x)

    def decode(self, z: torch.Tensor, domain: str) -> torch.Tensor:
        return self.decoders[domain](z)

    def sample(self, mu: torch.Tensor) -> torch.Tensor:
        """z = mu + eps, eps ~ N(0, I): q(z|x) = N(mu, I) (reparameterisation). The mean in eval mode."""
        return mu + torch.randn_like(mu) if self.training else mu

    def translate(self, x: torch.Tensor, source: str, target: str) -> torch.Tensor:
        """F_{source->target}(x) = G_target(E_source(x)), using the latent mean."""
        return self.decode(self.encode(x, source), target)

    def forward(self, images: dict[str, torch.Tensor], targets: dict[str, str], with_cycle: bool = True) -> Streams:
        """Reconstruction, translation and (optionally) cycle streams of eq. (2)-(8) for every domain of ``images``.

        ``targets`` maps each domain to the one its batch is translated to this step
        (:func:`shifted_targets`). The streams are batched: all domains' codes pass the
        shared blocks as one batch (the shared decoder blocks once per code, not once per
        target domain), each G_t renders, in domain order, the codes of its own domain and
        of the domain translated into it as one batch, and the cycle pass batches all
        domains' translations through the shared blocks again. Only the encoders' own
        layers, and G_d rendering the cycle codes of x_d, see one domain at a time.

        Under instance norm (per sample) that is the same maths as one E/G pass per stream,
        with less work. Under batch norm in training mode (the digits presets) it is not:
        the shared blocks, and each G_t's own residual blocks (if it has any), normalise over
        the codes of several domains together, so a stream depends on the other domains' batch;
        the NIPS-era code does the same (its digits generator concatenates both domains'
        features before the shared layers and decodes that joint batch with each domain's
        decoder). In eval mode batch norm uses its running statistics (gathered from those
        mixed batches), and the batched pass is again the same as separate ones.
        """
        order = [d for d in self.domains if d in images]
        sizes = [len(images[d]) for d in order]
        mu = self.enc_shared(torch.cat([self.encoders[d].features(images[d]) for d in order]))
        h = dict(zip(order, self.dec_shared(self.sample(mu)).split(sizes)))
        out = Streams(zip((f"mu/{d}" for d in order), mu.split(sizes)))
        for target in order:
            sources = [d for d in order if d == target or targets[d] == target]
            rendered = self.decoders[target].render(torch.cat([h[d] for d in sources]))
            for source, part in zip(sources, rendered.split([len(images[d]) for d in sources])):
                out[f"recon/{source}" if source == target else f"trans/{source}"] = part
        if with_cycle:
            # x_d -> E_d -> G_t -> E_t -> G_d (eq. 5-6: z' ~ q_t(z | x_{d->t})).
            mu_cycle = self.enc_shared(torch.cat([self.encoders[targets[d]].features(out[f"trans/{d}"]) for d in order]))
            h_cycle = self.dec_shared(self.sample(mu_cycle)).split(sizes)
            for d, mu_d, h_d in zip(order, mu_cycle.split(sizes), h_cycle):
                out[f"mu_cycle/{d}"] = mu_d
                out[f"cycle/{d}"] = self.decoders[d].render(h_d)
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
    other domain's discriminator (domain-adaptation variant); ``model.dis_dropout`` then
    drops units at the input of each tied layer and of the heads while training.
    """

    def __init__(self, in_channels: int, cfg: ModelConfig, trunk: nn.Sequential | None = None, judge: nn.Conv2d | None = None):
        super().__init__()
        private_layers = cfg.dis_layers - cfg.dis_shared_layers if trunk is not None else cfg.dis_layers
        self.front = _dis_stack(in_channels, cfg, 0, private_layers)
        self.trunk = trunk if trunk is not None else nn.Sequential()
        self.judge = judge if judge is not None else nn.Conv2d(dis_feature_channels(cfg), 1, 1, 1, 0)
        self.dropout = tuple(cfg.dis_dropout) if trunk is not None else ()

    @property
    def drops(self) -> bool:
        """Whether a pass with dropout differs from one without: dropout rates set and training mode."""
        return bool(self.dropout) and self.training

    def features(self, x: torch.Tensor, dropout: bool = False) -> torch.Tensor:
        """Highest-layer features (before the real/fake logits); ``dropout``: with the tied layers' dropout."""
        h = self.front(x)
        if not (dropout and self.drops):
            return self.trunk(h)
        layers = list(self.trunk)  # (conv, activation) per tied layer
        for index, rate in enumerate(self.dropout[:-1]):
            h = layers[2 * index + 1](layers[2 * index](F.dropout(h, rate)))
        return F.dropout(h, self.dropout[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.judge(self.features(x, dropout=True))


class MultiScaleDiscriminator(nn.Module):
    """D_i: one patch discriminator per scale, each on a 2x average-pooled copy of the previous input."""

    def __init__(self, in_channels: int, cfg: ModelConfig, trunk: nn.Sequential | None = None, judge: nn.Conv2d | None = None):
        super().__init__()
        self.scales = nn.ModuleList(
            PatchDiscriminator(in_channels, cfg, trunk, judge) if index == 0 else PatchDiscriminator(in_channels, cfg)
            for index in range(cfg.dis_scales)
        )

    def forward(self, x: torch.Tensor, with_features: bool = False):
        """Logits per scale; with ``with_features`` also the first scale's highest-layer features twice.

        ``(logits, features, class_features)``: the features without dropout (for the
        feature-L1 term) and the ones the logits read (for the classifier); one tensor
        when the discriminator has no dropout or is in eval mode.
        """
        outputs, features, class_features = [], None, None
        for index, dis in enumerate(self.scales):
            if index:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            if index == 0 and with_features:
                class_features = dis.features(x, dropout=True)
                features = dis.features(x) if dis.drops else class_features
                outputs.append(dis.judge(class_features))
            else:
                outputs.append(dis(x))
        return (outputs, features, class_features) if with_features else outputs


class UNITDiscriminators(nn.Module):
    """D_d per domain: real x_d against translations into d.

    Domain-adaptation variant (``model.num_classes > 0``, paper section 4): the last
    ``dis_shared_layers`` layers and the real/fake head are tied between the
    discriminators, and a classifier head reads the tied features (trained on labelled
    images of the source domain).
    """

    def __init__(self, cfg: ModelConfig, channels: dict[str, int] | None = None):
        super().__init__()
        channels = channels or {"a": cfg.channels_a, "b": cfg.channels_b}
        trunk = judge = None
        if cfg.dis_shared_layers:
            trunk = _dis_stack(None, cfg, cfg.dis_layers - cfg.dis_shared_layers, cfg.dis_layers)
            judge = nn.Conv2d(dis_feature_channels(cfg), 1, 1, 1, 0)
        self.domains = tuple(channels)
        self.discriminators = nn.ModuleDict({d: MultiScaleDiscriminator(c, cfg, trunk, judge) for d, c in channels.items()})
        self.classifier = nn.Linear(dis_feature_channels(cfg), cfg.num_classes) if cfg.num_classes else None
        if cfg.dis_norm == "spectral":
            # modules() yields each module once, so the tied layers are normalised once.
            for layer in [m for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]:
                nn.utils.parametrizations.spectral_norm(layer)

    def forward(self, images: dict[str, torch.Tensor], with_features: bool = False) -> dict[str, Any]:
        """Per domain of ``images``: D_d's logits per scale (with ``with_features``: and its first scale's features, see
        :meth:`MultiScaleDiscriminator.forward`)."""
        return {d: self.discriminators[d](x, with_features) for d, x in images.items()}

    def classify(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        """Class logits of images of any domain, through that domain's first layers and the tied trunk."""
        return self.class_logits(self.discriminators[domain].scales[0].features(x, dropout=True))

    def class_logits(self, features: torch.Tensor) -> torch.Tensor:
        if self.classifier is None:
            raise ValueError("this model has no classifier (model.num_classes is 0)")
        return self.classifier(features.mean(dim=(2, 3)))


#: Module paths of the two-domain networks before N-domain models, and where they live now.
LEGACY_PREFIXES = {"enc_a.": "encoders.a.", "enc_b.": "encoders.b.", "dec_a.": "decoders.a.", "dec_b.": "decoders.b.",
                   "dis_a.": "discriminators.a.", "dis_b.": "discriminators.b."}


def upgrade_legacy_state(state: dict[str, Any]) -> dict[str, Any]:
    """Weights of a two-domain checkpoint written before N-domain models, renamed to today's module paths."""
    renamed = {}
    for key, value in state.items():
        prefix = next((old for old in LEGACY_PREFIXES if key.startswith(old)), None)
        renamed[LEGACY_PREFIXES[prefix] + key[len(prefix):] if prefix else key] = value
    return renamed
