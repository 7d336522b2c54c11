"""UNIT trainer: networks, optimizers and one alternating D/G update per step.

Per step (paper, section 3 and its released code): a discriminator update with the
generator fixed, then a generator update with the discriminators fixed. The generator
pass of the step is computed once: its translations, detached, feed the D update (the
paper's code recomputed them with the very same, not yet updated generator, so the maths
is unchanged) and, attached, the G update against the updated discriminators.
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from unit_core.checkpoint import averaged, restore_weights
from unit_core.config import LossConfig, UnitConfig
from unit_core.losses import discriminator_fake_loss, discriminator_loss, generator_gan_loss, kl_loss, l1_loss
from unit_core.networks import UNITDiscriminators, UNITGenerator, shifted_targets

PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}  # /proc/cpuinfo flags of x86 CPUs with bf16 instructions


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has bf16 instructions, from the flags of ``/proc/cpuinfo`` (False where that file is absent).

    Without them oneDNN emulates bf16 and it is slower than fp32.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
    return any(set(line.split(":", 1)[1].split()) & CPU_BF16_FLAGS
               for line in cpuinfo.splitlines() if line.startswith("flags") and ":" in line)


#: Wraps a network for gradient synchronisation, e.g. in DistributedDataParallel.
Wrap = Callable[[nn.Module], Callable[..., Any]]


def generator_weights(loss: LossConfig, domains: Sequence[str]) -> dict[str, float]:
    """The weight of each generator term of eq. (2)-(8), by term name; per domain d:

    ``gan/d`` lambda0 (D_d on the translation into d), ``kl/d`` lambda1 and ``recon/d``
    lambda2 (the reconstruction stream of x_d), ``kl_cycle/d`` lambda3 and ``cycle/d``
    lambda4 (the cycle stream of x_d); ``gan_recon/d`` D_d on the reconstruction of x_d
    (not in the paper: 0 unless set).
    """
    weights: dict[str, float] = {}
    for d in domains:
        weights |= {f"gan/{d}": loss.gan, f"kl/{d}": loss.kl, f"recon/{d}": loss.recon,
                    f"kl_cycle/{d}": loss.kl_cycle, f"cycle/{d}": loss.cycle, f"gan_recon/{d}": loss.gan_recon}
    return weights


def discriminator_weights(loss: LossConfig, domains: Sequence[str]) -> dict[str, float]:
    """The weight of each discriminator term, by term name: ``gan/d`` lambda0 per domain d,
    ``gan_recon/d`` (the reconstructions of x_d as fakes) and the domain-adaptation terms
    ``classifier`` (cross-entropy of the source labels), ``feature`` (L1 between the D
    features of generated pairs) and ``classifier_translated`` (cross-entropy of the source
    labels on the source images translated into the target domain; not in the paper)."""
    return {**{f"gan/{d}": loss.gan for d in domains}, **{f"gan_recon/{d}": loss.gan_recon for d in domains},
            "classifier": loss.classifier, "feature": loss.feature, "classifier_translated": loss.classifier_translated}


def weighted_total(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Sum of each term times its weight; a term without one is an error, not a silent weight."""
    unweighted = sorted(set(terms) - set(weights))
    if unweighted:
        raise KeyError(f"loss terms without a weight: {', '.join(unweighted)}")
    return sum(weights[name] * value for name, value in terms.items())


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device is {name!r} but no CUDA device is available")
    return device


def set_deterministic(enabled: bool) -> None:
    if enabled:
        # cuBLAS needs this before its first use to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def init_weights(module: nn.Module) -> None:
    """N(0, 0.02) conv weights and zero biases, as the paper's code.

    A spectrally normalised conv (``model.dis_norm``) computes ``weight`` from the parameter
    it wraps: that parameter is the one initialised.
    """
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        parametrized = parametrize.is_parametrized(module, "weight")
        nn.init.normal_(module.parametrizations.weight.original if parametrized else module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def lr_factor(cfg: UnitConfig) -> Callable[[int], float]:
    optim, max_steps = cfg.optim, cfg.train.max_steps

    def factor(step: int) -> float:
        if optim.lr_policy == "step":
            return optim.lr_gamma ** (step // optim.lr_step_size)
        if optim.lr_policy == "linear" and step >= optim.lr_decay_start:
            span = max(1, max_steps - optim.lr_decay_start)
            return max(0.0, 1.0 - (step - optim.lr_decay_start) / span)
        return 1.0

    return factor


class UNITTrainer:
    """The networks, their optimizers and one training step.

    ``wrap``: wraps gen and dis for the forward passes that need gradient synchronisation
    (a data-parallel run: DistributedDataParallel); with ``train.compile`` the wrapped
    passes are compiled. Everything else (the G step's pass through D, sampling, state)
    uses the plain ``gen`` and ``dis``.
    """

    def __init__(self, cfg: UnitConfig, device: str | torch.device = "cpu", wrap: Wrap | None = None):
        self.cfg = cfg
        self.device = torch.device(device)
        if cfg.train.precision == "bf16" and self.device.type == "cpu" and not cpu_has_bf16():
            warnings.warn("train.precision is bf16 but this CPU has no bf16 instructions (avx512_bf16, amx_bf16): "
                          "it is emulated, about 10x slower than fp32 (docs/performance.md); "
                          "set train.precision=fp32 for speed", stacklevel=2)
        self.step = 0
        self.last_lr = cfg.optim.lr
        torch.manual_seed(cfg.seed)
        memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        self.domains = tuple(cfg.domains())
        self.gen = UNITGenerator(cfg.model, cfg.channels())
        self.dis = UNITDiscriminators(cfg.model, cfg.channels())
        for net in (self.gen, self.dis):
            net.apply(init_weights)
            net.to(device=self.device, memory_format=memory_format)
        self.memory_format = memory_format
        # train.ema_decay: moving averages of the weights, never trained themselves; inference reads them.
        self.ema = {name: copy.deepcopy(net).requires_grad_(False).eval()
                    for name, net in (("gen", self.gen), ("dis", self.dis))} if cfg.train.ema_decay else {}
        self._gen_forward = _forward_pass(self.gen, wrap, cfg.train.compile)
        self._dis_forward = _forward_pass(self.dis, wrap, cfg.train.compile)
        self.generator_weights = generator_weights(cfg.loss, self.domains)
        self.discriminator_weights = discriminator_weights(cfg.loss, self.domains)

        o = cfg.optim
        fused = o.fused and self.device.type == "cuda"
        adam = dict(lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay, fused=fused or None)
        self.gen_opt = torch.optim.Adam(self.gen.parameters(), **adam)
        self.dis_opt = torch.optim.Adam(self.dis.parameters(), **adam)
        self.gen_sched = torch.optim.lr_scheduler.LambdaLR(self.gen_opt, lr_factor(cfg))
        self.dis_sched = torch.optim.lr_scheduler.LambdaLR(self.dis_opt, lr_factor(cfg))
        fp16 = cfg.train.precision == "fp16"
        self.gen_scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)
        self.dis_scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)

    # ----------------------------------------------------------------- helpers
    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = PRECISION_DTYPES.get(self.cfg.train.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        non_blocking = self.device.type == "cuda"
        return images.to(self.device, non_blocking=non_blocking).contiguous(memory_format=self.memory_format)

    @property
    def uses_cycle(self) -> bool:
        return self.cfg.loss.cycle > 0 or self.cfg.loss.kl_cycle > 0

    def targets(self, step: int) -> dict[str, str]:
        """This step's translation target of each domain: a cyclic shift drawn from (seed, step).

        Each step translates every domain's batch to one other domain, so a step costs N
        translations, not the N(N-1) of all ordered pairs; over the steps every ordered
        pair comes up equally often. Drawn from the step number, not from a random state,
        so a resumed run continues the same sequence. Two domains: always a->b and b->a.
        """
        count = len(self.domains)
        shift = 1 + int(np.random.SeedSequence([self.cfg.seed, step]).generate_state(1)[0]) % (count - 1)
        return shifted_targets(self.domains, shift)

    # ------------------------------------------------------------------ update
    def train_step(self, images: Sequence[torch.Tensor], labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One D update then one G update; returns every loss term (detached, on device, no sync).

        ``images``: one batch per domain, in the order of ``cfg.domains()``. ``labels``
        (class indices of the first, source domain's images) are required by the
        domain-adaptation variant (``model.num_classes > 0``) and ignored otherwise.
        """
        if len(images) != len(self.domains):
            raise ValueError(f"train_step got {len(images)} image batches for {len(self.domains)} domains")
        batches = {d: self.prepare(x) for d, x in zip(self.domains, images)}
        targets = self.targets(self.step)
        self.gen.train()
        self.dis.train()
        with self.autocast():
            streams = self._gen_forward(batches, targets, with_cycle=self.uses_cycle)
        losses = self.discriminator_step(batches, streams, targets, labels)

        # G step against the updated discriminators; their weights need no gradient here,
        # and the unwrapped module is used since nothing of D is synchronised in this pass.
        self.gen_opt.zero_grad(set_to_none=True)
        self.dis.requires_grad_(False)
        try:
            judged = {target: streams[f"trans/{source}"] for source, target in targets.items()}
            if self.judges_recon:
                judged = {d: torch.cat([translations, streams[f"recon/{d}"]]) for d, translations in judged.items()}
            with self.autocast():
                fakes = self.dis(judged)
        finally:
            self.dis.requires_grad_(True)
        terms = self.generator_terms(batches, streams, fakes)
        gen_total = self.generator_total(terms)
        self.gen_scaler.scale(gen_total).backward()
        self.gen_scaler.step(self.gen_opt)
        self.gen_scaler.update()

        self.last_lr = self.gen_opt.param_groups[0]["lr"]
        self.gen_sched.step()
        self.dis_sched.step()
        self.step += 1
        self.update_ema()
        for name, value in terms.items():
            kind, domain = name.split("/")
            losses[f"gen/{kind}_{domain}"] = value.detach()
        losses["gen/total"] = gen_total.detach()
        return losses

    @torch.no_grad()
    def update_ema(self) -> None:
        """Move each averaged network toward its trained one: avg += (1 - decay) (trained - avg).

        The decay warms up as min(ema_decay, (1 + t) / (10 + t)) over the first updates t, so
        the average soon forgets the random initial weights. Floating-point buffers (batch-norm
        statistics) are averaged alike; counters are copied.
        """
        if not self.ema:
            return
        weight = 1.0 - min(self.cfg.train.ema_decay, (1 + self.step) / (10 + self.step))
        for name, average in self.ema.items():
            trained = getattr(self, name)
            for mean, value in zip(average.parameters(), trained.parameters(), strict=True):
                mean.lerp_(value, weight)
            for mean, value in zip(average.buffers(), trained.buffers(), strict=True):
                if mean.is_floating_point():
                    mean.lerp_(value, weight)
                else:
                    mean.copy_(value)

    @property
    def inference_gen(self) -> UNITGenerator:
        """The generator that translates: the averaged one with ``train.ema_decay``, else the trained one."""
        return self.ema.get("gen", self.gen)

    @property
    def inference_dis(self) -> UNITDiscriminators:
        """The discriminators whose classifier is measured: averaged with ``train.ema_decay``, else trained."""
        return self.ema.get("dis", self.dis)

    @property
    def adapts(self) -> bool:
        return self.cfg.model.num_classes > 0

    @property
    def judges_recon(self) -> bool:
        """Whether the discriminators also see the reconstructions as fakes (``loss.gan_recon``)."""
        return self.cfg.loss.gan_recon > 0

    def discriminator_step(self, images, streams, targets, labels) -> dict[str, torch.Tensor]:
        """D update: each D_d judges real x_d against this step's (detached) translation into d, one forward each
        (with ``loss.gan_recon``, the reconstruction of x_d too).

        Domain adaptation (two domains, source s labelled, target t) adds, on the tied D
        features: cross-entropy of the source images' labels, and the L1 distance between
        the features of each generated pair decoded from one latent code, (x_ss, x_st)
        and (x_ts, x_tt). With ``loss.classifier_translated`` also the cross-entropy of the
        source labels on x_st read through D_t's own first layer, the path the target's test
        images take (not in the paper; as in pixel-level adaptation methods).
        """
        mode = self.cfg.loss.gan_mode
        translated_into = {target: source for source, target in targets.items()}
        batches = {}
        for domain, real in images.items():
            parts = [real, streams[f"trans/{translated_into[domain]}"].detach()]
            if self.adapts or self.judges_recon:
                parts.append(streams[f"recon/{domain}"].detach())
            batches[domain] = torch.cat(parts)
        if self.adapts and labels is None:
            raise ValueError("model.num_classes > 0 (domain adaptation) needs labels for the source domain's images")
        source, target = self.domains[0], self.domains[-1]
        n = len(images[source])
        self.dis_opt.zero_grad(set_to_none=True)
        with self.autocast():
            outputs = self._dis_forward(batches, with_features=True)
            # Under autocast too: the features are bf16/fp16 there, the classifier's weights fp32.
            class_logits = self.dis.class_logits(outputs[source][2][:n]).float() if self.adapts else None
            count_t = len(images[target])
            translated_logits = (self.dis.class_logits(outputs[target][2][count_t : count_t + n]).float()
                                 if self.adapts and self.cfg.loss.classifier_translated > 0 else None)
        terms = {}
        for domain, (logits, *_) in outputs.items():
            count = len(images[domain])
            terms[f"gan/{domain}"] = discriminator_loss([o[:count] for o in logits], [o[count : 2 * count] for o in logits], mode)
            if self.judges_recon:
                terms[f"gan_recon/{domain}"] = discriminator_fake_loss([o[2 * count :] for o in logits], mode)
        losses = {f"dis/{domain}": terms[f"gan/{domain}"] for domain in outputs}
        if self.judges_recon:
            losses |= {f"dis/gan_recon_{domain}": terms[f"gan_recon/{domain}"] for domain in outputs}
        if self.adapts:
            labels = labels.to(self.device)
            features_s, features_t = outputs[source][1], outputs[target][1]
            terms["classifier"] = F.cross_entropy(class_logits, labels)
            terms["feature"] = (l1_loss(features_s[2 * n :], features_t[n : 2 * n])
                                + l1_loss(features_s[n : 2 * n], features_t[2 * n :]))
            losses |= {"dis/classifier": terms["classifier"], "dis/feature": terms["feature"],
                       f"dis/accuracy_{source}": (class_logits.argmax(1) == labels).float().mean()}
            if translated_logits is not None:
                terms["classifier_translated"] = F.cross_entropy(translated_logits, labels)
                losses |= {"dis/classifier_translated": terms["classifier_translated"],
                           f"dis/accuracy_{source}_to_{target}": (translated_logits.argmax(1) == labels).float().mean()}
        total = self.discriminator_total(terms)
        self.dis_scaler.scale(total).backward()
        self.dis_scaler.step(self.dis_opt)
        self.dis_scaler.update()
        losses["dis/total"] = total
        return {name: value.detach() for name, value in losses.items()}

    def discriminator_total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The discriminator's objective: each term times its weight in :func:`discriminator_weights`."""
        return weighted_total(terms, self.discriminator_weights)

    def generator_terms(self, images, streams, fakes) -> dict[str, torch.Tensor]:
        """Unweighted terms of eq. (2)-(8), keyed ``<kind>/<domain>`` as in :func:`generator_weights`.

        ``gan`` of domain d: D_d on the translation into d; the others: of the streams that
        start from x_d.
        """
        mode = self.cfg.loss.gan_mode
        terms: dict[str, torch.Tensor] = {}
        for domain, logits in fakes.items():
            if self.judges_recon:  # translations first, then the reconstructions (train_step)
                count = len(images[domain])
                terms[f"gan_recon/{domain}"] = generator_gan_loss([o[-count:] for o in logits], mode)
                logits = [o[:-count] for o in logits]
            terms[f"gan/{domain}"] = generator_gan_loss(logits, mode)
        for domain, real in images.items():
            kl = kl_loss(streams[f"mu/{domain}"])
            terms[f"kl/{domain}"] = kl
            terms[f"recon/{domain}"] = l1_loss(streams[f"recon/{domain}"], real)
            if self.uses_cycle:
                # Each cycle stream has its own two KL terms (eq. 5-6): of x and of its translation.
                terms[f"kl_cycle/{domain}"] = kl + kl_loss(streams[f"mu_cycle/{domain}"])
                terms[f"cycle/{domain}"] = l1_loss(streams[f"cycle/{domain}"], real)
        return terms

    def generator_total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The generator's objective: each term times its weight in :func:`generator_weights` (lambda0..lambda4)."""
        return weighted_total(terms, self.generator_weights)

    # --------------------------------------------------------------- inference
    @torch.no_grad()
    def sample_rows(self, fixed: dict[str, torch.Tensor]) -> list[list[torch.Tensor]]:
        """Rows of the sample grid, latent means; ``fixed``: images per domain.

        Two domains: input | reconstruction | translation | cycle, a->b then b->a. N domains:
        input | its image in each domain (its own: the reconstruction), a block of rows per domain.
        """
        gen = self.inference_gen
        was_training = gen.training
        gen.eval()
        try:
            batches = {d: self.prepare(x) for d, x in fixed.items()}
            with self.autocast():
                if len(self.domains) == 2:
                    streams = gen(batches, self.targets(0), with_cycle=True)
                    rows = [[x[i], streams[f"recon/{d}"][i], streams[f"trans/{d}"][i], streams[f"cycle/{d}"][i]]
                            for d, x in batches.items() for i in range(len(x))]
                else:
                    rows = []
                    for source, x in batches.items():
                        z = gen.encode(x, source)
                        outputs = [gen.decode(z, target) for target in self.domains]
                        rows += [[x[i], *(output[i] for output in outputs)] for i in range(len(x))]
        finally:
            gen.train(was_training)
        return [[t.float().cpu() for t in row] for row in rows]

    # ------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "networks": {"gen": self.gen.state_dict(), "dis": self.dis.state_dict(),
                         **{averaged(name): average.state_dict() for name, average in self.ema.items()}},
            "optimizers": {"gen": self.gen_opt.state_dict(), "dis": self.dis_opt.state_dict()},
            "schedulers": {"gen": self.gen_sched.state_dict(), "dis": self.dis_sched.state_dict()},
            "scalers": {"gen": self.gen_scaler.state_dict(), "dis": self.dis_scaler.state_dict()},
            "rng": rng,
        }

    def load_state_dict(self, payload: dict[str, Any], networks_only: bool = False, source: str | Path = "checkpoint") -> None:
        """Restore a checkpoint's payload (``source`` names its file in errors)."""
        restore_weights(self.gen, payload, "gen", source)
        restore_weights(self.dis, payload, "dis", source)
        for name, average in self.ema.items():
            if averaged(name) in payload["networks"]:
                restore_weights(average, payload, averaged(name), source)
            else:
                warnings.warn(f"{source}: no averaged weights for '{name}' (trained without train.ema_decay); "
                              f"the average starts from the checkpoint's weights", stacklevel=2)
                average.load_state_dict(getattr(self, name).state_dict())
        if networks_only:
            return
        self.gen_opt.load_state_dict(payload["optimizers"]["gen"])
        self.dis_opt.load_state_dict(payload["optimizers"]["dis"])
        self.gen_sched.load_state_dict(payload["schedulers"]["gen"])
        self.dis_sched.load_state_dict(payload["schedulers"]["dis"])
        self.gen_scaler.load_state_dict(payload["scalers"]["gen"])
        self.dis_scaler.load_state_dict(payload["scalers"]["dis"])
        torch.set_rng_state(payload["rng"]["torch"])
        if "cuda" in payload["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(payload["rng"]["cuda"], self.device)
        self.step = int(payload["step"])


def _forward_pass(module: nn.Module, wrap: Wrap | None, compile_: bool) -> Callable[..., Any]:
    """``module``, wrapped by ``wrap`` if given, then compiled if ``compile_``."""
    forward = wrap(module) if wrap is not None else module
    return CompiledOrEager(forward) if compile_ else forward


class CompiledOrEager:
    """``torch.compile`` a module, falling back to eager if compilation fails at the first call."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.compiled: Callable[..., Any] | None = torch.compile(module)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as exc:  # compilation errors come in many types; eager is always correct
                warnings.warn(f"torch.compile failed ({type(exc).__name__}: {exc}); continuing in eager mode")
                self.compiled = None
        return self.module(*args, **kwargs)
