"""Training on real street frames, checkpoints, exact resume, and refusal of bad checkpoint files."""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_config
from unit_core import checkpoint as checkpoint_module
from unit_core.checkpoint import CheckpointError, load_checkpoint
from unit_core.data import fixed_samples
from unit_core.images import load_image, save_grid
from unit_core.losses import l1_loss
from unit_core.trainer import UNITTrainer
from unit_core.training import SAMPLE_HEADINGS, fit
from unit_core.translate import Translator


def reconstruction_l1(trainer: UNITTrainer, cfg) -> tuple[float, float]:
    x_a = fixed_samples(cfg.data.root, "gta", 3, cfg.data, 5)
    x_b = fixed_samples(cfg.data.root, "city", 3, cfg.data, 5)
    trainer.gen.eval()
    with torch.no_grad():
        streams = trainer.gen({"a": x_a, "b": x_b}, {"a": "b", "b": "a"})
    return l1_loss(streams["recon/a"], x_a).item(), l1_loss(streams["recon/b"], x_b).item()


@pytest.mark.slow
def test_brief_training_on_real_frames_lowers_reconstruction_error(street_root, tmp_path):
    # Measured on a 2-core CPU, 400 steps (~15 s): L1 0.48 -> ~0.3 (GTA) and 0.50 -> ~0.13 (Cityscapes).
    cfg = tiny_config(street_root, tmp_path / "run", "train.max_steps=400", "train.log_every=100")
    before = reconstruction_l1(UNITTrainer(cfg), cfg)
    result = fit(cfg, progress=False)
    trained = UNITTrainer(cfg)
    trained.load_state_dict(load_checkpoint(result.checkpoint))
    after = reconstruction_l1(trained, cfg)
    assert after[0] < 0.75 * before[0] and after[1] < 0.5 * before[1], (before, after)
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [100, 200, 300, 400]
    assert log[-1]["pairs_per_sec"] > 0 and log[-1]["gen/recon_a"] < log[0]["gen/recon_a"]
    assert result.grid.is_file() and result.grid.stat().st_size > 0


def all_state(trainer: UNITTrainer) -> dict[str, torch.Tensor]:
    state = {f"gen.{k}": v for k, v in trainer.gen.state_dict().items()}
    state |= {f"dis.{k}": v for k, v in trainer.dis.state_dict().items()}
    for name, opt in (("gen_opt", trainer.gen_opt), ("dis_opt", trainer.dis_opt)):
        for index, param_state in opt.state_dict()["state"].items():
            state |= {f"{name}.{index}.{k}": v for k, v in param_state.items() if isinstance(v, torch.Tensor)}
    return state


# Spectral normalisation keeps power-iteration vectors beside the weights: they must resume too.
@pytest.mark.parametrize("model", [(), ("model.dis_norm=spectral",)], ids=["paper", "spectral-discriminators"])
def test_resume_is_bit_exact(street_root, tmp_path, model):
    straight_cfg = tiny_config(street_root, tmp_path / "straight", "train.max_steps=6", *model)
    fit(straight_cfg, progress=False)
    straight = UNITTrainer(straight_cfg)
    straight.load_state_dict(load_checkpoint(tmp_path / "straight" / "checkpoints" / "latest.pt"))

    split_dir = tmp_path / "split"
    fit(tiny_config(street_root, split_dir, "train.max_steps=3", *model), progress=False)
    torch.manual_seed(12345)  # disturb the global RNG: resume must restore it
    fit(tiny_config(street_root, split_dir, "train.max_steps=6", *model), resume=True, progress=False)
    resumed = UNITTrainer(straight_cfg)
    resumed.load_state_dict(load_checkpoint(split_dir / "checkpoints" / "latest.pt"))

    assert resumed.step == straight.step == 6
    a, b = all_state(straight), all_state(resumed)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    # the log reads as one run
    steps = [json.loads(line)["step"] for line in (split_dir / "train_log.jsonl").read_text().splitlines()]
    assert steps == [5, 6] or steps == [3, 5, 6]


def test_checkpoint_round_trip_translates_identically(street_root, tmp_path):
    cfg = tiny_config(street_root, tmp_path / "run", "train.max_steps=2")
    trainer = UNITTrainer(cfg)
    for _ in range(2):
        trainer.train_step([torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1])
    path = checkpoint_module.atomic_torch_save(
        checkpoint_module.make_checkpoint(cfg.to_dict(), trainer.step, trainer.state_dict()), tmp_path / "c.pt"
    )
    x = torch.rand(2, 3, 36, 52) * 2 - 1
    trainer.gen.eval()
    with torch.no_grad():
        expected = trainer.gen.translate(x, "a", "b")
    restored = Translator.from_checkpoint(path, device="cpu")
    assert torch.equal(restored.translate_tensor(x, "a", "b"), expected)
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_crash_while_saving_keeps_previous_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "latest.pt"
    checkpoint_module.atomic_torch_save({"format": "x", "value": torch.ones(3)}, target)
    before = target.read_bytes()

    def crash(payload, handle):
        handle.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", crash)
    with pytest.raises(CheckpointError, match=f"{target}: cannot write the checkpoint: disk full; the previous"):
        checkpoint_module.atomic_torch_save({"value": torch.zeros(3)}, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_bad_checkpoint_files_fail_cleanly(street_root, tmp_path):
    cfg = tiny_config(street_root, tmp_path / "run", "train.max_steps=1")
    good = fit(cfg, progress=False).checkpoint
    data = good.read_bytes()

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(4096))
    # Random bytes, bytes that open like a legacy pickle, and a real archive with its pickle
    # scrambled: torch's own readers fail on these with IndexError, KeyError and the like.
    generator = random.Random(0)
    fuzzed = []
    for index in range(60):
        blob = bytes(generator.randrange(256) for _ in range(512))
        fuzzed_path = tmp_path / f"fuzzed{index}.pt"
        fuzzed_path.write_bytes(blob if index % 2 else b"\x80\x02" + blob)
        fuzzed.append(fuzzed_path)
    pickle_offset = data.index(b"data.pkl") + len(b"data.pkl")
    for index in range(20):
        scrambled = bytearray(data)
        for offset in range(pickle_offset + 40, pickle_offset + 400, 7):
            scrambled[offset] = generator.randrange(256)
        fuzzed_path = tmp_path / f"scrambled{index}.pt"
        fuzzed_path.write_bytes(bytes(scrambled))
        fuzzed.append(fuzzed_path)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, foreign)
    marker = tmp_path / "pwned"
    malicious = tmp_path / "malicious.pt"
    torch.save({"format": "unit-checkpoint", "payload": _Exploit(marker)}, malicious)
    raw_pickle = tmp_path / "raw.pkl"
    raw_pickle.write_bytes(pickle.dumps(_Exploit(marker)))
    newer = tmp_path / "newer.pt"
    payload = torch.load(good, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, newer)
    text_version = tmp_path / "text-version.pt"
    payload["format_version"] = "1"
    torch.save(payload, text_version)

    cases = {
        truncated: "unreadable or truncated",
        empty: "empty file",
        garbage: None,
        foreign: "not a UNIT checkpoint",
        malicious: "refused to load",
        raw_pickle: None,
        newer: "newer than this program supports",
        text_version: "format version '1' is not a whole number",
        tmp_path / "missing.pt": "no such checkpoint",
        **{path: None for path in fuzzed},
    }
    for path, message in cases.items():
        with pytest.raises(CheckpointError, match=message) as info:
            load_checkpoint(path)
        assert str(path) in str(info.value)
    assert not marker.exists(), "loading a checkpoint executed code"


def test_existing_run_is_not_overwritten_and_architecture_is_checked_on_resume(street_root, tmp_path):
    cfg = tiny_config(street_root, tmp_path / "run", "train.max_steps=1")
    first = fit(cfg, progress=False).checkpoint.read_bytes()
    with pytest.raises(CheckpointError, match="already holds a run"):
        fit(cfg, progress=False)
    wider = tiny_config(street_root, tmp_path / "run", "train.max_steps=2", "model.width=16")
    with pytest.raises(CheckpointError, match="model.width: checkpoint 8 vs params 16"):
        fit(wider, resume=True, progress=False)
    assert (tmp_path / "run" / "checkpoints" / "latest.pt").read_bytes() == first


def test_multi_scale_lsgan_bf16_channels_last_runs(street_root, tmp_path):
    cfg = tiny_config(street_root, tmp_path / "run", "train.max_steps=2", "model.dis_scales=3", "loss.gan_mode=lsgan",
                      "train.precision=bf16", "train.channels_last=true", "train.deterministic=false",
                      "optim.lr_policy=linear")
    result = fit(cfg, progress=False)
    assert all(torch.isfinite(torch.tensor(v)) for v in result.last_metrics.values())
    assert result.last_metrics["lr"] == pytest.approx(cfg.optim.lr * 0.5)


@pytest.mark.parametrize("has_bf16", [False, True])
def test_bf16_on_a_cpu_without_bf16_instructions_warns(tmp_path, monkeypatch, has_bf16):
    # Emulated bf16 ran a digits step 11x slower than fp32 on a 2-core Zen 3 CPU (docs/performance.md).
    monkeypatch.setattr("unit_core.trainer.cpu_has_bf16", lambda: has_bf16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        UNITTrainer(tiny_config(tmp_path, tmp_path / "run", "train.precision=bf16"))
        UNITTrainer(tiny_config(tmp_path, tmp_path / "run", "train.precision=fp32"))
    messages = [str(w.message) for w in caught if "bf16 instructions" in str(w.message)]
    assert len(messages) == (0 if has_bf16 else 1)
    if messages:
        assert "train.precision=fp32" in messages[0]


def test_jpegs_are_decoded_at_reduced_scale_only_down_to_the_training_size(shared_data, tmp_path):
    frame = shared_data / "street" / "gta2city" / "cityscapes" / "aachen_000000_000019_leftImg8bit.jpg"
    full = load_image(frame, 3)
    assert full.size == (1024, 512)
    assert load_image(frame, 3, shorter_side=256).size == (512, 256)  # 1/2-scale decode
    assert load_image(frame, 3, shorter_side=200).size == (512, 256)  # never below the size asked for
    assert load_image(frame, 3, shorter_side=64).size == (128, 64)  # 1/8, libjpeg's smallest
    assert load_image(frame, 3, shorter_side=600).size == (1024, 512)  # no upscaling by decoding
    # Against a full decode resized to the same size: a different, equally valid downsampling.
    reference = np.asarray(full.resize((512, 256), Image.Resampling.BICUBIC), dtype=np.float64)
    reduced = np.asarray(load_image(frame, 3, shorter_side=256), dtype=np.float64)
    assert 10 * np.log10(255**2 / np.mean((reference - reduced) ** 2)) > 40  # measured 46.8 dB
    png = tmp_path / "frame.png"
    full.save(png)
    assert load_image(png, 3, shorter_side=64).size == (1024, 512)  # other formats decode every pixel


def test_resume_survives_a_torn_last_log_line(street_root, tmp_path):
    run = tmp_path / "run"
    fit(tiny_config(street_root, run, "train.max_steps=4", "train.log_every=2", "train.checkpoint_every=4"), progress=False)
    log = run / "train_log.jsonl"
    with log.open("a", encoding="utf-8") as handle:
        handle.write('{"step": 6, "gen/total": 1.2')  # a crash while appending
    with pytest.warns(UserWarning, match=rf"{re.escape(str(log))}: dropped 1 torn line\(s\) \(line 3\)"):
        result = fit(tiny_config(street_root, run, "train.max_steps=6", "train.log_every=2", "train.checkpoint_every=4"),
                     resume=True, progress=False)
    assert result.step == 6
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [2, 4, 6]


def test_a_domain_with_a_handful_of_images_draws_a_warning(street_root, tmp_path):
    with pytest.warns(UserWarning, match=r"gta/train: only 5 training image\(s\) in domain 'gta'"):
        fit(tiny_config(street_root, tmp_path / "run", "train.max_steps=1"), progress=False)


def test_grids_carry_headings_and_row_labels_around_unchanged_tiles(tmp_path):
    rng = torch.Generator().manual_seed(0)
    rows = [[torch.rand(3, 24, 24, generator=rng) * 2 - 1 for _ in range(4)] for _ in range(2)]
    plain = np.asarray(Image.open(save_grid(rows, tmp_path / "plain.png")))
    labelled = np.asarray(Image.open(save_grid(rows, tmp_path / "labelled.png", headings=SAMPLE_HEADINGS,
                                               row_labels=["day > night", "night > day"])))
    top, left = labelled.shape[0] - plain.shape[0], labelled.shape[1] - plain.shape[1]
    assert top > 0 and left > 0
    assert np.array_equal(labelled[top:, left:], plain), "the tiles themselves are untouched"
    assert (labelled[:top, left:] < 128).any(), "headings are drawn above the columns"
    assert (labelled[top:, :left] < 128).any(), "labels are drawn left of the rows"
    assert not (labelled[:top, :left] < 128).any(), "the corner stays empty"
