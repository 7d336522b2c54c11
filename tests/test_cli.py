"""The ``unit`` command line on real images: train, then translate frames of odd sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import adaptation_config
from unit_core.training import fit

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "data.domain_a=gta", "data.domain_b=city", "data.image_size=32", "data.load_size=40", "model.width=8",
    "model.dis_width=8", "model.dis_layers=3", "model.res_blocks=2", "train.max_steps=4", "train.log_every=2",
    "train.checkpoint_every=2", "train.sample_count=2", "train.device=cpu",
]


def unit(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unit_cli", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def with_sets(values: list[str]) -> list[str]:
    return [part for value in values for part in ("--set", value)]


@pytest.fixture(scope="module")
def trained(street_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    result = unit("train", "--no-progress", *with_sets([f"data.root={street_root}", f"train.out_dir={out}", *TINY]))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["step"] == 4
    return Path(summary["checkpoint"])


def test_train_writes_checkpoints_samples_and_log_and_resumes(trained: Path, street_root: Path):
    run_dir = trained.parent.parent
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt")) == ["latest.pt", "step_00000002.pt", "step_00000004.pt"]
    grid = Image.open(run_dir / "samples" / "step_00000004.png")
    # 4 columns of 32 px tiles, 2 rows per direction, with headings above and row labels at the left
    assert grid.size[0] > 4 * 32 + 3 * 2 and grid.size[1] > 4 * 32 + 3 * 2
    more = unit("train", "--no-progress", "--resume",
                *with_sets([f"data.root={street_root}", f"train.out_dir={run_dir}", *TINY, "train.max_steps=6"]))
    assert more.returncode == 0, more.stderr
    assert json.loads(more.stdout.strip().splitlines()[-1])["step"] == 6


def test_translate_keeps_the_size_of_real_frames(trained: Path, shared_data: Path, tmp_path: Path):
    gta = shared_data / "street" / "gta2city" / "gta"
    city = shared_data / "street" / "gta2city" / "cityscapes" / "aachen_000000_000019_leftImg8bit.jpg"
    out = tmp_path / "out"
    result = unit("translate", "--checkpoint", str(trained), "--direction", "a2b", str(gta), str(city), "--out", str(out))
    assert result.returncode == 0, result.stderr
    for source in [*sorted(gta.iterdir()), city]:
        produced = Image.open(out / (source.stem + ".png"))
        assert produced.size == Image.open(source).size == ((933, 512) if source.parent == gta else (1024, 512))
        assert produced.mode == "RGB"
        assert np.asarray(produced).std() > 0


def test_translate_in_bf16_stays_within_a_few_grey_levels_of_fp32(trained: Path, shared_data: Path, tmp_path: Path):
    frame = shared_data / "street" / "gta2city" / "gta" / "00001.jpg"
    outputs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        result = unit("translate", "--checkpoint", str(trained), "--direction", "a2b", str(frame), "--out", str(out),
                      "--precision", precision)
        assert result.returncode == 0, result.stderr
        assert f"{precision}) to" in result.stdout
        outputs[precision] = np.asarray(Image.open(out / "00001.png"), dtype=np.int16)
    difference = np.abs(outputs["fp32"] - outputs["bf16"])
    assert 0 < difference.mean() < 3 and np.percentile(difference, 99) <= 8


def test_automatic_precision_is_bf16_only_where_the_cpu_has_bf16_instructions():
    from unit_core.trainer import cpu_has_bf16
    from unit_core.translate import autocast_dtype_for

    sapphire = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
    skylake = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n"
    assert cpu_has_bf16(sapphire) and not cpu_has_bf16(skylake) and not cpu_has_bf16("")
    cpu = torch.device("cpu")
    assert autocast_dtype_for("fp32", cpu) is None and autocast_dtype_for("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        autocast_dtype_for("fp8", cpu)


def test_translate_handles_odd_modes_and_reports_unreadable_files(trained: Path, tmp_path: Path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (21, 37), dtype=np.uint8), "L").save(inputs / "gray.png")
    rgba = Image.fromarray(rng.integers(0, 255, (30, 30, 4), dtype=np.uint8), "RGBA")
    rgba.save(inputs / "alpha.png")
    Image.fromarray(rng.integers(0, 255, (17, 9, 3), dtype=np.uint8)).convert("P").save(inputs / "palette.png")
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out"
    result = unit("translate", "--checkpoint", str(trained), "--direction", "b2a", str(inputs), "--out", str(out))
    assert result.returncode == 1
    assert "broken.jpg: cannot read image" in result.stdout
    assert Image.open(out / "gray.png").size == (37, 21)
    alpha = Image.open(out / "alpha.png")
    assert alpha.mode == "RGBA" and np.array_equal(np.asarray(alpha)[:, :, 3], np.asarray(rgba)[:, :, 3])
    assert Image.open(out / "palette.png").size == (9, 17)
    assert not (out / "broken.png").exists()


def test_translate_never_writes_over_inputs_or_files_it_did_not_write(trained: Path, tmp_path: Path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(folder / "photo.png")
    original = (folder / "photo.png").read_bytes()
    result = unit("translate", "--checkpoint", str(trained), "--direction", "a2b", str(folder / "photo.png"), "--out", str(folder))
    assert result.returncode == 2 and "would overwrite an input" in result.stderr
    assert (folder / "photo.png").read_bytes() == original
    out = tmp_path / "out"
    out.mkdir()
    (out / "photo.png").write_bytes(b"someone else's file")
    result = unit("translate", "--checkpoint", str(trained), "--direction", "a2b", str(folder), "--out", str(out))
    assert result.returncode == 2 and "exists and was not written by unit translate" in result.stderr
    assert (out / "photo.png").read_bytes() == b"someone else's file"
    result = unit("translate", "--checkpoint", str(trained), "--direction", "a2b", str(folder), "--out", str(out), "--overwrite")
    assert result.returncode == 0, result.stderr
    assert Image.open(out / "photo.png").size == (24, 24)
    again = unit("translate", "--checkpoint", str(trained), "--direction", "b2a", str(folder), "--out", str(out))
    assert again.returncode == 0, again.stderr  # its own earlier output may be replaced


def test_translate_reports_every_input_it_cannot_translate_and_goes_on(trained: Path, tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (20, 28, 3), dtype=np.uint8)).convert("P").save(folder / "anim.gif")
    Image.fromarray(rng.integers(0, 255, (20, 28, 3), dtype=np.uint8)).save(folder / "plain.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    (folder / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    (tmp_path / "named-loop.png").symlink_to(tmp_path / "named-loop.png")
    image = tmp_path / "single.png"
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    result = unit("translate", "--checkpoint", str(trained), "--direction", "a2b", str(folder), str(tmp_path / "named-loop.png"),
                  str(tmp_path / "absent.png"), str(image), "--out", str(out))
    assert result.returncode == 1, result.stderr
    for expected in ("notes.txt", "loop.png: not a readable file", "gone.jpg: not a readable file",
                     "named-loop.png: not a readable file", "absent.png: no such file or folder"):
        assert expected in result.stdout, (expected, result.stdout)
    assert Image.open(out / "anim.png").size == (28, 20) and (out / "plain.png").is_file() and (out / "single.png").is_file()
    assert "wrote 3 image(s)" in result.stdout


def test_translate_with_a_vector_code_model_skips_images_of_other_sizes(digits_root: Path, tmp_path: Path):
    checkpoint = fit(adaptation_config(digits_root, tmp_path / "run", "model.generator=conv32", "train.max_steps=2"),
                     progress=False).checkpoint
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(folder / "fits.png")
    Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(folder / "mnist28.png")
    out = tmp_path / "out"
    result = unit("translate", "--checkpoint", str(checkpoint), "--direction", "a2b", str(folder), "--out", str(out))
    assert result.returncode == 1, result.stderr
    assert f"skipped {folder / 'mnist28.png'}: this model's generator (conv32) translates 32x32 images only, got 28x28" \
        in result.stdout, result.stdout
    assert Image.open(out / "fits.png").size == (32, 32) and not (out / "mnist28.png").exists()
    assert "wrote 1 image(s)" in result.stdout


def test_inconsistent_checkpoints_give_one_clear_line_in_every_command(trained: Path, street_root: Path, tmp_path: Path):
    """Weights that do not fit the stored configuration, or no generator at all: the file and the problem, no traceback."""
    import torch

    payload = torch.load(trained, weights_only=True)
    wrong_config = tmp_path / "wrong-config.pt"
    torch.save({**payload, "config": {**payload["config"], "model": {**payload["config"]["model"], "width": 16}}}, wrong_config)
    no_generator = tmp_path / "no-generator.pt"
    torch.save({**payload, "networks": {"dis": payload["networks"]["dis"]}}, no_generator)
    expected = {wrong_config: "'gen' weights do not fit the checkpoint's stored model configuration",
                no_generator: "checkpoint holds no 'gen' weights (networks: dis)"}
    image = next((street_root / "gta" / "train").iterdir())
    for checkpoint, message in expected.items():
        commands = {
            "translate": ["translate", "--checkpoint", str(checkpoint), "--direction", "a2b", str(image), "--out", str(tmp_path / "t")],
            "evaluate": ["evaluate", "--checkpoint", str(checkpoint), "--data", str(street_root), "--out", str(tmp_path / "e")],
        }
        for name, argv in commands.items():
            result = unit(*argv)
            assert result.returncode == 2, (name, result.stderr)
            assert str(checkpoint) in result.stderr and message in result.stderr, (name, result.stderr)
            assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, (name, result.stderr)


def test_errors_are_clear_and_name_the_culprit(tmp_path: Path, shared_data: Path):
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"definitely not a checkpoint")
    result = unit("translate", "--checkpoint", str(bogus), "--direction", "a2b", str(shared_data / "celeba"), "--out", str(tmp_path))
    assert result.returncode == 2 and str(bogus) in result.stderr and "Traceback" not in result.stderr
    result = unit("train", "--set", "train.max_step=3")
    assert result.returncode == 2 and "train.max_step: unknown key" in result.stderr
    result = unit("train", "--set", f"data.root={tmp_path}", "--set", f"train.out_dir={tmp_path / 'run'}")
    assert result.returncode == 2 and f"{tmp_path}: no folder for domain 'day'" in result.stderr


def test_train_with_tracking_logs_the_run_to_mlflow(street_root: Path, tmp_path: Path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "unit_cli", "train", "--no-progress", "--track", "--params", str(REPO / "params.yaml"),
         *with_sets([f"data.root={street_root}", f"train.out_dir={out}", *TINY, "tracking.experiment=cli-test"])],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("cli-test").experiment_id])
    assert run.data.params["model.width"] == "8"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "gen/total")] == [2, 4]
