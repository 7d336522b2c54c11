"""Procedural demo data sets: determinism, seed streams, pairing, and that each rendering
looks like its domain while showing the same scene as its partner."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from preprocessing.output import read_manifest
from preprocessing.synthetic import colour
from preprocessing.synthetic.dataset import GENERATORS, generate_demo_dataset, parse_size, render_demo_scene
from preprocessing.synthetic.maps import FOREST, LAND, MAJOR_ROAD, MAP_PALETTE, PARK, ROAD, WATER
from unit_cli.main import build_parser, main

SMALL = (40, 24)  # non-square on purpose: width 40, height 24
SCENES = (11, 12, 13, 14)


def _all_files(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def _generate(kind: str, out: Path, seed: int = 3) -> Path:
    return generate_demo_dataset(kind, out, train_count=4, test_count=3, size=SMALL, seed=seed)  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=sorted(GENERATORS))
def dataset(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    kind = request.param
    return kind, _generate(kind, tmp_path_factory.mktemp(kind) / "data")


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)


def _edges(image: np.ndarray) -> np.ndarray:
    """Gradient magnitude of log luminance: the same outlines whether lit by day or by night."""
    gray = cv2.GaussianBlur(np.log1p(_gray(image)), (0, 0), 1.5)
    return np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_same_seed_gives_byte_identical_data_set(dataset: tuple[str, Path], tmp_path: Path) -> None:
    kind, first = dataset
    again = _all_files(_generate(kind, tmp_path / "again"))
    assert again == _all_files(first)
    assert "manifest.jsonl" in again and "report.json" in again
    other_seed = _all_files(_generate(kind, tmp_path / "other", seed=4))
    assert other_seed.keys() == again.keys()
    assert all(other_seed[name] != again[name] for name in again if name.endswith(".png"))


def test_layout_and_sizes(dataset: tuple[str, Path]) -> None:
    kind, root = dataset
    for domain in GENERATORS[kind].default_domains:  # type: ignore[index]
        for split, count in (("train", 4), ("test_paired", 3)):
            files = sorted((root / domain / split).glob("*.png"))
            assert [f.name for f in files] == [f"{i:06d}.png" for i in range(count)]
            for file in files:
                with Image.open(file) as image:
                    assert image.mode == "RGB" and image.size == SMALL


def test_train_scene_seeds_are_disjoint_between_domains(dataset: tuple[str, Path]) -> None:
    kind, root = dataset
    domain_a, domain_b = GENERATORS[kind].default_domains  # type: ignore[index]
    seeds: dict[tuple[str, str], list[int]] = {}
    for entry in read_manifest(root / "manifest.jsonl"):
        seeds.setdefault((entry["domain"], entry["split"]), []).append(entry["scene_seed"])
    train_a, train_b = seeds[(domain_a, "train")], seeds[(domain_b, "train")]
    test = seeds[(domain_a, "test_paired")]
    assert len(set(train_a)) == len(train_a) == 4 and len(set(train_b)) == len(train_b) == 4
    assert not set(train_a) & set(train_b)
    assert not (set(train_a) | set(train_b)) & set(test)
    assert all(0 <= seed < 2**53 for seed in train_a + train_b + test)  # exact in any JSON reader


def test_test_paired_shares_scene_seeds_and_file_names(dataset: tuple[str, Path]) -> None:
    kind, root = dataset
    domain_a, domain_b = GENERATORS[kind].default_domains  # type: ignore[index]
    entries = [e for e in read_manifest(root / "manifest.jsonl") if e["split"] == "test_paired"]
    by_domain = {d: {Path(e["output"]).name: e["scene_seed"] for e in entries if e["domain"] == d} for d in (domain_a, domain_b)}
    assert by_domain[domain_a] == by_domain[domain_b]
    assert len(set(by_domain[domain_a].values())) == 3
    for name in by_domain[domain_a]:
        a = np.asarray(Image.open(root / domain_a / "test_paired" / name))
        b = np.asarray(Image.open(root / domain_b / "test_paired" / name))
        assert np.abs(a.astype(int) - b.astype(int)).mean() > 10  # two domains, not one image twice


def test_validation_scenes_are_paired_new_scenes_and_leave_train_and_test_unchanged(tmp_path: Path) -> None:
    plain = _all_files(_generate("maps", tmp_path / "plain"))
    root = generate_demo_dataset("maps", tmp_path / "with-val", train_count=4, test_count=3, size=SMALL, seed=3,
                                 val_count=2)
    with_val = _all_files(root)
    images = [name for name in plain if name.endswith(".png")]
    assert all(with_val[name] == plain[name] for name in images)
    assert sorted(name for name in with_val if "/val_paired/" in name) == [
        f"{domain}/val_paired/{index:06d}.png" for domain in ("map", "satellite") for index in range(2)]
    seeds: dict[tuple[str, str], set[int]] = {}
    for entry in read_manifest(root / "manifest.jsonl"):
        seeds.setdefault((entry["domain"], entry["split"]), set()).add(entry["scene_seed"])
    val = seeds[("satellite", "val_paired")]
    assert val == seeds[("map", "val_paired")] and len(val) == 2
    others = set().union(*(found for (_, split), found in seeds.items() if split != "val_paired"))
    assert not val & others and all(0 <= seed < 2**53 for seed in val)


def test_cli_writes_the_validation_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", "demo-maps", "--out", str(tmp_path / "maps"), "--train", "1", "--test", "1", "--val", "2",
                 "--size", "32"]) == 0
    assert "satellite: 1 train, 1 test_paired, 2 val_paired" in capsys.readouterr().out
    assert len(list((tmp_path / "maps" / "map" / "val_paired").glob("*.png"))) == 2


def test_night_is_much_darker_than_day_with_the_same_layout() -> None:
    day_light, night_light, same_scene, other_scene = [], [], [], []
    for seed in SCENES:
        scene = render_demo_scene("street", seed, 128)
        day, night = scene["day"], scene["night"]
        other_night = render_demo_scene("street", seed + 100, 128, ("night",))["night"]
        day_light.append(_gray(day).mean())
        night_light.append(_gray(night).mean())
        assert night_light[-1] < 0.7 * day_light[-1]
        same_scene.append(_correlation(_edges(day), _edges(night)))
        other_scene.append(_correlation(_edges(day), _edges(other_night)))
        assert same_scene[-1] > other_scene[-1]  # night outlines match their own day scene best
    assert np.mean(night_light) < 0.5 * np.mean(day_light)
    assert np.mean(same_scene) > np.mean(other_scene) + 0.15


@pytest.mark.parametrize("seed", SCENES)
def test_map_is_flat_palette_and_satellite_is_textured_over_the_same_area(seed: int) -> None:
    scene = render_demo_scene("maps", seed, (128, 96))
    satellite, flat_map = scene["satellite"], scene["map"]
    map_colours = np.unique(flat_map.reshape(-1, 3), axis=0)
    assert len(map_colours) <= len(MAP_PALETTE)
    assert {tuple(c) for c in map_colours} <= {tuple(c) for c in MAP_PALETTE}
    assert len(np.unique(satellite.reshape(-1, 3), axis=0)) > 2000
    # crisp map: almost every pixel has the colour of a neighbour; the photo varies pixel to pixel
    assert np.mean(np.all(flat_map[:, 1:] == flat_map[:, :-1], axis=2)) > 0.6
    assert np.mean(np.all(satellite[:, 1:] == satellite[:, :-1], axis=2)) < 0.1

    def where(label: int) -> np.ndarray:
        return np.all(flat_map == MAP_PALETTE[label], axis=2)

    photo = satellite.astype(float)
    green = photo[..., 1] - (photo[..., 0] + photo[..., 2]) / 2
    roads = where(ROAD) | where(MAJOR_ROAD)
    open_ground = where(LAND) | where(PARK) | where(FOREST)
    assert roads.mean() > 0.05 and open_ground.mean() > 0.05
    # grass and trees where the map has open ground, grey asphalt where it draws a road
    assert green[open_ground].mean() > green[roads].mean() + 10
    water = where(WATER)
    if water.sum() > 50:
        r, g, b = satellite[water].astype(float).mean(axis=0)
        assert b > r  # water is bluish where the map draws water


def test_same_scene_renders_identically_and_sizes_are_honoured() -> None:
    for kind in sorted(GENERATORS):
        first = render_demo_scene(kind, 5, (64, 32))  # type: ignore[arg-type]
        second = render_demo_scene(kind, 5, (64, 32))  # type: ignore[arg-type]
        for domain, image in first.items():
            assert image.dtype == np.uint8 and image.shape == (32, 64, 3)
            assert np.array_equal(image, second[domain])
        tall = render_demo_scene(kind, 5, (24, 56))  # type: ignore[arg-type]
        assert all(image.shape == (56, 24, 3) for image in tall.values())


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"size": 0}, "width 0 is out of range"),
        ({"size": -8}, "out of range"),
        ({"size": (64, 0)}, "height 0 is out of range"),
        ({"size": "64x"}, "expected N or WxH"),
        ({"size": 64.0}, "expected an int"),
        ({"train_count": -1}, "train_count must be a non-negative integer"),
        ({"test_count": -3}, "test_count must be a non-negative integer"),
        ({"train_count": 0, "test_count": 0}, "nothing to generate"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"kind": "faces"}, "unknown demo kind 'faces'"),
    ],
)
def test_bad_arguments_raise_clear_value_errors(arguments: dict, message: str, tmp_path: Path) -> None:
    call = {"kind": "street", "train_count": 1, "test_count": 1, "size": 32, "seed": 0} | arguments
    kind = call.pop("kind")
    with pytest.raises(ValueError, match=message):
        generate_demo_dataset(kind, tmp_path / "out", **call)
    assert not (tmp_path / "out").exists()


def test_parse_size_forms() -> None:
    assert parse_size(128) == (128, 128)
    assert parse_size((256, 128)) == (256, 128)
    assert parse_size("256x128") == (256, 128)
    assert parse_size("96") == (96, 96)


def test_cli_commands_write_a_data_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", "demo-maps", "--out", str(tmp_path / "maps"), "--train", "2", "--test", "1", "--size", "40x24",
                 "--seed", "9"]) == 0
    assert "satellite: 2 train, 1 test_paired; map: 2 train, 1 test_paired" in capsys.readouterr().out
    assert len(list((tmp_path / "maps" / "satellite" / "train").glob("*.png"))) == 2
    with Image.open(tmp_path / "maps" / "map" / "test_paired" / "000000.png") as image:
        assert image.size == (40, 24)


def test_cli_options_are_the_settings_model_and_its_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    from unit_core.ingest_settings import DemoStreetIngest

    with pytest.raises(SystemExit):
        build_parser().parse_args(["ingest", "demo-street", "--help"])
    usage = capsys.readouterr().out
    assert "train images per domain (default 200)" in usage and "(default 128x128)" in usage
    assert (DemoStreetIngest().train, DemoStreetIngest().test, DemoStreetIngest().size, DemoStreetIngest().seed) == \
        (200, 20, (128, 128), 0)


@pytest.mark.parametrize("bad", [["--size", "0"], ["--size", "big"], ["--train", "-1"], ["--train", "0", "--test", "0"],
                                 ["--domains", "day"], ["--domains", "day", "fog"]])
def test_cli_rejects_bad_options(bad: list[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["ingest", "demo-street", "--out", str(tmp_path / "x"), *bad])
    assert exit_info.value.code == 2
    assert not (tmp_path / "x").exists()


def test_cli_refuses_to_replace_a_folder_it_did_not_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["ingest", "demo-street", "--out", str(tmp_path / "mine"), "--train", "1", "--test", "0"]) == 2
    assert "refusing to replace" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_both_renderers_share_the_colour_helpers() -> None:
    from preprocessing.synthetic import maps, street

    assert maps.jitter is street.jitter is colour.jitter and maps.shade is street.shade is colour.shade
    assert colour.shade((200, 100, 0), 1.5) == (255, 150, 0)
    assert colour.clip_rgb(np.array([-3.2, 127.6, 300.0])) == (0, 128, 255)
    assert colour.jitter(np.random.default_rng(0), (100, 100, 100), 0) == (100, 100, 100)
