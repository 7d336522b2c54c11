"""``unit evaluate``: score a trained model on a test split and draw a visual report.

For each direction (a2b: domain A -> B, b2a: B -> A) every image of
``<data.root>/<source domain>/<evaluation.split>/`` is translated, and:

* paired metrics, when the target domain's split holds a file of the same name (without
  extension), the ground truth: pixel accuracy within ``evaluation.pixel_tolerance``
  (the paper's metric), L1 and PSNR, each averaged over images;
* unpaired metrics, always: reconstruction L1 (E/G of the source domain) and cycle L1
  (source -> target -> source), on a 0-1 scale;
* FID and KID of the translations against the target domain's real images of the split,
  when ``evaluation.inception_weights`` names a weights file (see unit_core.inception);
* classification accuracy on a labelled test set, when the caller passes a classifier
  (domain adaptation; labels from ``<root>/<domain>/labels-<split>.csv``).

Scale: images are evaluated whole (no crop; the translator pads to a multiple of 4) after
resizing their shorter side to the scale the model was trained at, ``load_size`` (or
``image_size``) of the checkpoint's configuration. At any other scale the generator's
receptive fields meet structures of sizes it never saw, and the score would measure that
mismatch instead of the translation. The demo sets render their test split at the
training size, so there this is the image's own size; ground truth is resized the same way.

Outputs in ``out_dir``: ``metrics.json`` (flat keys such as ``a2b/pixel_accuracy``, numbers
only, for DVC), ``evaluation.json`` (what was evaluated, data manifest hash, skipped
metrics and why) and ``report/<direction>.png`` grids: input | translation | cycle
(| ground truth).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from unit_core.config import UnitConfig
from unit_core.data import domain_folder, domain_images, labels_file, read_labels
from unit_core.images import load_image, pil_to_tensor, save_grid, tensor_to_uint8
from unit_core.inception import load_inception
from unit_core.metrics import (
    classification_accuracy,
    frechet_distance,
    kernel_distance,
    l1_error,
    pixel_accuracy,
    psnr,
)
from unit_core.scratch import atomic_write
from unit_core.translate import DIRECTIONS, SIZE_MULTIPLE, Translator, batches_by_size, translator_from_checkpoint

MANIFEST_NAME = "manifest.jsonl"
#: images (N, C, H, W) in [-1, 1] -> (N, classes) logits or (N,) class indices
Classifier = Callable[[torch.Tensor], Any]


@dataclass
class EvaluationResult:
    metrics: dict[str, float]
    notes: list[str]
    metrics_path: Path
    info_path: Path
    report: list[Path] = field(default_factory=list)


def load_for_evaluation(path: str | Path, device: str = "auto") -> tuple[Translator, UnitConfig]:
    """The translator of a checkpoint and the configuration it was trained with (one file read)."""
    return translator_from_checkpoint(path, device)


def training_scale(model_cfg: UnitConfig) -> int:
    """Shorter image side the model was trained at (see the module docstring)."""
    return model_cfg.data.load_size or model_cfg.data.image_size


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_sha256(root: str | Path) -> str | None:
    """sha256 of ``<root>/manifest.jsonl`` (written by ``unit ingest``), None when there is none."""
    manifest = Path(root) / MANIFEST_NAME
    return file_sha256(manifest) if manifest.is_file() else None


def load_at_scale(path: Path, channels: int, scale: int) -> Image.Image:
    """The image with its shorter side resized to ``scale`` (unchanged if it already is)."""
    image = load_image(path, channels)
    width, height = image.size
    if min(width, height) != scale:
        factor = scale / min(width, height)
        image = image.resize((max(1, round(width * factor)), max(1, round(height * factor))), Image.Resampling.BICUBIC)
    return image


@torch.no_grad()
def reconstruct(translator: Translator, images: torch.Tensor, domain: str) -> torch.Tensor:
    """G_domain(E_domain(x)) with the latent mean, padded and cropped like ``Translator.translate_tensor``."""
    height, width = images.shape[-2:]
    x = images.to(translator.device)
    pad_h, pad_w = -height % SIZE_MULTIPLE, -width % SIZE_MULTIPLE
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    generator = translator.generator
    return generator.decode(generator.encode(x, domain), domain)[..., :height, :width].float().cpu()


def _pair_key(relative: Path) -> str:
    return relative.with_suffix("").as_posix()


class _FeatureExtractor:
    """Inception pool features of (N, C, H, W) images in [-1, 1], quantised to 8 bits first like saved images."""

    def __init__(self, weights: Path, device: torch.device):
        self.device = device
        self.model = load_inception(weights, device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        quantised = images.clamp(-1, 1).add(1).mul(127.5).round().div(255.0)
        if quantised.shape[1] == 1:
            quantised = quantised.expand(-1, 3, -1, -1)
        return self.model(quantised.to(self.device)).cpu().numpy().astype(np.float64)


def _scaled_batches(files: list[Path], channels: int, scale: int, batch_size: int) -> Iterator[list[tuple[Path, Image.Image]]]:
    return batches_by_size(((path, load_at_scale(path, channels, scale)) for path in files), batch_size)


def _evaluate_direction(
    translator: Translator,
    direction: str,
    source_files: list[Path],
    source_folder: Path,
    truth_by_key: dict[str, Path],
    scale: int,
    tolerance: int,
    report_count: int,
    batch_size: int,
    extractor: _FeatureExtractor | None,
) -> tuple[dict[str, list[float]], list[list[torch.Tensor]], list[np.ndarray]]:
    source, target = DIRECTIONS[direction]
    back = f"{target}2{source}"
    values: dict[str, list[float]] = {"recon_l1": [], "cycle_l1": [], "pixel_accuracy": [], "l1": [], "psnr": []}
    rows: list[list[torch.Tensor]] = []
    features: list[np.ndarray] = []
    for batch in _scaled_batches(source_files, translator.channels[source], scale, batch_size):
        x = torch.stack([pil_to_tensor(image) for _, image in batch])
        translated = translator.translate_tensor(x, direction)
        cycled = translator.translate_tensor(translated, back)
        reconstructed = reconstruct(translator, x, source)
        if extractor is not None:
            features.append(extractor(translated))
        for index, (path, _) in enumerate(batch):
            original, output = tensor_to_uint8(x[index]), tensor_to_uint8(translated[index])
            values["recon_l1"].append(l1_error(tensor_to_uint8(reconstructed[index]), original))
            values["cycle_l1"].append(l1_error(tensor_to_uint8(cycled[index]), original))
            row = [x[index], translated[index], cycled[index]]
            truth_path = truth_by_key.get(_pair_key(path.relative_to(source_folder)))
            if truth_path is not None:
                truth = pil_to_tensor(load_at_scale(truth_path, translator.channels[target], scale))
                expected = tensor_to_uint8(truth)
                if expected.shape != output.shape:
                    raise ValueError(
                        f"{truth_path}: ground truth is {expected.shape[1]}x{expected.shape[0]} at evaluation scale "
                        f"{scale}, but its source {path} gives {output.shape[1]}x{output.shape[0]}: pairs must have one aspect ratio"
                    )
                values["pixel_accuracy"].append(pixel_accuracy(output, expected, tolerance))
                values["l1"].append(l1_error(output, expected))
                values["psnr"].append(psnr(output, expected))
                row.append(truth)
            if len(rows) < report_count:
                rows.append(row)
    return values, rows, features


def _real_features(files: list[Path], channels: int, scale: int, batch_size: int, extractor: _FeatureExtractor) -> np.ndarray:
    parts = [extractor(torch.stack([pil_to_tensor(image) for _, image in batch]))
             for batch in _scaled_batches(files, channels, scale, batch_size)]
    return np.concatenate(parts)


def classify_split(classifier: Classifier, root: str | Path, domain: str, split: str, channels: int, batch_size: int = 64) -> float:
    """Classification accuracy of ``classifier`` on ``<root>/<domain>/<split>`` (images at their own size)."""
    folder = domain_folder(root, domain, split)
    labels = read_labels(labels_file(root, domain, split))
    files = []
    for name in labels:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: listed in labels-{split}.csv but missing")
        files.append(path)
    outputs = []
    for batch in batches_by_size(((path, load_image(path, channels)) for path in files), batch_size):
        with torch.no_grad():
            result = classifier(torch.stack([pil_to_tensor(image) for _, image in batch]))
        outputs.append(result.detach().cpu().numpy() if hasattr(result, "detach") else np.asarray(result))
    return classification_accuracy(np.concatenate(outputs), np.array(list(labels.values())))


def _mean(values: list[float]) -> float:
    return float(np.mean(values))


def write_json(payload: dict[str, Any], path: Path) -> Path:
    """Write sorted, indented JSON atomically (a reader never sees half a file)."""
    return atomic_write(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def evaluate(
    translator: Translator,
    cfg: UnitConfig,
    out_dir: str | Path,
    *,
    scale: int,
    model_source: str,
    classifier: Classifier | None = None,
    classifier_domain: str = "b",
    batch_size: int = 8,
) -> EvaluationResult:
    """Evaluate ``translator`` on ``cfg.data.root`` / ``cfg.evaluation.split``; see the module docstring.

    ``scale``: :func:`training_scale` of the model's own configuration. ``model_source``:
    the checkpoint path or model URI, recorded in ``evaluation.json``.
    """
    out_dir = Path(out_dir)
    data, settings = cfg.data, cfg.evaluation
    domains = {"a": data.domain_a, "b": data.domain_b}
    files = {key: domain_images(data.root, name, settings.split) for key, name in domains.items()}
    folders = {key: domain_folder(data.root, name, settings.split) for key, name in domains.items()}
    notes: list[str] = []
    extractor = None
    if settings.inception_weights:
        extractor = _FeatureExtractor(Path(settings.inception_weights), translator.device)
    else:
        notes.append("fid/kid skipped: evaluation.inception_weights is empty (set it to a local "
                     "pt_inception-2015-12-05-6726825d.pth, the pytorch-fid weights; nothing is downloaded)")

    metrics: dict[str, float] = {}
    report: list[Path] = []
    for direction, (source, target) in DIRECTIONS.items():
        truth_by_key = {_pair_key(path.relative_to(folders[target])): path for path in files[target]}
        values, rows, features = _evaluate_direction(
            translator, direction, files[source], folders[source], truth_by_key, scale,
            settings.pixel_tolerance, settings.report_images, batch_size, extractor,
        )
        metrics[f"{direction}/images"] = float(len(files[source]))
        metrics[f"{direction}/recon_l1"] = _mean(values["recon_l1"])
        metrics[f"{direction}/cycle_l1"] = _mean(values["cycle_l1"])
        if values["pixel_accuracy"]:
            metrics[f"{direction}/paired_images"] = float(len(values["pixel_accuracy"]))
            for name in ("pixel_accuracy", "l1", "psnr"):
                metrics[f"{direction}/{name}"] = _mean(values[name])
        else:
            notes.append(f"{direction}: paired metrics skipped: no image of {folders[source]} has a file of the "
                         f"same name in {folders[target]}")
        if extractor is not None:
            if len(files[source]) < 2 or len(files[target]) < 2:
                notes.append(f"{direction}: fid/kid skipped: they need at least 2 images in each domain")
            else:
                real = _real_features(files[target], translator.channels[target], scale, batch_size, extractor)
                fake = np.concatenate(features)
                metrics[f"{direction}/fid"] = frechet_distance(real, fake)
                metrics[f"{direction}/kid"] = kernel_distance(real, fake)
        if rows:
            source_name, target_name = domains[source], domains[target]
            headings = [source_name, ("translation", "transl."), "cycle", (f"true {target_name}", "truth")]
            report.append(save_grid(rows, out_dir / "report" / f"{direction}.png", headings=headings,
                                    row_labels=[f"{source_name} > {target_name}"] * len(rows)))

    if classifier is not None:
        channels = translator.channels[classifier_domain]
        metrics[f"{classifier_domain}/classification_accuracy"] = classify_split(
            classifier, data.root, domains[classifier_domain], settings.split, channels
        )

    info = {
        "model": model_source,
        "data_root": str(data.root),
        "domains": domains,
        "split": settings.split,
        "scale": scale,
        "pixel_tolerance": settings.pixel_tolerance,
        "data_manifest_sha256": manifest_sha256(data.root),
        "notes": notes,
    }
    return EvaluationResult(
        metrics=metrics,
        notes=notes,
        metrics_path=write_json(metrics, out_dir / "metrics.json"),
        info_path=write_json(info, out_dir / "evaluation.json"),
        report=report,
    )
