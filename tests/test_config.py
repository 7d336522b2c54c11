"""The typed configuration: params.yaml, overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from unit_core.config import ConfigError, UnitConfig, load_config

REPO = Path(__file__).resolve().parents[1]


def test_repository_params_match_the_defaults_of_the_paper():
    cfg = load_config(REPO / "params.yaml")
    assert cfg == UnitConfig(), "params.yaml and the typed defaults disagree"
    # every setting is spelled out in params.yaml, so DVC tracks it
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert set(raw) == set(UnitConfig.model_fields)
    for section, fields in raw.items():
        if isinstance(fields, dict):
            expected = set(type(getattr(cfg, section)).model_fields)
            assert set(fields) == expected, f"params.yaml {section}: missing {expected - set(fields)}"
    assert (cfg.loss.gan, cfg.loss.kl, cfg.loss.recon, cfg.loss.kl_cycle, cfg.loss.cycle) == (10, 0.1, 100, 0.1, 100)
    assert (cfg.optim.lr, cfg.optim.beta1, cfg.optim.beta2) == (1e-4, 0.5, 0.999)
    assert (cfg.model.width, cfg.model.res_blocks, cfg.model.n_shared, cfg.model.dis_layers) == (64, 4, 1, 5)


def test_overrides_are_parsed_as_yaml():
    cfg = load_config(REPO / "params.yaml", ["train.max_steps=20", "model.n_shared=0", "train.channels_last=true",
                                             "data.root=/data/x y"])
    assert cfg.train.max_steps == 20 and cfg.model.n_shared == 0 and cfg.train.channels_last is True
    assert cfg.data.root == "/data/x y"
    assert cfg.flat()["train.max_steps"] == 20


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.max_step=3"], "train.max_step: unknown key"),
        (["train.batch_size=0"], "train.batch_size: Input should be greater than or equal to 1"),
        (["loss.gan_mode=wgan"], "loss.gan_mode: Input should be 'bce', 'lsgan' or 'hinge'"),
        (["data.image_size=30"], "image_size (30) must be a multiple of 4"),
        (["model.n_shared=5"], "n_shared (5) cannot exceed res_blocks (4)"),
        (["model.channels_a=2"], "model.channels_a"),
        (["nonsense"], "expected key=value"),
        (["seed.x=1"], "seed is not a section"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(REPO / "params.yaml", overrides)
    assert message in str(info.value)


def test_bad_files_name_the_file(tmp_path):
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match=f"{missing}: cannot read"):
        load_config(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match=f"{broken}: not valid YAML: line 2, column 1: expected ',' or ']'") as info:
        load_config(broken)
    assert "\n" not in str(info.value), "one line, not the parser's context dump"
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(listing)
    typo = tmp_path / "typo.yaml"
    typo.write_text("model:\n  widht: 32\n")
    with pytest.raises(ConfigError, match=f"{typo}: model.widht: unknown key"):
        load_config(typo)


def test_variants_are_the_papers_ablations_and_overrides_come_after_them():
    paper = load_config(REPO / "params.yaml", preset="maps", variant="no-sharing")
    # CycleGAN's objective: no shared blocks, no reconstruction streams, no KL; GAN and cycle L1 remain.
    assert (paper.model.n_shared, paper.loss.recon, paper.loss.kl, paper.loss.kl_cycle) == (0, 0, 0, 0)
    assert paper.loss.cycle > 0 and paper.loss.gan > 0
    keep_vae = load_config(REPO / "params.yaml", preset="maps", variant="no-sharing-keep-vae")
    assert keep_vae.model.n_shared == 0 and keep_vae.loss.recon > 0 and keep_vae.loss.kl > 0
    no_cycle = load_config(REPO / "params.yaml", preset="maps", variant="no-cycle")
    assert (no_cycle.loss.cycle, no_cycle.loss.kl_cycle) == (0, 0) and no_cycle.model.n_shared > 0
    assert load_config(REPO / "params.yaml", preset="maps", variant="full") == load_config(REPO / "params.yaml", preset="maps")
    assert load_config(None, ["loss.cycle=5"], variant="no-cycle").loss.cycle == 5  # --set comes last
    with pytest.raises(ConfigError, match="unknown variant 'cyclegan'"):
        load_config(None, [], variant="cyclegan")
