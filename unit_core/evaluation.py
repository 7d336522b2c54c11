"""``unit evaluate``: score a trained model on a test split and draw a visual report.

For each ordered pair of domains (two-domain models: a2b, domain A -> B, and b2a; N-domain
models: every source2target, e.g. day2night) every image of
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
only, for DVC; N-domain models add ``mean/<metric>`` over the ordered pairs, for each metric
every pair has), ``evaluation.json``
(what was evaluated, data manifest hash, skipped metrics and why) and the report: two-domain
models ``report/<direction>.png`` grids, input | translation | cycle (| ground truth);
N-domain models a grid per source domain, ``report/<source>.png``, input | its translation
to each other domain (| ground truth beside each), and ``pairs.md``, the paired metrics as
source-by-target tables.
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
from unit_core.layout import MANIFEST_NAME, domain_folder, domain_images, labels_file, read_labels
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
from unit_core.translate import Translator, batches_by_size, translator_from_checkpoint

#: N-domain models: the paired metrics as source-by-target tables, beside metrics.json.
PAIRS_TABLE = "pairs.md"
#: Metrics against a ground-truth image of the target domain.
PAIRED_METRICS = ("pixel_accuracy", "l1", "psnr")
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


def _evaluate_pair(
    translator: Translator,
    source: str,
    target: str,
    source_files: list[Path],
    source_folder: Path,
    truth_by_key: dict[str, Path],
    scale: int,
    tolerance: int,
    report_count: int,
    batch_size: int,
    extractor: _FeatureExtractor | None,
) -> tuple[dict[str, list[float]], list[list[torch.Tensor]], list[np.ndarray]]:
    values: dict[str, list[float]] = {"recon_l1": [], "cycle_l1": [], "pixel_accuracy": [], "l1": [], "psnr": []}
    rows: list[list[torch.Tensor]] = []
    features: list[np.ndarray] = []
    for batch in _scaled_batches(source_files, translator.channels[source], scale, batch_size):
        x = torch.stack([pil_to_tensor(image) for _, image in batch])
        translated = translator.translate_tensor(x, source, target)
        cycled = translator.translate_tensor(translated, target, source)
        reconstructed = translator.translate_tensor(x, source, source)
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


def ordered_pairs(domains: dict[str, str]) -> list[tuple[str, str]]:
    """Every (source, target) of distinct domain slots, in domain order."""
    return [(source, target) for source in domains for target in domains if source != target]


def pair_name(source: str, target: str) -> str:
    """The metric prefix of a translation: ``a2b`` for two-domain models, ``day2night`` for N domains."""
    return f"{source}2{target}"


def pairs_table(metrics: dict[str, float], domains: dict[str, str]) -> str:
    """Markdown tables, source domain by row, target by column, of each paired metric that was measured."""
    lines = []
    for name in PAIRED_METRICS:
        if not any(f"{pair_name(s, t)}/{name}" in metrics for s, t in ordered_pairs(domains)):
            continue
        lines += [f"{name} (row: source, column: target)", "",
                  "| source | " + " | ".join(domains.values()) + " |", "|---" * (len(domains) + 1) + "|"]
        for source, source_name in domains.items():
            cells = ["" if source == target else f"{metrics.get(f'{pair_name(source, target)}/{name}', float('nan')):.4f}"
                     for target in domains]
            lines.append(f"| {source_name} | " + " | ".join(cells) + " |")
        lines.append("")
        if f"mean/{name}" in metrics:
            lines += [f"mean over the {len(ordered_pairs(domains))} ordered pairs: {metrics[f'mean/{name}']:.4f}", ""]
    return "\n".join(lines)


def _domain_grids(pair_rows: dict[tuple[str, str], list[list[torch.Tensor]]], domains: dict[str, str],
                  folder: Path) -> list[Path]:
    """One grid per source domain: input, then per other domain its translation (and the truth, when every row has one)."""
    grids = []
    for source, source_name in domains.items():
        targets = [target for target in domains if target != source]
        count = min(len(pair_rows[source, target]) for target in targets)
        if not count:
            continue
        with_truth = all(len(row) == 4 for target in targets for row in pair_rows[source, target][:count])
        headings: list[Any] = [source_name]
        for target in targets:
            headings.append(domains[target])
            if with_truth:
                headings.append((f"true {domains[target]}", "truth"))
        rows = []
        for index in range(count):
            row = [pair_rows[source, targets[0]][index][0]]
            for target in targets:
                pair_row = pair_rows[source, target][index]
                row += [pair_row[1], pair_row[3]] if with_truth else [pair_row[1]]
            rows.append(row)
        grids.append(save_grid(rows, folder / f"{source}.png", headings=headings,
                               row_labels=[f"{source_name} >"] * count))
    return grids


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
    classifier_domain: str | None = None,
    batch_size: int = 8,
) -> EvaluationResult:
    """Evaluate ``translator`` on ``cfg.data.root`` / ``cfg.evaluation.split``; see the module docstring.

    ``scale``: :func:`training_scale` of the model's own configuration. ``model_source``:
    the checkpoint path or model URI, recorded in ``evaluation.json``.
    """
    out_dir = Path(out_dir)
    data, settings = cfg.data, cfg.evaluation
    domains = cfg.domains()
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
    pair_rows: dict[tuple[str, str], list[list[torch.Tensor]]] = {}
    for source, target in ordered_pairs(domains):
        pair = pair_name(source, target)
        truth_by_key = {_pair_key(path.relative_to(folders[target])): path for path in files[target]}
        values, rows, features = _evaluate_pair(
            translator, source, target, files[source], folders[source], truth_by_key, scale,
            settings.pixel_tolerance, settings.report_images, batch_size, extractor,
        )
        metrics[f"{pair}/images"] = float(len(files[source]))
        metrics[f"{pair}/recon_l1"] = _mean(values["recon_l1"])
        metrics[f"{pair}/cycle_l1"] = _mean(values["cycle_l1"])
        if values["pixel_accuracy"]:
            metrics[f"{pair}/paired_images"] = float(len(values["pixel_accuracy"]))
            for name in PAIRED_METRICS:
                metrics[f"{pair}/{name}"] = _mean(values[name])
        else:
            notes.append(f"{pair}: paired metrics skipped: no image of {folders[source]} has a file of the "
                         f"same name in {folders[target]}")
        if extractor is not None:
            if len(files[source]) < 2 or len(files[target]) < 2:
                notes.append(f"{pair}: fid/kid skipped: they need at least 2 images in each domain")
            else:
                real = _real_features(files[target], translator.channels[target], scale, batch_size, extractor)
                fake = np.concatenate(features)
                metrics[f"{pair}/fid"] = frechet_distance(real, fake)
                metrics[f"{pair}/kid"] = kernel_distance(real, fake)
        pair_rows[source, target] = rows
        if rows and len(domains) == 2:
            source_name, target_name = domains[source], domains[target]
            headings = [source_name, ("translation", "transl."), "cycle", (f"true {target_name}", "truth")]
            report.append(save_grid(rows, out_dir / "report" / f"{pair}.png", headings=headings,
                                    row_labels=[f"{source_name} > {target_name}"] * len(rows)))
    if len(domains) > 2:
        report += _domain_grids(pair_rows, domains, out_dir / "report")
        for name in ("recon_l1", "cycle_l1", *PAIRED_METRICS, "fid", "kid"):
            per_pair = [metrics.get(f"{pair_name(s, t)}/{name}") for s, t in ordered_pairs(domains)]
            if None not in per_pair:  # a mean only of what every pair has
                metrics[f"mean/{name}"] = _mean(per_pair)
        report.append(atomic_write(out_dir / PAIRS_TABLE, pairs_table(metrics, domains)))

    if classifier is not None:
        classifier_domain = classifier_domain or list(domains)[-1]
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
