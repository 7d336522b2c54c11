"""Bad and unusual inputs: each is converted correctly or rejected with a reason; nothing crashes."""

from __future__ import annotations

import io
import pickle
import struct
import zlib
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pytest
from ingest_helpers import encode, manifest_by_source, photo, rejections, report, serial_options, write
from PIL import Image, ImageOps

from preprocessing.folders import ingest_folders
from preprocessing.images import (
    ImageTask,
    RejectedImage,
    cover_resize,
    decode_image,
    process_image,
)

TARGET = (64, 48)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_claiming(width: int, height: int) -> bytes:
    """A valid-looking PNG whose header claims width x height; only one row of data follows."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    data = png_chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1)))
    return b"\x89PNG\r\n\x1a\n" + header + data + png_chunk(b"IEND", b"")


def load(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]


@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("messy")
    good = encode(photo(96, 72, 1), "JPEG", quality=92)
    write(folder / "good.jpg", good)
    write(folder / "sub" / "copy_of_good.jpg", good)
    full_png = encode(photo(96, 72, 2), "PNG")
    write(folder / "truncated.jpg", good[: len(good) // 2])
    write(folder / "truncated.png", full_png[: len(full_png) // 2])
    idat = full_png.index(b"IDAT")
    write(folder / "bad_crc.png", full_png[: idat + 20] + bytes([full_png[idat + 20] ^ 0xFF]) + full_png[idat + 21 :])
    write(folder / "bad_header.jpg", good[:2] + b"\x00" * 40 + good[42:])
    write(folder / "empty.jpg", b"")
    write(folder / "text.png", b"this is not an image, whatever the extension says\n")
    write(folder / "bomb.png", png_claiming(30000, 30000))
    write(folder / "gray16.png", cv2.imencode(".png", (np.arange(96 * 72).reshape(72, 96) * 9).astype(np.uint16))[1].tobytes())
    rgb16 = (photo(96, 72, 3).astype(np.uint16) * 257)[:, :, ::-1]
    write(folder / "rgb16.png", cv2.imencode(".png", np.ascontiguousarray(rgb16))[1].tobytes())
    palette = Image.fromarray(photo(96, 72, 4)).convert("P", palette=Image.ADAPTIVE, colors=16)
    write(folder / "palette.png", encode(palette, "PNG", transparency=0))
    write(folder / "cmyk.jpg", encode(Image.new("CMYK", (96, 72), (0, 255, 255, 0)), "JPEG", quality=95))
    rgba = np.dstack([photo(96, 72, 5), np.full((72, 96), 0, np.uint8)])
    rgba[:, 48:, 3] = 255
    write(folder / "rgba.png", encode(rgba, "PNG"))
    write(folder / "gray.jpg", encode(photo(96, 72, 6)[:, :, 0], "JPEG", quality=95))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    write(folder / "exif6.jpg", encode(photo(96, 72, 7), "JPEG", quality=95, exif=exif))
    write(folder / "Ünïcødé straße 東京.jpg", encode(photo(96, 72, 8), "JPEG"))
    write(folder / "small.jpg", encode(photo(40, 30, 9), "JPEG"))
    write(folder / "readme.txt", b"notes")
    return folder


@pytest.fixture(scope="module")
def messy_out(messy_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("messy_out") / "ds"
    ingest_folders({"d": str(messy_folder)}, out, size=TARGET, options=serial_options())
    return out


def reason_for(out: Path, folder: Path, name: str) -> str:
    return rejections(out)[f"{folder}/{name}"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("truncated.jpg", "corrupt or truncated JPEG"),
        ("truncated.png", "corrupt or truncated PNG"),
        ("bad_crc.png", "corrupt or truncated PNG"),
        ("bad_header.jpg", "not an image"),
        ("empty.jpg", "empty file (0 bytes)"),
        ("text.png", "not an image"),
        ("bomb.png", "decompression bomb"),
        ("small.jpg", "too small: 40x30 is below the target 64x48"),
        ("sub/copy_of_good.jpg", "duplicate of"),
        ("readme.txt", "not an image file name"),
    ],
)
def test_bad_inputs_are_rejected_with_a_reason(messy_out: Path, messy_folder: Path, name: str, expected: str) -> None:
    assert expected in reason_for(messy_out, messy_folder, name)


def test_every_valid_image_is_converted(messy_out: Path, messy_folder: Path) -> None:
    converted = {Path(source).relative_to(messy_folder).as_posix() for source in manifest_by_source(messy_out)}
    assert converted == {
        "good.jpg", "gray16.png", "rgb16.png", "palette.png", "cmyk.jpg", "rgba.png", "gray.jpg", "exif6.jpg",
        "Ünïcødé straße 東京.jpg",
    }
    assert report(messy_out)["rejected_count"] == 10
    for path in (messy_out / "d" / "train").iterdir():
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert image.shape == (48, 64, 3) and image.dtype == np.uint8, path.name


def test_non_ascii_name_is_kept(messy_out: Path) -> None:
    assert (messy_out / "d" / "train" / "Ünïcødé straße 東京.png").is_file()


def test_sixteen_bit_keeps_the_high_byte(messy_out: Path) -> None:
    source = (np.arange(96 * 72).reshape(72, 96) * 9).astype(np.uint16)
    expected = cover_resize(np.repeat((source >> 8).astype(np.uint8)[:, :, None], 3, axis=2), width=64, height=48)[0]
    assert np.array_equal(load(messy_out / "d/train/gray16.png"), expected)
    rgb = cover_resize(photo(96, 72, 3), width=64, height=48)[0]
    assert np.abs(load(messy_out / "d/train/rgb16.png").astype(int) - rgb).max() <= 1


def test_transparency_is_flattened_on_white(messy_out: Path) -> None:
    rgba = load(messy_out / "d/train/rgba.png")
    assert (rgba[:, :28] == 255).all(), "transparent left half becomes white"
    assert not (rgba[:, 36:] == 255).all(), "opaque right half keeps its colours"
    assert (load(messy_out / "d/train/palette.png") == 255).all(axis=2).any(), "palette transparency flattened too"


def test_cmyk_and_gray_become_rgb(messy_out: Path) -> None:
    red = load(messy_out / "d/train/cmyk.jpg".replace(".jpg", ".png"))
    assert red[..., 0].mean() > 200 and red[..., 1].mean() < 40 and red[..., 2].mean() < 40, "C=0 M=Y=255 K=0 is red"
    gray = load(messy_out / "d/train/gray.png")
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])


def test_exif_rotation_is_applied(messy_out: Path, messy_folder: Path) -> None:
    upright = np.asarray(ImageOps.exif_transpose(Image.open(messy_folder / "exif6.jpg")).convert("RGB"))
    assert upright.shape == (96, 72, 3), "portrait after rotation"
    assert np.array_equal(load(messy_out / "d/train/exif6.png"), cover_resize(upright, width=64, height=48)[0])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_exif_orientations_match_pillow(orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(photo(10, 6, orientation), "PNG", exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert np.array_equal(decode_image(data), expected)


def test_jpeg_fast_path_and_pillow_path_agree() -> None:
    complete = encode(photo(96, 72, 11), "JPEG", quality=90)
    assert complete.endswith(b"\xff\xd9")
    with_trailer = complete + b"appended by some camera"  # no end marker last: decoded by Pillow
    fast, careful = decode_image(complete), decode_image(with_trailer)
    assert fast.shape == careful.shape == (72, 96, 3)
    assert np.abs(fast.astype(int) - careful).max() <= 2


def test_pixel_limit_is_our_own_check() -> None:
    data = encode(photo(300, 200), "PNG")
    assert decode_image(data, max_pixels=60000).shape == (200, 300, 3)
    with pytest.raises(RejectedImage, match="too many pixels: 300x200 = 60000 > limit 59999"):
        decode_image(data, max_pixels=59999)
    with pytest.raises(RejectedImage, match="too many pixels: 5000x5000"):
        decode_image(png_claiming(5000, 5000), max_pixels=1_000_000)


def test_allow_upscale_keeps_small_images(messy_folder: Path, tmp_path: Path) -> None:
    small = tmp_path / "small"
    write(small / "small.jpg", (messy_folder / "small.jpg").read_bytes())
    ingest_folders({"d": str(small)}, tmp_path / "ds", size=TARGET, options=serial_options(allow_upscale=True))
    assert load(tmp_path / "ds/d/train/small.png").shape == (48, 64, 3)


def test_cover_resize_keeps_aspect_ratio() -> None:
    # A wide image with a vertical stripe pattern: a centre crop keeps stripe widths, a squash would not.
    stripes = np.zeros((100, 300, 3), np.uint8)
    stripes[:, ::20] = 255
    out, _ = cover_resize(stripes, width=50, height=50)
    assert out.shape == (50, 50, 3)
    expected, _ = cover_resize(stripes[:, 100:200], width=50, height=50)
    assert np.array_equal(out, expected)


def test_process_image_is_pure_and_picklable() -> None:
    task = ImageTask(encode(photo(96, 72), "JPEG"), partial(cover_resize, width=32, height=24), "png")
    clone = pickle.loads(pickle.dumps(task))
    first, second = process_image(task), process_image(clone)
    assert first.encoded == second.encoded and first.reason is None
    broken = process_image(ImageTask(b"\xff\xd8garbage", partial(cover_resize, width=32, height=24)))
    assert broken.encoded is None and "not an image" in broken.reason


@pytest.mark.parametrize("workers", [1, 2])
def test_libjpeg_warnings_are_reported_with_the_file(tmp_path: Path, capfd: pytest.CaptureFixture[str], workers: int) -> None:
    """Garbage before the end marker: libjpeg decodes the image and prints 'Corrupt JPEG data' to fd 2."""
    clean = encode(photo(64, 48), "JPEG", quality=90)
    damaged = clean[:-2] + b"\x00\x01\x02\x03" + clean[-2:]
    folder = tmp_path / "in"
    write(folder / "damaged.jpg", damaged)
    write(folder / "clean.jpg", clean)
    out = tmp_path / "out"
    ingest_folders({"day": str(folder)}, out, options=serial_options(workers=workers))
    warnings = report(out)["warnings"]
    assert [item["source"] for item in warnings] == [str(folder / "damaged.jpg")]
    assert "Corrupt JPEG data" in warnings[0]["warning"]
    assert len(manifest_by_source(out)) == 2, "the damaged image is still converted"
    assert "Corrupt JPEG data" not in capfd.readouterr().out
