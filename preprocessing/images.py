"""Decoding, checking and resizing single images: pure functions, safe to run in worker processes.

:func:`process_image` is the per-image step. It takes an :class:`ImageTask` (the source bytes
plus what to do with them) and returns an :class:`ImageResult` (encoded output or the reason
for rejecting the input); it never raises for bad input, so one broken file cannot stop a run.
Everything it needs travels in the task, so a process pool, Ray tasks or Ray Data ``map``
can all call it.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from preprocessing.output import encode_image
from unit_core.ingest_settings import MAX_PIXELS

#: Inputs above this many pixels are rejected before decoding (decompression-bomb guard).
DEFAULT_MAX_PIXELS = MAX_PIXELS  # the settings' default (unit_core.ingest_settings)
_EXIF_ORIENTATION = 0x0112
_JPEG_END = b"\xff\xd9"
# Pillow raises these for malformed headers or pixel data, depending on the format plugin.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError)

#: A transform maps a decoded image to the output image plus facts for the manifest (may be {}).
ImageTransform = Callable[[np.ndarray], tuple[np.ndarray, dict[str, Any]]]


class RejectedImage(Exception):
    """This input cannot become an output image; the message is the reason shown in report.json."""


@dataclass(frozen=True)
class ImageTask:
    """Everything :func:`process_image` needs for one input; picklable when ``transform`` is."""

    data: bytes
    transform: ImageTransform
    image_format: str = "png"
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class ImageResult:
    encoded: bytes | None
    reason: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()  # what the decoder said of an image it still decoded (report.json "warnings")


def process_image(task: ImageTask) -> ImageResult:
    """Decode, transform and encode one image; bad input gives a result with a reason instead of raising."""
    try:
        said: list[str] = []
        image = decode_image(task.data, max_pixels=task.max_pixels, warnings_out=said)
        output, info = task.transform(image)
        return ImageResult(encode_image(output, task.image_format), info=info, warnings=tuple(said))
    except RejectedImage as exc:
        return ImageResult(None, str(exc))
    except Exception as exc:  # noqa: BLE001 - a decoder bug on one file must not stop the whole run
        return ImageResult(None, f"unexpected {type(exc).__name__} while decoding: {exc}")


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, warnings_out: list[str] | None = None) -> np.ndarray:
    """Bytes of any Pillow-readable image -> HxWx3 RGB uint8, EXIF orientation applied.

    16-bit images keep their high byte, palette images are expanded, transparency is flattened
    onto white, CMYK is converted to RGB. Complete RGB/gray JPEGs are decoded by OpenCV (faster),
    everything else by Pillow. Raises :class:`RejectedImage` with the reason otherwise. What
    libjpeg prints of a damaged stream it still decodes ("Corrupt JPEG data: ...") is appended
    to ``warnings_out``.
    """
    if not data:
        raise RejectedImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise RejectedImage("not an image: unrecognised file format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise RejectedImage(f"decompression bomb: {exc}") from None
    except _DECODE_ERRORS as exc:
        raise RejectedImage(f"unreadable image header: {exc}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise RejectedImage(
            f"too many pixels: {width}x{height} = {width * height} > limit {max_pixels} (possible decompression bomb)"
        )
    if width == 0 or height == 0:
        raise RejectedImage(f"empty image ({width}x{height})")
    orientation = _exif_orientation(image)
    if image.format == "JPEG" and image.mode in ("RGB", "L") and data.endswith(_JPEG_END):
        array = _decode_complete_jpeg(data, warnings_out)
        if array is not None:
            return np.ascontiguousarray(apply_exif_orientation(array, orientation))
    try:
        if image.format == "PNG":
            # Pillow's decoder stops once it has the pixels and never checks chunk CRCs;
            # verify() does, on a second handle (it leaves its image unusable).
            Image.open(io.BytesIO(data)).verify()
        image.load()
        array = _to_rgb(image)
    except _DECODE_ERRORS as exc:
        raise RejectedImage(f"corrupt or truncated {image.format or 'image'} data: {exc}") from None
    return np.ascontiguousarray(apply_exif_orientation(array, orientation))


def _decode_complete_jpeg(data: bytes, warnings_out: list[str] | None) -> np.ndarray | None:
    """Fast path for the most common input: OpenCV decodes JPEG into numpy without Pillow's extra copy.

    Only for streams that end with the end-of-image marker: OpenCV fills a truncated JPEG with
    grey instead of failing, so truncated files take the Pillow path, which rejects them.
    """
    try:
        with _stderr_captured() as said:
            decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error:
        return None  # Pillow decides, and gives the reason if the file is broken
    if warnings_out is not None:
        warnings_out += [line.strip() for line in said if line.strip()]
    return None if decoded is None else cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


_capture_file: Any = None


@contextmanager
def _stderr_captured() -> Iterator[list[str]]:
    """Lines written to file descriptor 2 in the block (libjpeg's warnings bypass Python), not shown."""
    global _capture_file
    if _capture_file is None:
        _capture_file = tempfile.TemporaryFile()
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    _capture_file.seek(0)
    _capture_file.truncate()
    os.dup2(_capture_file.fileno(), 2)
    try:
        yield lines
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        _capture_file.seek(0)
        lines += _capture_file.read().decode("utf-8", errors="replace").splitlines()


def _exif_orientation(image: Image.Image) -> int:
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except _DECODE_ERRORS:
        return 1  # unreadable EXIF: the pixels may still be fine, keep them as stored
    return orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1


def _to_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image)
        if values.min() < 0 or values.max() > 65535:
            raise RejectedImage(f"unsupported pixel values for mode {mode}: outside 0..65535")
        # Keep the high byte, as Pillow itself does for 16-bit RGB PNGs.
        luminance = (values.astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(luminance[:, :, None], 3, axis=2)
    if mode == "F":
        raise RejectedImage("unsupported pixel format: 32-bit floating point (mode F)")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def apply_exif_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Rotate/flip as EXIF orientation 1..8 says, so the array is the way the photo is meant to be seen."""
    if orientation == 2:
        return image[:, ::-1]
    if orientation == 3:
        return image[::-1, ::-1]
    if orientation == 4:
        return image[::-1]
    if orientation == 5:
        return np.swapaxes(image, 0, 1)
    if orientation == 6:
        return np.swapaxes(image, 0, 1)[:, ::-1]
    if orientation == 7:
        return np.swapaxes(image, 0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.swapaxes(image, 0, 1)[::-1]
    return image


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize with area averaging when shrinking (no aliasing) and bicubic when enlarging."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    shrinking = width <= image.shape[1] and height <= image.shape[0]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def cover_crop_box(image_width: int, image_height: int, width: int, height: int) -> tuple[int, int, int, int]:
    """The centred box (x, y, w, h) of the source with the target's aspect ratio, as large as fits."""
    scale = max(width / image_width, height / image_height)
    box_width = min(image_width, round(width / scale))
    box_height = min(image_height, round(height / scale))
    return (image_width - box_width) // 2, (image_height - box_height) // 2, box_width, box_height


def check_large_enough(image: np.ndarray, width: int, height: int, allow_upscale: bool) -> None:
    image_height, image_width = image.shape[:2]
    if not allow_upscale and (image_width < width or image_height < height):
        raise RejectedImage(
            f"too small: {image_width}x{image_height} is below the target {width}x{height} (allow upscaling to keep it)"
        )


def cover_resize(image: np.ndarray, *, width: int, height: int, allow_upscale: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Keep the aspect ratio: crop the centred box of the target's shape, then resize it to width x height."""
    check_large_enough(image, width, height, allow_upscale)
    x, y, box_width, box_height = cover_crop_box(image.shape[1], image.shape[0], width, height)
    crop = image[y : y + box_height, x : x + box_width]
    return resize(crop, width, height), {}


def keep_size(image: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Re-encode only (format, colour, orientation normalised)."""
    return image, {}


def half_then_resize(
    image: np.ndarray, *, side: str, size: tuple[int, int] | None, allow_upscale: bool = False
) -> tuple[np.ndarray, dict[str, Any]]:
    """One half of a side-by-side pair (pix2pix format: A|B), optionally resized to (width, height)."""
    image_width = image.shape[1]
    if image_width % 2:
        raise RejectedImage(f"side-by-side pair has an odd width ({image_width}); cannot split it into two halves")
    middle = image_width // 2
    half = image[:, :middle] if side == "left" else image[:, middle:]
    if size is None:
        return half, {}
    return cover_resize(half, width=size[0], height=size[1], allow_upscale=allow_upscale)


def size_transform(size: tuple[int, int] | None, allow_upscale: bool) -> ImageTransform:
    """The usual transform for a target size: cover-resize, or keep the size when None."""
    if size is None:
        return keep_size
    return partial(cover_resize, width=size[0], height=size[1], allow_upscale=allow_upscale)
