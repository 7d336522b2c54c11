"""Procedural demo data sets with ground truth: no download, byte-identical for a given seed.

Two generators render the same scene in several domains from one scene seed:

* ``street``: a street seen from eye height, by ``day`` and by ``night`` (the default), and
  in ``rain`` and ``snow`` (``domains: [day, night, rain, snow]``: the N-domain demo);
* ``maps``: an area seen from above, as a ``satellite`` photo and as a street ``map``.

Train splits are unpaired: each domain's scenes come from its own seed stream. The
``test_paired`` split renders the same scenes in every domain under the same file names,
so a translation can be scored against the true rendering (pixel accuracy on maps). The
optional ``val_paired`` split is the same for scenes of a stream of its own: settings are
chosen there, and the test scenes only report.

``unit ingest demo-street`` / ``demo-maps`` take their options from
``unit_core.ingest_settings`` (``DemoStreetIngest``, ``DemoMapsIngest``) like every other kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from preprocessing.output import DatasetWriter
from preprocessing.synthetic.maps import MAP_DOMAINS, build_map_scene, render_maps
from preprocessing.synthetic.street import STREET_DOMAINS, build_street_scene, render_street
from unit_core.ingest_settings import DEMO_MAX_SIZE, DEMO_MIN_SIZE

DemoKind = Literal["street", "maps"]
DEMO_KINDS: tuple[DemoKind, ...] = get_args(DemoKind)
MIN_SIZE, MAX_SIZE = DEMO_MIN_SIZE, DEMO_MAX_SIZE
#: Changed whenever a renderer changes its output, so that old and new data sets are told apart.
GENERATOR_VERSION = 1
# Seed streams: the paired test scenes, each domain's train scenes (the first two domains
# of a generator: streams 0 and 1, the others from 3 on) and the paired validation scenes
# (the last stream below 2^53: room for six domains). The stream sits in the top bits of
# every scene seed, so seeds of two streams never coincide; below 2^53 they stay exact in
# any JSON reader.
TRAIN_A, TRAIN_B, TEST_PAIRED = range(3)
VAL_PAIRED = 7
_STREAM_SHIFT = 50

Renderer = Callable[[int, int, int, tuple[str, ...]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class DemoGenerator:
    domains: tuple[str, ...]  # every domain it renders; the first two are the default data set's A and B
    render: Renderer  # (scene seed, width, height, domains) -> RGB uint8 image per domain

    @property
    def default_domains(self) -> tuple[str, str]:
        return self.domains[0], self.domains[1]

    def train_stream(self, domain: str) -> int:
        index = self.domains.index(domain)
        return (TRAIN_A, TRAIN_B)[index] if index < 2 else TEST_PAIRED + index - 1


def _render_street(scene_seed: int, width: int, height: int, domains: tuple[str, ...]) -> dict[str, np.ndarray]:
    return dict(render_street(build_street_scene(scene_seed), width, height, domains))  # type: ignore[arg-type]


def _render_maps(scene_seed: int, width: int, height: int, domains: tuple[str, ...]) -> dict[str, np.ndarray]:
    return dict(render_maps(build_map_scene(scene_seed, width / height), width, height, domains))  # type: ignore[arg-type]


GENERATORS: dict[DemoKind, DemoGenerator] = {
    "street": DemoGenerator(STREET_DOMAINS, _render_street),
    "maps": DemoGenerator(MAP_DOMAINS, _render_maps),
}


def parse_size(size: int | tuple[int, int] | str) -> tuple[int, int]:
    """(width, height) from 128, (256, 128) or "256x128"; ValueError names what is wrong."""
    if isinstance(size, str):
        parts = size.lower().split("x")
        if len(parts) > 2 or not all(part.strip().isdigit() for part in parts):
            raise ValueError(f"size {size!r}: expected N or WxH with positive integers, e.g. 128 or 256x128")
        numbers = [int(part) for part in parts]
        size = numbers[0] if len(numbers) == 1 else (numbers[0], numbers[1])
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        width = height = int(size)
    elif isinstance(size, tuple) and len(size) == 2 and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size):
        width, height = int(size[0]), int(size[1])
    else:
        raise ValueError(f"size {size!r}: expected an int or a (width, height) tuple of ints")
    for name, value in (("width", width), ("height", height)):
        if not MIN_SIZE <= value <= MAX_SIZE:
            raise ValueError(f"size: {name} {value} is out of range; expected {MIN_SIZE} to {MAX_SIZE} pixels")
    return width, height


def scene_seed(seed: int, stream: int, index: int) -> int:
    """The seed of scene ``index`` of a stream: SeedSequence-mixed, tagged with the stream."""
    state = np.random.SeedSequence(seed, spawn_key=(stream, index)).generate_state(1, np.uint64)
    mixed = int(state[0]) & ((1 << _STREAM_SHIFT) - 1)
    return stream << _STREAM_SHIFT | mixed


def render_demo_scene(
    kind: DemoKind, seed: int, size: int | tuple[int, int], domains: tuple[str, ...] | None = None
) -> dict[str, np.ndarray]:
    """Render one scene seed in the given domains (default the first two): (height, width, 3) uint8 RGB."""
    generator = _generator(kind)
    width, height = parse_size(size)
    wanted = generator.default_domains if domains is None else domains
    unknown = sorted(set(wanted) - set(generator.domains))
    if unknown:
        raise ValueError(f"unknown {kind} domain(s) {unknown}; expected {list(generator.domains)}")
    return generator.render(seed, width, height, tuple(wanted))


def generate_demo_dataset(
    kind: DemoKind,
    out_dir: str | Path,
    *,
    train_count: int,
    test_count: int,
    size: int | tuple[int, int],
    seed: int = 0,
    domains: tuple[str, ...] | None = None,
    val_count: int = 0,
) -> Path:
    """Write ``<out_dir>/<domain>/{train,test_paired[,val_paired]}/<index>.png`` with manifest and report.

    ``size`` is one int for square images or (width, height). ``domains``: which of the
    generator's domains, at least two (default: its first two). A domain's images are the
    same whichever other domains are rendered with it, and the train and test images the
    same whatever ``val_count`` is.
    """
    generator = _generator(kind)
    domains = tuple(domains) if domains is not None else generator.default_domains
    unknown = [domain for domain in domains if domain not in generator.domains]
    if unknown or len(set(domains)) != len(domains) or len(domains) < 2:
        raise ValueError(f"domains {list(domains)}: expected at least two different ones of {list(generator.domains)}")
    width, height = parse_size(size)
    for name, count in (("train_count", train_count), ("test_count", test_count), ("val_count", val_count)):
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {count!r}")
    if train_count + test_count == 0:
        raise ValueError("train_count and test_count are both 0: nothing to generate")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")

    parameters: dict[str, Any] = {
        "generator_version": GENERATOR_VERSION,
        "train_count": int(train_count),
        "test_count": int(test_count),
        "val_count": int(val_count),
        "width": width,
        "height": height,
        "seed": int(seed),
        "domains": list(domains),
    }
    # Rendering is cheaper than checking which files could be reused.
    with DatasetWriter(out_dir, image_format="png", previous=False, kind=f"demo-{kind}", parameters=parameters) as writer:

        def write(domain: str, split: str, index: int, scene: int, image: np.ndarray) -> None:
            writer.add_image(
                image,
                domain=domain,
                split=split,
                name=f"{index:06d}",
                source=f"demo:{kind}/seed={scene}",
                scene_seed=scene,
            )

        for domain in domains:
            for index in range(train_count):
                scene = scene_seed(seed, generator.train_stream(domain), index)
                write(domain, "train", index, scene, generator.render(scene, width, height, (domain,))[domain])
        for split, stream, count in (("test_paired", TEST_PAIRED, test_count), ("val_paired", VAL_PAIRED, val_count)):
            for index in range(count):
                scene = scene_seed(seed, stream, index)
                images = generator.render(scene, width, height, domains)
                for domain in domains:
                    write(domain, split, index, scene, images[domain])
    return Path(out_dir)


def _generator(kind: str) -> DemoGenerator:
    if kind not in GENERATORS:
        raise ValueError(f"unknown demo kind {kind!r}; expected one of {list(DEMO_KINDS)}")
    return GENERATORS[kind]  # type: ignore[index]
