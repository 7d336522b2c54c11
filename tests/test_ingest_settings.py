"""Typed ingest settings: validated when a preset loads, the same objects from the command line,
the old ``ingest.args`` lists still read (with a deprecation warning), and the pipeline's
ingest stage running them without command-line strings."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import pytest
import yaml

from preprocessing.cli import register, settings_from
from unit_core.config import ConfigError, config_from_dict, load_config, preset_names
from unit_core.ingest_settings import (
    INGEST_KINDS,
    KIND_MODELS,
    AnimalsIngest,
    CelebaIngest,
    DemoMapsIngest,
    DemoStreetIngest,
    DigitsIngest,
    FoldersIngest,
    cli_form,
    flag_of,
    legacy_args,
)
from unit_pipeline import stages

REPO = Path(__file__).resolve().parents[1]
CELEBA_ARGS = ["data/raw/celeba/img_align_celeba", "--attributes", "data/raw/celeba/list_attr_celeba.txt",
               "--partition", "data/raw/celeba/list_eval_partition.txt", "--attribute", "Smiling", "--size", "128"]


def ingest_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog="unit")
    register(parser.add_subparsers(dest="command", required=True))
    kinds = next(action for action in parser._subparsers._group_actions if action.dest == "command").choices["ingest"]
    chooser = next(action for action in kinds._subparsers._group_actions if action.dest == "kind")
    return parser, dict(chooser.choices)


def from_command_line(*argv: str):
    parser, kinds = ingest_parser()
    args = parser.parse_args(["ingest", *argv])
    return settings_from(kinds[args.kind], KIND_MODELS[args.kind], args)


def write_preset(tmp_path: Path, ingest: dict, params_ingest: dict | None = None) -> Path:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"ingest": params_ingest or {"kind": "demo-street", "train": 5}}))
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "mine.yaml").write_text(yaml.safe_dump({"ingest": ingest}))
    return params


def test_every_preset_loads_typed_ingest_settings_without_a_deprecation():
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        for name in preset_names(REPO / "params.yaml"):
            cfg = load_config(REPO / "params.yaml", preset=name)
            assert isinstance(cfg.ingest, KIND_MODELS[cfg.ingest.kind]), name
    assert set(INGEST_KINDS) == {"demo-street", "demo-maps", "folders", "street", "cyclegan", "celeba", "animals",
                                 "digits", "pairs"}


@pytest.mark.parametrize("ingest, message", [
    ({"kind": "celeba", "images": "x", "attributes": "a.txt", "atribute": "Smiling"}, "ingest.atribute: unknown key"),
    ({"kind": "celeba", "images": "x", "attributes": "a.txt"}, "ingest.attribute: Field required"),
    ({"kind": "demo-maps", "train": 5, "size": "big"}, "ingest.size: Value error, expected WIDTHxHEIGHT or N"),
    ({"kind": "demo-street", "domains": ["day", "fog"]}, "ingest.domains.1: Input should be 'day', 'night', 'rain' or 'snow'"),
    ({"kind": "folders", "domains": {"a": "x"}, "test_fraction": 1.5}, "ingest.test_fraction: Input should be less than 1"),
    ({"kind": "digits", "size": 32}, "give mnist (--mnist), usps (--usps) or both"),
    ({"kind": "foldrs", "domains": {"a": "x"}}, "ingest.kind: Input tag 'foldrs'"),
])
def test_a_mistake_in_a_presets_ingest_settings_is_a_config_error_at_load_naming_the_key(tmp_path, ingest, message):
    params = write_preset(tmp_path, ingest)
    with pytest.raises(ConfigError) as info:
        load_config(params, preset="mine")
    assert message in str(info.value) and "presets/mine.yaml" in str(info.value)


def test_a_preset_of_another_kind_replaces_the_ingest_section_and_one_of_the_same_kind_merges(tmp_path):
    params = write_preset(tmp_path, {"kind": "folders", "domains": {"day": "raw/day", "night": "raw/night"}})
    cfg = load_config(params, preset="mine")  # the base's demo-street "train" does not leak into folders
    assert cfg.ingest == FoldersIngest(domains={"day": "raw/day", "night": "raw/night"})
    assert cfg.ingest.missing_inputs() == ["raw/day", "raw/night"]
    same = load_config(REPO / "params.yaml", preset="street-conditions", overrides=["ingest.train=7"])
    assert (same.ingest.train, same.ingest.test, same.ingest.domains) == (7, 16, ("day", "night", "rain", "snow"))


def test_old_args_lists_still_load_with_a_warning_showing_the_new_form():
    old = {"kind": "celeba", "args": CELEBA_ARGS, "requires": "CelebA"}
    with pytest.warns(FutureWarning, match=r"ingest\.args .* deprecated.*ingest: \{kind: celeba, images: data/raw/celeba"):
        cfg = config_from_dict({"ingest": old})
    assert cfg.ingest == CelebaIngest(images="data/raw/celeba/img_align_celeba", attributes="data/raw/celeba/list_attr_celeba.txt",
                                      partition="data/raw/celeba/list_eval_partition.txt", attribute="Smiling",
                                      size=128, requires="CelebA")
    with pytest.warns(FutureWarning):  # the form of params.yaml and the demo presets, as stored in older checkpoints
        assert config_from_dict({"ingest": {"kind": "demo-street", "args": ["--train", "500", "--test", "16", "--size", "64"],
                                            "requires": ""}}) == config_from_dict({})
    with pytest.warns(FutureWarning):
        animals = config_from_dict({"ingest": {"kind": "animals", "args": ["raw", "--class", "dogs", "--class=cats",
                                                                           "--min-im", "100", "--no-reuse"]}}).ingest
    assert (animals.location, animals.classes, animals.min_images, animals.reuse) == ("raw", ("dogs", "cats"), 100, False)
    with pytest.warns(FutureWarning):
        street = config_from_dict({"ingest": {"kind": "demo-street", "args": ["--domains", "day", "rain", "--seed", "3"]}})
    assert street.ingest.domains == ("day", "rain") and street.ingest.seed == 3
    with pytest.raises(ConfigError, match=r"ingest: .*unknown option '--atribute' of 'unit ingest celeba'"):
        config_from_dict({"ingest": {"kind": "celeba", "args": ["x", "--atribute", "Smiling"]}})


def test_the_command_line_builds_the_same_settings_as_a_preset():
    preset = load_config(REPO / "params.yaml", preset="celeba-smiling").ingest
    assert from_command_line("celeba", *CELEBA_ARGS, "--out", "x").model_copy(update={"requires": preset.requires}) == preset
    assert from_command_line("demo-street", "--out", "x", "--train", "500", "--test", "16", "--size", "64") == config_from_dict({}).ingest
    digits = from_command_line("digits", "--out", "x", "--mnist", "m", "--usps-pad", "auto", "--no-progress", "--format", "jpg")
    assert digits == DigitsIngest(mnist="m", progress=False, format="jpg")
    assert from_command_line("animals", "raw", "--class", "dogs", "--class", "cats", "--out", "x") == \
        AnimalsIngest(location="raw", classes=("dogs", "cats"))


@pytest.mark.parametrize("kind", INGEST_KINDS)
def test_every_flag_is_a_field_and_unset_flags_take_the_models_default(kind, capsys):
    model = KIND_MODELS[kind]
    parser, kinds = ingest_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["ingest", kind, "--help"])
    usage = " ".join(capsys.readouterr().out.split())
    for name, field in model.model_fields.items():
        form = cli_form(field)
        if form is None:
            continue
        shown = name if form.get("positional") else flag_of(name, field)
        assert shown in usage, (kind, name)
        if not field.is_required() and field.default is not None and not isinstance(field.default, bool):
            # the help shows the model's default (the only definition of it) after the model's help text
            default = field.default
            text = f"{default[0]}x{default[1]}" if isinstance(default, tuple) and len(default) == 2 and \
                isinstance(default[0], int) else " ".join(default) if isinstance(default, tuple) else str(default)
            assert f"{field.description} (default {text})" in usage, (kind, name)
    flags = {option for action in kinds[kind]._actions for option in action.option_strings} - {"-h", "--help", "--out"}
    assert flags == {flag_of(name, field) for name, field in model.model_fields.items()
                     if cli_form(field) is not None and not cli_form(field).get("positional")}
    # the old args' translation reads the same table: every flag is known to it
    for name, field in model.model_fields.items():
        form = cli_form(field)
        if form and not form.get("positional") and field.annotation is bool:
            assert legacy_args(kind, [flag_of(name, field)]) == {name: not field.default}


@pytest.mark.parametrize("kind", INGEST_KINDS)
def test_the_help_of_a_flag_that_turns_a_setting_off_says_so(kind, capsys):
    _, kinds = ingest_parser()
    helps = {option: action.help for action in kinds[kind]._actions for option in action.option_strings}
    for name, field in KIND_MODELS[kind].model_fields.items():
        if cli_form(field) is not None and field.annotation is bool:
            flag = flag_of(name, field)
            expected = f"do not {field.description}" if field.default else field.description
            assert helps[flag].startswith(expected), (kind, flag, helps[flag])
    assert helps.get("--no-progress", "do not show a progress bar") == "do not show a progress bar"


def test_bad_flag_values_are_argparse_errors_naming_the_flag(capsys):
    for argv, message in ((["demo-maps", "--size", "8"], "argument --size: Input should be greater than or equal to 16"),
                          (["digits", "--usps", "u", "--limit", "0"], "argument --limit: Input should be greater than or equal to 1"),
                          (["demo-street", "--train", "0", "--test", "0"], "train and test are both 0")):
        with pytest.raises(SystemExit) as caught:
            from_command_line(*argv, "--out", "x")
        assert caught.value.code == 2 and message in capsys.readouterr().err


def test_the_ingest_stage_runs_the_typed_settings_and_reuses_a_generated_data_set(tmp_path):
    cfg = config_from_dict({"ingest": {"kind": "demo-maps", "train": 2, "test": 1, "size": 16},
                            "data": {"root": str(tmp_path / "maps"), "domain_a": "satellite", "domain_b": "map"}})
    first = stages.ingest(cfg)
    assert first["reused"] is False and len(list((tmp_path / "maps" / "map" / "train").glob("*.png"))) == 2
    assert stages.ingest(cfg)["reused"] is True
    assert isinstance(cfg.ingest, DemoMapsIngest) and not isinstance(cfg.ingest, DemoStreetIngest)


def test_a_failing_ingest_stage_says_what_the_preset_needs(tmp_path):
    cfg = config_from_dict({"ingest": {"kind": "folders", "domains": {"day": str(tmp_path / "nowhere")}, "requires": "day photos"},
                            "data": {"root": str(tmp_path / "ds")}})
    assert stages.missing_ingest_inputs(cfg) == [str(tmp_path / "nowhere")]
    with pytest.raises(stages.StageError, match=r"(?s)ingest failed: .*no such file or folder.*This preset needs: day photos"):
        stages.ingest(cfg)


def test_settings_survive_the_json_round_trip_of_flows_workers_and_checkpoints():
    for name in preset_names(REPO / "params.yaml"):
        cfg = load_config(REPO / "params.yaml", preset=name)
        assert config_from_dict(cfg.to_dict()) == cfg, name
