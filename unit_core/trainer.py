"""UNIT trainer: networks, optimizers and one alternating D/G update per step.

Per step (paper, section 3 and its released code): a discriminator update with the
generator fixed, then a generator update with the discriminators fixed. The generator
pass of the step is computed once: its translations, detached, feed the D update (the
paper's code recomputed them with the very same, not yet updated generator, so the maths
is unchanged) and, attached, the G update against the updated discriminators.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unit_core.checkpoint import restore_weights
from unit_core.config import UnitConfig
from unit_core.losses import discriminator_loss, generator_gan_loss, kl_loss, l1_loss
from unit_core.networks import UNITDiscriminators, UNITGenerator

PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: The weight (a LossConfig field: the paper's lambda0..lambda4) of each generator term of eq. (2)-(8).
TERM_WEIGHTS = {
    "gan_a": "gan", "gan_b": "gan", "kl_a": "kl", "kl_b": "kl", "recon_a": "recon", "recon_b": "recon",
    "kl_cycle_a": "kl_cycle", "kl_cycle_b": "kl_cycle", "cycle_a": "cycle", "cycle_b": "cycle",
}


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
    """N(0, 0.02) conv weights and zero biases, as the paper's code."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
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
    def __init__(self, cfg: UnitConfig, device: str | torch.device = "cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.step = 0
        self.last_lr = cfg.optim.lr
        torch.manual_seed(cfg.seed)
        memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        self.gen = UNITGenerator(cfg.model)
        self.dis = UNITDiscriminators(cfg.model)
        for net in (self.gen, self.dis):
            net.apply(init_weights)
            net.to(device=self.device, memory_format=memory_format)
        self.memory_format = memory_format
        # Callables used for the forward passes that need gradient synchronisation; a
        # distributed runner replaces them with DDP wrappers of self.gen / self.dis.
        self.gen_forward: Callable[..., Any] = self.gen
        self.dis_forward: Callable[..., Any] = self.dis
        if cfg.train.compile:
            self.gen_forward = CompiledOrEager(self.gen)
            self.dis_forward = CompiledOrEager(self.dis)

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

    # ------------------------------------------------------------------ update
    def train_step(self, x_a: torch.Tensor, x_b: torch.Tensor, labels_a: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One D update then one G update; returns every loss term (detached, on device, no sync).

        ``labels_a`` (class indices of the domain-a images) are required by the
        domain-adaptation variant (``model.num_classes > 0``) and ignored otherwise.
        """
        x_a, x_b = self.prepare(x_a), self.prepare(x_b)
        self.gen.train()
        self.dis.train()
        with self.autocast():
            streams = self.gen_forward(x_a, x_b, with_cycle=self.uses_cycle)
        losses = self.discriminator_step(x_a, x_b, streams, labels_a)

        # G step against the updated discriminators; their weights need no gradient here,
        # and the unwrapped module is used since nothing of D is synchronised in this pass.
        self.gen_opt.zero_grad(set_to_none=True)
        self.dis.requires_grad_(False)
        try:
            with self.autocast():
                fake_a, fake_b = self.dis(streams["x_ba"], streams["x_ab"])
        finally:
            self.dis.requires_grad_(True)
        terms = self.generator_terms(x_a, x_b, streams, fake_a, fake_b)
        gen_total = sum(self.term_weight(name) * value for name, value in terms.items())
        self.gen_scaler.scale(gen_total).backward()
        self.gen_scaler.step(self.gen_opt)
        self.gen_scaler.update()

        self.last_lr = self.gen_opt.param_groups[0]["lr"]
        self.gen_sched.step()
        self.dis_sched.step()
        self.step += 1
        losses.update({f"gen/{name}": value.detach() for name, value in terms.items()})
        losses["gen/total"] = gen_total.detach()
        return losses

    @property
    def adapts(self) -> bool:
        return self.cfg.model.num_classes > 0

    def discriminator_step(self, x_a, x_b, streams, labels_a) -> dict[str, torch.Tensor]:
        """D update: real images against this step's (detached) translations, one forward per D.

        Domain adaptation adds, on the tied D features: cross-entropy of the domain-a
        images' labels, and the L1 distance between the features of each generated pair
        decoded from one latent code, (x_aa, x_ab) and (x_ba, x_bb).
        """
        weights, mode, n = self.cfg.loss, self.cfg.loss.gan_mode, len(x_a)
        fakes_a, fakes_b = [streams["x_ba"].detach()], [streams["x_ab"].detach()]
        if self.adapts:
            if labels_a is None:
                raise ValueError("model.num_classes > 0 (domain adaptation) needs labels for the domain-a images")
            fakes_a.append(streams["x_aa"].detach())
            fakes_b.append(streams["x_bb"].detach())
        self.dis_opt.zero_grad(set_to_none=True)
        with self.autocast():
            (logits_a, features_a), (logits_b, features_b) = self.dis_forward(
                torch.cat([x_a, *fakes_a]), torch.cat([x_b, *fakes_b]), with_features=True
            )
            # Under autocast too: the features are bf16/fp16 there, the classifier's weights fp32.
            class_logits = self.dis.class_logits(features_a[:n]).float() if self.adapts else None
        dis_a = discriminator_loss([o[:n] for o in logits_a], [o[n : 2 * n] for o in logits_a], mode)
        dis_b = discriminator_loss([o[:n] for o in logits_b], [o[n : 2 * n] for o in logits_b], mode)
        total = weights.gan * (dis_a + dis_b)
        losses = {"dis/a": dis_a, "dis/b": dis_b}
        if self.adapts:
            labels = labels_a.to(self.device)
            classifier = F.cross_entropy(class_logits, labels)
            feature = l1_loss(features_a[2 * n :], features_b[n : 2 * n]) + l1_loss(features_a[n : 2 * n], features_b[2 * n :])
            total = total + weights.classifier * classifier + weights.feature * feature
            losses |= {"dis/classifier": classifier, "dis/feature": feature,
                       "dis/accuracy_a": (class_logits.argmax(1) == labels).float().mean()}
        self.dis_scaler.scale(total).backward()
        self.dis_scaler.step(self.dis_opt)
        self.dis_scaler.update()
        losses["dis/total"] = total
        return {name: value.detach() for name, value in losses.items()}

    def generator_terms(self, x_a, x_b, streams, fake_a, fake_b) -> dict[str, torch.Tensor]:
        """Unweighted terms of eq. (2)-(8); TERM_WEIGHTS names each one's lambda."""
        mode = self.cfg.loss.gan_mode
        kl_a, kl_b = kl_loss(streams["mu_a"]), kl_loss(streams["mu_b"])
        terms = {
            "gan_a": generator_gan_loss(fake_a, mode),  # D1 on x_ba
            "gan_b": generator_gan_loss(fake_b, mode),  # D2 on x_ab
            "kl_a": kl_a,
            "kl_b": kl_b,
            "recon_a": l1_loss(streams["x_aa"], x_a),
            "recon_b": l1_loss(streams["x_bb"], x_b),
        }
        if self.uses_cycle:
            # Each cycle stream has its own two KL terms (eq. 5-6): of x and of its translation.
            terms["kl_cycle_a"] = kl_a + kl_loss(streams["mu_ab"])
            terms["kl_cycle_b"] = kl_b + kl_loss(streams["mu_ba"])
            terms["cycle_a"] = l1_loss(streams["x_aba"], x_a)
            terms["cycle_b"] = l1_loss(streams["x_bab"], x_b)
        return terms

    def term_weight(self, name: str) -> float:
        return getattr(self.cfg.loss, TERM_WEIGHTS[name])

    # --------------------------------------------------------------- inference
    @torch.no_grad()
    def sample_rows(self, x_a: torch.Tensor, x_b: torch.Tensor) -> list[list[torch.Tensor]]:
        """Rows of input | reconstruction | translation | cycle, a->b then b->a (latent means)."""
        self.gen.eval()
        try:
            x_a, x_b = self.prepare(x_a), self.prepare(x_b)
            with self.autocast():
                streams = self.gen(x_a, x_b, with_cycle=True)
        finally:
            self.gen.train()
        rows = [[x_a[i], streams["x_aa"][i], streams["x_ab"][i], streams["x_aba"][i]] for i in range(len(x_a))]
        rows += [[x_b[i], streams["x_bb"][i], streams["x_ba"][i], streams["x_bab"][i]] for i in range(len(x_b))]
        return [[t.float().cpu() for t in row] for row in rows]

    # ------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "networks": {"gen": self.gen.state_dict(), "dis": self.dis.state_dict()},
            "optimizers": {"gen": self.gen_opt.state_dict(), "dis": self.dis_opt.state_dict()},
            "schedulers": {"gen": self.gen_sched.state_dict(), "dis": self.dis_sched.state_dict()},
            "scalers": {"gen": self.gen_scaler.state_dict(), "dis": self.dis_scaler.state_dict()},
            "rng": rng,
        }

    def load_state_dict(self, payload: dict[str, Any], networks_only: bool = False, source: str | Path = "checkpoint") -> None:
        """Restore a checkpoint's payload (``source`` names its file in errors)."""
        restore_weights(self.gen, payload, "gen", source)
        restore_weights(self.dis, payload, "dis", source)
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
