"""N domains around one shared latent space: tied weights, per-domain losses, any-to-any translation,
and checkpoints of the two-domain format."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from preprocessing.synthetic.dataset import generate_demo_dataset
from tests.test_cli import unit
from tests.test_training import all_state
from unit_core.adaptation import classifier_from_checkpoint
from unit_core.checkpoint import load_checkpoint, load_generator
from unit_core.config import ConfigError, load_config
from unit_core.evaluation import evaluate
from unit_core.networks import UNITGenerator
from unit_core.trainer import UNITTrainer
from unit_core.training import fit
from unit_core.translate import Translator, translator_from_checkpoint
from unit_tracking.pyfunc_model import UnitTranslatorModel, encode_png

# The test data sets are tiny on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:.*training image\\(s\\) in domain")
LEGACY = Path(__file__).parent / "fixtures" / "legacy"
CONDITIONS = ("day", "night", "rain", "snow")


def many_config(root: Path | str, out_dir: Path, *overrides: str, domains=CONDITIONS):
    return load_config(None, [
        f"data.root={root}", f"data.domains=[{', '.join(domains)}]", "data.image_size=32",
        "model.width=8", "model.dis_width=8", "model.dis_layers=3", "model.res_blocks=2", "model.n_shared=1",
        f"train.out_dir={out_dir}", "train.sample_count=2", "train.log_every=2", "train.checkpoint_every=1000",
        "train.deterministic=true", "train.device=cpu", "evaluation.split=test_paired", "evaluation.report_images=2",
        *overrides,
    ])


@pytest.fixture(scope="module")
def conditions_root(tmp_path_factory) -> Path:
    """The procedural streets under four conditions, 32 px: 6 unpaired train images each, 2 paired test scenes."""
    root = tmp_path_factory.mktemp("conditions")
    return generate_demo_dataset("street", root, train_count=6, test_count=2, size=32, domains=CONDITIONS)


@pytest.fixture(scope="module")
def trained(conditions_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "conditions"
    return fit(many_config(conditions_root, out, "train.max_steps=4"), progress=False).checkpoint


def test_config_names_domains_once_each_and_keeps_adaptation_to_two():
    cfg = many_config("data", Path("out"), "model.domain_channels={rain: 1}")
    assert list(cfg.domains()) == list(CONDITIONS) and cfg.channels() == {"day": 3, "night": 3, "rain": 1, "snow": 3}
    assert load_config(None, []).domains() == {"a": "day", "b": "night"}  # two-domain slots stay a and b
    for overrides, message in [
        (["data.domains=[day, day, rain]"], "more than once"),
        (["data.domains=[day]"], "at least 2"),
        (["data.domains=[day, a.b]"], "domain name 'a.b'"),
        (["data.domains=[day, night]", "model.domain_channels={fog: 1}"], "names fog, not in data.domains"),
        (["data.domains=[day, night, rain]", "model.num_classes=10", "model.dis_shared_layers=1"], "exactly two domains"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config(None, overrides)


def test_every_encoder_and_generator_holds_the_same_shared_blocks():
    cfg = many_config("data", Path("out"), "model.n_shared=2", "model.domain_channels={night: 1}")
    gen = UNITGenerator(cfg.model, cfg.channels())
    assert len(gen.encoders) == len(gen.decoders) == 4
    for domain in CONDITIONS:
        assert gen.encoders[domain].shared is gen.enc_shared and gen.decoders[domain].shared is gen.dec_shared
    fronts = [{id(p) for p in gen.encoders[d].front.parameters()} for d in CONDITIONS]
    assert all(not fronts[i] & fronts[j] for i in range(4) for j in range(i + 1, 4))
    assert gen.encoders["night"].front[0].in_channels == 1 and gen.decoders["night"].back[-2].out_channels == 1
    # one latent code decodes in every domain
    z = gen.encode(torch.rand(1, 3, 16, 16), "day")
    assert [tuple(gen.decode(z, d).shape) for d in CONDITIONS] == [(1, 3, 16, 16), (1, 1, 16, 16), (1, 3, 16, 16), (1, 3, 16, 16)]


def test_each_step_translates_every_domain_to_another_and_all_pairs_come_up():
    trainer = UNITTrainer(many_config("data", Path("out")))
    pairs = Counter()
    for step in range(600):
        targets = trainer.targets(step)
        assert sorted(targets.values()) == sorted(CONDITIONS)  # each domain is the target of exactly one
        assert all(source != target for source, target in targets.items())
        pairs.update(targets.items())
    assert len(pairs) == 12 and min(pairs.values()) > 0.7 * 600 / 3  # each of the 3 shifts about a third of the steps
    again = UNITTrainer(many_config("data", Path("out")))
    assert [again.targets(s) for s in range(50)] == [trainer.targets(s) for s in range(50)]  # a resumed run agrees
    two = UNITTrainer(load_config(None, ["model.width=8", "model.dis_width=8", "model.dis_layers=3"]))
    assert {tuple(two.targets(s).items()) for s in range(20)} == {(("a", "b"), ("b", "a"))}


def test_batched_streams_equal_running_each_encoder_and_generator_alone():
    torch.manual_seed(0)
    trainer = UNITTrainer(many_config("data", Path("out"), "data.domains=[day, night, rain]"))
    gen = trainer.gen.eval()  # latent means, instance norm: per sample
    images = {d: torch.rand(2, 3, 16, 16) * 2 - 1 for d in ("day", "night", "rain")}
    targets = {"day": "rain", "night": "day", "rain": "night"}
    with torch.no_grad():
        streams = gen(images, targets)
        for source, target in targets.items():
            x = images[source]
            assert torch.allclose(streams[f"recon/{source}"], gen.translate(x, source, source), atol=1e-5)
            translated = gen.translate(x, source, target)
            assert torch.allclose(streams[f"trans/{source}"], translated, atol=1e-5)
            assert torch.allclose(streams[f"cycle/{source}"], gen.translate(translated, target, source), atol=1e-5)
            assert torch.allclose(streams[f"mu/{source}"], gen.encode(x, source), atol=1e-5)


def test_a_step_has_the_losses_of_every_domain_and_costs_two_passes_per_network():
    trainer = UNITTrainer(many_config("data", Path("out")))
    calls = Counter()
    for domain in CONDITIONS:
        for name, module in (("E", trainer.gen.encoders[domain].front), ("G", trainer.gen.decoders[domain].back),
                             ("D", trainer.dis.discriminators[domain])):
            module.register_forward_hook(lambda *_, key=(name, domain): calls.update([key]))
    before = {name: p.detach().clone() for name, p in trainer.gen.named_parameters()}
    losses = trainer.train_step([torch.rand(2, 3, 32, 32) * 2 - 1 for _ in CONDITIONS])
    for domain in CONDITIONS:
        for kind in ("gan", "kl", "recon", "kl_cycle", "cycle"):
            assert torch.isfinite(losses[f"gen/{kind}_{domain}"])
        assert torch.isfinite(losses[f"dis/{domain}"])
    # Linear cost: each encoder twice (input, cycle), each generator twice (its codes, cycle), each D twice (D, G step).
    assert set(calls.values()) == {2} and len(calls) == 12
    unchanged = [name for name, p in trainer.gen.named_parameters() if torch.equal(p, before[name])]
    assert not unchanged, unchanged[:3]


def test_two_domain_checkpoints_of_the_old_format_load_and_compute_as_before(tmp_path):
    expected = torch.load(LEGACY / "two-domain-outputs.pt", weights_only=True)
    cfg, generator = load_generator(LEGACY / "two-domain.pt")
    assert cfg.domains() == {"a": "day", "b": "night"}
    with torch.no_grad():
        assert torch.allclose(generator.translate(expected["x_a"], "a", "b"), expected["a2b"], atol=1e-6)
        assert torch.allclose(generator.translate(expected["x_b"], "b", "a"), expected["b2a"], atol=1e-6)
    translator, _ = translator_from_checkpoint(LEGACY / "two-domain.pt", "cpu")
    assert torch.allclose(translator.translate_tensor(expected["x_a"], "day", "night"), expected["a2b"], atol=1e-6)
    assert translator.direction("b2a") == ("b", "a")

    adaptation = torch.load(LEGACY / "adaptation-outputs.pt", weights_only=True)
    classify = classifier_from_checkpoint(LEGACY / "adaptation.pt", "cpu")
    assert torch.allclose(classify(adaptation["x_b"]), adaptation["logits_b"], atol=1e-5)

    # A run of the old format resumes: optimizer state and step included.
    payload = load_checkpoint(LEGACY / "two-domain.pt")
    trainer = UNITTrainer(cfg)
    trainer.load_state_dict(payload)
    assert trainer.step == 2 and trainer.gen_opt.state_dict()["state"]
    trainer.train_step([torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1])
    assert trainer.step == 3


def test_resume_of_an_n_domain_run_is_bit_exact(conditions_root, tmp_path):
    domains = ("day", "night", "snow")
    straight = fit(many_config(conditions_root, tmp_path / "straight", "train.max_steps=4", domains=domains), progress=False)
    fit(many_config(conditions_root, tmp_path / "split", "train.max_steps=2", domains=domains), progress=False)
    torch.manual_seed(99)
    resumed = fit(many_config(conditions_root, tmp_path / "split", "train.max_steps=4", domains=domains), resume=True,
                  progress=False)
    cfg = many_config(conditions_root, tmp_path / "x", domains=domains)
    a, b = UNITTrainer(cfg), UNITTrainer(cfg)
    a.load_state_dict(load_checkpoint(straight.checkpoint))
    b.load_state_dict(load_checkpoint(resumed.checkpoint))
    state_a, state_b = all_state(a), all_state(b)
    assert [k for k in state_a if not torch.equal(state_a[k], state_b[k])] == []
    log = [json.loads(line) for line in (tmp_path / "split" / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [2, 4] and "gen/cycle_snow" in log[-1]


def test_sample_grid_has_a_column_per_domain(trained):
    grid = Image.open(sorted((trained.parent.parent / "samples").glob("*.png"))[-1])
    tiles = 1 + len(CONDITIONS)  # input, then the image in each domain
    assert grid.width > tiles * 32 and grid.height > len(CONDITIONS) * 2 * 32  # 2 samples per domain, plus headings


def test_evaluation_scores_every_ordered_pair(trained, conditions_root, tmp_path):
    translator, cfg = translator_from_checkpoint(trained, "cpu")
    result = evaluate(translator, cfg, tmp_path / "eval", scale=32, model_source=str(trained))
    pairs = {f"{s}2{t}" for s in CONDITIONS for t in CONDITIONS if s != t}
    assert {key.split("/")[0] for key in result.metrics} == pairs | {"mean"}
    for pair in pairs:
        assert 0.0 <= result.metrics[f"{pair}/pixel_accuracy"] <= 1.0 and result.metrics[f"{pair}/paired_images"] == 2
    for name in ("pixel_accuracy", "cycle_l1"):
        mean = sum(result.metrics[f"{pair}/{name}"] for pair in pairs) / 12
        assert result.metrics[f"mean/{name}"] == pytest.approx(mean)
    table = (tmp_path / "eval" / "pairs.md").read_text()
    night_row = next(line for line in table.splitlines() if line.startswith("| night |"))
    assert f"{result.metrics['night2snow/pixel_accuracy']:.4f}" in night_row.split("|")[5]  # row night, column snow
    grids = sorted(p.name for p in (tmp_path / "eval" / "report").glob("*.png"))
    assert grids == sorted(f"{d}.png" for d in CONDITIONS)
    # input, then translation and truth for each of the 3 other domains, 2 rows under headings
    assert Image.open(tmp_path / "eval" / "report" / "day.png").width > 7 * 32


def test_translate_to_one_domain_or_to_all(trained, conditions_root, tmp_path):
    photo = conditions_root / "day" / "test_paired" / "000000.png"
    result = unit("translate", "--checkpoint", str(trained), "--source", "day", "--target", "all", str(photo),
                  "--out", str(tmp_path / "all"))
    assert result.returncode == 0, result.stderr
    assert sorted(p.relative_to(tmp_path / "all").as_posix() for p in (tmp_path / "all").rglob("*.png")) == [
        "night/000000.png", "rain/000000.png", "snow/000000.png"]
    one = unit("translate", "--checkpoint", str(trained), "--source", "rain", "--target", "snow", str(photo),
               "--out", str(tmp_path / "one"))
    assert one.returncode == 0 and Image.open(tmp_path / "one" / "000000.png").size == (32, 32)
    direction = unit("translate", "--checkpoint", str(trained), "--direction", "a2b", str(photo), "--out", str(tmp_path / "d"))
    assert direction.returncode != 0 and "give the source and target" in direction.stderr
    unknown = unit("translate", "--checkpoint", str(trained), "--source", "day", "--target", "fog", str(photo),
                   "--out", str(tmp_path / "u"))
    assert unknown.returncode != 0 and "unknown domain 'fog'" in unknown.stderr and "snow" in unknown.stderr


def test_served_model_takes_source_and_target(trained):
    model = UnitTranslatorModel()
    model.translator = Translator.from_checkpoint(trained, "cpu")
    frame = pd.DataFrame({"image": [encode_png(Image.new("RGB", (20, 12), (90, 120, 200)))]})
    output = model.predict(None, frame, params={"source": "snow", "target": "night"})
    assert Image.open(__import__("io").BytesIO(output["image"][0])).size == (20, 12)
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="give the source and target"):
        model.predict(None, frame, params={})
    with pytest.raises(MlflowException, match="go together"):
        model.predict(None, frame, params={"source": "snow"})
