"""Evaluation: metric functions against hand-computed values, and the driver on real images."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import tiny_config
from unit_core.evaluation import classify_split, evaluate, load_for_evaluation, training_scale
from unit_core.layout import read_labels
from unit_core.images import load_image, pil_to_tensor, tensor_to_uint8
from unit_core.inception import FIDInceptionV3, InceptionWeightsError, load_inception
from unit_core.metrics import (
    PSNR_CAP_DB,
    classification_accuracy,
    frechet_distance,
    kernel_distance,
    l1_error,
    pixel_accuracy,
    psnr,
)
from unit_core.training import fit

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ metric functions
def test_pixel_accuracy_counts_differences_up_to_16_as_correct():
    truth = np.full((2, 3, 3), 100, dtype=np.uint8)
    prediction = truth.copy()
    prediction[0, 0] = (115, 100, 100)  # 15: correct
    prediction[0, 1] = (100, 116, 100)  # 16: correct, the boundary
    prediction[0, 2] = (100, 100, 117)  # 17 in one channel only: wrong
    prediction[1, 0] = (84, 84, 84)  # -16: correct
    prediction[1, 1] = (83, 100, 100)  # -17: wrong
    assert pixel_accuracy(prediction, truth, 16) == pytest.approx(4 / 6)
    assert pixel_accuracy(prediction, truth, 17) == 1.0
    assert pixel_accuracy(prediction, truth, 0) == pytest.approx(1 / 6)
    gray = np.array([[0, 16], [17, 255]], dtype=np.uint8)
    assert pixel_accuracy(gray, np.zeros((2, 2), np.uint8)) == 0.5


def test_l1_and_psnr_by_hand():
    black = np.zeros((1, 2, 3), np.uint8)
    half_white = black.copy()
    half_white[0, 1] = 255
    assert l1_error(half_white, black) == pytest.approx(0.5)
    assert psnr(half_white, black) == pytest.approx(10 * math.log10(2))  # MSE = 255^2 / 2
    assert psnr(black + 1, black) == pytest.approx(20 * math.log10(255))  # MSE = 1
    assert psnr(black, black) == PSNR_CAP_DB
    assert l1_error(black, black) == 0.0


def test_image_metrics_refuse_other_scales_and_shapes():
    image = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="prediction: expected a uint8 image"):
        pixel_accuracy(image.astype(np.float32), image)
    with pytest.raises(ValueError, match=r"differs from truth shape"):
        l1_error(image, image[:2])
    with pytest.raises(ValueError, match="tolerance must be 0..255"):
        pixel_accuracy(image, image, 300)


def test_classification_accuracy_of_logits_predictions_and_tensors():
    logits = [[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]
    assert classification_accuracy(logits, [1, 0, 0]) == pytest.approx(2 / 3)
    assert classification_accuracy(np.array([1, 0, 1]), [1, 0, 0]) == pytest.approx(2 / 3)
    assert classification_accuracy(torch.tensor(logits), torch.tensor([1, 0, 1])) == 1.0
    with pytest.raises(ValueError, match="3 predictions but 2 labels"):
        classification_accuracy(logits, [1, 0])
    with pytest.raises(ValueError, match="class indices"):
        classification_accuracy([0.5, 1.0], [0, 1])
    with pytest.raises(ValueError, match="no samples"):
        classification_accuracy(np.zeros((0, 2)), [])


def test_frechet_and_kernel_distance_by_hand():
    # 1-D: means 1 and 3, unbiased variances 2 and 8: (1-3)^2 + 2 + 8 - 2*sqrt(2*8) = 6.
    assert frechet_distance([[0.0], [2.0]], [[1.0], [5.0]]) == pytest.approx(6.0)
    # Independent dimensions add up.
    a = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    b = np.array([[1.0, 1.0], [5.0, 1.0], [1.0, 5.0], [5.0, 5.0]])
    per_dim_a, per_dim_b = np.var([0, 2, 0, 2], ddof=1), np.var([1, 5, 1, 5], ddof=1)
    expected = 2 * ((1 - 3) ** 2 + per_dim_a + per_dim_b - 2 * math.sqrt(per_dim_a * per_dim_b))
    assert frechet_distance(a, b) == pytest.approx(expected)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # k(x, y) = (x y + 1)^3: within X 1, within Y 27, across (1 + 1 + 8 + 27) / 4.
    assert kernel_distance([[0.0], [1.0]], [[1.0], [2.0]]) == pytest.approx(1 + 27 - 2 * 37 / 4)
    with pytest.raises(ValueError, match="at least 2 feature vectors"):
        kernel_distance([[0.0]], [[1.0], [2.0]])


# ------------------------------------------------------------------------ the driver
@pytest.fixture(scope="module")
def checkpoint(street_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = tiny_config(street_root, tmp_path_factory.mktemp("eval") / "run", "train.max_steps=1")
    return fit(cfg, progress=False).checkpoint


def crop_real_photos(shared_data: Path, folder: Path, count: int, size: tuple[int, int], prefix: str = "frame") -> list[Path]:
    """Real Cityscapes frames resized to ``size`` (W, H), saved as PNG: already at the tiny model's evaluation scale."""
    folder.mkdir(parents=True)
    sources = sorted((shared_data / "street" / "gta2city" / "cityscapes").iterdir())[:count]
    paths = []
    for index, source in enumerate(sources):
        paths.append(folder / f"{prefix}{index}.png")
        Image.open(source).convert("RGB").resize(size, Image.Resampling.BICUBIC).save(paths[-1])
    return paths


def paired_set(root: Path, shared_data: Path, translator, count: int = 3) -> tuple[list[Path], list[Path]]:
    """Domain a: real frames; domain b: their a2b translations (one image at a time), same names."""
    sources = crop_real_photos(shared_data, root / "a" / "test_paired", count, (58, 40))
    (root / "b" / "test_paired").mkdir(parents=True)
    truths = []
    for path in sources:
        translated = translator.translate_images([Image.open(path).convert("RGB")], "a", "b")[0]
        truths.append(root / "b" / "test_paired" / path.name)
        translated.save(truths[-1])
    return sources, truths


def eval_config(root: Path, *overrides: str):
    return tiny_config(root, root / "unused", "data.domain_a=a", "data.domain_b=b", "evaluation.report_images=2", *overrides)


def test_paired_accuracy_is_exact_against_known_truth_and_flips_at_17(checkpoint, shared_data, tmp_path):
    translator, model_cfg = load_for_evaluation(checkpoint, "cpu")
    assert training_scale(model_cfg) == 40
    sources, truths = paired_set(tmp_path / "data", shared_data, translator)
    # batch 1: the same computation as the truth's, so the translations match it bit for bit
    result = evaluate(translator, eval_config(tmp_path / "data"), tmp_path / "out", scale=40, model_source="test", batch_size=1)
    metrics = result.metrics
    assert metrics["a2b/pixel_accuracy"] == 1.0 and metrics["a2b/l1"] == 0.0 and metrics["a2b/psnr"] == PSNR_CAP_DB
    assert metrics["a2b/paired_images"] == metrics["a2b/images"] == 3
    assert 0.0 <= metrics["b2a/pixel_accuracy"] <= 1.0  # a's frames are b's ground truth too

    # Unpaired: cycle L1 as computed by hand from the translator.
    cycles = []
    for path in sources:
        x = pil_to_tensor(load_image(path, 3))[None]
        back = translator.translate_tensor(translator.translate_tensor(x, "a", "b"), "b", "a")
        levels = tensor_to_uint8(back[0]).astype(int) - tensor_to_uint8(x[0]).astype(int)
        cycles.append(np.abs(levels).mean() / 255)
    assert metrics["a2b/cycle_l1"] == pytest.approx(np.mean(cycles), abs=1e-6)
    assert 0.0 < metrics["a2b/recon_l1"] < 1.0

    # Shift a 10x4 block of one truth: by 16 still correct, by 17 wrong.
    for shift, accuracy in ((16, 1.0), (17, 1 - 40 / (58 * 40) / 3)):
        truth = np.asarray(Image.open(truths[0])).astype(np.int16)
        truth[:4, :10, 1] = np.where(truth[:4, :10, 1] >= 128, truth[:4, :10, 1] - shift, truth[:4, :10, 1] + shift)
        shifted = tmp_path / f"shifted{shift}"
        (shifted / "b" / "test_paired").mkdir(parents=True)
        (shifted / "a").symlink_to(tmp_path / "data" / "a", target_is_directory=True)
        for other in truths[1:]:
            (shifted / "b" / "test_paired" / other.name).symlink_to(other)
        Image.fromarray(truth.astype(np.uint8)).save(shifted / "b" / "test_paired" / truths[0].name)
        again = evaluate(translator, eval_config(shifted), tmp_path / f"out{shift}", scale=40, model_source="test", batch_size=1)
        assert again.metrics["a2b/pixel_accuracy"] == pytest.approx(accuracy), shift

    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved == pytest.approx(metrics)
    info = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert info["scale"] == 40 and info["split"] == "test_paired" and info["data_manifest_sha256"] is None
    assert any("inception_weights is empty" in note for note in result.notes)
    # input | translation | cycle | truth, 2 rows, 58x40 tiles with 2 px gaps
    grid = Image.open(tmp_path / "out" / "report" / "a2b.png")
    assert grid.size[0] > 4 * 58 + 3 * 2 and grid.size[1] > 2 * 40 + 2  # plus headings and row labels
    assert [p.name for p in result.report] == ["a2b.png", "b2a.png"]


def test_unpaired_split_has_no_paired_metrics_and_says_so(checkpoint, shared_data, tmp_path):
    translator, _ = load_for_evaluation(checkpoint, "cpu")
    crop_real_photos(shared_data, tmp_path / "a" / "test", 2, (40, 44))
    crop_real_photos(shared_data, tmp_path / "b" / "test", 2, (48, 40), prefix="night")
    result = evaluate(translator, eval_config(tmp_path, "evaluation.split=test"), tmp_path / "out", scale=40, model_source="t")
    assert "a2b/pixel_accuracy" not in result.metrics and "b2a/pixel_accuracy" not in result.metrics
    assert {"a2b/recon_l1", "a2b/cycle_l1", "b2a/recon_l1", "b2a/cycle_l1"} <= set(result.metrics)
    assert any(note.startswith("a2b: paired metrics skipped") for note in result.notes)
    width, height = Image.open(tmp_path / "out" / "report" / "a2b.png").size  # 3 tiles a row, 2 rows, with headings
    assert width > 3 * 40 + 2 * 2 and height > 2 * 44 + 2


def test_pairs_of_different_shapes_are_named(checkpoint, shared_data, tmp_path):
    translator, _ = load_for_evaluation(checkpoint, "cpu")
    crop_real_photos(shared_data, tmp_path / "a" / "test_paired", 1, (58, 40))
    crop_real_photos(shared_data, tmp_path / "b" / "test_paired", 1, (40, 40))
    truth = tmp_path / "b" / "test_paired" / "frame0.png"
    with pytest.raises(ValueError, match=rf"{truth}: ground truth is 40x40 at evaluation scale 40, but its source .* gives 58x40"):
        evaluate(translator, eval_config(tmp_path), tmp_path / "out", scale=40, model_source="t")


def random_inception_weights(path: Path) -> Path:
    """FID Inception-v3 weights, random but variance preserving, saved like pytorch-fid's file (fc included, no BN counters)."""
    torch.manual_seed(0)
    model = FIDInceptionV3()
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    torch.save(state, path)
    return path


@pytest.mark.slow
def test_fid_and_kid_with_a_weights_file(checkpoint, shared_data, tmp_path):
    translator, _ = load_for_evaluation(checkpoint, "cpu")
    paired_set(tmp_path / "data", shared_data, translator)
    weights = random_inception_weights(tmp_path / "pt_inception.pth")
    cfg = eval_config(tmp_path / "data", f"evaluation.inception_weights={weights}")
    result = evaluate(translator, cfg, tmp_path / "out", scale=40, model_source="test", batch_size=1)
    for direction in ("a2b", "b2a"):
        assert math.isfinite(result.metrics[f"{direction}/fid"]) and math.isfinite(result.metrics[f"{direction}/kid"])
    # a2b's translations are exactly b's real images: same feature sets. b2a's are not.
    assert result.metrics["a2b/fid"] == pytest.approx(0.0, abs=1e-6)
    assert result.metrics["b2a/fid"] > 1e-3
    assert not any("fid" in note for note in result.notes)


def test_inception_weights_loader_refuses_bad_files(tmp_path):
    with pytest.raises(InceptionWeightsError, match="no such Inception weights file"):
        load_inception(tmp_path / "missing.pth")
    foreign = tmp_path / "foreign.pth"
    torch.save({"conv.weight": torch.zeros(1)}, foreign)
    with pytest.raises(InceptionWeightsError, match=r"foreign.pth: not FID Inception-v3 weights: missing"):
        load_inception(foreign)
    pickled = tmp_path / "module.pth"
    torch.save(nn.Linear(1, 1), pickled)
    with pytest.raises(InceptionWeightsError, match="refused to load"):
        load_inception(pickled)
    state = FIDInceptionV3().state_dict()
    state["Conv2d_1a_3x3.conv.weight"] = torch.zeros(32, 3, 5, 5)
    torch.save(state, tmp_path / "shapes.pth")
    with pytest.raises(InceptionWeightsError, match=r"Conv2d_1a_3x3.conv.weight \(32, 3, 5, 5\) \(expected \(32, 3, 3, 3\)\)"):
        load_inception(tmp_path / "shapes.pth")


# ---------------------------------------------------------------- domain adaptation
def labelled_digits(root: Path) -> list[int]:
    """usps/test: 4 gray images, dark ones labelled 0 and bright ones 1, with one label deliberately wrong."""
    folder = root / "usps" / "test"
    folder.mkdir(parents=True)
    rows, labels = ["file,label"], [0, 1, 1, 1]
    for index, (level, label) in enumerate(zip((10, 240, 250, 5), labels)):
        Image.fromarray(np.full((16, 16), level, np.uint8), "L").save(folder / f"{index:05d}.png")
        rows.append(f"{index:05d}.png,{label}")
    (root / "usps" / "labels-test.csv").write_text("\n".join(rows) + "\n")
    return labels


def brightness_classifier(images: torch.Tensor) -> torch.Tensor:
    bright = images.mean(dim=(1, 2, 3)) > 0
    return torch.stack([(~bright).float(), bright.float()], dim=1)  # logits for classes 0 and 1


def test_classification_accuracy_on_a_labelled_target_split(tmp_path):
    labelled_digits(tmp_path)
    assert classify_split(brightness_classifier, tmp_path, "usps", "test", channels=1) == 0.75
    (tmp_path / "usps" / "labels-test.csv").write_text("file,label\n00000.png,zero\n")
    with pytest.raises(ValueError, match=r"labels-test.csv: line 2: expected 'file,label' with an integer label"):
        read_labels(tmp_path / "usps" / "labels-test.csv")
    (tmp_path / "usps" / "labels-test.csv").write_text("file,label\n00009.png,1\n")
    with pytest.raises(FileNotFoundError, match=r"00009.png: listed in labels-test.csv but missing"):
        classify_split(brightness_classifier, tmp_path, "usps", "test", channels=1)


def test_evaluate_reports_classification_accuracy_through_the_hook(checkpoint, shared_data, tmp_path):
    translator, _ = load_for_evaluation(checkpoint, "cpu")
    crop_real_photos(shared_data, tmp_path / "mnist" / "test", 2, (40, 40))
    labelled_digits(tmp_path)
    cfg = eval_config(tmp_path, "data.domain_a=mnist", "data.domain_b=usps", "evaluation.split=test")
    result = evaluate(translator, cfg, tmp_path / "out", scale=40, model_source="t", classifier=brightness_classifier)
    assert result.metrics["b/classification_accuracy"] == 0.75


# ----------------------------------------------------------------------- command line
def test_unit_evaluate_command_writes_metrics_and_names_bad_input(checkpoint, shared_data, tmp_path):
    root = tmp_path / "pairs"
    for domain in ("edges", "photos"):
        (root / domain).mkdir(parents=True)
        (root / domain / "test_paired").symlink_to(shared_data / "pairs" / "edges2handbags" / domain)
    sets = ["--set", "data.domain_a=edges", "--set", "data.domain_b=photos", "--set", "evaluation.report_images=3"]
    command = [sys.executable, "-m", "unit_cli", "evaluate", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")]
    result = subprocess.run([*command, "--data", str(root), *sets], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["a2b/paired_images"] == metrics["b2a/paired_images"] == 9
    assert 0.0 <= metrics["a2b/pixel_accuracy"] <= 1.0 and metrics["b2a/psnr"] > 0
    assert "fid/kid skipped" in result.stdout
    # 256x256 pairs at the model's scale (40): 3 rows of 4 tiles
    width, height = Image.open(tmp_path / "out" / "report" / "b2a.png").size  # plus headings and row labels
    assert width > 4 * 40 + 6 and height > 3 * 40 + 4

    missing = subprocess.run([*command, "--data", str(tmp_path / "nothing"), *sets], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and f"{tmp_path / 'nothing'}: no folder for domain 'edges'" in missing.stderr
    assert "Traceback" not in missing.stderr
