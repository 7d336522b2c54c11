"""Procedural street scenes, rendered under four conditions (day, night, rain, snow) from one scene seed.

A scene is a small 3-D layout in metres (street, facades, parked and moving cars, street
lamps) seen by a pinhole camera at eye height; X points right, Y up, Z along the street.
Drawing the scene once fills material buffers (albedo, emitted light, sun/sky/haze, which
pixels face up); each condition is a way of lighting and weathering those same buffers,
so all renderings of a scene share the geometry pixel for pixel: rain is an overcast day
with wet, reflecting ground and falling streaks, snow an overcast day with the ground
covered and flakes in the air.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import cv2
import numpy as np

from preprocessing.synthetic.colour import Rgb, clip_rgb, jitter, rgb01, shade
from unit_core.ingest_settings import StreetDomain

STREET_DOMAINS: tuple[StreetDomain, ...] = get_args(StreetDomain)

SUPERSAMPLE = 2  # geometry is drawn at twice the size and area-averaged: anti-aliasing
SHIFT = 4  # fractional bits of the fixed-point vertices handed to cv2.fillPoly
NEAR_M = 2.0  # nothing closer than this to the camera is drawn
ROAD_END_M = 3000.0
HAZE_M = 550.0  # distance at which the air has hidden 63% of an object's own colour

BLACK: Rgb = (0, 0, 0)
TIRE: Rgb = (28, 28, 30)
HUBCAP: Rgb = (150, 150, 152)
CAR_GLASS: Rgb = (40, 48, 58)
TAILLIGHT: Rgb = (150, 25, 25)
HEADLIGHT: Rgb = (215, 215, 205)
BUMPER: Rgb = (55, 55, 58)
PLATE: Rgb = (225, 225, 215)
LAMP_METAL: Rgb = (62, 66, 72)
MARKING_WHITE: Rgb = (215, 215, 208)
MARKING_YELLOW: Rgb = (215, 170, 40)
CURB: Rgb = (185, 182, 175)
DISTANT_GLASS: Rgb = (70, 82, 96)

WALL_COLOURS: tuple[Rgb, ...] = (
    (150, 78, 58), (172, 98, 72), (128, 62, 48),  # brick
    (206, 190, 158), (222, 210, 182), (198, 172, 128),  # sandstone, render
    (152, 150, 147), (178, 172, 166), (226, 224, 216),  # concrete, white render
    (118, 92, 74), (188, 160, 140), (130, 146, 160), (92, 88, 86),
)
CAR_COLOURS: tuple[Rgb, ...] = (
    (225, 225, 222), (232, 232, 230), (30, 30, 33), (40, 40, 44), (160, 162, 166),
    (120, 122, 126), (150, 25, 28), (28, 58, 120), (20, 36, 70), (32, 72, 48),
    (190, 175, 140), (225, 180, 20),
)
WINDOW_LIGHTS: tuple[Rgb, ...] = ((255, 206, 128), (255, 184, 96), (250, 226, 168), (196, 214, 255))
SHOP_LIGHT: Rgb = (215, 180, 125)
LAMP_LIGHT: Rgb = (255, 222, 160)
TAILLIGHT_GLOW: Rgb = (255, 34, 20)
HEADLIGHT_GLOW: Rgb = (255, 250, 232)


@dataclass(frozen=True)
class Camera:
    eye_height_m: float
    horizon: float  # row of the vanishing point, as a fraction of the image height
    center: float  # column of the vanishing point, as a fraction of the image width
    focal: float  # focal length in image heights


@dataclass(frozen=True)
class Building:
    side: int  # -1 left of the street, +1 right
    facade_m: float  # distance of the street-facing wall from the camera axis
    z_near_m: float
    z_far_m: float
    height_m: float
    depth_m: float
    wall: Rgb
    trim: Rgb
    glass: Rgb
    floor_height_m: float
    bay_width_m: float
    window_width: float  # fraction of a bay
    window_height: float  # fraction of a floor
    awning: Rgb | None  # a shop on the ground floor, None for plain windows
    lit_fraction: float  # share of windows lit at night
    lights_seed: int


@dataclass(frozen=True)
class DistantBlock:
    """A building across the far end of the street, seen face on."""

    x_left_m: float
    x_right_m: float
    z_m: float
    height_m: float
    wall: Rgb
    lit_fraction: float
    lights_seed: int


@dataclass(frozen=True)
class Car:
    x_m: float  # centre
    z_m: float  # end nearest the camera
    length_m: float
    width_m: float
    body_top_m: float
    roof_m: float
    colour: Rgb
    oncoming: bool  # faces the camera: headlights instead of taillights
    lights_on: bool


@dataclass(frozen=True)
class Lamp:
    side: int
    x_m: float  # pole
    z_m: float
    height_m: float
    arm_m: float  # reach of the arm over the road


@dataclass(frozen=True)
class StreetScene:
    seed: int
    camera: Camera
    road_left_m: float
    road_right_m: float
    lane_lines_m: tuple[float, ...]  # dashed white lines
    centre_line_m: float | None  # double yellow line between the two directions
    crosswalk_z_m: float | None
    dash_offset_m: float  # where the lane dashes start
    asphalt: Rgb
    sidewalk: Rgb
    buildings: tuple[Building, ...]
    skyline: tuple[DistantBlock, ...]
    cars: tuple[Car, ...]
    lamps: tuple[Lamp, ...]
    sun_side: int  # the side the sun shines from; that side's facades are in shade
    sun_behind: bool  # sun behind the camera lights the faces turned towards it
    shadow_reach: float  # metres of ground shadow per metre of building height
    sky_top: Rgb
    sky_horizon: Rgb
    cloud_cover: float
    clouds: tuple[np.ndarray, ...]  # random fields, coarse to fine, scaled up to the sky
    stars: np.ndarray  # (n, 3): column and row as fractions of the sky, brightness


def build_street_scene(seed: int) -> StreetScene:
    """The layout of one street; independent of the image size it is rendered at."""
    rng = np.random.default_rng(seed)
    camera = Camera(
        eye_height_m=float(rng.uniform(1.35, 1.75)),
        horizon=float(rng.uniform(0.40, 0.50)),
        center=float(rng.uniform(0.42, 0.58)),
        focal=float(rng.uniform(0.75, 0.95)),
    )
    lane_width = float(rng.uniform(3.0, 3.6))
    oncoming_lanes = int(rng.choice([0, 1, 1, 2]))
    ahead_lanes = int(rng.choice([1, 2, 2])) if oncoming_lanes else int(rng.choice([2, 3]))
    camera_lane = oncoming_lanes + int(rng.integers(ahead_lanes))
    lane_edges = (np.arange(oncoming_lanes + ahead_lanes + 1) - camera_lane - 0.5) * lane_width
    lane_edges += float(rng.uniform(-0.3, 0.3))
    parking_left, parking_right = rng.random(2) < (0.5, 0.7)
    road_left = float(lane_edges[0] - 2.3 * parking_left)
    road_right = float(lane_edges[-1] + 2.3 * parking_right)
    centre_line = float(lane_edges[oncoming_lanes]) if oncoming_lanes else None
    lane_lines = tuple(float(lane_edges[i]) for i in range(1, len(lane_edges) - 1) if i != oncoming_lanes)

    downtown = rng.random() < 0.5
    sidewalk_width = float(rng.uniform(2.5, 5.0))
    street_end = float(rng.uniform(140, 260))
    buildings = [
        building
        for side, road_edge in ((-1, road_left), (1, road_right))
        for building in _building_row(rng, side, abs(road_edge) + sidewalk_width, street_end, downtown)
    ]
    buildings.sort(key=lambda b: -b.z_near_m)

    cars = _traffic(rng, lane_edges, oncoming_lanes, camera_lane, road_left, road_right, parking_left, parking_right)
    lamps = _lamps(rng, road_left, road_right)
    crosswalk = float(rng.uniform(12, 45)) if rng.random() < 0.35 else None
    if crosswalk is not None:  # keep the zebra clear of cars
        cars = [c for c in cars if not (crosswalk - 1.5 < c.z_m + c.length_m and c.z_m < crosswalk + 4.5)]

    sky_blue = rng.uniform(0.85, 1.1)
    return StreetScene(
        seed=seed,
        camera=camera,
        road_left_m=road_left,
        road_right_m=road_right,
        lane_lines_m=lane_lines,
        centre_line_m=centre_line,
        crosswalk_z_m=crosswalk,
        dash_offset_m=float(rng.uniform(0, 9)),
        asphalt=jitter(rng, (78, 79, 83), 14),
        sidewalk=jitter(rng, (168, 163, 156), 14),
        buildings=tuple(buildings),
        skyline=_skyline(rng, street_end),
        cars=tuple(cars),
        lamps=lamps,
        sun_side=int(rng.choice([-1, 1])),
        sun_behind=bool(rng.random() < 0.5),
        shadow_reach=float(rng.uniform(0.15, 0.7)),
        sky_top=clip_rgb(np.array([58, 112, 196]) * (2 - sky_blue, 1, sky_blue)),
        sky_horizon=jitter(rng, (186, 208, 232), 10),
        cloud_cover=float(rng.uniform(0.0, 0.55)),
        clouds=tuple(rng.standard_normal((3 * 2**k, 5 * 2**k)).astype(np.float32) for k in range(3)),
        stars=np.column_stack([rng.random((70, 2)), rng.uniform(0.2, 1.0, 70)]).astype(np.float32),
    )


def _building_row(
    rng: np.random.Generator, side: int, building_line: float, street_end: float, downtown: bool
) -> list[Building]:
    """Buildings shoulder to shoulder along one side of the street, from behind the camera to street_end."""
    row = []
    z = float(rng.uniform(-12, 0))
    while z < street_end:
        if rng.random() < 0.12:  # an alley between two buildings
            z += float(rng.uniform(3, 8))
        length = float(rng.uniform(8, 30))
        floor_height = float(rng.uniform(2.9, 3.6))
        floors = int(rng.integers(4, 16)) if downtown else int(rng.integers(2, 7))
        wall = jitter(rng, WALL_COLOURS[int(rng.integers(len(WALL_COLOURS)))], 10)
        row.append(
            Building(
                side=side,
                facade_m=building_line + float(rng.uniform(0, 1.5)) * (rng.random() < 0.4),  # some set back
                z_near_m=z,
                z_far_m=z + length,
                height_m=floors * floor_height + float(rng.uniform(0.4, 1.6)),
                depth_m=float(rng.uniform(10, 20)),
                wall=wall,
                trim=shade(wall, float(rng.choice([0.7, 0.8, 1.2]))),
                glass=jitter(rng, (72, 88, 104), 12),
                floor_height_m=floor_height,
                bay_width_m=float(rng.uniform(2.4, 4.2)),
                window_width=float(rng.uniform(0.4, 0.75)),
                window_height=float(rng.uniform(0.42, 0.62)),
                awning=clip_rgb(rng.integers(40, 200, 3)) if rng.random() < 0.55 else None,
                lit_fraction=float(rng.uniform(0.1, 0.45)),
                lights_seed=int(rng.integers(2**31)),
            )
        )
        z += length
    return row


def _skyline(rng: np.random.Generator, street_end: float) -> tuple[DistantBlock, ...]:
    """Buildings beyond the end of the street, far to near."""
    blocks = []
    x = float(rng.uniform(-200, -120))
    while x < 200:
        width = float(rng.uniform(12, 45))
        if rng.random() < 0.8:
            grey = float(rng.uniform(110, 190))
            blocks.append(
                DistantBlock(
                    x_left_m=x,
                    x_right_m=x + width,
                    z_m=street_end + float(rng.uniform(20, 160)),
                    height_m=float(rng.uniform(12, 75)),
                    wall=jitter(rng, (int(grey), int(grey * 0.97), int(grey * 0.94)), 12),
                    lit_fraction=float(rng.uniform(0.1, 0.4)),
                    lights_seed=int(rng.integers(2**31)),
                )
            )
        x += width
    blocks.sort(key=lambda b: -b.z_m)
    return tuple(blocks)


def _traffic(
    rng: np.random.Generator,
    lane_edges: np.ndarray,
    oncoming_lanes: int,
    camera_lane: int,
    road_left: float,
    road_right: float,
    parking_left: bool,
    parking_right: bool,
) -> list[Car]:
    """Moving cars in every lane (lights on) and parked cars along the kerbs (lights off)."""
    cars = []
    for lane, (left, right) in enumerate(zip(lane_edges[:-1], lane_edges[1:])):
        z = float(rng.uniform(14, 30) if lane == camera_lane else rng.uniform(4, 30))
        while z < 160:
            cars.append(_car(rng, (left + right) / 2 + float(rng.uniform(-0.25, 0.25)), z, lane < oncoming_lanes, True))
            z += cars[-1].length_m + float(rng.uniform(5, 40))
    for parked, kerb, inward in ((parking_left, road_left, 1), (parking_right, road_right, -1)):
        z = float(rng.uniform(-2, 6))
        while parked and z < 120:
            car = _car(rng, kerb + inward * float(rng.uniform(1.05, 1.25)), z, bool(rng.random() < 0.5), False)
            if rng.random() < 0.8:
                cars.append(car)
            z += car.length_m + float(rng.uniform(0.8, 4))
    return [c for c in cars if c.z_m > NEAR_M + 1]


def _car(rng: np.random.Generator, x: float, z: float, oncoming: bool, lights_on: bool) -> Car:
    tall = rng.random() < 0.3  # SUVs and vans
    body_top = float(rng.uniform(0.95, 1.1)) + 0.15 * tall
    return Car(
        x_m=x,
        z_m=z,
        length_m=float(rng.uniform(4.0, 4.9)),
        width_m=float(rng.uniform(1.7, 1.95)),
        body_top_m=body_top,
        roof_m=body_top + float(rng.uniform(0.42, 0.55)) + 0.2 * tall,
        colour=jitter(rng, CAR_COLOURS[int(rng.integers(len(CAR_COLOURS)))], 8),
        oncoming=oncoming,
        lights_on=lights_on,
    )


def _lamps(rng: np.random.Generator, road_left: float, road_right: float) -> tuple[Lamp, ...]:
    """Evenly spaced lamp posts at the kerb, on one side of the street or both."""
    lamps = []
    sides = [int(rng.choice([-1, 1]))] if rng.random() < 0.4 else [-1, 1]
    spacing = float(rng.uniform(22, 38))
    height = float(rng.uniform(6.5, 9.0))
    arm = float(rng.uniform(0.8, 2.5))
    for side in sides:
        kerb = road_right if side > 0 else road_left
        for z in np.arange(rng.uniform(3, 20), 220, spacing):
            lamps.append(Lamp(side=side, x_m=kerb + side * 0.6, z_m=float(z), height_m=height, arm_m=arm))
    return tuple(lamps)


class _Projection:
    """Pinhole camera: metres in the camera frame to fixed-point pixel coordinates."""

    def __init__(self, camera: Camera, width: int, height: int) -> None:
        self.cx = camera.center * width
        self.cy = camera.horizon * height
        self.focal = camera.focal * height
        self.eye = camera.eye_height_m

    def __call__(self, points: np.ndarray) -> np.ndarray:
        scale = (1 << SHIFT) * self.focal / points[..., 2]
        pixels = np.empty(points.shape[:-1] + (2,))
        pixels[..., 0] = self.cx * (1 << SHIFT) + points[..., 0] * scale
        pixels[..., 1] = self.cy * (1 << SHIFT) + (self.eye - points[..., 1]) * scale
        return np.rint(pixels).astype(np.int32)

    def pixel(self, x: float, y: float, z: float) -> tuple[float, float, float]:
        """Column, row and pixels per metre of a point."""
        return self.cx + self.focal * x / z, self.cy + self.focal * (self.eye - y) / z, self.focal / z


def _haze(z: float) -> float:
    return 1.0 - float(np.exp(-max(z, 0.0) / HAZE_M))


class _Canvas:
    """Material buffers filled back to front (painter's algorithm).

    albedo: colour in daylight; emission: light sent out at night; shading: sun exposure,
    sky coverage and haze. Polygons of one fillPoly call must not overlap (even-odd fill).
    """

    def __init__(self, width: int, height: int) -> None:
        self.albedo = np.zeros((height, width, 3), np.uint8)
        self.emission = np.zeros((height, width, 3), np.uint8)
        self.shading = np.zeros((height, width, 3), np.uint8)
        self.shading[..., 1] = 255  # all sky until something is drawn
        self.upward = np.zeros((height, width), np.uint8)  # 255 where the surface faces the sky (the ground)

    def fill(self, polygons: np.ndarray, albedo: Rgb, *, sun: float, haze: float, upward: bool = False) -> None:
        """A new surface, hiding whatever was drawn behind it (lights included)."""
        if len(polygons) == 0:
            return
        polys = list(polygons)
        cv2.fillPoly(self.albedo, polys, albedo, cv2.LINE_AA, SHIFT)
        cv2.fillPoly(self.emission, polys, BLACK, cv2.LINE_AA, SHIFT)
        cv2.fillPoly(self.shading, polys, (255 * sun, 0, 255 * haze), cv2.LINE_AA, SHIFT)
        cv2.fillPoly(self.upward, polys, 255 * upward, cv2.LINE_AA, SHIFT)

    def decal(self, polygons: np.ndarray, albedo: Rgb, emission: Rgb | None = None) -> None:
        """Paint on the surface drawn last (windows, markings, lights): its sun and haze stay."""
        if len(polygons):
            cv2.fillPoly(self.albedo, list(polygons), albedo, cv2.LINE_AA, SHIFT)
            if emission is not None:
                cv2.fillPoly(self.emission, list(polygons), emission, cv2.LINE_AA, SHIFT)

    def emit(self, polygons: np.ndarray, emission: Rgb) -> None:
        if len(polygons):
            cv2.fillPoly(self.emission, list(polygons), emission, cv2.LINE_AA, SHIFT)

    def shadow(self, polygons: np.ndarray) -> None:
        """Take the direct sun off the ground (haze is set afterwards for the whole ground)."""
        for polygon in polygons:  # one at a time: shadows may overlap
            cv2.fillPoly(self.shading, [polygon], BLACK, cv2.LINE_AA, SHIFT)


def _wall_quads(axis: Literal["x", "z"], plane: float, along: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Rectangles in a vertical plane: along/up are (n, 2) intervals; returns (n, 4, 3) corners."""
    quads = np.empty((len(along), 4, 3))
    along_axis, fixed_axis = (2, 0) if axis == "x" else (0, 2)  # plane X = const runs along Z
    quads[:, :, fixed_axis] = plane
    quads[:, :, along_axis] = along[:, [0, 1, 1, 0]]
    quads[:, :, 1] = up[:, [0, 0, 1, 1]]
    return quads


def _ground_quads(rects: np.ndarray) -> np.ndarray:
    """(n, 4) ground rectangles x0, x1, z0, z1, clipped to the visible depths, as (n, 4, 3) corners."""
    quads = np.zeros((len(rects), 4, 3))
    if len(rects):
        quads[:, :, 0] = rects[:, [0, 1, 1, 0]]
        quads[:, :, 2] = np.clip(rects[:, [2, 2, 3, 3]], NEAR_M, ROAD_END_M)
    return quads


_UNIT_CIRCLE = np.exp(1j * np.linspace(0, 2 * np.pi, 14, endpoint=False))


def _side_disc(plane_x: float, centre_z: float, centre_y: float, radius: float) -> np.ndarray:
    """A disc in the plane X = plane_x (a wheel seen from the side), as a (1, 14, 3) polygon."""
    disc = np.empty((1, len(_UNIT_CIRCLE), 3))
    disc[0, :, 0] = plane_x
    disc[0, :, 1] = centre_y + radius * _UNIT_CIRCLE.imag
    disc[0, :, 2] = centre_z + radius * _UNIT_CIRCLE.real
    return disc


def _grid(intervals_along: np.ndarray, intervals_up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every combination of an interval along the wall with an interval up the wall."""
    i, j = np.meshgrid(np.arange(len(intervals_along)), np.arange(len(intervals_up)), indexing="ij")
    return intervals_along[i.ravel()], intervals_up[j.ravel()]


def _window_intervals(start: float, stop: float, bay: float, width: float) -> np.ndarray:
    bays = max(1, int((stop - start) / bay))
    pitch = (stop - start) / bays
    centres = start + pitch * (np.arange(bays) + 0.5)
    return np.column_stack([centres - width * pitch / 2, centres + width * pitch / 2])


def _floor_intervals(first: int, building: Building) -> np.ndarray:
    floors = np.arange(first, int((building.height_m - 0.5) / building.floor_height_m))
    centres = building.floor_height_m * (floors + 0.55)
    half = building.window_height * building.floor_height_m / 2
    return np.column_stack([centres - half, centres + half])


class _StreetPainter:
    def __init__(self, scene: StreetScene, width: int, height: int) -> None:
        self.scene = scene
        self.canvas = _Canvas(width, height)
        self.project = _Projection(scene.camera, width, height)

    def paint(self) -> _Canvas:
        for block in self.scene.skyline:
            self._distant_block(block)
        self._ground()
        for building in self.scene.buildings:
            self._building(building)
        props: list[Car | Lamp] = [*self.scene.cars, *self.scene.lamps]
        for prop in sorted(props, key=lambda p: -p.z_m):
            if isinstance(prop, Car):
                self._car(prop)
            else:
                self._lamp(prop)
        return self.canvas

    def _sun_on(self, facing_x: int) -> float:
        """Sun exposure of a wall whose outward normal points along X by facing_x (0: faces the camera)."""
        if facing_x == 0:
            return 0.75 if self.scene.sun_behind else 0.3
        return 1.0 if facing_x == self.scene.sun_side else 0.3

    def _windows(self, axis: Literal["x", "z"], plane: float, along: np.ndarray, up: np.ndarray, building: Building) -> None:
        """Glass panes on the wall drawn last; a random share of them lit at night."""
        if len(along) == 0 or len(up) == 0:
            return
        along, up = _grid(along, up)
        visible = along[:, 0] > NEAR_M if axis == "x" else np.ones(len(along), bool)
        along, up = along[visible], up[visible]
        quads = self.project(_wall_quads(axis, plane, along, up))
        self.canvas.decal(quads, building.glass)
        lights = np.random.default_rng([building.lights_seed, int(axis == "x")])
        lit = lights.random(len(quads)) < building.lit_fraction
        dimmed = lights.random(len(quads)) < 0.35
        colour = WINDOW_LIGHTS[int(lights.choice(len(WINDOW_LIGHTS), p=(0.4, 0.25, 0.25, 0.1)))]
        self.canvas.emit(quads[lit & ~dimmed], colour)
        self.canvas.emit(quads[lit & dimmed], shade(colour, 0.55))

    def _building(self, b: Building) -> None:
        haze = _haze((b.z_near_m + b.z_far_m) / 2)
        x = b.side * b.facade_m
        z_near = max(b.z_near_m, NEAR_M)
        if z_near >= b.z_far_m:
            return
        height = np.array([[0.0, b.height_m]])
        cornice = np.array([[b.height_m - 0.6, b.height_m]])
        if b.z_near_m >= NEAR_M:  # end wall, visible where this building stands out
            outward = np.array([[x, x + b.side * b.depth_m]])
            outward.sort(axis=1)
            sun = self._sun_on(0)
            self.canvas.fill(self.project(_wall_quads("z", z_near, outward, height)), b.wall, sun=sun, haze=haze)
            self.canvas.decal(self.project(_wall_quads("z", z_near, outward, cornice)), b.trim)
            inner = outward + np.array([[1.0, -1.0]])
            windows = _window_intervals(inner[0, 0], inner[0, 1], b.bay_width_m, b.window_width)
            self._windows("z", z_near, windows, _floor_intervals(1, b), b)
        sun = self._sun_on(-b.side)
        along = np.array([[z_near, b.z_far_m]])
        self.canvas.fill(self.project(_wall_quads("x", x, along, height)), b.wall, sun=sun, haze=haze)
        self.canvas.decal(self.project(_wall_quads("x", x, along, cornice)), b.trim)
        windows = _window_intervals(b.z_near_m + 0.6, b.z_far_m - 0.6, b.bay_width_m, b.window_width)
        first_floor = 0
        if b.awning is not None:
            first_floor = 1
            shop = _window_intervals(b.z_near_m + 0.8, b.z_far_m - 0.8, 6.0, 0.85)
            shop = shop[shop[:, 0] > NEAR_M]
            up = np.repeat([[0.35, 2.5]], len(shop), axis=0)
            quads = self.project(_wall_quads("x", x, shop, up))
            shop_open = np.random.default_rng([b.lights_seed, 2]).random() < 0.75
            self.canvas.decal(quads, b.glass, SHOP_LIGHT if shop_open else None)
            awning = np.array([[2.6, 3.05]])
            self.canvas.decal(self.project(_wall_quads("x", x, along, awning)), b.awning)
        self._windows("x", x, windows, _floor_intervals(first_floor, b), b)

    def _distant_block(self, block: DistantBlock) -> None:
        haze = _haze(block.z_m)
        along = np.array([[block.x_left_m, block.x_right_m]])
        self.canvas.fill(self.project(_wall_quads("z", block.z_m, along, np.array([[0.0, block.height_m]]))), block.wall, sun=self._sun_on(0), haze=haze)
        columns = _window_intervals(block.x_left_m + 1, block.x_right_m - 1, 3.2, 0.55)
        floors = np.arange(1, int(block.height_m / 3.4))
        rows = np.column_stack([floors * 3.4 + 0.9, floors * 3.4 + 2.4])
        along, up = _grid(columns, rows)
        if len(along) == 0:
            return
        quads = self.project(_wall_quads("z", block.z_m, along, up))
        self.canvas.decal(quads, DISTANT_GLASS)
        lit = np.random.default_rng(block.lights_seed).random(len(quads)) < block.lit_fraction
        self.canvas.emit(quads[lit], WINDOW_LIGHTS[0])

    def _ground_layout(self) -> tuple[list[tuple[np.ndarray, Rgb]], np.ndarray]:
        """Ground rectangles (x0, x1, z0, z1) by material in drawing order, and sun shadows."""
        s = self.scene
        far = ROAD_END_M
        layers: list[tuple[np.ndarray, Rgb]] = [
            (np.array([[-400.0, 400.0, NEAR_M, far]]), s.sidewalk),
            (np.array([[s.road_left_m - 0.25, s.road_left_m, NEAR_M, far], [s.road_right_m, s.road_right_m + 0.25, NEAR_M, far]]), CURB),
            (np.array([[s.road_left_m, s.road_right_m, NEAR_M, far]]), s.asphalt),
        ]
        dashes = np.arange(NEAR_M - 3.0, 400, 9.0) + s.dash_offset_m
        lines = [[x - 0.07, x + 0.07, z, z + 3.0] for x in s.lane_lines_m for z in dashes]
        lines += [[x - 0.08, x + 0.08, NEAR_M, far] for x in (s.road_left_m + 0.3, s.road_right_m - 0.3)]
        layers.append((np.array(lines), MARKING_WHITE))
        if s.centre_line_m is not None:
            c = s.centre_line_m
            layers.append((np.array([[c - 0.22, c - 0.08, NEAR_M, far], [c + 0.08, c + 0.22, NEAR_M, far]]), MARKING_YELLOW))
        if s.crosswalk_z_m is not None:
            stripes = np.arange(s.road_left_m + 0.5, s.road_right_m - 0.6, 1.1)
            z = s.crosswalk_z_m
            layers.append((np.array([[x, x + 0.55, z, z + 3.0] for x in stripes]), MARKING_WHITE))

        shadows = []
        for b in s.buildings:
            if b.side == s.sun_side:
                facade = b.side * b.facade_m
                reach = facade - b.side * b.height_m * s.shadow_reach
                limit = -b.side * max(abs(s.road_left_m), abs(s.road_right_m)) - b.side * 4
                reach = max(reach, limit) if b.side > 0 else min(reach, limit)
                shadows.append([min(facade, reach), max(facade, reach), b.z_near_m, b.z_far_m])
        for car in s.cars:
            offset = -s.sun_side * 0.35
            half = car.width_m / 2 + 0.1
            shadows.append([car.x_m - half + offset, car.x_m + half + offset, car.z_m - 0.15, car.z_m + car.length_m + 0.15])
        return layers, np.array(shadows).reshape(-1, 4)

    def _ground(self) -> None:
        layers, shadows = self._ground_layout()
        (base, base_colour), *markings = layers
        self.canvas.fill(self.project(_ground_quads(base)), base_colour, sun=1.0, haze=0.0, upward=True)
        for rects, colour in markings:  # road, kerbs and lines are paint on one flat ground
            self.canvas.decal(self.project(_ground_quads(rects)), colour)
        self.canvas.shadow(self.project(_ground_quads(shadows)))
        # Nothing stands on the ground yet, so every row below the horizon is ground at a
        # distance known from the row alone: give it the haze of that distance.
        p = self.project
        rows = np.arange(int(np.floor(p.cy)) + 1, self.canvas.shading.shape[0])
        distance = p.focal * p.eye / (rows - p.cy)
        self.canvas.shading[rows, :, 2] = np.round(255 * (1 - np.exp(-distance / HAZE_M)))[:, None].astype(np.uint8)

    def _car(self, car: Car) -> None:
        """A box body with a cabin on top, drawn back to front; small cars lose their details."""
        fill, decal, p = self.canvas.fill, self.canvas.decal, self.project
        haze = _haze(car.z_m)
        width_px = p.focal * car.width_m / car.z_m
        detailed = width_px > 12  # wide enough to show wheels and number plate
        tiny = width_px < 5  # only the near face shows
        left, right = car.x_m - car.width_m / 2, car.x_m + car.width_m / 2
        near, far = car.z_m, car.z_m + car.length_m
        top = car.body_top_m
        clearance = 0.28
        face_sun = self._sun_on(0)
        if detailed:  # tyres seen under the near bumper
            tyres = np.array([[left + 0.08, left + 0.36], [right - 0.36, right - 0.08]])
            fill(p(_wall_quads("z", near + 0.7, tyres, np.array([[0.0, clearance + 0.1]] * 2))), TIRE, sun=0.2, haze=haze)

        side_x = left if left > 0 else right if right < 0 else None  # the flank turned to the camera
        if side_x is not None and not tiny:
            side_sun = self._sun_on(-int(np.sign(car.x_m)))
            fill(p(_wall_quads("x", side_x, np.array([[near, far]]), np.array([[clearance, top]]))), car.colour, sun=side_sun, haze=haze)
            for axle in (near + 0.8, far - 0.8) if detailed else ():
                fill(p(_side_disc(side_x, axle, 0.33, 0.33)), TIRE, sun=0.3, haze=haze)
                decal(p(_side_disc(side_x, axle, 0.33, 0.15)), HUBCAP)
        if not tiny:
            bonnet = np.array([[[left, top, near], [right, top, near], [right, top, far], [left, top, far]]])
            fill(p(bonnet), shade(car.colour, 1.08), sun=1.0, haze=haze)

        # cabin: narrower than the body, its glass sloping away from the camera
        inset = car.width_m * 0.08
        cab_left, cab_right = left + inset, right - inset
        cab_near = near + (1.4 if car.oncoming else 1.0)
        cab_far = far - (0.8 if car.oncoming else 1.2)
        slope, roof = 0.55, car.roof_m
        if side_x is not None and not tiny:
            cab_x = cab_left if side_x == left else cab_right
            side = [[cab_x, top, cab_near], [cab_x, roof, cab_near + slope], [cab_x, roof, cab_far - 0.35], [cab_x, top, cab_far]]
            fill(p(np.array([side])), CAR_GLASS, sun=0.6, haze=haze)
        if roof < self.scene.camera.eye_height_m and not tiny:
            r0, r1 = cab_left + 0.08, cab_right - 0.08
            roof_quad = [[r0, roof, cab_near + slope], [r1, roof, cab_near + slope], [r1, roof, cab_far - 0.35], [r0, roof, cab_far - 0.35]]
            fill(p(np.array([roof_quad])), car.colour, sun=1.0, haze=haze)
        screen = np.array([[cab_left, top, cab_near], [cab_right, top, cab_near], [cab_right - 0.08, roof, cab_near + slope], [cab_left + 0.08, roof, cab_near + slope]])
        fill(p(screen[None]), car.colour, sun=face_sun, haze=haze)
        centre = screen.mean(axis=0)
        glass = centre + (screen - centre) * np.array([0.88, 0.75, 0.75])
        decal(p(glass[None]), CAR_GLASS)

        # near face: bumper, lights, number plate
        body = np.array([[left, right]])
        fill(p(_wall_quads("z", near, body, np.array([[clearance, top]]))), car.colour, sun=face_sun, haze=haze)
        lamps = np.array([[left + 0.06, left + 0.4], [right - 0.4, right - 0.06]])
        lamp_quads = p(_wall_quads("z", near, lamps, np.array([[top - 0.3, top - 0.1]] * 2)))
        if car.oncoming:
            decal(lamp_quads, HEADLIGHT, HEADLIGHT_GLOW if car.lights_on else None)
        else:
            decal(lamp_quads, TAILLIGHT, TAILLIGHT_GLOW if car.lights_on else None)
        if detailed:
            decal(p(_wall_quads("z", near, body, np.array([[clearance, clearance + 0.16]]))), BUMPER)
            if car.oncoming:
                grille = np.array([[car.x_m - 0.4, car.x_m + 0.4]])
                decal(p(_wall_quads("z", near, grille, np.array([[0.5, top - 0.15]]))), BUMPER)
            plate = np.array([[car.x_m - 0.26, car.x_m + 0.26]])
            decal(p(_wall_quads("z", near, plate, np.array([[0.5, 0.62]]))), PLATE)

    def _lamp(self, lamp: Lamp) -> None:
        p = self.project
        haze = _haze(lamp.z_m)
        top = lamp.height_m
        head_x = lamp.x_m - lamp.side * lamp.arm_m
        pole = np.array([[lamp.x_m - 0.09, lamp.x_m + 0.09]])
        self.canvas.fill(p(_wall_quads("z", lamp.z_m, pole, np.array([[0.0, top]]))), LAMP_METAL, sun=0.6, haze=haze)
        arm = np.array([[min(lamp.x_m, head_x), max(lamp.x_m, head_x)]])
        self.canvas.fill(p(_wall_quads("z", lamp.z_m, arm, np.array([[top - 0.08, top + 0.02]]))), LAMP_METAL, sun=0.6, haze=haze)
        head = np.array([[head_x - 0.45, head_x + 0.45]])
        self.canvas.fill(p(_wall_quads("z", lamp.z_m, head, np.array([[top - 0.2, top + 0.04]]))), LAMP_METAL, sun=0.8, haze=haze)
        self.canvas.decal(p(_wall_quads("z", lamp.z_m, head, np.array([[top - 0.2, top - 0.12]]))), (200, 200, 190), LAMP_LIGHT)


@dataclass(frozen=True)
class _Materials:
    """The canvas at output size as float rows of interleaved RGB, shape (h, w * 3).

    numpy is many times faster on long rows than on (h, w, 3) arrays broadcast against
    3-vectors, so per-pixel factors are repeated per channel and colours tiled along a row.
    """

    width: int
    height: int
    albedo: np.ndarray
    emission: np.ndarray
    sun: np.ndarray
    sky: np.ndarray
    haze: np.ndarray
    upward: np.ndarray

    def row(self, rgb: tuple[float, float, float] | np.ndarray) -> np.ndarray:
        """A colour (0..1) repeated along one image row."""
        return np.tile(np.asarray(rgb, np.float32), self.width)

    def per_channel(self, values: np.ndarray) -> np.ndarray:
        """(h, w) per-pixel values repeated for R, G and B."""
        return np.repeat(values.astype(np.float32, copy=False), 3, axis=1)

    def sky_gradient(self, top: np.ndarray, bottom: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Rows at or above 0 get top, at or below 1 bottom; as (h, w * 3)."""
        t = np.clip(rows, 0, 1)[:, None]
        return np.tile(top * (1 - t) + bottom * t, (1, self.width))


def _materials(canvas: _Canvas, width: int, height: int) -> _Materials:
    def shrink(image: np.ndarray) -> np.ndarray:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32) / 255

    shading = shrink(canvas.shading)
    sun, sky, haze = (np.repeat(shading[..., k], 3, axis=1) for k in range(3))
    return _Materials(
        width=width,
        height=height,
        albedo=shrink(canvas.albedo).reshape(height, width * 3),
        emission=shrink(canvas.emission).reshape(height, width * 3),
        sun=sun,
        sky=sky,
        haze=haze,
        upward=np.repeat(shrink(canvas.upward), 3, axis=1),
    )


def _day(scene: StreetScene, m: _Materials, noise: np.random.Generator) -> np.ndarray:
    width, height = m.width, m.height
    skylight, sunlight = (0.46, 0.49, 0.55), (0.60, 0.57, 0.50)  # bluish fill, warm direct sun
    lit = m.albedo * (m.row(skylight) + m.sun * m.row(sunlight))
    horizon = rgb01(scene.sky_horizon)
    lit += (m.row(horizon) - lit) * m.haze  # aerial perspective
    rows = np.arange(height, dtype=np.float32) / max(scene.camera.horizon * height, 1)
    sky = m.sky_gradient(rgb01(scene.sky_top), horizon, rows**0.8)
    sky_rows = max(int(np.ceil(scene.camera.horizon * height)), 1)
    clouds = sum(
        cv2.resize(field, (width, sky_rows), interpolation=cv2.INTER_CUBIC) * 0.5**octave
        for octave, field in enumerate(scene.clouds)
    )
    cloud_alpha = np.zeros((height, width), np.float32)
    cloud_alpha[:sky_rows] = np.clip((clouds - (1.7 - 2.6 * scene.cloud_cover)) * 1.4, 0, 0.95)
    cloud_alpha *= np.clip(1.3 - rows, 0, 1)[:, None]  # clouds thin out towards the horizon
    sky += (0.96 - sky) * m.per_channel(cloud_alpha)
    image = lit + (sky - lit) * m.sky
    image += m.per_channel(0.008 * noise.standard_normal((height, width), np.float32))
    return image


def _ground_light(scene: StreetScene, width: int, height: int) -> np.ndarray:
    """Night light falling on the road: lamp pools and headlight beams, (h, w, 3)."""
    cam = scene.camera
    cy = cam.horizon * height
    focal = cam.focal * height
    rows = np.arange(height, dtype=np.float32)[:, None] + 0.5
    cols = np.arange(width, dtype=np.float32)[None, :] + 0.5
    below = np.maximum(rows - cy, 1e-3)
    z = np.where(rows > cy, cam.eye_height_m * focal / below, 1e5)  # above the horizon: no ground
    x = (cols - cam.center * width) * z / focal
    pools = np.zeros((height, width), np.float32)
    for lamp in scene.lamps:
        head_x = lamp.x_m - lamp.side * lamp.arm_m
        d2 = (x - head_x) ** 2 + (z - lamp.z_m) ** 2
        pools += 0.45 * np.exp(-d2 / (2 * (0.4 * lamp.height_m) ** 2))
    beams = 0.25 * np.exp(-((x / (0.9 + 0.22 * z)) ** 2)) * np.clip(z / 4, 0, 1) / (1 + (z / 22) ** 2)  # our own
    for car in scene.cars:
        if car.oncoming and car.lights_on:
            ahead = car.z_m - z  # beams reach towards the camera
            spread = 0.9 + 0.2 * np.maximum(ahead, 0)
            beams += 0.4 * np.exp(-(((x - car.x_m) / spread) ** 2)) * (ahead > 0) / (1 + (ahead / 12) ** 2)
    return pools[..., None] * rgb01(LAMP_LIGHT) + beams[..., None] * rgb01(HEADLIGHT_GLOW)


def _night(scene: StreetScene, m: _Materials, noise: np.random.Generator) -> np.ndarray:
    width, height = m.width, m.height
    small = (max(width // 4, 8), max(height // 4, 8))
    light = cv2.resize(_ground_light(scene, *small), (width, height), interpolation=cv2.INTER_LINEAR)
    lit = m.albedo * (m.row((0.07, 0.085, 0.15)) + light.reshape(height, width * 3))  # blue moonlit ambient
    lit += (m.row((0.04, 0.045, 0.08)) - lit) * (0.7 * m.haze)
    rows = np.arange(height, dtype=np.float32) / max(scene.camera.horizon * height, 1)
    sky = m.sky_gradient(np.array([0.012, 0.02, 0.06], np.float32), np.array([0.11, 0.10, 0.14], np.float32), rows**2)
    image = lit + (sky - lit) * m.sky + 0.85 * m.emission
    pixels = image.reshape(height, width, 3)
    star_cols = (scene.stars[:, 0] * width).astype(int)
    star_rows = (scene.stars[:, 1] * scene.camera.horizon * height * 0.8).astype(int)
    star_light = 0.7 * scene.stars[:, 2] * m.sky[star_rows, 3 * star_cols]
    pixels[star_rows, star_cols] += star_light[:, None]
    # bloom: bright sources bleed into their surroundings (lens glare), at two radii
    glare = cv2.resize(m.emission.reshape(height, width, 3), small, interpolation=cv2.INTER_AREA)
    narrow = cv2.GaussianBlur(glare, (0, 0), max(small[1] / 90, 0.6))
    wide = cv2.GaussianBlur(glare, (0, 0), max(small[1] / 25, 1.0))
    image += cv2.resize(0.5 * narrow + 0.6 * wide, (width, height), interpolation=cv2.INTER_LINEAR).reshape(height, width * 3)
    image += m.per_channel(_lamp_halos(scene, width, height)) * m.row(0.45 * rgb01(LAMP_LIGHT))
    image += m.per_channel(0.018 * noise.standard_normal((height, width), np.float32))  # sensor grain
    image += 0.008 * noise.standard_normal((height, width * 3), np.float32)
    return image


def _lamp_halos(scene: StreetScene, width: int, height: int) -> np.ndarray:
    """Radial glow around each street lamp head, sized by its distance, (h, w)."""
    project = _Projection(scene.camera, width, height)
    cols = np.arange(width, dtype=np.float32) + 0.5
    rows = np.arange(height, dtype=np.float32) + 0.5
    halos = np.zeros((height, width), np.float32)
    for lamp in scene.lamps:
        u, v, per_metre = project.pixel(lamp.x_m - lamp.side * lamp.arm_m, lamp.height_m - 0.2, lamp.z_m)
        radius = float(np.clip(1.2 * per_metre, 0.8, 0.05 * height))
        if -4 * radius < u < width + 4 * radius and -4 * radius < v < height + 4 * radius:
            halos += np.outer(np.exp(-(((rows - v) / radius) ** 2)), np.exp(-(((cols - u) / radius) ** 2)))
    return halos


def _overcast(scene: StreetScene, m: _Materials, albedo: np.ndarray, ambient: tuple[float, float, float],
              sky_top: tuple[float, float, float], sky_horizon: tuple[float, float, float], fog: float) -> np.ndarray:
    """Diffuse light from a cloud-covered sky (no sun, no shadows), fog towards the horizon colour."""
    lit = albedo * (m.row(ambient) + 0.12 * m.sun * m.row(ambient))
    horizon = np.asarray(sky_horizon, np.float32)
    lit += (m.row(horizon) - lit) * np.minimum(1.0, fog * m.haze)
    rows = np.arange(m.height, dtype=np.float32) / max(scene.camera.horizon * m.height, 1)
    sky = m.sky_gradient(np.asarray(sky_top, np.float32), horizon, rows**0.7)
    return lit + (sky - lit) * m.sky


def _streaks(noise: np.random.Generator, width: int, height: int, count: int, length: float, slant: float) -> np.ndarray:
    """(h, w) intensity of falling rain: thin slanted strokes at random places and depths."""
    streaks = np.zeros((height, width), np.float32)
    x0 = noise.uniform(-0.2 * width, 1.1 * width, count)
    y0 = noise.uniform(-0.1 * height, height, count)
    depth = noise.uniform(0.3, 1.0, count)  # nearer drops look longer and brighter
    for x, y, d in zip(x0, y0, depth):
        dy = length * height * d
        cv2.line(streaks, (int(x), int(y)), (int(x + slant * dy), int(y + dy)), float(0.25 + 0.35 * d), 1, cv2.LINE_AA)
    return streaks


def _rain(scene: StreetScene, m: _Materials, noise: np.random.Generator) -> np.ndarray:
    width, height = m.width, m.height
    wet = m.upward * 0.35 + (1 - m.upward)  # wet asphalt and paving darken
    image = _overcast(scene, m, m.albedo * wet, (0.50, 0.52, 0.56), (0.50, 0.52, 0.55), (0.68, 0.69, 0.71), 1.6)
    # The wet ground mirrors the bright sky and the lights above it, blurred by the ripples.
    mirror = cv2.flip(image.reshape(height, width, 3), 0)
    mirror = cv2.GaussianBlur(mirror, (0, 0), max(height / 60, 0.8)).reshape(height, width * 3)
    image += 0.35 * m.upward * mirror + 0.3 * m.emission
    grey = image.reshape(height, width, 3).mean(axis=2, keepdims=True)
    image = (0.55 * image.reshape(height, width, 3) + 0.45 * grey).reshape(height, width * 3)  # washed-out colours
    streaks = _streaks(noise, width, height, count=max(width * height // 90, 20), length=0.06, slant=0.18)
    image += m.per_channel(streaks) * (0.85 - image) * 0.6
    image += m.per_channel(0.01 * noise.standard_normal((height, width), np.float32))
    return image


def _snow(scene: StreetScene, m: _Materials, noise: np.random.Generator) -> np.ndarray:
    width, height = m.width, m.height
    # Snow lies on the ground, thinner where the paint of lines and kerbs shows through.
    small = (max(width // 8, 4), max(height // 8, 4))
    patchy = cv2.resize(noise.uniform(0.75, 1.0, (small[1], small[0])).astype(np.float32), (width, height),
                        interpolation=cv2.INTER_CUBIC)
    cover = m.upward * m.per_channel(np.clip(patchy, 0, 1))
    albedo = m.albedo + (m.row((0.93, 0.94, 0.97)) - m.albedo) * cover
    image = _overcast(scene, m, albedo, (0.80, 0.83, 0.90), (0.76, 0.78, 0.82), (0.86, 0.87, 0.89), 2.0)
    image += 0.25 * m.emission
    flakes = np.zeros((height, width), np.float32)
    count = max(width * height // 120, 20)
    for x, y, radius in zip(noise.uniform(0, width, count), noise.uniform(0, height, count),
                            noise.uniform(0.4, 1.6, count) * max(height / 128, 0.5)):
        cv2.circle(flakes, (int(x), int(y)), max(int(round(radius)), 1), 1.0, -1, cv2.LINE_AA)
    flakes = cv2.GaussianBlur(flakes, (0, 0), 0.6)
    image += m.per_channel(np.clip(flakes, 0, 1)) * (0.97 - image) * 0.85
    image += m.per_channel(0.008 * noise.standard_normal((height, width), np.float32))
    return image


LIGHTING = {"day": _day, "night": _night, "rain": _rain, "snow": _snow}


def render_street(
    scene: StreetScene, width: int, height: int, domains: tuple[StreetDomain, ...] = ("day", "night")
) -> dict[StreetDomain, np.ndarray]:
    """Render a scene as (height, width, 3) uint8 RGB images, one per requested condition."""
    canvas = _StreetPainter(scene, width * SUPERSAMPLE, height * SUPERSAMPLE).paint()
    materials = _materials(canvas, width, height)
    images: dict[StreetDomain, np.ndarray] = {}
    for domain in domains:
        noise = np.random.default_rng([scene.seed, STREET_DOMAINS.index(domain)])
        image = LIGHTING[domain](scene, materials, noise)
        images[domain] = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8).reshape(height, width, 3)
    return images
