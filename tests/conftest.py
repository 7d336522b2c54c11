"""Shared fixtures: real data from ../shared/data and tiny model configurations."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
    root = tmp_path_factory.mktemp("street")
    for domain, folder in (("gta", "gta"), ("city", "cityscapes")):
        (root / domain).mkdir()
        (root / domain / "train").symlink_to(shared_data / "street" / "gta2city" / folder)
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
