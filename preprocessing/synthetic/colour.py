"""Colour helpers shared by the synthetic renderers (street scenes and maps): 8-bit RGB triples."""

from __future__ import annotations

import numpy as np

Rgb = tuple[int, int, int]


def clip_rgb(values: np.ndarray) -> Rgb:
    """The nearest 8-bit colour to three values (rounded, clipped to 0..255)."""
    r, g, b = (int(v) for v in np.clip(np.round(values), 0, 255))
    return r, g, b


def jitter(rng: np.random.Generator, rgb: Rgb, spread: float) -> Rgb:
    """The colour made brighter or darker by up to spread, and its hue shifted a little."""
    return clip_rgb(np.asarray(rgb) + rng.uniform(-spread, spread) + rng.uniform(-spread / 3, spread / 3, 3))


def shade(rgb: Rgb, factor: float) -> Rgb:
    """The colour scaled by ``factor`` (lighter above 1), clipped at 255."""
    r, g, b = (min(255, round(c * factor)) for c in rgb)
    return r, g, b


def rgb01(rgb: Rgb) -> np.ndarray:
    """The colour as float32 in [0, 1]."""
    return np.asarray(rgb, np.float32) / 255
