"""Moving averages of the weights (train.ema_decay): what they hold, what reads them, resume."""

from __future__ import annotations

import re

import pytest
import torch

from conftest import adaptation_config, tiny_config
from unit_core.adaptation import classifier_from_checkpoint, discriminator_classifier
from unit_core.checkpoint import load_checkpoint, load_generator
from unit_core.trainer import UNITTrainer
from unit_core.training import fit
from unit_tracking.mlflow_store import _inference_checkpoint


def random_batches(count: int = 2) -> list[torch.Tensor]:
    return [torch.rand(1, 3, 32, 32) * 2 - 1 for _ in range(count)]


def test_an_update_moves_the_average_by_the_warmed_up_decay(street_root, tmp_path):
    trainer = UNITTrainer(tiny_config(street_root, tmp_path / "run", "train.ema_decay=0.5"))
    average, trained = trainer.ema["gen"], trainer.gen
    with torch.no_grad():
        for mean, value in zip(average.parameters(), trained.parameters()):
            mean.zero_()
            value.fill_(1.0)
    trainer.step = 1  # decay min(0.5, 2 / 11): the average takes 9/11 of the way to the trained weights
    trainer.update_ema()
    assert all(torch.allclose(p, torch.full_like(p, 9 / 11)) for p in average.parameters())
    trainer.step = 20  # warmed up: decay 0.5
    trainer.update_ema()
    assert all(torch.allclose(p, torch.full_like(p, 9 / 11 + 0.5 * (1 - 9 / 11))) for p in average.parameters())
    assert not any(p.requires_grad for p in average.parameters())


def test_the_average_keeps_the_shared_blocks_shared_and_is_not_trained(street_root, tmp_path):
    trainer = UNITTrainer(tiny_config(street_root, tmp_path / "run", "train.ema_decay=0.9", "model.n_shared=1"))
    average = trainer.ema["gen"]
    assert average.encoders["a"].shared is average.encoders["b"].shared is average.enc_shared
    assert average.decoders["a"].shared is average.decoders["b"].shared is average.dec_shared
    optimised = {id(p) for group in trainer.gen_opt.param_groups + trainer.dis_opt.param_groups for p in group["params"]}
    assert not optimised & {id(p) for name in ("gen", "dis") for p in trainer.ema[name].parameters()}
    before = {k: v.clone() for k, v in average.state_dict().items()}
    trainer.train_step(random_batches())
    after = average.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it moved
    trained = trainer.gen.state_dict()
    assert any(not torch.equal(trained[k], after[k]) for k in after if after[k].is_floating_point())  # but lags


def test_batch_norm_statistics_are_averaged_and_counters_copied(digits_root, tmp_path):
    trainer = UNITTrainer(adaptation_config(digits_root, tmp_path / "run", "train.ema_decay=0.9"))
    images = [torch.rand(4, 1, 32, 32) * 2 - 1, torch.rand(4, 1, 32, 32) * 2 - 1]
    for _ in range(3):
        trainer.train_step(images, torch.tensor([0, 1, 2, 3]))
    averaged = dict(trainer.ema["gen"].named_buffers())
    trained = dict(trainer.gen.named_buffers())
    counters = [name for name in trained if name.endswith("num_batches_tracked")]
    means = [name for name in trained if name.endswith("running_mean")]
    assert counters and means
    assert all(torch.equal(averaged[name], trained[name]) for name in counters)
    assert all(not torch.equal(averaged[name], trained[name]) for name in means)


def test_resume_with_averages_is_bit_exact(street_root, tmp_path):
    straight_cfg = tiny_config(street_root, tmp_path / "straight", "train.max_steps=6", "train.ema_decay=0.9")
    fit(straight_cfg, progress=False)
    split = tmp_path / "split"
    fit(tiny_config(street_root, split, "train.max_steps=3", "train.ema_decay=0.9"), progress=False)
    fit(tiny_config(street_root, split, "train.max_steps=6", "train.ema_decay=0.9"), resume=True, progress=False)
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "latest.pt")["networks"]
    b = load_checkpoint(split / "checkpoints" / "latest.pt")["networks"]
    assert set(a) == set(b) == {"gen", "dis", "gen_ema", "dis_ema"}
    for name in a:
        different = [key for key in a[name] if not torch.equal(a[name][key], b[name][key])]
        assert not different, (name, different[:3])


def test_translation_and_the_logged_model_read_the_averaged_generator(street_root, tmp_path):
    cfg = tiny_config(street_root, tmp_path / "run", "train.max_steps=4", "train.ema_decay=0.9")
    checkpoint = fit(cfg, progress=False).checkpoint
    payload = load_checkpoint(checkpoint)
    trainer = UNITTrainer(cfg)
    trainer.load_state_dict(payload)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    trainer.gen.eval()
    with torch.no_grad():
        from_average = trainer.ema["gen"].translate(x, "a", "b")
        from_trained = trainer.gen.translate(x, "a", "b")
        _, generator = load_generator(checkpoint)
        loaded = generator.translate(x, "a", "b")
    assert not torch.allclose(from_average, from_trained)
    assert torch.equal(loaded, from_average)
    logged = load_checkpoint(_inference_checkpoint(payload, tmp_path))["networks"]
    assert set(logged) == {"gen"}
    assert all(torch.equal(logged["gen"][k], payload["networks"]["gen_ema"][k]) for k in logged["gen"])


def test_the_adaptation_classifier_reads_the_averaged_discriminators(digits_root, tmp_path):
    cfg = adaptation_config(digits_root, tmp_path / "run", "train.max_steps=6", "train.ema_decay=0.9")
    checkpoint = fit(cfg, progress=False).checkpoint
    trainer = UNITTrainer(cfg)
    trainer.load_state_dict(load_checkpoint(checkpoint))
    x = torch.rand(8, 1, 32, 32) * 2 - 1
    trainer.dis.eval()
    expected = discriminator_classifier(trainer.ema["dis"], torch.device("cpu"))(x)
    trained = discriminator_classifier(trainer.dis, torch.device("cpu"))(x)
    assert not torch.allclose(expected, trained)
    assert torch.equal(classifier_from_checkpoint(checkpoint, "cpu")(x), expected)


def test_without_averaging_checkpoints_hold_the_trained_weights_alone(street_root, tmp_path):
    checkpoint = fit(tiny_config(street_root, tmp_path / "run", "train.max_steps=2"), progress=False).checkpoint
    assert set(load_checkpoint(checkpoint)["networks"]) == {"gen", "dis"}
    # Switched on at resume: the average starts from the checkpoint's weights, with a warning naming the file.
    cfg = tiny_config(street_root, tmp_path / "run", "train.max_steps=3", "train.ema_decay=0.9")
    trainer = UNITTrainer(cfg)
    with pytest.warns(UserWarning, match=re.escape(f"{checkpoint}: no averaged weights for 'gen'")):
        trainer.load_state_dict(load_checkpoint(checkpoint), source=checkpoint)
    trained = trainer.gen.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in trainer.ema["gen"].state_dict().items())
