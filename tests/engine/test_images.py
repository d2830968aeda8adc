"""Image decoding: every refusal names the file and the reason; conversions give RGB uint8."""

from __future__ import annotations

import io
import os
import resource
import socket
import struct
import threading
import zlib

import numpy as np
import pytest
import simplejpeg
from PIL import Image, ImageOps

from app.engine.images import DECODE_GATE, GATED_DECODE_PIXELS, ImageError, PixelGate, load_image, load_working


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


@pytest.mark.parametrize(
    "mode,value",
    [("L", 128), ("LA", (128, 255)), ("RGBA", (10, 20, 30, 255)), ("CMYK", (0, 255, 255, 0)), ("P", 3), ("1", 1)],
)
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


# --- Input hardening: files checked before they are read, JPEG decoded strictly -------------


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


def in_thread(fn, timeout: float = 20.0):
    """Run ``fn`` in a daemon thread: a call that hangs fails the test instead of hanging it."""
    outcome = {}

    def call():
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome["error"] = exc

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), "the call hung"
    return outcome


def test_fifo_refused_without_blocking(tmp_path):
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)  # no writer: a blocking open or read would wait forever
    outcome = in_thread(lambda: load_image(fifo))
    err = outcome.get("error")
    assert isinstance(err, ImageError), outcome
    assert str(err) == f"{fifo}: is a FIFO (named pipe), not an image file: refused without reading it"


def test_character_device_refused_without_reading():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageError, match=r"^/dev/zero: is a character device, not an image file"):
        load_image("/dev/zero")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB


def test_symlink_to_device_refused(tmp_path):
    link = tmp_path / "photo.png"
    link.symlink_to("/dev/zero")
    with pytest.raises(ImageError, match=r"photo\.png: is a character device"):
        load_image(link)


def test_directory_and_socket_refused(tmp_path):
    with pytest.raises(ImageError, match=r"folder: is a directory, not an image"):
        load_image(tmp_path, name="folder")
    path = tmp_path / "s.png"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        with pytest.raises(ImageError, match=r"s\.png: is a socket, not an image file"):
            load_image(path)


def test_sparse_3gb_file_refused_from_its_size(tmp_path):
    sparse = tmp_path / "huge.png"
    with open(sparse, "wb") as fh:
        fh.truncate(3 * 2**30)  # 3 GiB that occupy no disk: reading it would cost 3 GiB of memory
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(
        ImageError,
        match=r"huge\.png: file is 3,221,225,472 bytes, more than the limit of "
        r"136,777,216 \(OBJDET_MAX_FILE_BYTES\)",
    ):
        load_image(sparse)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB: nothing was read


def test_file_byte_limit_is_configurable(tmp_path):
    data = encode(noise(32, 32), "PNG")
    path = tmp_path / "n.png"
    path.write_bytes(data)
    with pytest.raises(
        ImageError,
        match=rf"n\.png: file is {len(data):,} bytes, more than the limit of "
        rf"{len(data) - 1:,}",
    ):
        load_image(path, max_bytes=len(data) - 1)
    with pytest.raises(ImageError, match=rf"up\.png: file is {len(data):,} bytes"):
        load_image(data, "up.png", max_bytes=len(data) - 1)
    assert load_image(path, max_bytes=len(data)).shape == (32, 32, 3)
    assert load_image(data, "up.png", max_bytes=len(data)).shape == (32, 32, 3)


def jpeg_claiming_more_rows(data: bytes, factor: int) -> bytes:
    """The same JPEG with the frame header's height multiplied: the scan data covers only the first rows."""
    sof = data.index(b"\xff\xc0")
    height = struct.unpack(">H", data[sof + 5 : sof + 7])[0]
    return data[: sof + 5] + struct.pack(">H", height * factor) + data[sof + 7 :]


@pytest.mark.parametrize("kind", ["cut", "cut+EOI", "header claims 4x the rows"])
def test_truncated_jpeg_refused_not_grey_filled(images_dir, tmp_path, kind):
    data = (images_dir / "rocket.jpg").read_bytes()
    broken = {
        "cut": data[: len(data) // 2],
        "cut+EOI": data[: len(data) // 2] + b"\xff\xd9",
        "header claims 4x the rows": jpeg_claiming_more_rows(data, 4),
    }[kind]
    # Pillow alone decodes two of these without complaint (grey fill): the check must not rely on it.
    path = tmp_path / "rocket-broken.jpg"
    path.write_bytes(broken)
    with pytest.raises(
        ImageError, match=r"rocket-broken\.jpg: image data is truncated or corrupt \((Corrupt|Premature)"
    ):
        load_image(path)
    good = load_image(images_dir / "rocket.jpg")  # the intact file still decodes
    assert good.shape == (427, 640, 3)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF", "BMP"])
@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_other_truncated_formats_refused(fmt, keep):
    data = encode(noise(64, 64), fmt)
    with pytest.raises(
        ImageError, match=rf"^cut\.{fmt.lower()}: (image data is truncated or corrupt|cannot read image header)"
    ):
        load_image(data[: int(len(data) * keep)], f"cut.{fmt.lower()}")


def test_real_jpeg_decodes_exactly_as_pillow(images_dir):
    path = images_dir / "rocket.jpg"
    assert np.array_equal(load_image(path), np.asarray(Image.open(path).convert("RGB")))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(noise(30, 20), "JPEG", exif=exif, quality=95)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert np.array_equal(load_image(data, "o.jpg"), expected)


@pytest.mark.parametrize("value", [0, 9, 65535])
def test_absurd_exif_orientation_ignored_with_a_warning(value):
    exif = Image.Exif()
    exif[0x0112] = value
    warnings: list[str] = []
    arr = load_image(encode(noise(30, 20), "JPEG", exif=exif), "odd.jpg", warnings=warnings)
    assert arr.shape == (20, 30, 3)
    assert warnings == [f"EXIF orientation {value} is not a valid value (1-8): ignored"]


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_grayscale_and_cmyk_jpeg_match_pillow(mode):
    im = noise(24, 16).convert(mode)
    data = encode(im, "JPEG", quality=90)
    assert simplejpeg.decode_jpeg_header(data)[2] in ("Gray", "CMYK")
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.array_equal(load_image(data, f"m-{mode}.jpg"), expected)


def multi_frame(fmt: str, frames: int = 3) -> bytes:
    images = [Image.new("RGB", (12, 10), (60 * k, 200 - 60 * k, 0)) for k in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, fmt, save_all=True, append_images=images[1:], **({"lossless": True} if fmt == "WEBP" else {}))
    return buf.getvalue()


@pytest.mark.parametrize(
    "fmt,warning",
    [
        ("TIFF", "multi-page TIFF with 3 pages: only page 1 is used"),
        ("WEBP", "animated WEBP with 3 frames: only frame 1 is used"),
        ("PNG", "animated PNG with 3 frames: only frame 1 is used"),
    ],
)
def test_multi_frame_uses_the_first_and_says_so(fmt, warning):
    warnings: list[str] = []
    arr = load_image(multi_frame(fmt), f"pages.{fmt.lower()}", warnings=warnings)
    assert warnings == [warning]
    assert tuple(arr[5, 5]) == (0, 200, 0)  # the first frame's colour
    single: list[str] = []
    load_image(encode(Image.new("RGB", (4, 4)), fmt), "one", warnings=single)
    assert single == []


def png_with_chunk(kind: bytes, payload: bytes) -> bytes:
    def chunk(k, data):
        return struct.pack(">I", len(data)) + k + data + struct.pack(">I", zlib.crc32(k + data))

    png = encode(Image.new("RGB", (4, 4), (1, 2, 3)), "PNG")
    return png[:33] + chunk(kind, payload) + png[33:]  # right after IHDR


@pytest.mark.parametrize("kind", [b"iCCP", b"zTXt"])
def test_png_with_a_huge_compressed_chunk_refused(kind):
    bomb = zlib.compress(b"\0" * (200 * 2**20))  # 200 MiB that compress to 200 KB
    payload = b"name\0\0" + bomb if kind == b"iCCP" else b"k\0\0" + bomb
    with pytest.raises(ImageError, match=r"chunk\.png: cannot read image header \(Decompressed data too large"):
        load_image(png_with_chunk(kind, payload), "chunk.png")


def test_png_with_a_large_plain_text_chunk_still_decodes():
    arr = load_image(png_with_chunk(b"tEXt", b"k\0" + b"a" * (8 * 2**20)), "text.png")
    assert arr.shape == (4, 4, 3) and tuple(arr[0, 0]) == (1, 2, 3)


@pytest.mark.parametrize("size", [(1, 1), (65535, 1), (1, 65535)])
def test_extreme_shapes_decode(size):
    arr = load_image(encode(Image.new("RGB", size, (9, 8, 7)), "PNG"), "thin.png")
    assert arr.shape == (size[1], size[0], 3) and tuple(arr[-1, -1]) == (9, 8, 7)


def bmp_claiming(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("RGB", (4, 4)), "BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def test_bmp_header_lies():
    with pytest.raises(
        ImageError, match=r"b\.bmp: image is 100000x100000 = 10,000,000,000 pixels, more than the limit"
    ):
        load_image(bmp_claiming(100_000, 100_000), "b.bmp")
    with pytest.raises(ImageError, match=r"b\.bmp: image data is truncated or corrupt"):
        load_image(bmp_claiming(3000, 3000), "b.bmp")


def test_decode_gate_bounds_concurrent_large_decodes():
    """A large decode waits while the budget (max_pixels) is held, and runs once it is released."""
    side = 2048
    assert side * side > GATED_DECODE_PIXELS
    data = encode(Image.new("RGB", (side, side), (5, 6, 7)), "PNG")
    max_pixels = 5_000_000
    done = threading.Event()
    results = []

    def decode():
        results.append(load_image(data, "big.png", max_pixels=max_pixels))
        done.set()

    with DECODE_GATE.hold(max_pixels, max_pixels):  # as if another session were decoding
        worker = threading.Thread(target=decode, daemon=True)
        worker.start()
        assert not done.wait(2.0), "a large decode ran although the budget was held"
    assert done.wait(60.0)
    assert results[0].shape == (side, side, 3) and DECODE_GATE.in_use == 0
    small = load_image(encode(Image.new("RGB", (8, 8)), "PNG"), "small.png")  # small decodes never wait
    assert small.shape == (8, 8, 3)


def test_pixel_gate_peak_within_budget_and_one_always_proceeds():
    import time

    gate = PixelGate()
    budget = 10
    worked = []

    def worker(pixels):
        with gate.hold(pixels, budget):
            worked.append(pixels)
            time.sleep(0.01)  # hold a while, so that an ungated second holder would overlap

    with gate.hold(11, budget):  # larger than the budget alone: proceeds when nothing else holds it
        assert gate.in_use == 11
    threads = [threading.Thread(target=worker, args=(6,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(worked) == [6] * 8 and gate.in_use == 0
    assert gate.peak == 11  # two 6-pixel holders at once (12 > budget) never happened


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P"])
def test_large_image_copied_in_strips_matches_pillow(mode):
    """Above GATED_DECODE_PIXELS the array is filled strip by strip: the pixels must be Pillow's own."""
    side = 2100
    assert side * side > GATED_DECODE_PIXELS
    base = noise(side // 10, side // 10).resize((side, side), Image.NEAREST)
    im = base.convert(mode) if mode != "RGBA" else base.convert("RGBA")
    data = encode(im, "PNG")
    expected = (
        np.asarray(
            Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im.convert("RGBA")).convert("RGB")
        )
        if mode == "RGBA"
        else np.asarray(im.convert("RGB"))
    )
    arr = load_image(data, "big.png")
    assert arr.flags.writeable and arr.flags.c_contiguous
    assert np.array_equal(arr, expected)


def test_load_working_never_builds_the_full_array_and_matches_its_rule():
    """A large PNG: the working copy equals Pillow's box reduce (integer factor keeping the longer side
    >= 2 x max_side) then area interpolation, computed here with Pillow and OpenCV directly; the factor
    maps back to the original; numpy never holds a full-resolution array (tracemalloc sees numpy)."""
    import tracemalloc

    import cv2

    width, height, side = 5000, 3000, 1024
    rows, cols = np.mgrid[0:height, 0:width]
    pixels = np.stack([(rows // 7) % 256, (cols // 11) % 256, ((rows + cols) // 50 % 2) * 200], -1).astype(np.uint8)
    data = encode(Image.fromarray(pixels), "PNG")
    del rows, cols

    def traced_peak(call):
        tracemalloc.start()
        try:
            return call(), tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    (working, factor, size), peak = traced_peak(lambda: load_working(data, "big.png", max_side=side))
    full, full_peak = traced_peak(lambda: load_image(data, "big.png"))
    assert np.array_equal(full, pixels) and full_peak >= pixels.nbytes
    del full
    assert size == (width, height) and factor == width / side
    reduced = np.asarray(Image.fromarray(pixels).reduce(width // (2 * side)))
    expected = cv2.resize(reduced, (side, round(height * side / width)), interpolation=cv2.INTER_AREA)
    assert working.shape == expected.shape and np.array_equal(working, expected)
    assert peak < full_peak / 2, f"load_working peaked at {peak:,} bytes, load_image at {full_peak:,}"


def test_load_working_of_a_small_image_is_load_image():
    im = Image.new("RGB", (300, 200), (10, 200, 30))
    data = encode(im, "PNG")
    working, factor, size = load_working(data, "small.png", max_side=1024)
    assert factor == 1.0 and size == (300, 200) and np.array_equal(working, load_image(data, "small.png"))
    with pytest.raises(ImageError, match=r"broken\.png"):
        load_working(b"\x89PNG\r\n\x1a\n garbage", "broken.png", max_side=1024)
