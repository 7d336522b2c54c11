"""Contact sheets: one PNG a person can look over to check what an ingest accepted and rejected.

Two sections of captioned tiles: the accepted crops, weakest score first (the likeliest to be
wrong), and the rejected photos with their best candidate box drawn, highest score first
(the likeliest to deserve a manual box).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from preprocessing.output import encode_image

TILE = 128
CAPTION = 30  # two lines of small text under each tile
COLUMNS = 8
_TITLE = 28
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BOX_COLOUR = (255, 40, 40)


@dataclass(frozen=True)
class Tile:
    image: np.ndarray  # RGB uint8, any size: fitted into the tile
    lines: tuple[str, str]  # caption
    box: tuple[int, int, int, int] | None = None  # drawn on the image, in its pixels


def _fitted(tile: Tile) -> np.ndarray:
    image = tile.image
    scale = TILE / max(image.shape[:2])
    width, height = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    if tile.box is not None:
        x0, y0, x1, y1 = (round(value * scale) for value in tile.box)
        cv2.rectangle(resized, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), _BOX_COLOUR, 2)
    canvas = np.full((TILE + CAPTION, TILE, 3), 255, np.uint8)
    top, left = (TILE - height) // 2, (TILE - width) // 2
    canvas[top : top + height, left : left + width] = resized
    for row, line in enumerate(tile.lines):
        text = line if len(line) <= 24 else line[:23] + "~"
        cv2.putText(canvas, text, (2, TILE + 12 + 13 * row), _FONT, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def _section(title: str, tiles: Sequence[Tile]) -> np.ndarray:
    width = COLUMNS * TILE
    header = np.full((_TITLE, width, 3), 230, np.uint8)
    cv2.putText(header, title, (6, 19), _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    rows = [header]
    for start in range(0, len(tiles), COLUMNS):
        row = np.full((TILE + CAPTION, width, 3), 255, np.uint8)
        for column, tile in enumerate(tiles[start : start + COLUMNS]):
            row[:, column * TILE : (column + 1) * TILE] = _fitted(tile)
        rows.append(row)
    return np.concatenate(rows)


def contact_sheet(sections: Sequence[tuple[str, Sequence[Tile]]]) -> bytes:
    """PNG bytes of the titled sections one below the other."""
    return encode_image(np.concatenate([_section(title, tiles) for title, tiles in sections]), "png")
