"""Shared fixtures: real data from ../shared/data and tiny model configurations."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from preprocessing.digits import ingest_digits
from preprocessing.pipeline import IngestOptions
from unit_core.config import UnitConfig, load_config

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("UNIT_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").is_file():
        pytest.fail(f"real test data not found at {SHARED_DATA} (set UNIT_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def street_root(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real GTA-V and Cityscapes frames as a two-domain data set (<root>/<domain>/train)."""
    return link_street_frames(shared_data, tmp_path_factory.mktemp("street"))


def link_street_frames(shared_data: Path, root: Path) -> Path:
    """``root``/gta/train and ``root``/city/train as links to the real frames."""
    for domain, folder in (("gta", "gta"), ("city", "cityscapes")):
        (root / domain).mkdir()
        (root / domain / "train").symlink_to(shared_data / "street" / "gta2city" / folder)
    return root


@pytest.fixture(scope="session")
def digits_root(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 300 real MNIST and USPS digits of each split, 32 px like the presets."""
    root = tmp_path_factory.mktemp("digits")
    digits = shared_data / "digits"
    ingest_digits(root, mnist=digits / "mnist", usps=digits / "usps" / "usps.h5", size=32, limit=300,
                  options=IngestOptions(workers=1, progress=False))
    return root


def tiny_config(root: Path, out_dir: Path, *overrides: str) -> UnitConfig:
    """Widths 8, 32 px: a real UNIT at test size."""
    return load_config(
        None,
        [
            f"data.root={root}", "data.domain_a=gta", "data.domain_b=city", "data.image_size=32", "data.load_size=40",
            "model.width=8", "model.dis_width=8", "model.dis_layers=3", "model.res_blocks=2",
            f"train.out_dir={out_dir}", "train.sample_count=2", "train.log_every=5", "train.checkpoint_every=1000",
            "train.deterministic=true", "train.device=cpu",
            *overrides,
        ],
    )


def adaptation_config(root: Path, out_dir: Path, *overrides: str) -> UnitConfig:
    """MNIST (a, labelled) -> USPS (b): the preset's variant (tied D trunk, classifier on source and translated source
    digits, batch norm) at test size."""
    return load_config(None, [
        f"data.root={root}", "data.domain_a=mnist", "data.domain_b=usps", "data.image_size=32", "data.flip=false",
        "model.channels_a=1", "model.channels_b=1", "model.width=8", "model.res_blocks=1", "model.n_shared=1",
        "model.norm=batch", "model.dis_width=16", "model.dis_layers=3", "model.dis_shared_layers=2", "model.num_classes=10",
        "loss.cycle=0", "loss.kl_cycle=0", "loss.gan=1", "loss.classifier_translated=10", "optim.lr=0.003",
        f"train.out_dir={out_dir}", "train.batch_size=16", "train.sample_count=2", "train.log_every=50",
        "train.checkpoint_every=75", "train.deterministic=true", "train.device=cpu", "evaluation.split=test",
        *overrides,
    ])
