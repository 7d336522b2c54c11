"""Networks and loss terms of the paper, checked on fixed small tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from unit_core.config import ConfigError, load_config
from unit_core.losses import discriminator_fake_loss, discriminator_loss, generator_gan_loss, kl_loss, l1_loss
from unit_core.networks import UNITDiscriminators, UNITGenerator
from unit_core.trainer import UNITTrainer, generator_weights


def small_model(*overrides: str):
    return load_config(None, ["model.width=8", "model.dis_width=8", "model.dis_layers=3", *overrides]).model


def test_shared_blocks_are_the_same_parameters_in_both_domains():
    gen = UNITGenerator(small_model("model.res_blocks=3", "model.n_shared=2"))
    enc, dec = gen.encoders, gen.decoders
    assert enc["a"].shared is enc["b"].shared is gen.enc_shared
    assert dec["a"].shared is dec["b"].shared is gen.dec_shared
    shared_ids = {id(p) for p in gen.enc_shared.parameters()} | {id(p) for p in gen.dec_shared.parameters()}
    assert len(list(gen.enc_shared)) == 2 and len(list(gen.dec_shared)) == 2
    for side in (enc["a"], enc["b"], dec["a"], dec["b"]):
        assert shared_ids & {id(p) for p in side.parameters()}
    # private parts are disjoint between the domains
    private_a = {id(p) for p in enc["a"].private.parameters()} | {id(p) for p in enc["a"].front.parameters()}
    private_b = {id(p) for p in enc["b"].private.parameters()} | {id(p) for p in enc["b"].front.parameters()}
    assert not private_a & private_b


@pytest.mark.parametrize("domain", ["a", "b"])
def test_shared_blocks_get_gradients_from_each_domain(domain):
    torch.manual_seed(0)
    gen = UNITGenerator(small_model())
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    loss = l1_loss(gen.decode(gen.encode(x, domain), domain), x)
    loss.backward()
    for module in (gen.enc_shared, gen.dec_shared):
        for parameter in module.parameters():
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0
    other = "b" if domain == "a" else "a"
    other_front = gen.encoders[other].front
    assert all(p.grad is None for p in other_front.parameters())


def test_no_weight_sharing_ablation_has_no_common_parameters():
    shared = UNITGenerator(small_model("model.n_shared=1"))
    separate = UNITGenerator(small_model("model.n_shared=0"))
    assert len(list(separate.enc_shared.parameters())) == 0
    enc_a = {id(p) for p in separate.encoders["a"].parameters()}
    assert not enc_a & {id(p) for p in separate.encoders["b"].parameters()}
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731 - parameters() de-duplicates shared tensors
    block = count(shared.enc_shared)
    assert count(separate) - count(shared) == 2 * block  # one extra private block per side, encoder and decoder


def test_conv32_generator_is_the_nips_digits_network_with_a_vector_code():
    cfg = load_config(None, ["model.generator=conv32", "model.width=8", "model.norm=batch", "model.channels_b=1",
                             "data.image_size=32"]).model
    gen = UNITGenerator(cfg)
    x_a, x_b = torch.randn(4, 3, 32, 32), torch.randn(4, 1, 32, 32)
    streams = gen({"a": x_a, "b": x_b}, {"a": "b", "b": "a"})
    assert streams["mu/a"].shape == (4, 64, 1, 1)  # one 8*width vector per image
    assert streams["trans/a"].shape == x_b.shape and streams["cycle/b"].shape == x_b.shape
    # each domain owns only its outermost layers: one conv in, one transposed conv and the 1x1 out
    for side in (gen.encoders, gen.decoders):
        assert side["a"].shared is side["b"].shared
        own = [{id(p) for p in side[d].parameters()} - {id(p) for p in side[d].shared.parameters()} for d in "ab"]
        assert own[0] and not own[0] & own[1]
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    private = count(gen.encoders["a"].front) + count(gen.decoders["a"].back)
    assert count(gen.enc_shared) + count(gen.dec_shared) > 20 * private


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.image_size=64"], "conv32 takes 32x32 images"),
    (["model.n_shared=0"], "n_shared 0"),
    (["model.norm=instance"], "norm 'instance'"),
])
def test_conv32_generator_refuses_settings_it_cannot_honour(overrides, message):
    base = ["model.generator=conv32", "model.norm=batch", "data.image_size=32"]
    with pytest.raises(ConfigError, match=message):
        load_config(None, [*base, *overrides])


def test_shapes_of_streams_and_discriminator_outputs():
    cfg = small_model("model.dis_scales=3", "model.channels_b=1")
    gen, dis = UNITGenerator(cfg), UNITDiscriminators(cfg)
    x_a, x_b = torch.randn(2, 3, 32, 32), torch.randn(2, 1, 32, 32)
    streams = gen({"a": x_a, "b": x_b}, {"a": "b", "b": "a"})
    assert streams["mu/a"].shape == (2, 32, 8, 8)
    assert streams["trans/a"].shape == x_b.shape and streams["trans/b"].shape == x_a.shape
    assert streams["cycle/a"].shape == x_a.shape and streams["cycle/b"].shape == x_b.shape
    assert streams["trans/a"].abs().max() <= 1
    outputs = dis({"a": x_a, "b": x_b})
    assert [o.shape[-1] for o in outputs["a"]] == [4, 2, 1]
    assert len(outputs["b"]) == 3


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_the_batched_pass_is_separate_passes_except_under_batch_norm_in_training(norm):
    gen = UNITGenerator(small_model(f"model.norm={norm}", "model.res_blocks=2", "model.n_shared=1"))
    x_a, x_b = torch.randn(3, 3, 16, 16), torch.randn(2, 3, 16, 16) * 3 + 1  # b's statistics differ from a's
    for training in (True, False):
        gen.train(training)
        with torch.no_grad():
            batched = gen({"a": x_a, "b": x_b}, {"a": "b", "b": "a"}, with_cycle=False)["mu/a"]
            alone = gen.encode(x_a, "a")  # E_a on x_a by itself: mu/a of a separate pass
        same = torch.allclose(batched, alone, atol=1e-5)
        assert same == (norm == "instance" or not training), (norm, training)


def test_eval_mode_uses_the_latent_mean():
    gen = UNITGenerator(small_model()).eval()
    x = torch.randn(1, 3, 16, 16)
    assert torch.equal(gen.translate(x, "a", "b"), gen.translate(x, "a", "b"))
    gen.train()
    mu = torch.zeros(1, 4)
    assert not torch.equal(gen.sample(mu), mu)


def test_kl_and_l1_by_hand():
    assert kl_loss(torch.tensor([[1.0, -2.0], [0.0, 3.0]])).item() == pytest.approx(3.5)
    assert l1_loss(torch.tensor([0.0, 0.5]), torch.tensor([1.0, -0.5])).item() == pytest.approx(1.0)


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


@pytest.mark.parametrize(
    "mode, real, fake, expected",
    [
        ("bce", [2.0], [-1.0], softplus(-2.0) + softplus(-1.0)),
        ("lsgan", [2.0, 0.0], [1.0, -1.0], 1.0 + 1.0),
        ("hinge", [2.0, 0.5], [-2.0, 0.0], 0.25 + 0.5),
    ],
)
def test_discriminator_loss_by_hand(mode, real, fake, expected):
    value = discriminator_loss([torch.tensor(real)], [torch.tensor(fake)], mode)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    # two scales add up
    twice = discriminator_loss([torch.tensor(real)] * 2, [torch.tensor(fake)] * 2, mode)
    assert twice.item() == pytest.approx(2 * expected, rel=1e-6)


@pytest.mark.parametrize(
    "mode, fake, expected",
    [("bce", [0.0], math.log(2.0)), ("lsgan", [1.0, 3.0], 2.0), ("hinge", [1.0, 3.0], -2.0)],
)
def test_generator_gan_loss_by_hand(mode, fake, expected):
    assert generator_gan_loss([torch.tensor(fake)], mode).item() == pytest.approx(expected, rel=1e-6)


def test_generator_objective_weights_every_term_by_its_lambda():
    cfg = load_config(None, ["model.width=8", "model.dis_width=8", "model.dis_layers=3",
                             "loss.gan=1", "loss.kl=2", "loss.recon=3", "loss.kl_cycle=4", "loss.cycle=5"])
    trainer = UNITTrainer(cfg)
    images = {"a": torch.zeros(1, 1, 2, 2), "b": torch.zeros(1, 1, 2, 2)}
    full = lambda v: torch.full((1, 1, 2, 2), v)  # noqa: E731
    streams = {"mu/a": full(1.0), "mu/b": full(2.0), "mu_cycle/a": full(3.0), "mu_cycle/b": full(0.0),
               "recon/a": full(0.5), "recon/b": full(-0.25), "cycle/a": full(0.1), "cycle/b": full(-0.2)}
    fakes = {"a": [torch.tensor([0.0])], "b": [torch.tensor([0.0])]}
    terms = trainer.generator_terms(images, streams, fakes)
    expected = {
        "gan/a": math.log(2), "gan/b": math.log(2), "kl/a": 1.0, "kl/b": 4.0,
        "recon/a": 0.5, "recon/b": 0.25, "kl_cycle/a": 1.0 + 9.0, "kl_cycle/b": 4.0 + 0.0,
        "cycle/a": 0.1, "cycle/b": 0.2,
    }
    assert {k: pytest.approx(v, rel=1e-6) for k, v in expected.items()} == {k: t.item() for k, t in terms.items()}
    total = trainer.generator_total(terms).item()
    assert total == pytest.approx(2 * math.log(2) + 2 * 5 + 3 * 0.75 + 4 * 14 + 5 * 0.3, rel=1e-6)
    losses = trainer.train_step([torch.rand(1, 3, 16, 16) * 2 - 1, torch.rand(1, 3, 16, 16) * 2 - 1])
    by_hand = sum(weight * (losses[f"gen/{kind}_a"] + losses[f"gen/{kind}_b"]).item()
                  for kind, weight in (("gan", 1), ("kl", 2), ("recon", 3), ("kl_cycle", 4), ("cycle", 5)))
    assert losses["gen/total"].item() == pytest.approx(by_hand, rel=1e-5)  # what the step optimised


def test_each_loss_term_has_its_own_weight_in_the_totals():
    """Distinct weights and distinct sums per kind of term: a weight given to the wrong term changes a total."""
    weights = ["loss.gan=2", "loss.kl=3", "loss.recon=5", "loss.kl_cycle=7", "loss.cycle=11", "loss.classifier=13",
               "loss.feature=17"]
    trainer = UNITTrainer(load_config(None, ["model.width=8", "model.dis_width=8", "model.dis_layers=3", *weights]))
    value = lambda v: torch.tensor(v, dtype=torch.float64)  # powers of two: the sums below are exact
    gen = {"gan/a": 0.5, "gan/b": 0.25, "kl/a": 1.0, "kl/b": 4.0, "recon/a": 0.125, "recon/b": 8.0,
           "kl_cycle/a": 16.0, "kl_cycle/b": 0.0625, "cycle/a": 32.0, "cycle/b": 64.0}
    expected = 2 * (0.5 + 0.25) + 3 * (1.0 + 4.0) + 5 * (0.125 + 8.0) + 7 * (16.0 + 0.0625) + 11 * (32.0 + 64.0)
    assert trainer.generator_total({name: value(v) for name, v in gen.items()}).item() == expected
    dis = {"gan/a": 0.5, "gan/b": 2.0, "classifier": 0.25, "feature": 4.0}
    assert trainer.discriminator_total({name: value(v) for name, v in dis.items()}).item() == 2 * 2.5 + 13 * 0.25 + 17 * 4.0
    with pytest.raises(KeyError, match="without a weight: gan/c"):
        trainer.generator_total({"gan/a": value(1.0), "gan/c": value(1.0)})
    assert set(generator_weights(trainer.cfg.loss, ("x", "y", "z"))) == {
        f"{kind}/{d}" for kind in ("gan", "kl", "recon", "kl_cycle", "cycle", "gan_recon") for d in ("x", "y", "z")}

    # and a step optimises these totals: the adaptation variant, with every weight distinct
    trainer = adaptation_trainer_with(*weights[:3], *weights[5:])
    labels = torch.tensor([0, 3, 7, 9])
    losses = trainer.train_step([torch.rand(4, 1, 28, 28) * 2 - 1, torch.rand(4, 1, 28, 28) * 2 - 1], labels)
    logged = {name: term.item() for name, term in losses.items()}
    dis_by_hand = 2 * (logged["dis/a"] + logged["dis/b"]) + 13 * logged["dis/classifier"] + 17 * logged["dis/feature"]
    assert logged["dis/total"] == pytest.approx(dis_by_hand, rel=1e-5)
    gen_by_hand = sum(weight * (logged[f"gen/{kind}_a"] + logged[f"gen/{kind}_b"])
                      for kind, weight in (("gan", 2), ("kl", 3), ("recon", 5)))
    assert logged["gen/total"] == pytest.approx(gen_by_hand, rel=1e-5)
    assert not any(name.startswith(("gen/cycle", "gen/kl_cycle")) for name in logged)


def test_translated_source_images_train_the_classifier_through_the_target_discriminator():
    """loss.classifier_translated: the source labels on x_a translated into b, read as b's test digits are read."""
    trainer = adaptation_trainer_with("loss.gan=2", "loss.classifier=13", "loss.feature=17", "loss.classifier_translated=19")
    x_a, x_b = torch.rand(4, 1, 28, 28) * 2 - 1, torch.rand(4, 1, 28, 28) * 2 - 1
    labels = torch.tensor([0, 3, 7, 9])
    images, targets = {"a": x_a, "b": x_b}, {"a": "b", "b": "a"}
    streams = trainer.gen(images, targets, with_cycle=False)
    with torch.no_grad():
        for conv in (m for m in trainer.dis.modules() if isinstance(m, torch.nn.Conv2d)):
            conv.weight.normal_(0.0, 0.5)  # at N(0, 0.02) the class logits are all but the bias, whatever the input
        expected = F.cross_entropy(trainer.dis.classify(streams["trans/a"], "b"), labels).item()
        through_a = F.cross_entropy(trainer.dis.classify(streams["trans/a"], "a"), labels).item()
        shuffled = F.cross_entropy(trainer.dis.classify(streams["trans/a"], "b"), labels.roll(1)).item()
    assert abs(expected - through_a) > 1e-4 and abs(expected - shuffled) > 1e-4  # the checks below can tell them apart
    losses = {name: value.item() for name, value in trainer.discriminator_step(images, streams, targets, labels).items()}
    assert losses["dis/classifier_translated"] == pytest.approx(expected, rel=1e-5)
    dis_by_hand = (2 * (losses["dis/a"] + losses["dis/b"]) + 13 * losses["dis/classifier"] + 17 * losses["dis/feature"]
                   + 19 * losses["dis/classifier_translated"])
    assert losses["dis/total"] == pytest.approx(dis_by_hand, rel=1e-5)
    assert 0.0 <= losses["dis/accuracy_a_to_b"] <= 1.0
    # bf16 autocast gives bf16 features; the term must take them (as the source classifier does)
    bf16 = adaptation_trainer_with("loss.classifier_translated=10", "train.precision=bf16")
    step = bf16.train_step([x_a, x_b], labels)
    assert torch.isfinite(step["dis/classifier_translated"]) and step["dis/classifier_translated"].dtype == torch.float32
    assert "dis/classifier_translated" not in adaptation_trainer().train_step([x_a, x_b], labels)


def test_reconstructions_judged_as_fakes_add_their_own_weighted_terms():
    """loss.gan_recon (the NIPS-era code's GAN terms on reconstructions): recomputed here from the step's own streams."""
    cfg = load_config(None, ["model.width=8", "model.dis_width=8", "model.dis_layers=3", "loss.gan=2",
                             "loss.gan_recon=3", "loss.cycle=0", "loss.kl_cycle=0"])
    trainer = UNITTrainer(cfg)
    x_a, x_b = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    images, targets = {"a": x_a, "b": x_b}, {"a": "b", "b": "a"}
    torch.manual_seed(3)
    streams = trainer.gen(images, targets, with_cycle=False)
    fake_recon_a = discriminator_fake_loss(trainer.dis({"a": streams["recon/a"]})["a"], "bce").item()
    losses = trainer.discriminator_step(images, streams, targets, None)
    assert losses["dis/gan_recon_a"].item() == pytest.approx(fake_recon_a, rel=1e-5)
    dis_by_hand = sum(2 * losses[f"dis/{d}"] + 3 * losses[f"dis/gan_recon_{d}"] for d in "ab")
    assert losses["dis/total"].item() == pytest.approx(dis_by_hand.item(), rel=1e-6)

    step = trainer.train_step([x_a, x_b])
    assert {"gen/gan_recon_a", "gen/gan_recon_b", "dis/gan_recon_a", "dis/gan_recon_b"} <= set(step)
    gen_by_hand = sum(weight * (step[f"gen/{kind}_a"] + step[f"gen/{kind}_b"]).item()
                      for kind, weight in (("gan", 2), ("gan_recon", 3), ("kl", cfg.loss.kl), ("recon", cfg.loss.recon)))
    assert step["gen/total"].item() == pytest.approx(gen_by_hand, rel=1e-5)
    # the generator's GAN term on x_a's reconstruction reads D_a on that reconstruction, not on a translation
    logits = [torch.zeros(4, 1), torch.zeros(4, 1)]
    logits[0][2:] = 5.0
    terms = trainer.generator_terms(images, {**streams}, {"a": [logits[0]], "b": [logits[1]]})
    assert terms["gan_recon/a"].item() == pytest.approx(generator_gan_loss([torch.full((2, 1), 5.0)], "bce").item())
    assert terms["gan/a"].item() == pytest.approx(math.log(2))
    plain = UNITTrainer(load_config(None, ["model.width=8", "model.dis_width=8", "model.dis_layers=3"]))
    assert not any("gan_recon" in name for name in plain.train_step([x_a, x_b]))


def test_cycle_terms_vanish_when_switched_off():
    cfg = load_config(None, ["model.width=8", "model.dis_width=8", "model.dis_layers=3", "loss.cycle=0", "loss.kl_cycle=0"])
    trainer = UNITTrainer(cfg)
    losses = trainer.train_step([torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)])
    assert "gen/cycle_a" not in losses and "gen/recon_a" in losses


def test_instance_norm_matches_torch_instance_norm():
    from unit_core.networks import instance_norm

    x = torch.randn(3, 16, 9, 7) * 5 + 2
    expected = torch.nn.functional.instance_norm(x, eps=1e-5)
    assert torch.allclose(instance_norm(16)(x), expected, atol=1e-5)


def adaptation_trainer_with(*overrides: str) -> UNITTrainer:
    cfg = load_config(None, [
        "model.width=8", "model.dis_width=8", "model.dis_layers=3", "model.dis_shared_layers=2", "model.num_classes=10",
        "model.channels_a=1", "model.channels_b=1", "model.norm=batch", "model.n_shared=2", "model.res_blocks=2",
        "loss.cycle=0", "loss.kl_cycle=0", *overrides,
    ])
    return UNITTrainer(cfg)


def adaptation_trainer() -> UNITTrainer:
    return adaptation_trainer_with()


def test_adaptation_discriminators_tie_high_level_layers_and_classify_both_domains():
    dis = adaptation_trainer().dis
    d1, d2 = dis.discriminators["a"].scales[0], dis.discriminators["b"].scales[0]
    assert d1.trunk is d2.trunk and d1.judge is d2.judge and len(d1.trunk) == 4  # 2 convs + 2 activations
    assert not {id(p) for p in d1.front.parameters()} & {id(p) for p in d2.front.parameters()}
    x = torch.randn(3, 1, 28, 28)
    assert dis.classify(x, "a").shape == dis.classify(x, "b").shape == (3, 10)
    dis.class_logits(d1.features(x)).sum().backward()
    assert all(p.grad is not None for p in d1.trunk.parameters()) and all(p.grad is not None for p in d1.front.parameters())
    assert all(p.grad is None for p in d2.front.parameters())


def test_spectral_discriminators_bound_every_layer_and_normalise_tied_layers_once():
    torch.manual_seed(0)
    trainer = adaptation_trainer_with("model.dis_norm=spectral")
    dis = trainer.dis
    tied_conv = dis.discriminators["a"].scales[0].trunk[0]
    assert tied_conv is dis.discriminators["b"].scales[0].trunk[0] and len(tied_conv.parametrizations.weight) == 1
    first = dis.discriminators["a"].scales[0].front[0]
    assert 0.015 < first.parametrizations.weight.original.std() < 0.025  # the paper's N(0, 0.02) reached the weights
    for _ in range(3):  # the weights move; the power iteration follows them
        trainer.train_step([torch.rand(4, 1, 16, 16) * 2 - 1, torch.rand(4, 1, 16, 16) * 2 - 1], torch.randint(0, 10, (4,)))
    layers = [m for m in dis.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 2 + 2 + 1 + 1  # each domain's first layer, the 2 tied convs, the tied head, the classifier
    for layer in layers:
        sigma = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2).item()
        assert abs(sigma - 1) < 0.05, (layer, sigma)
    plain = adaptation_trainer().dis.discriminators["a"].scales[0].front[0]
    assert not hasattr(plain, "parametrizations") and torch.linalg.matrix_norm(plain.weight.detach().flatten(1), ord=2) < 0.5


def test_discriminator_dropout_drops_tied_units_while_training_and_spares_the_feature_term():
    trainer = adaptation_trainer_with("model.dis_dropout=[0.1,0.3,0.5]")
    with torch.no_grad():
        trainer.dis.classifier.weight.mul_(100)  # logits far from 0, so which features they read shows in the loss
    plain = adaptation_trainer()
    plain.dis.load_state_dict(trainer.dis.state_dict())
    d1, plain_d1 = trainer.dis.discriminators["a"].scales[0], plain.dis.discriminators["a"].scales[0]
    x = torch.randn(3, 1, 28, 28)
    clean = d1.features(x)
    assert torch.equal(clean, plain_d1.features(x))
    torch.manual_seed(0)
    dropped, again = d1.features(x, dropout=True), d1.features(x, dropout=True)
    assert not torch.equal(dropped, again)
    assert 0.4 < (dropped == 0).float().mean().item() < 0.6  # the last rate, 0.5, on the tied features
    trainer.dis.eval()
    assert torch.equal(trainer.dis.classify(x, "b"), plain.dis.eval().classify(x, "b"))
    trainer.dis.train()

    # the feature-L1 term reads a pass without dropout; the classifier the dropped-out one
    x_a, x_b = torch.rand(4, 1, 28, 28) * 2 - 1, torch.rand(4, 1, 28, 28) * 2 - 1
    labels = torch.tensor([0, 3, 7, 9])
    images, targets = {"a": x_a, "b": x_b}, {"a": "b", "b": "a"}
    streams = trainer.gen(images, targets, with_cycle=False)
    feats_a = d1.features(torch.cat([x_a, streams["trans/b"], streams["recon/a"]]))
    feats_b = trainer.dis.discriminators["b"].scales[0].features(torch.cat([x_b, streams["trans/a"], streams["recon/b"]]))
    expected_feature = (l1_loss(feats_a[8:], feats_b[4:8]) + l1_loss(feats_a[4:8], feats_b[8:])).item()
    clean_classifier = torch.nn.functional.cross_entropy(trainer.dis.class_logits(feats_a[:4]), labels).item()
    torch.manual_seed(1)  # D_a's dropped-out pass is the step's first draw
    dropped_a = d1.features(torch.cat([x_a, streams["trans/b"], streams["recon/a"]]), dropout=True)
    expected_classifier = torch.nn.functional.cross_entropy(trainer.dis.class_logits(dropped_a[:4]), labels).item()
    torch.manual_seed(1)
    losses = trainer.discriminator_step(images, streams, targets, labels)
    assert losses["dis/feature"].item() == pytest.approx(expected_feature, rel=1e-5)
    assert losses["dis/classifier"].item() == pytest.approx(expected_classifier, rel=1e-5)
    assert clean_classifier != pytest.approx(expected_classifier, rel=1e-4)  # 10x the tolerance above


def test_discriminator_dropout_of_zero_is_the_plain_trunk_and_bad_rates_are_refused():
    d1 = adaptation_trainer_with("model.dis_dropout=[0,0,0]").dis.discriminators["a"].scales[0]
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(d1.features(x, dropout=True), d1.features(x))
    with pytest.raises(ValueError, match="needs 3 rates"):
        adaptation_trainer_with("model.dis_dropout=[0.1,0.5]")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        adaptation_trainer_with("model.dis_dropout=[0.1,0.5,1.0]")
    with pytest.raises(ValueError, match="dis_shared_layers > 0"):
        load_config(None, ["model.dis_dropout=[0.5]"])


def test_adaptation_step_losses_match_an_independent_computation():
    trainer = adaptation_trainer()
    x_a, x_b = torch.rand(4, 1, 28, 28) * 2 - 1, torch.rand(4, 1, 28, 28) * 2 - 1
    labels = torch.tensor([0, 3, 7, 9])
    torch.manual_seed(5)
    images, targets = {"a": x_a, "b": x_b}, {"a": "b", "b": "a"}
    streams = trainer.gen(images, targets, with_cycle=False)
    dis = trainer.dis
    # reference, computed with the weights before the update
    feats_a = dis.discriminators["a"].scales[0].features(torch.cat([x_a, streams["trans/b"], streams["recon/a"]]))
    feats_b = dis.discriminators["b"].scales[0].features(torch.cat([x_b, streams["trans/a"], streams["recon/b"]]))
    expected_feature = (l1_loss(feats_a[8:], feats_b[4:8]) + l1_loss(feats_a[4:8], feats_b[8:])).item()
    expected_classifier = torch.nn.functional.cross_entropy(dis.class_logits(feats_a[:4]), labels).item()
    losses = trainer.discriminator_step(images, streams, targets, labels)
    assert losses["dis/feature"].item() == pytest.approx(expected_feature, rel=1e-5)
    assert losses["dis/classifier"].item() == pytest.approx(expected_classifier, rel=1e-5)
    weights = trainer.cfg.loss
    gan = losses["dis/a"] + losses["dis/b"]
    total = weights.gan * gan + weights.classifier * losses["dis/classifier"] + weights.feature * losses["dis/feature"]
    assert losses["dis/total"].item() == pytest.approx(total.item(), rel=1e-6)
    with pytest.raises(ValueError, match="needs labels"):
        trainer.train_step([x_a, x_b])
    assert "dis/accuracy_a" in trainer.train_step([x_a, x_b], labels)
