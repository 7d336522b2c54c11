"""Image conversions between files, PIL, and network tensors in [-1, 1]; sample grids."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps

from unit_core.scratch import atomic_write

#: File suffixes read as images everywhere: ingestion, training data, translation.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"})


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside or below ``folder``, in a stable (sorted) order."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def list_folder(folder: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """Everything below ``folder``, sorted: (image files, other files, entries that are not readable files).

    The last holds image-named entries that are no file: broken links and link loops,
    which ``list_images`` passes over in silence.
    """
    images, others, broken = [], [], []
    for path in sorted(folder.rglob("*")):
        if path.is_dir():
            continue
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            (others if path.is_file() else broken).append(path)
        else:
            (images if path.is_file() else broken).append(path)
    return images, others, broken


def to_mode(image: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL mode (16-bit, palette, CMYK, RGBA, ...) to 'L' (1 channel) or 'RGB' (3)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite on white: transparent areas would otherwise come out as arbitrary colours.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("L" if channels == 1 else "RGB")


def load_image(path: Path, channels: int, shorter_side: int = 0) -> Image.Image:
    """Read an image file as 'L' or 'RGB'; a ValueError names the file if it cannot be read.

    ``shorter_side``: the caller shrinks the image to this shorter side anyway, so a JPEG is
    decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) when that still leaves at least
    this many pixels: several times faster than decoding every pixel and resizing them.
    """
    try:
        with Image.open(path) as handle:
            if shorter_side and handle.format == "JPEG" and shorter_side < min(handle.size):
                # draft() keeps both sides at least the requested size: ask only for the shorter one.
                landscape = handle.width >= handle.height
                handle.draft(None, (1, shorter_side) if landscape else (shorter_side, 1))
            handle.load()
            return to_mode(handle, channels)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: cannot read image: {exc}") from None


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL 'L' or 'RGB' -> float tensor (C, H, W) in [-1, 1]."""
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.transpose(2, 0, 1).copy()).div_(127.5).sub_(1.0)


def tensor_to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W, C) uint8, rounding to nearest."""
    array = tensor.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).cpu().numpy()
    return array.transpose(1, 2, 0)


def tensor_to_pil(tensor: torch.Tensor) -> Image.Image:
    array = tensor_to_uint8(tensor)
    return Image.fromarray(array[:, :, 0], "L") if array.shape[2] == 1 else Image.fromarray(array, "RGB")


#: A column heading: one text, or (long, short) with the short one used where the long does not fit.
Heading = str | tuple[str, str]
_LABEL_PAD = 3


def save_grid(rows: list[list[torch.Tensor]], path: Path, gap: int = 2, headings: Sequence[Heading] = (),
              row_labels: Sequence[str] = ()) -> Path:
    """Save a grid of (C, H, W) tensors (rows of equal-size images) as one RGB PNG, atomically.

    ``headings`` label the columns (drawn above them), ``row_labels`` the rows (drawn at
    their left), so a reader needs no code to know what each tile is.
    """
    tiles = [[tensor_to_uint8(t) for t in row] for row in rows]
    height = max(tile.shape[0] for row in tiles for tile in row)
    width = max(tile.shape[1] for row in tiles for tile in row)
    columns = max(len(row) for row in tiles)
    font = ImageFont.load_default()
    text_height = font.getbbox("Ag")[3] if headings or row_labels else 0
    top = text_height + 2 * _LABEL_PAD if headings else 0
    left = max((font.getlength(label) for label in row_labels), default=0)
    left = int(left) + 2 * _LABEL_PAD if row_labels else 0
    canvas = np.full(
        (top + len(tiles) * (height + gap) - gap, left + columns * (width + gap) - gap, 3), 255, dtype=np.uint8
    )
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            if tile.shape[2] == 1:
                tile = np.repeat(tile, 3, axis=2)
            y, x = top + r * (height + gap), left + c * (width + gap)
            canvas[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    for c, heading in enumerate(headings[:columns]):
        long, short = (heading, heading) if isinstance(heading, str) else heading
        text = long if font.getlength(long) <= width + gap else short
        x = left + c * (width + gap) + max(0, (width - font.getlength(text)) / 2)
        draw.text((x, _LABEL_PAD), text, fill=(0, 0, 0), font=font)
    for r, label in enumerate(row_labels[: len(tiles)]):
        y = top + r * (height + gap) + max(0, (height - text_height) / 2)
        draw.text((_LABEL_PAD, y), label, fill=(0, 0, 0), font=font)
    encoded = io.BytesIO()
    image.save(encoded, format="PNG")
    return atomic_write(path, encoded.getvalue())
