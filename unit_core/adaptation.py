"""Domain adaptation (paper, section 4): the classifier on the tied discriminator features.

Training learns classes from labelled domain-a (source) images only; the target domain b is
classified through D2's own first layers and the tied trunk, ``dis.classify(x, "b")``. These
helpers turn a model into the classifier callable :func:`unit_core.evaluation.evaluate`
accepts, and record the target accuracy during training for reports, never for selection.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from unit_core.checkpoint import inference_weights, load_checkpoint, restore_weights, stored_config
from unit_core.config import UnitConfig
from unit_core.evaluation import Classifier, classify_split
from unit_core.networks import UNITDiscriminators
from unit_core.trainer import UNITTrainer, resolve_device


def target_domain(cfg: UnitConfig) -> str:
    """The slot of the unlabelled target domain: the second of the two."""
    return list(cfg.domains())[-1]


def discriminator_classifier(dis: UNITDiscriminators, device: torch.device, domain: str = "b") -> Classifier:
    """Images (N, C, H, W) in [-1, 1] -> class logits through ``domain``'s discriminator path."""

    @torch.no_grad()
    def classify(images: torch.Tensor) -> torch.Tensor:
        return dis.classify(images.to(device), domain).float()

    return classify


def classifier_from_checkpoint(path: str | Path, device: str | torch.device = "auto") -> Classifier | None:
    """The target-domain (b) classifier of a checkpoint (its averaged discriminators where it has them); None when
    its model has none (``model.num_classes`` 0)."""
    payload = load_checkpoint(path, map_location="cpu")
    cfg = stored_config(payload, path)
    if not cfg.model.num_classes:
        return None
    dis = UNITDiscriminators(cfg.model, cfg.channels())
    restore_weights(dis, payload, inference_weights(payload, "dis"), path)
    device = resolve_device(device) if isinstance(device, str) else device
    return discriminator_classifier(dis.to(device).eval(), device, target_domain(cfg))


class TargetAccuracyCurve:
    """Replica callback of :func:`unit_core.training.fit`: target-test accuracy at each checkpoint, one JSON line each.

    For reports of how adaptation progresses; the target labels it reads must never steer
    training or choose a checkpoint. Measured on rank 0 only (the one holding a checkpoint path).
    """

    def __init__(self, cfg: UnitConfig, split: str, out_file: str | Path):
        self.cfg, self.split, self.out_file = cfg, split, Path(out_file)

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        """Nothing to do between checkpoints."""

    def on_checkpoint(self, step: int, trainer: UNITTrainer, checkpoint: Path | None, grid: Path | None) -> None:
        if checkpoint is None:
            return
        # "accuracy": the classifier inference uses (averaged with train.ema_decay); then also the trained one's.
        point = {"step": step, "accuracy": self.accuracy(trainer.inference_dis, trainer.device)}
        if trainer.ema:
            point["accuracy_trained"] = self.accuracy(trainer.dis, trainer.device)
        self.out_file.parent.mkdir(parents=True, exist_ok=True)
        with self.out_file.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(point) + "\n")

    def accuracy(self, dis: UNITDiscriminators, device: torch.device) -> float:
        target = target_domain(self.cfg)
        was_training = dis.training
        dis.eval()  # no dropout (model.dis_dropout) while measuring
        try:
            return classify_split(discriminator_classifier(dis, device, target), self.cfg.data.root,
                                  self.cfg.domains()[target], self.split, self.cfg.channels()[target], batch_size=500)
        finally:
            dis.train(was_training)
