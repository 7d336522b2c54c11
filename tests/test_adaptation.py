"""Domain adaptation on real MNIST and USPS digits: source labels reach the loss, target labels stay unread."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import REPO, adaptation_config
from test_training import all_state

from unit_cli.main import main
from unit_core import data as data_module
from unit_core.adaptation import TargetAccuracyCurve, classifier_from_checkpoint, discriminator_classifier
from unit_core.checkpoint import load_checkpoint
from unit_core.config import UnitConfig
from unit_core.evaluation import classify_split, evaluate, load_for_evaluation, training_scale
from unit_core.images import load_image, pil_to_tensor
from unit_core.trainer import UNITTrainer
from unit_core.training import DataParallel, fit


@pytest.fixture(scope="module")
def trained_run(digits_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[UnitConfig, Path, Path]:
    """150 steps with the target-accuracy curve recorded at steps 75 and 150: (config, checkpoint, curve file)."""
    out_dir = tmp_path_factory.mktemp("adapt") / "run"
    cfg = adaptation_config(digits_root, out_dir, "train.max_steps=150")
    curve_file = out_dir / "target_accuracy.jsonl"
    curve = TargetAccuracyCurve(cfg, "test", curve_file)
    result = fit(cfg, progress=False, parallel=DataParallel(replica_callbacks=(curve,)))
    return cfg, result.checkpoint, curve_file


def test_source_labels_train_the_classifier_on_held_out_source_digits(trained_run):
    cfg, checkpoint, _ = trained_run
    trainer = UNITTrainer(cfg)
    trainer.load_state_dict(load_checkpoint(checkpoint))
    # Held-out MNIST test digits: far above chance (0.1) only if each image came with its own label
    # (measured 0.54 after these 150 steps).
    accuracy = classify_split(discriminator_classifier(trainer.dis, trainer.device, "a"), cfg.data.root, "mnist", "test", 1)
    assert accuracy > 0.3, accuracy
    log = [json.loads(line) for line in (Path(cfg.train.out_dir) / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["dis/accuracy_a"] > log[0]["dis/accuracy_a"] and log[-1]["dis/classifier"] < log[0]["dis/classifier"]


def test_target_labels_are_not_read_for_training(digits_root, tmp_path, monkeypatch):
    root = tmp_path / "digits"
    shutil.copytree(digits_root, root)
    (root / "usps" / "labels-train.csv").unlink()
    read = []
    original = data_module.read_labels
    monkeypatch.setattr(data_module, "read_labels", lambda path: read.append(Path(path)) or original(path))
    result = fit(adaptation_config(root, tmp_path / "run", "train.max_steps=2"), progress=False)
    assert result.step == 2
    assert read == [root / "mnist" / "labels-train.csv"]


def test_missing_or_incomplete_source_labels_are_named(digits_root, tmp_path):
    root = tmp_path / "digits"
    shutil.copytree(digits_root, root)
    labels = root / "mnist" / "labels-train.csv"
    rows = labels.read_text().splitlines()
    labels.write_text("\n".join(rows[:-1]) + "\n")  # the last image loses its label
    last_image = rows[-1].split(",")[0]
    with pytest.raises(ValueError, match=rf"{re.escape(str(labels))}: no label for .*{re.escape(last_image)}"):
        fit(adaptation_config(root, tmp_path / "run", "train.max_steps=1"), progress=False)
    labels.write_text("\n".join([*rows[:-1], f"{last_image},10"]) + "\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(labels))}: label 10 of {re.escape(last_image)} is outside 0..9"):
        fit(adaptation_config(root, tmp_path / "run", "train.max_steps=1"), progress=False)
    labels.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(labels))):
        fit(adaptation_config(root, tmp_path / "run", "train.max_steps=1"), progress=False)


def test_resume_with_labels_is_bit_exact(digits_root, tmp_path):
    straight_cfg = adaptation_config(digits_root, tmp_path / "straight", "train.max_steps=6")
    fit(straight_cfg, progress=False)
    split_dir = tmp_path / "split"
    fit(adaptation_config(digits_root, split_dir, "train.max_steps=3"), progress=False)
    torch.manual_seed(12345)  # disturb the global RNG: resume must restore it
    fit(adaptation_config(digits_root, split_dir, "train.max_steps=6"), resume=True, progress=False)
    straight, resumed = UNITTrainer(straight_cfg), UNITTrainer(straight_cfg)
    straight.load_state_dict(load_checkpoint(tmp_path / "straight" / "checkpoints" / "latest.pt"))
    resumed.load_state_dict(load_checkpoint(split_dir / "checkpoints" / "latest.pt"))
    a, b = all_state(straight), all_state(resumed)
    assert a.keys() == b.keys() and any(".classifier." in key for key in a)
    different = [key for key in a if not torch.equal(a[key], b[key])]
    assert not different, different[:5]


def test_classifier_from_checkpoint_scores_the_full_target_test_split(trained_run, tmp_path):
    cfg, checkpoint, curve_file = trained_run
    classifier = classifier_from_checkpoint(checkpoint, "cpu")
    assert classifier is not None
    translator, model_cfg = load_for_evaluation(checkpoint, "cpu")
    result = evaluate(translator, cfg, tmp_path / "eval", scale=training_scale(model_cfg), model_source=str(checkpoint),
                      classifier=classifier)
    accuracy = result.metrics["b/classification_accuracy"]
    assert json.loads(result.metrics_path.read_text())["b/classification_accuracy"] == accuracy
    # The classifier reads USPS through D2's own first layer: not the domain-a path.
    trainer = UNITTrainer(cfg)
    trainer.load_state_dict(load_checkpoint(checkpoint))
    usps = data_module.domain_images(cfg.data.root, "usps", "test")[:8]
    images = torch.stack([pil_to_tensor(load_image(path, 1)) for path in usps])
    assert torch.allclose(classifier(images), trainer.dis.classify(images, "b"))
    assert not torch.allclose(classifier(images), trainer.dis.classify(images, "a"))
    # The curve's last point is the final model, measured the same way on all 300 test digits.
    curve = [json.loads(line) for line in curve_file.read_text().splitlines()]
    assert [point["step"] for point in curve] == [75, 150]
    assert curve[-1]["accuracy"] == pytest.approx(accuracy)


def test_unit_evaluate_reports_the_target_accuracy(trained_run, tmp_path, capsys):
    cfg, checkpoint, curve_file = trained_run
    out = tmp_path / "eval"
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(cfg.data.root), "--out", str(out),
                 "--params", str(REPO / "params.yaml"), "--preset", "digits-mnist2usps", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    final = json.loads(curve_file.read_text().splitlines()[-1])["accuracy"]
    assert json.loads((out / "metrics.json").read_text())["b/classification_accuracy"] == pytest.approx(final)


def test_translated_and_ensemble_readings_classify_target_digits_through_the_source_path(trained_run, tmp_path, capsys):
    cfg, checkpoint, _ = trained_run
    trainer = UNITTrainer(cfg)
    trainer.load_state_dict(load_checkpoint(checkpoint))
    gen, dis = trainer.gen.eval(), trainer.dis.eval()
    usps = data_module.domain_images(cfg.data.root, "usps", "test")[:8]
    images = torch.stack([pil_to_tensor(load_image(path, 1)) for path in usps])
    with torch.no_grad():
        direct = dis.classify(images, "b")
        via_source = dis.classify(gen.translate(images, "b", "a"), "a")
    translated = classifier_from_checkpoint(checkpoint, "cpu", "translated")(images)
    assert torch.allclose(translated, via_source, atol=1e-5)
    assert not torch.allclose(translated, direct, atol=1e-3)
    ensemble = classifier_from_checkpoint(checkpoint, "cpu", "ensemble")(images)
    assert torch.allclose(ensemble, (direct.softmax(1) + via_source.softmax(1)) / 2, atol=1e-5)

    # The reading chosen in the settings reaches the curve and `unit evaluate` alike.
    expected = classify_split(classifier_from_checkpoint(checkpoint, "cpu", "ensemble"), cfg.data.root, "usps", "test", 1)
    assert expected != classify_split(classifier_from_checkpoint(checkpoint, "cpu"), cfg.data.root, "usps", "test", 1)
    ensemble_cfg = cfg.model_copy(deep=True)
    ensemble_cfg.evaluation.adaptation_classifier = "ensemble"
    curve_file = tmp_path / "curve.jsonl"
    trainer.gen.train(), trainer.dis.train()
    TargetAccuracyCurve(ensemble_cfg, "test", curve_file).on_checkpoint(150, trainer, checkpoint, None)
    assert json.loads(curve_file.read_text())["accuracy"] == pytest.approx(expected)
    assert trainer.gen.training and trainer.dis.training  # measuring leaves the networks as it found them
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(cfg.data.root), "--out", str(tmp_path / "eval"),
                 "--params", str(REPO / "params.yaml"), "--preset", "digits-mnist2usps", "--device", "cpu",
                 "--set", "evaluation.adaptation_classifier=ensemble"])
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["b/classification_accuracy"] == pytest.approx(expected)


def test_conv32_generator_adapts_and_translates_from_its_checkpoint(digits_root, tmp_path):
    """The NIPS-era digits generator (1x1 code) in the adaptation variant: trains and is evaluated from its checkpoint."""
    cfg = adaptation_config(digits_root, tmp_path / "run", "model.generator=conv32", "train.max_steps=150")
    result = fit(cfg, progress=False)
    trainer = UNITTrainer(cfg)
    trainer.load_state_dict(load_checkpoint(result.checkpoint))
    accuracy = classify_split(discriminator_classifier(trainer.dis, trainer.device, "a"), cfg.data.root, "mnist", "test", 1)
    assert accuracy > 0.3, accuracy
    translator, model_cfg = load_for_evaluation(result.checkpoint, "cpu")
    assert model_cfg.model.generator == "conv32"
    evaluated = evaluate(translator, cfg, tmp_path / "eval", scale=training_scale(model_cfg),
                         model_source=str(result.checkpoint), classifier=classifier_from_checkpoint(result.checkpoint, "cpu"))
    assert 0.0 <= evaluated.metrics["b/classification_accuracy"] <= 1.0
    assert evaluated.metrics["a2b/recon_l1"] < 1.0


def test_models_without_classifier_give_none(digits_root, tmp_path):
    result = fit(adaptation_config(digits_root, tmp_path / "run", "train.max_steps=1", "model.num_classes=0",
                                   "model.dis_shared_layers=0"), progress=False)
    assert classifier_from_checkpoint(result.checkpoint, "cpu") is None


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_trains_the_classifier(digits_root, tmp_path, precision):
    """Autocast gives bf16/fp16 features; the classifier head and its losses must accept them."""
    result = fit(adaptation_config(digits_root, tmp_path / "run", "train.max_steps=40", f"train.precision={precision}",
                                   "train.deterministic=false", "train.log_every=20"), progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert result.step == 40 and all(torch.isfinite(torch.tensor(list(record.values()))).all() for record in log)
    assert log[-1]["dis/classifier"] < log[0]["dis/classifier"]


def test_in_memory_samples_equal_decoded_samples_and_decode_each_file_once(digits_root, tmp_path, monkeypatch):
    cfg = adaptation_config(digits_root, tmp_path / "run")
    files_a = data_module.domain_images(digits_root, "mnist", "train")
    files_b = data_module.domain_images(digits_root, "usps", "train")
    decoded = []
    original = data_module.load_image
    monkeypatch.setattr(data_module, "load_image", lambda path, *args: decoded.append(path) or original(path, *args))
    from_files = data_module.UnpairedSamples([files_a, files_b], cfg.data, (1, 1), 0)
    in_memory = data_module.UnpairedSamples([files_a, files_b], cfg.data.model_copy(update={"in_memory": True}), (1, 1), 0)
    samples = range(3 * len(files_a))  # three passes: every file of both domains three times
    expected = [from_files[sample] for sample in samples]
    assert len(decoded) == 2 * len(samples)
    decoded.clear()
    for sample, wanted in zip(samples, expected):
        for left, right in zip(wanted, in_memory[sample], strict=True):
            assert torch.equal(left, right)
    assert len(set(decoded)) == len(decoded) == len(files_a) + len(files_b), "each file decoded exactly once"
