"""Image decoding: every refusal names the file and the reason; conversions give RGB uint8."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from app.images import ImageError, load_image


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF"])
def test_formats(fmt):
    im = Image.new("RGB", (40, 30), (200, 10, 10))
    arr = load_image(encode(im, fmt), "x")
    assert arr.shape == (30, 40, 3) and arr.dtype == np.uint8
    assert abs(int(arr[15, 20, 0]) - 200) < 8 and arr[15, 20, 1] < 20
    arr[0, 0] = 0  # writable, owned by the caller


def test_exif_orientation_applied():
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 10, 20))  # red strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    arr = load_image(encode(im, "JPEG", exif=exif, quality=95), "rot.jpg")
    assert arr.shape == (40, 20, 3)  # portrait after rotation
    assert arr[2, 10, 0] > 200 and arr[38, 10, 2] > 200  # red now on top


@pytest.mark.parametrize("mode,value", [("L", 128), ("LA", (128, 255)), ("RGBA", (10, 20, 30, 255)),
                                        ("CMYK", (0, 255, 255, 0)), ("P", 3), ("1", 1)])
def test_modes_converted(mode, value):
    im = Image.new(mode, (8, 8), value)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    arr = load_image(encode(im, fmt), f"m.{fmt.lower()}")
    assert arr.shape == (8, 8, 3) and arr.dtype == np.uint8
    if mode == "CMYK":
        assert arr[4, 4, 0] > 200 and arr[4, 4, 1] < 60  # cyan 0, magenta+yellow full: red


def test_transparent_pixels_on_white():
    im = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert (load_image(encode(im, "PNG"), "t.png") == 255).all()


def test_16_bit_grayscale_scaled_not_clipped():
    arr16 = np.full((6, 6), 32768, np.uint16)
    im = Image.fromarray(arr16)
    out = load_image(encode(im, "PNG"), "deep.png")
    assert 120 <= out[0, 0, 0] <= 135


def test_not_an_image(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    with pytest.raises(ImageError, match=r"notes\.txt: not an image"):
        load_image(p)


def test_empty(tmp_path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png: file is empty"):
        load_image(p)


def test_missing(tmp_path):
    with pytest.raises(ImageError, match=r"nope\.jpg: file not found"):
        load_image(tmp_path / "nope.jpg")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated(tmp_path, fmt):
    rng = np.random.default_rng(0)
    data = encode(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), fmt)
    p = tmp_path / f"cut.{fmt.lower()}"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=rf"cut\.{fmt.lower()}: image data is truncated"):
        load_image(p)


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (the pixel data is never needed)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


def test_decompression_bomb_refused_before_decoding():
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageError, match=r"bomb\.png: image is 50000x50000 = 2,500,000,000 pixels.*40,000,000"):
        load_image(bomb_png(50_000, 50_000), "bomb.png")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB: no 7.5 GB decode


def test_pixel_limit_is_configurable():
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(ImageError, match="10,000 pixels, more than the limit of 9,999"):
        load_image(data, "big.png", max_pixels=9_999)
    assert load_image(data, "ok.png", max_pixels=10_000).shape == (100, 100, 3)


def test_unsupported_format():
    data = encode(Image.new("RGB", (4, 4)), "GIF")
    with pytest.raises(ImageError, match=r"anim\.gif: unsupported image format GIF"):
        load_image(data, "anim.gif")
