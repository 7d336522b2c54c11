"""Procedural city areas, rendered as a satellite photo and as a street map from one scene seed.

A scene is a vector layout in map units (the shorter side of the area is 1): roads
(a street grid plus curved roads), building footprints, water, parks and forest. Both
renderings rasterise the same shapes: the map is a flat-coloured function of the layout
alone (each pixel takes the class covering its centre), so pixel accuracy against it is
meaningful; the satellite view adds textures, tree crowns, roof shading and shadows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

import cv2
import numpy as np

from preprocessing.synthetic.colour import Rgb, jitter, shade
from unit_core.ingest_settings import MapDomain

MAP_DOMAINS: tuple[MapDomain, ...] = get_args(MapDomain)

SHIFT = 4  # fractional bits of the fixed-point vertices handed to cv2

# Classes of the map, in drawing order: a later class covers an earlier one.
LAND, PARK, FOREST, WATER, ROAD_EDGE, ROAD, MAJOR_EDGE, MAJOR_ROAD, BUILDING = range(9)
# Flat colours in the style of web street maps.
MAP_PALETTE = np.array(
    [
        (242, 239, 233),  # land
        (200, 232, 182),  # park
        (173, 214, 160),  # forest
        (170, 211, 242),  # water
        (208, 204, 198),  # outline of a street
        (255, 255, 255),  # street
        (226, 176, 92),  # outline of a major road
        (252, 222, 138),  # major road
        (217, 213, 207),  # building
    ],
    np.uint8,
)

FOREST_FLOOR: Rgb = (36, 58, 30)  # shade between the tree crowns
LEAVES_SHADED: Rgb = (30, 54, 26)
LEAVES_LIT: Rgb = (96, 124, 58)
CENTRE_LINE: Rgb = (225, 215, 170)
ROAD_EDGE_M = 0.0065  # width of a road's outline (kerb and pavement in the photo), map units
FLAT_ROOFS: tuple[Rgb, ...] = (
    (162, 162, 160), (132, 132, 134), (188, 185, 178), (104, 106, 110), (208, 208, 203), (142, 132, 118),
)
PITCHED_ROOFS: tuple[Rgb, ...] = (
    (168, 88, 66), (142, 72, 56), (88, 88, 94), (118, 88, 68), (96, 102, 112), (112, 122, 108),
)


@dataclass(frozen=True)
class Road:
    path: np.ndarray  # (n, 2) centre line, map units
    width: float
    major: bool


@dataclass(frozen=True)
class Buildings:
    """Rectangular footprints, one row per building."""

    corners: np.ndarray  # (n, 4, 2) around each rectangle; corners 0-1 run along a long side
    roofs: np.ndarray  # (n, 3) uint8 roof colour
    pitched: np.ndarray  # (n,) bool: ridge along the long side, the two halves lit differently
    heights: np.ndarray  # (n,) map units; sets the length of the drop shadow

    def subset(self, keep: np.ndarray) -> Buildings:
        return Buildings(self.corners[keep], self.roofs[keep], self.pitched[keep], self.heights[keep])


@dataclass(frozen=True)
class MapScene:
    seed: int
    width: float  # map units
    height: float
    roads: tuple[Road, ...]
    buildings: Buildings
    water: tuple[np.ndarray, ...]  # closed outlines
    parks: tuple[np.ndarray, ...]
    forests: tuple[np.ndarray, ...]
    sun: tuple[float, float]  # unit vector in the image towards the sun; shadows fall the other way
    cars: np.ndarray  # (n, 4, 2) outlines of cars on the roads (seen in the photo only)
    car_colours: np.ndarray  # (n, 3) uint8
    tree_density: float  # trees per unit area on open land
    grass: Rgb
    soil: Rgb
    water_deep: Rgb
    water_shallow: Rgb
    asphalt: Rgb
    pavement: Rgb


def build_map_scene(seed: int, aspect: float = 1.0) -> MapScene:
    """The layout of one area; aspect is width / height of the image it will be rendered to."""
    rng = np.random.default_rng(seed)
    width, height = (aspect, 1.0) if aspect >= 1 else (1.0, 1.0 / aspect)
    water, river = _water(rng, width, height)
    forests = tuple(
        _blob(rng, rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.1, 0.22))
        for _ in range(int(rng.choice([0, 0, 1, 2])))
    )
    grid = _Grid(rng, width, height)

    # coarse rasters of the water, and of where buildings may not go
    water_mask = _Occupancy(width, height)
    water_mask.fill(water)
    curved = [_curved_road(rng, width, height) for _ in range(int(rng.choice([0, 1, 1, 2])))]

    def stays_dry(path: np.ndarray, may_bridge: bool) -> bool:
        wet = water_mask.length_inside(path)
        return wet == 0 or (river and may_bridge and wet < 0.25)  # short bridges over a river only

    curved = [road for road in curved if stays_dry(road.path, True)]
    blocked = _Occupancy(width, height)
    blocked.fill(water + forests + tuple(_ribbon(road.path, road.width / 2 + 0.01) for road in curved))

    roads = [r for r in grid.roads if stays_dry(r.path, r.major)]
    parks, buildings = grid.fill_blocks(rng)
    buildings = buildings.subset(blocked.free(buildings.corners))
    cars, car_colours = _traffic(rng, roads + curved)
    sun_angle = rng.uniform(0, 2 * np.pi)
    return MapScene(
        seed=seed,
        width=width,
        height=height,
        roads=tuple(roads + curved),
        buildings=buildings,
        water=water,
        parks=tuple(parks),
        forests=forests,
        sun=(float(np.cos(sun_angle)), float(np.sin(sun_angle))),
        cars=cars,
        car_colours=car_colours,
        tree_density=float(rng.uniform(150, 900)),
        grass=jitter(rng, (104, 124, 72), 14),
        soil=jitter(rng, (150, 138, 112), 14),
        water_deep=jitter(rng, (34, 62, 84), 10),
        water_shallow=jitter(rng, (70, 98, 96), 10),
        asphalt=jitter(rng, (98, 98, 100), 14),
        pavement=jitter(rng, (176, 172, 164), 10),
    )


class _Occupancy:
    """A coarse raster of the area, to ask which shapes overlap which."""

    SCALE = 160  # pixels per map unit

    def __init__(self, width: float, height: float) -> None:
        self.mask = np.zeros((int(height * self.SCALE) + 1, int(width * self.SCALE) + 1), np.uint8)

    def fill(self, outlines: tuple[np.ndarray, ...]) -> None:
        for outline in outlines:
            cv2.fillPoly(self.mask, [np.round(outline * self.SCALE).astype(np.int32)], 1)

    def _hits(self, points: np.ndarray) -> np.ndarray:
        cols = np.clip(np.round(points[..., 0] * self.SCALE).astype(int), 0, self.mask.shape[1] - 1)
        rows = np.clip(np.round(points[..., 1] * self.SCALE).astype(int), 0, self.mask.shape[0] - 1)
        return self.mask[rows, cols] > 0

    def length_inside(self, path: np.ndarray) -> float:
        """Length of a path over occupied raster pixels, sampled every other pixel."""
        along = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
        stops = np.linspace(0, along[-1], max(2, int(along[-1] * self.SCALE / 2)))
        samples = np.column_stack([np.interp(stops, along, path[:, k]) for k in range(2)])
        return float(self._hits(samples).mean() * along[-1])

    def free(self, quads: np.ndarray) -> np.ndarray:
        """(n,) whether none of the corners, edge midpoints and centre of each (n, 4, 2) quad is occupied."""
        samples = np.concatenate([quads, (quads + np.roll(quads, 1, axis=1)) / 2, quads.mean(axis=1, keepdims=True)], axis=1)
        return ~self._hits(samples).any(axis=1)


def _smooth_path(points: np.ndarray, samples: int) -> np.ndarray:
    """Catmull-Rom spline through the points."""
    padded = np.concatenate([points[:1] * 2 - points[1:2], points, points[-1:] * 2 - points[-2:-1]])
    t = np.linspace(0, len(points) - 1, samples)
    index = np.minimum(t.astype(int), len(points) - 2)
    u = (t - index)[:, None]
    p0, p1, p2, p3 = (padded[index + k] for k in range(4))
    return 0.5 * (2 * p1 + (p2 - p0) * u + (2 * p0 - 5 * p1 + 4 * p2 - p3) * u**2 + (3 * p1 - p0 - 3 * p2 + p3) * u**3)


def _crossing_path(rng: np.random.Generator, width: float, height: float, wander: float, samples: int) -> np.ndarray:
    """A smooth path that enters on one side of the area and leaves on the opposite one."""
    stops = np.linspace(-0.15, 1.15, 5)
    across = np.clip(rng.uniform(0.2, 0.8) + np.cumsum(rng.uniform(-wander, wander, 5)), -0.1, 1.1)
    if rng.random() < 0.5:
        points = np.column_stack([stops * width, across * height])
    else:
        points = np.column_stack([across * width, stops * height])
    return _smooth_path(points, samples)


def _offset(path: np.ndarray, half_width: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    tangent = np.gradient(path, axis=0)
    normal = np.column_stack([-tangent[:, 1], tangent[:, 0]]) / np.linalg.norm(tangent, axis=1, keepdims=True)
    offset = normal * np.reshape(half_width, (-1, 1))
    return path + offset, path - offset


def _ribbon(path: np.ndarray, half_width: np.ndarray | float) -> np.ndarray:
    """Closed outline of a band of the given half width around a path."""
    left, right = _offset(path, half_width)
    return np.concatenate([left, right[::-1]])


def _blob(rng: np.random.Generator, x: float, y: float, radius: float) -> np.ndarray:
    """A smooth irregular closed outline (lake, wood)."""
    angles = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    wobble = sum(
        rng.uniform(0.03, 0.18) / k * np.sin(k * angles + rng.uniform(0, 2 * np.pi)) for k in range(2, 7)
    )
    r = radius * (1 + wobble)
    stretch = rng.uniform(0.7, 1.4)
    return np.column_stack([x + r * np.cos(angles) * stretch, y + r * np.sin(angles) / stretch])


def _water(rng: np.random.Generator, width: float, height: float) -> tuple[tuple[np.ndarray, ...], bool]:
    """Outlines of open water, and whether it is a river (which major roads cross on bridges)."""
    kind = rng.choice(["none", "river", "lake"], p=[0.3, 0.4, 0.3])
    if kind == "river":
        path = _crossing_path(rng, width, height, 0.12, 240)
        widening = np.sin(np.linspace(0, rng.uniform(3, 9), len(path)) + rng.uniform(0, 6))
        return (_ribbon(path, rng.uniform(0.035, 0.08) * (1 + 0.3 * widening)),), True
    if kind == "lake":
        lake = _blob(rng, rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height, rng.uniform(0.12, 0.28))
        return (lake,), False
    return (), False


def _curved_road(rng: np.random.Generator, width: float, height: float) -> Road:
    major = bool(rng.random() < 0.5)
    return Road(
        path=_crossing_path(rng, width, height, 0.15, 120),
        width=float(rng.uniform(0.028, 0.038) if major else rng.uniform(0.016, 0.022)),
        major=major,
    )


CAR_COLOURS = np.array(
    [(230, 230, 228), (30, 30, 34), (150, 152, 156), (110, 112, 116), (150, 30, 30), (30, 60, 120), (200, 185, 150)], np.uint8
)


def _traffic(rng: np.random.Generator, roads: list[Road]) -> tuple[np.ndarray, np.ndarray]:
    """Cars along the roads, in both directions, each drawn as a small rectangle."""
    outlines = []
    for road in roads:
        along = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(road.path, axis=0), axis=1))])
        gaps = rng.exponential(0.09 if road.major else 0.18, int(along[-1] / 0.01) + 1)
        stops = np.cumsum(gaps)
        stops = stops[stops < along[-1]]
        if len(stops) == 0:
            continue
        centre = np.column_stack([np.interp(stops, along, road.path[:, k]) for k in range(2)])
        ahead = np.column_stack([np.interp(stops + 1e-3, along, road.path[:, k]) for k in range(2)]) - centre
        ahead /= np.maximum(np.linalg.norm(ahead, axis=1, keepdims=True), 1e-9)
        side = np.column_stack([-ahead[:, 1], ahead[:, 0]])
        lane = rng.choice([-1, 1], len(stops)) * road.width * rng.uniform(0.2, 0.3, len(stops))
        centre += side * lane[:, None]
        half_length, half_width = ahead * 0.0085, side * 0.0038
        corners = [-half_length - half_width, half_length - half_width, half_length + half_width, -half_length + half_width]
        outlines.append(np.stack([centre + corner for corner in corners], axis=1))  # back left, front left, ...
    cars = np.concatenate(outlines) if outlines else np.zeros((0, 4, 2))
    return cars, CAR_COLOURS[rng.integers(len(CAR_COLOURS), size=len(cars))]


def _lines(rng: np.random.Generator, reach: float) -> np.ndarray:
    """Positions of parallel streets across [-reach, reach] with uneven block sizes."""
    positions = [float(rng.uniform(-reach, -reach + 0.2))]
    while positions[-1] < reach:
        positions.append(positions[-1] + float(rng.uniform(0.13, 0.3)))
    return np.array(positions)


class _Grid:
    """A street grid, rotated about the centre of the area, and the blocks between its streets."""

    def __init__(self, rng: np.random.Generator, width: float, height: float) -> None:
        angle = rng.uniform(-0.5, 0.5) if rng.random() < 0.6 else rng.uniform(-0.04, 0.04)
        self.rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        self.centre = np.array([width / 2, height / 2])
        self.width, self.height = width, height
        reach = float(np.hypot(width, height)) / 2 + 0.1
        self.u_lines, self.v_lines = _lines(rng, reach), _lines(rng, reach)
        self.u_widths, self.u_major = self._widths(rng, self.u_lines)
        self.v_widths, self.v_major = self._widths(rng, self.v_lines)
        self.roads = self._roads(rng)

    @staticmethod
    def _widths(rng: np.random.Generator, lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Width of each street, and which one (if any) is a major road."""
        widths = rng.uniform(0.016, 0.022, len(lines))
        major = np.zeros(len(lines), bool)
        middle = np.flatnonzero(np.abs(lines) < 0.35)
        if rng.random() < 0.75 and len(middle):  # one major road in this direction, near the middle
            chosen = rng.choice(middle)
            widths[chosen], major[chosen] = rng.uniform(0.03, 0.04), True
        return widths, major

    def to_map(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return self.centre + np.stack([u, v], axis=-1) @ self.rotation.T

    def _roads(self, rng: np.random.Generator) -> list[Road]:
        roads = []
        for lines, widths, majors, cross, cross_widths, along_u in (
            (self.u_lines, self.u_widths, self.u_major, self.v_lines, self.v_widths, True),
            (self.v_lines, self.v_widths, self.v_major, self.u_lines, self.u_widths, False),
        ):
            for position, width, major in zip(lines, widths, majors):
                for j in range(len(cross) - 1):
                    if not major and rng.random() < 0.12:  # missing street: a larger block
                        continue
                    # reach into the crossing streets so that junctions are filled
                    start = cross[j] - cross_widths[j] / 2 - ROAD_EDGE_M
                    stop = cross[j + 1] + cross_widths[j + 1] / 2 + ROAD_EDGE_M
                    ends = np.array([start, stop])
                    fixed = np.full(2, position)
                    path = self.to_map(fixed, ends) if along_u else self.to_map(ends, fixed)
                    if self._visible(path, width):
                        roads.append(Road(path=path, width=float(width), major=bool(major)))
        roads.sort(key=lambda r: r.major)  # major roads drawn last, over the streets they cross
        return roads

    def _visible(self, points: np.ndarray, margin: float) -> bool:
        low, high = points.min(axis=0), points.max(axis=0)
        return bool(high[0] > -margin and high[1] > -margin and low[0] < self.width + margin and low[1] < self.height + margin)

    def fill_blocks(self, rng: np.random.Generator) -> tuple[list[np.ndarray], Buildings]:
        """Parks, vacant lots and building footprints in the blocks between the streets."""
        urban = rng.uniform(0, 1)  # share of dense city blocks; the rest are houses in gardens
        parks, lots, city = [], [], []
        for i in range(len(self.u_lines) - 1):
            for j in range(len(self.v_lines) - 1):
                setback = ROAD_EDGE_M + 0.004
                u0 = self.u_lines[i] + self.u_widths[i] / 2 + setback
                u1 = self.u_lines[i + 1] - self.u_widths[i + 1] / 2 - setback
                v0 = self.v_lines[j] + self.v_widths[j] / 2 + setback
                v1 = self.v_lines[j + 1] - self.v_widths[j + 1] / 2 - setback
                outline = self.to_map(np.array([u0, u1, u1, u0]), np.array([v0, v0, v1, v1]))
                if not self._visible(outline, 0.0):
                    continue
                use = rng.random()
                if use < 0.1:
                    parks.append(outline)
                elif use > 0.14:  # the few in between stay vacant
                    dense = bool(rng.random() < urban)
                    largest = (1.0 if rng.random() < 0.25 else 0.07) if dense else 0.05  # 1.0: one big building
                    block_lots = _split_lots(rng, (u0, u1, v0, v1), largest)
                    lots += block_lots
                    city += [dense] * len(block_lots)
        buildings = _lot_buildings(rng, np.array(lots).reshape(-1, 4), np.array(city, bool))
        corners = self.to_map(buildings.corners[..., 0], buildings.corners[..., 1])
        low, high = corners.min(axis=1), corners.max(axis=1)
        inside = (high[:, 0] > 0) & (high[:, 1] > 0) & (low[:, 0] < self.width) & (low[:, 1] < self.height)
        return parks, Buildings(corners, buildings.roofs, buildings.pitched, buildings.heights).subset(inside)


def _split_lots(rng: np.random.Generator, rect: tuple[float, float, float, float], largest: float) -> list[tuple[float, float, float, float]]:
    """Cut a (u0, u1, v0, v1) block across its longer side, unevenly, until no lot is longer than largest."""
    u0, u1, v0, v1 = rect
    if max(u1 - u0, v1 - v0) <= largest:
        return [rect]
    cut = rng.uniform(0.35, 0.65)
    if u1 - u0 >= v1 - v0:
        middle = u0 + (u1 - u0) * cut
        return _split_lots(rng, (u0, middle, v0, v1), largest) + _split_lots(rng, (middle, u1, v0, v1), largest)
    middle = v0 + (v1 - v0) * cut
    return _split_lots(rng, (u0, u1, v0, middle), largest) + _split_lots(rng, (u0, u1, middle, v1), largest)


def _lot_buildings(rng: np.random.Generator, lots: np.ndarray, city: np.ndarray) -> Buildings:
    """One building per (u0, u1, v0, v1) lot, in grid coordinates; city lots are built up densely."""
    count = len(lots)
    lot_size = np.column_stack([lots[:, 1] - lots[:, 0], lots[:, 3] - lots[:, 2]])
    lot_centre = np.column_stack([lots[:, 0] + lots[:, 1], lots[:, 2] + lots[:, 3]]) / 2
    fill = np.where(city[:, None], rng.uniform(0.75, 0.95, (count, 2)), rng.uniform(0.4, 0.7, (count, 2)))
    size = lot_size * fill
    centre = lot_centre + (lot_size - size) * rng.uniform(-0.5, 0.5, (count, 2))
    turned = rng.random(count) < 0.12  # some buildings do not follow the grid
    angle = np.where(turned, rng.uniform(0.15, 0.6, count) * rng.choice([-1, 1], count), 0.0)
    cos, sin = np.abs(np.cos(angle)), np.abs(np.sin(angle))
    bounds = np.column_stack([size[:, 0] * cos + size[:, 1] * sin, size[:, 0] * sin + size[:, 1] * cos])
    size *= np.min(size / bounds, axis=1, keepdims=True)  # turned, it still fits where it stood
    pitched = rng.random(count) < np.where(city, 0.2, 0.85)
    flat_pick = np.array(FLAT_ROOFS)[rng.integers(len(FLAT_ROOFS), size=count)]
    pitched_pick = np.array(PITCHED_ROOFS)[rng.integers(len(PITCHED_ROOFS), size=count)]
    roofs = np.where(pitched[:, None], pitched_pick, flat_pick) + rng.uniform(-10, 10, (count, 1)) + rng.uniform(-3, 3, (count, 3))
    heights = np.where(city, rng.uniform(0.01, 0.035, count), rng.uniform(0.006, 0.012, count))
    buildings = Buildings(
        corners=_rectangles(centre, size, angle),
        roofs=np.clip(np.round(roofs), 0, 255).astype(np.uint8),
        pitched=pitched,
        heights=heights,
    )
    return buildings.subset(size.min(axis=1) >= 0.012)


def _rectangles(centre: np.ndarray, size: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """(n, 4, 2) corners of rotated rectangles, each starting with a long side."""
    unit = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)
    corners = unit[None] * size[:, None, :] / 2
    upright = size[:, 1] > size[:, 0]
    corners[upright] = np.roll(corners[upright], 1, axis=1)
    c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
    x, y = corners[..., 0], corners[..., 1]
    return centre[:, None, :] + np.stack([x * c - y * s, x * s + y * c], axis=-1)


class _Raster:
    """Map units to fixed-point pixels of one output size; coverage masks of shapes."""

    def __init__(self, scene: MapScene, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.scale = min(width / scene.width, height / scene.height)

    def points(self, shape: np.ndarray) -> np.ndarray:
        # pixel i covers [i, i + 1) / scale; cv2 puts pixel centres on integers
        return np.round((shape * self.scale - 0.5) * (1 << SHIFT)).astype(np.int32)

    def blank(self) -> np.ndarray:
        return np.zeros((self.height, self.width), np.uint8)

    def fill(self, mask: np.ndarray, shapes: list[np.ndarray] | tuple[np.ndarray, ...]) -> np.ndarray:
        for shape in shapes:  # one call each: fillPoly's even-odd rule would cut holes where shapes overlap
            cv2.fillPoly(mask, [self.points(shape)], 255, cv2.LINE_AA, SHIFT)
        return mask

    def fill_disjoint(self, mask: np.ndarray, shapes: np.ndarray) -> np.ndarray:
        """Shapes known not to overlap, (n, k, 2), in one call."""
        if len(shapes):
            cv2.fillPoly(mask, list(self.points(shapes)), 255, cv2.LINE_AA, SHIFT)
        return mask


def _road_outlines(roads: tuple[Road, ...], major: bool, extra: float) -> list[np.ndarray]:
    return [_ribbon(r.path, r.width / 2 + extra) for r in roads if r.major == major]


def _coverage(scene: MapScene, raster: _Raster) -> list[np.ndarray]:
    """Anti-aliased coverage (uint8) of each map class above LAND, in drawing order."""
    return [
        raster.fill(raster.blank(), scene.parks),
        raster.fill(raster.blank(), scene.forests),
        raster.fill(raster.blank(), scene.water),
        raster.fill(raster.blank(), _road_outlines(scene.roads, False, ROAD_EDGE_M)),
        raster.fill(raster.blank(), _road_outlines(scene.roads, False, 0.0)),
        raster.fill(raster.blank(), _road_outlines(scene.roads, True, ROAD_EDGE_M)),
        raster.fill(raster.blank(), _road_outlines(scene.roads, True, 0.0)),
        raster.fill_disjoint(raster.blank(), scene.buildings.corners),
    ]


def _labels(coverage: list[np.ndarray]) -> np.ndarray:
    """The class covering each pixel centre: the last class drawn with coverage of at least half."""
    labels = np.zeros(coverage[0].shape, np.uint8)
    for label, mask in enumerate(coverage, start=LAND + 1):
        labels[mask >= 128] = label
    return labels


def _noise(rng: np.random.Generator, width: int, height: int, cell_px: float) -> np.ndarray:
    """Smooth random field with features about cell_px wide, roughly unit variance."""
    if cell_px <= 1:
        return rng.standard_normal((height, width), np.float32)
    grid_w, grid_h = int(width / cell_px) + 3, int(height / cell_px) + 3
    grid = rng.standard_normal((grid_h, grid_w), np.float32)
    field = cv2.resize(grid, (int(grid_w * cell_px), int(grid_h * cell_px)), interpolation=cv2.INTER_CUBIC)
    return field[:height, :width]


class _Photo:
    """A satellite image built up layer by layer as float rows of interleaved RGB, (h, w * 3).

    numpy is many times faster on long rows than on (h, w, 3) arrays broadcast against
    3-vectors, so per-pixel factors are repeated per channel and colours tiled along a row.
    """

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.image = np.zeros((height, width * 3), np.float32)

    def row(self, rgb: Rgb | np.ndarray) -> np.ndarray:
        return np.tile(np.asarray(rgb, np.float32) / 255, self.width)

    def per_channel(self, values: np.ndarray) -> np.ndarray:
        return np.repeat(values.astype(np.float32, copy=False), 3, axis=1)

    def texture(self, colour: Rgb, other: Rgb, mix: np.ndarray, brightness: np.ndarray | None = None) -> np.ndarray:
        """Per pixel a blend of two colours by mix (0..1), times brightness."""
        a, b = self.row(colour), self.row(other)
        tex = a + (b - a) * self.per_channel(np.clip(mix, 0, 1))
        return tex if brightness is None else tex * self.per_channel(brightness)

    def cover(self, coverage: np.ndarray, texture: np.ndarray) -> None:
        """Lay a texture over the image where coverage (0..1 or uint8) says."""
        alpha = coverage.astype(np.float32) / 255 if coverage.dtype == np.uint8 else coverage
        self.image += (texture - self.image) * self.per_channel(alpha)

    def darken(self, amount: np.ndarray) -> None:
        self.image *= self.per_channel(1 - amount)

    def pixels(self) -> np.ndarray:
        return self.image.reshape(self.height, self.width, 3)


def _satellite(scene: MapScene, raster: _Raster, coverage: list[np.ndarray], labels: np.ndarray) -> np.ndarray:
    width, height, scale = raster.width, raster.height, raster.scale
    rng = np.random.default_rng([scene.seed, 1])
    photo = _Photo(width, height)
    fine = _noise(rng, width, height, 1)
    patches = _noise(rng, width, height, 0.08 * scale) + 0.5 * _noise(rng, width, height, 0.025 * scale)
    photo.image = photo.texture(scene.grass, scene.soil, 0.45 + 0.3 * patches, 1 + 0.05 * fine)  # open land
    park, forest, water, road_edge, road, major_edge, major, buildings = coverage
    lawn = shade(scene.grass, 1.1)
    photo.cover(park, photo.texture(lawn, shade(lawn, 0.85), 0.5 + 0.4 * patches, 1 + 0.04 * fine))
    photo.cover(forest, photo.texture(FOREST_FLOOR, shade(FOREST_FLOOR, 1.35), 0.5 + 0.5 * patches))
    _water_layer(scene, photo, water, rng, scale)
    kerb = photo.texture(scene.pavement, shade(scene.pavement, 0.9), 0.5 + 0.5 * patches, 1 + 0.04 * fine)
    photo.cover(np.maximum(road_edge, major_edge), kerb)
    tarmac = photo.texture(scene.asphalt, shade(scene.asphalt, 0.82), 0.5 + 0.4 * patches, 1 + 0.06 * fine)
    photo.cover(np.maximum(road, major), tarmac)
    photo.cover(_centre_lines(scene, raster), photo.row(CENTRE_LINE))
    _cars(scene, photo, raster)
    _trees(scene, photo, labels, rng, scale)
    _buildings(scene, photo, raster, buildings)
    return _camera_look(photo.pixels(), rng)


def _water_layer(scene: MapScene, photo: _Photo, water: np.ndarray, rng: np.random.Generator, scale: float) -> None:
    if not water.any():
        return
    depth = cv2.distanceTransform((water >= 128).astype(np.uint8), cv2.DIST_L2, 3) / scale
    deep = 1 - np.exp(-depth / 0.03)  # shallow and greenish near the shore
    rows, cols = np.mgrid[0 : photo.height, 0 : photo.width].astype(np.float32) / scale
    swell = _noise(rng, photo.width, photo.height, 0.05 * scale)
    ripples = 0.03 * np.sin(260 * (0.8 * cols + 0.6 * rows) + 3 * swell)  # wind waves ~0.024 units apart
    photo.cover(water, photo.texture(scene.water_shallow, scene.water_deep, deep, 1 + ripples + 0.04 * swell))


def _centre_lines(scene: MapScene, raster: _Raster) -> np.ndarray:
    """Dashed centre lines of the major roads."""
    mask = raster.blank()
    half = max(0.0012, 0.5 / raster.scale)
    for road in scene.roads:
        if not road.major:
            continue
        steps = np.linalg.norm(np.diff(road.path, axis=0), axis=1)
        along = np.concatenate([[0], np.cumsum(steps)])
        marks = np.arange(0, along[-1], 0.03)
        points = np.column_stack([np.interp(marks, along, road.path[:, k]) for k in range(2)])
        direction = np.gradient(points, axis=0) if len(points) > 1 else np.zeros_like(points)
        direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-9)
        normal = np.column_stack([-direction[:, 1], direction[:, 0]]) * half
        ends = direction * 0.008
        dashes = np.stack([points - ends - normal, points + ends - normal, points + ends + normal, points - ends + normal], axis=1)
        cv2.fillPoly(mask, list(raster.points(dashes)), 200, cv2.LINE_AA, SHIFT)  # worn paint: not quite opaque
    return mask


def _cars(scene: MapScene, photo: _Photo, raster: _Raster) -> None:
    """Cars with a small shadow and a dark windscreen."""
    if len(scene.cars) == 0:
        return
    shadow = raster.blank()
    offset = -np.array(scene.sun) * 0.003
    cv2.fillPoly(shadow, list(raster.points(scene.cars + offset)), 255, cv2.LINE_AA, SHIFT)
    photo.darken(0.4 * shadow.astype(np.float32) / 255)
    back_left, front_left, front_right, back_right = (scene.cars[:, k] for k in range(4))
    windscreen = np.stack(  # across the car, a little ahead of the middle
        [back_left + (front_left - back_left) * t for t in (0.55, 0.75)]
        + [back_right + (front_right - back_right) * t for t in (0.75, 0.55)],
        axis=1,
    )
    pixels = photo.pixels()
    colours = (scene.car_colours.astype(np.float32) / 255).tolist()
    for body, glass, colour in zip(raster.points(scene.cars), raster.points(windscreen), colours):
        cv2.fillPoly(pixels, [body], colour, cv2.LINE_AA, SHIFT)
        cv2.fillPoly(pixels, [glass], (0.12, 0.13, 0.15), cv2.LINE_AA, SHIFT)


def _trees(scene: MapScene, photo: _Photo, labels: np.ndarray, rng: np.random.Generator, scale: float) -> None:
    """Tree crowns as a height field of round bumps, lit from the sun, with their shadows."""
    crown_px = 0.0085 * scale
    density = np.zeros(BUILDING + 1)
    density[[LAND, PARK, FOREST]] = scene.tree_density, scene.tree_density * 2.5, 9000
    area = photo.width * photo.height / scale**2
    count = rng.poisson(area * density.max())
    rows = rng.integers(0, photo.height, count)
    cols = rng.integers(0, photo.width, count)
    keep = rng.random(count) < density[labels[rows, cols]] / density.max()
    impulses = np.zeros((photo.height, photo.width), np.float32)
    sizes = rng.uniform(0.6, 1.3, count).astype(np.float32)
    np.add.at(impulses, (rows[keep], cols[keep]), sizes[keep] * 2 * np.pi * crown_px**2)
    crowns = cv2.GaussianBlur(impulses, (0, 0), crown_px)
    covered = np.clip((crowns - 0.3) / 0.35, 0, 1)
    if not covered.any():
        return
    sun_x, sun_y = scene.sun
    shift = np.float32([[1, 0, -sun_x * crown_px * 1.3], [0, 1, -sun_y * crown_px * 1.3]])
    shadow = cv2.warpAffine(covered, shift, (photo.width, photo.height))
    photo.darken(0.45 * shadow)
    slope_x = cv2.Sobel(crowns, cv2.CV_32F, 1, 0, ksize=3) / 8
    slope_y = cv2.Sobel(crowns, cv2.CV_32F, 0, 1, ksize=3) / 8
    lit = np.clip(0.5 + 1.6 * crown_px * (slope_x * sun_x + slope_y * sun_y), 0, 1)
    tint = _noise(rng, photo.width, photo.height, 3 * crown_px)
    leaves = photo.texture(LEAVES_SHADED, LEAVES_LIT, 0.75 * lit + 0.12 * tint)
    photo.cover(covered, leaves)


def _buildings(scene: MapScene, photo: _Photo, raster: _Raster, footprints: np.ndarray) -> None:
    """Drop shadows, then roofs: pitched roofs in two halves, flat roofs with a parapet."""
    b = scene.buildings
    if len(b.heights) == 0:
        return
    sun = np.array(scene.sun)
    cast = np.concatenate([b.corners, b.corners - sun * b.heights[:, None, None]], axis=1)
    shadows = raster.blank()
    for points in raster.points(cast):
        cv2.fillConvexPoly(shadows, cv2.convexHull(points), 255, cv2.LINE_AA, SHIFT)
    photo.darken(0.5 * shadows.astype(np.float32) / 255 * (1 - footprints.astype(np.float32) / 255))

    corners = b.corners
    centre = corners.mean(axis=1, keepdims=True)
    middle = (corners + np.roll(corners, -1, axis=1)) / 2  # midpoints of the sides
    near_half = np.stack([corners[:, 0], corners[:, 1], middle[:, 1], middle[:, 3]], axis=1)
    far_half = np.stack([middle[:, 3], middle[:, 1], corners[:, 2], corners[:, 3]], axis=1)
    near_lit = (near_half.mean(axis=1) - centre[:, 0]) @ sun > 0
    parapet_inside = centre + (corners - centre) * 0.82
    roof = b.roofs.astype(np.float32) / 255

    def colours(factor: np.ndarray | float) -> list[list[float]]:
        return np.clip(roof * np.reshape(factor, (-1, 1)), 0, 1).tolist()

    lit, unlit = np.where(near_lit, 1.12, 0.74), np.where(near_lit, 0.74, 1.12)
    pixels = photo.pixels()  # a view: drawing on it draws on the photo, blending anti-aliased edges
    shapes = zip(
        b.pitched,
        raster.points(corners), raster.points(parapet_inside), raster.points(near_half), raster.points(far_half),
        colours(1.08), colours(0.94), colours(lit), colours(unlit),
    )
    for pitched, outline, inside, near, far, rim, top, near_colour, far_colour in shapes:
        first, second = ((near, near_colour), (far, far_colour)) if pitched else ((outline, rim), (inside, top))
        cv2.fillPoly(pixels, [first[0]], first[1], cv2.LINE_AA, SHIFT)
        cv2.fillPoly(pixels, [second[0]], second[1], cv2.LINE_AA, SHIFT)


def _camera_look(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Optics and sensor: slight blur, a colour cast, grain."""
    image = cv2.GaussianBlur(image, (0, 0), 0.55)
    gain = (rng.uniform(0.9, 1.08) * rng.uniform(0.95, 1.05, 3)).astype(np.float32)
    image = image * gain + 0.012 * rng.standard_normal(image.shape, np.float32)
    return np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)


def render_maps(scene: MapScene, width: int, height: int, domains: tuple[MapDomain, ...] = MAP_DOMAINS) -> dict[MapDomain, np.ndarray]:
    """Render a scene as (height, width, 3) uint8 RGB images, one per requested domain."""
    raster = _Raster(scene, width, height)
    coverage = _coverage(scene, raster)
    labels = _labels(coverage)
    images: dict[MapDomain, np.ndarray] = {}
    for domain in domains:
        images[domain] = MAP_PALETTE[labels] if domain == "map" else _satellite(scene, raster, coverage, labels)
    return images
