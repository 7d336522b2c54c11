"""The on-disk layouts of a data set and of a training run: one home for their rules.

A data set: ``<root>/<domain>/<split>/<file>`` (or CycleGAN's ``<root>/<split><domain>/<file>``),
with ``manifest.jsonl`` and ``report.json`` at the root and, for labelled domains,
``<root>/<domain>/labels-<split>.csv``. :mod:`preprocessing.output` writes it; training,
evaluation and the distributed runner read it through these functions. A run folder:
:func:`run_paths`.
"""

from __future__ import annotations

import csv
from pathlib import Path

from unit_core.images import IMAGE_EXTENSIONS, list_images

MANIFEST_NAME = "manifest.jsonl"
REPORT_NAME = "report.json"
#: Split folders: paired splits hold the same file names in every domain; val_paired is for choosing settings.
SPLITS = ("train", "test", "test_paired", "val_paired")


def run_paths(out_dir: str | Path) -> dict[str, Path]:
    """The files of a run folder (``train.out_dir``): its configuration, log, checkpoints and sample grids."""
    out_dir = Path(out_dir)
    return {
        "config": out_dir / "config.yaml",
        "log": out_dir / "train_log.jsonl",
        "checkpoints": out_dir / "checkpoints",
        "latest": out_dir / "checkpoints" / "latest.pt",
        "samples": out_dir / "samples",
    }


def domain_folder(root: str | Path, domain: str, split: str) -> Path:
    """``<root>/<domain>/<split>`` (ingestion layout) or ``<root>/<split><domain>`` (CycleGAN layout)."""
    root = Path(root)
    for candidate in (root / domain / split, root / f"{split}{domain}"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"{root}: no folder for domain {domain!r}, split {split!r}: expected {root / domain / split} "
        f"or {root / (split + domain)}"
    )


def domain_images(root: str | Path, domain: str, split: str) -> list[Path]:
    folder = domain_folder(root, domain, split)
    files = list_images(folder)
    if not files:
        raise FileNotFoundError(f"{folder}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return files


def labels_name(domain: str, split: str) -> str:
    """``<domain>/labels-<split>.csv``: the class labels of a split, relative to the data set's root."""
    return f"{domain}/labels-{split}.csv"


def labels_file(root: str | Path, domain: str, split: str) -> Path:
    return Path(root) / labels_name(domain, split)


def read_labels(path: Path) -> dict[str, int]:
    """``file,label`` rows (the digits ingestion's ``labels-<split>.csv``) as {file name: label}."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no labels file (expected 'file,label' rows)")
    labels: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header != ["file", "label"]:
            raise ValueError(f"{path}: line 1: expected the header 'file,label', got {header!r}")
        for number, row in enumerate(reader, 2):
            if len(row) != 2 or not row[1].strip().lstrip("-").isdigit():
                raise ValueError(f"{path}: line {number}: expected 'file,label' with an integer label, got {row!r}")
            labels[row[0]] = int(row[1])
    if not labels:
        raise ValueError(f"{path}: no labelled files")
    return labels
