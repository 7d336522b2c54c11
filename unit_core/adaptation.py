"""Domain adaptation (paper, section 4): the classifier on the tied discriminator features.

Training learns classes from labelled domain-a (source) images only. A target (domain b) image
is read, as ``evaluation.adaptation_classifier`` says, through D2's own first layers and the tied
trunk, ``dis.classify(x, "b")`` (``target``, the paper's reading); translated into the source
domain and read through D1's path, where the classifier learnt its labels (``translated``); or
both, their class probabilities averaged (``ensemble``). These helpers turn a model into the
classifier callable :func:`unit_core.evaluation.evaluate` accepts, and record the target
accuracy during training for reports, never for selection.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from unit_core.checkpoint import inference_generator, inference_weights, load_checkpoint, restore_weights, stored_config
from unit_core.config import UnitConfig
from unit_core.evaluation import Classifier, classify_split
from unit_core.networks import UNITDiscriminators, UNITGenerator
from unit_core.trainer import UNITTrainer, resolve_device


def source_domain(cfg: UnitConfig) -> str:
    """The slot of the labelled source domain: the first of the two."""
    return list(cfg.domains())[0]


def target_domain(cfg: UnitConfig) -> str:
    """The slot of the unlabelled target domain: the second of the two."""
    return list(cfg.domains())[-1]


def discriminator_classifier(dis: UNITDiscriminators, device: torch.device, domain: str = "b") -> Classifier:
    """Images (N, C, H, W) in [-1, 1] -> class logits through ``domain``'s discriminator path."""

    @torch.no_grad()
    def classify(images: torch.Tensor) -> torch.Tensor:
        return dis.classify(images.to(device), domain).float()

    return classify


def adaptation_classifier(how: str, dis: UNITDiscriminators, gen: UNITGenerator | None, device: torch.device,
                          source: str, target: str) -> Classifier:
    """Target images -> class scores, read as ``how`` says (``evaluation.adaptation_classifier``): ``target``
    (logits), ``translated`` (logits of ``G_source(E_target(x))`` on the source path) or ``ensemble`` (the mean
    of the two readings' class probabilities). ``gen`` (in eval mode) is needed unless ``how`` is ``target``."""
    direct = discriminator_classifier(dis, device, target)
    if how == "target":
        return direct
    if gen is None:
        raise ValueError(f"evaluation.adaptation_classifier={how} needs the generator to translate the target images")
    through_source = discriminator_classifier(dis, device, source)

    @torch.no_grad()
    def translated(images: torch.Tensor) -> torch.Tensor:
        return through_source(gen.translate(images.to(device), target, source))

    if how == "translated":
        return translated

    @torch.no_grad()
    def ensemble(images: torch.Tensor) -> torch.Tensor:
        return (direct(images).softmax(dim=1) + translated(images).softmax(dim=1)) / 2

    return ensemble


def classifier_from_checkpoint(path: str | Path, device: str | torch.device = "auto", how: str = "target") -> Classifier | None:
    """The target-domain (b) classifier of a checkpoint, read as ``how`` says (:func:`adaptation_classifier`), with
    its averaged networks where it has them; None when its model has none (``model.num_classes`` 0)."""
    payload = load_checkpoint(path, map_location="cpu")
    cfg = stored_config(payload, path)
    if not cfg.model.num_classes:
        return None
    device = resolve_device(device) if isinstance(device, str) else device
    dis = UNITDiscriminators(cfg.model, cfg.channels())
    restore_weights(dis, payload, inference_weights(payload, "dis"), path)
    gen = inference_generator(payload, cfg, path).to(device) if how != "target" else None
    source, target = source_domain(cfg), target_domain(cfg)
    return adaptation_classifier(how, dis.to(device).eval(), gen, device, source, target)


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
        # "accuracy": the networks inference uses (averaged with train.ema_decay); then also the trained ones'.
        point = {"step": step, "accuracy": self.accuracy(trainer.inference_dis, trainer.inference_gen, trainer.device)}
        if trainer.ema:
            point["accuracy_trained"] = self.accuracy(trainer.dis, trainer.gen, trainer.device)
        self.out_file.parent.mkdir(parents=True, exist_ok=True)
        with self.out_file.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(point) + "\n")

    def accuracy(self, dis: UNITDiscriminators, gen: UNITGenerator, device: torch.device) -> float:
        source, target = source_domain(self.cfg), target_domain(self.cfg)
        modes = dis.training, gen.training
        dis.eval()  # no dropout (model.dis_dropout), batch-norm running statistics, the latent mean
        gen.eval()
        try:
            classifier = adaptation_classifier(self.cfg.evaluation.adaptation_classifier, dis, gen, device, source, target)
            return classify_split(classifier, self.cfg.data.root, self.cfg.domains()[target], self.split,
                                  self.cfg.channels()[target], batch_size=500)
        finally:
            dis.train(modes[0])
            gen.train(modes[1])
