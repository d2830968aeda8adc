"""Image decoding: every refusal names the file and what is wrong.

Files are checked before they are read (regular file, size limit) and read with a bound. The pixel
limit is checked from the header, before any pixel is decoded, so a decompression bomb never
reaches memory. JPEG is decoded by libjpeg-turbo through ``simplejpeg`` in strict mode, because
libjpeg's "premature end of data" is only a warning that Pillow swallows (a truncated JPEG would
decode to a grey-filled picture); the other formats are decoded by Pillow, which raises on
truncated data while ``ImageFile.LOAD_TRUNCATED_IMAGES`` stays False.
"""

from __future__ import annotations

import io
import math
import os
import stat
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .config import DEFAULT_MAX_IMAGE_PIXELS, default_max_file_bytes

FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "MPO")
SUPPORTED = "supported: JPEG, PNG, WebP, BMP, TIFF"
# Pillow's own bomb guard is disabled: ours (from the header, before decoding) replaces it.
Image.MAX_IMAGE_PIXELS = None
# A truncated file must raise, never decode to a partly grey picture.
ImageFile.LOAD_TRUNCATED_IMAGES = False

WORK_SIDE = 2048
"""The largest working copy (``work_side``): networks with a 1024 px input or more (the largest
``OBJDET_YOLO_INPUT_SIZE`` is 2048) get a copy this large."""

MIN_WORK_SIDE = 1024
"""The smallest working copy: enough for any default network (SSDlite 320, SSD300, Yolo-Fastest 320)."""


def work_side(input_sizes) -> int:
    """Longest side of the working copy for networks that see ``input_sizes`` pixels: twice the largest,
    between ``MIN_WORK_SIDE`` and ``WORK_SIDE``. Area-shrinking a large image to twice the network's size
    and letting the network resize the rest changes no detection beyond rounding, and bounds the memory
    of inference (SSD's float tensors are 12 bytes a pixel: 144 MiB at 2048x2048, 36 MiB at 1024x1024)
    by the network, not the upload. Images within the side go to the networks as they are."""
    return min(WORK_SIDE, max(MIN_WORK_SIDE, 2 * max(input_sizes, default=0)))


GATED_DECODE_PIXELS = 4_000_000
"""Decodes of more pixels than this pass ``DECODE_GATE``: smaller ones (every ordinary photo of a
few megapixels) never wait."""

_EXIF_ORIENTATION = 0x0112
_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class ImageError(ValueError):
    """An input that cannot be used as an image; str() names the file and the reason."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


class PixelGate:
    """A process-wide budget of pixels being decoded at once.

    The app decodes in several sessions' threads; without a bound, N sessions uploading the largest
    allowed image decode N of them at once. A decode waits while others hold the budget, except
    that one decode always proceeds (no image within the pixel limit can wait forever).
    """

    def __init__(self):
        self._cond = threading.Condition()
        self.in_use = 0
        self.peak = 0  # the most pixels ever held at once (tests read it)

    @contextmanager
    def hold(self, pixels: int, budget: int):
        with self._cond:
            while self.in_use and self.in_use + pixels > budget:
                self._cond.wait()
            self.in_use += pixels
            self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= pixels
                self._cond.notify_all()


DECODE_GATE = PixelGate()


def load_image(
    source: str | Path | bytes,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    max_bytes: int | None = None,
    warnings: list[str] | None = None,
) -> np.ndarray:
    """Decode a file path or bytes into an RGB ``uint8`` array of shape (H, W, 3).

    EXIF orientation is applied; grayscale, palette, RGBA/LA (composited on white), CMYK and
    16-bit images are converted. ``max_bytes`` (default: sized from ``max_pixels``) refuses larger
    files before they are read. Messages about a usable image (e.g. "multi-page TIFF: page 1 used")
    are appended to ``warnings`` when a list is given.
    """
    return _load(source, name, max_pixels, max_bytes, warnings)[0]


def load_working(
    source: str | Path | bytes,
    name: str | None = None,
    *,
    max_side: int,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    max_bytes: int | None = None,
    warnings: list[str] | None = None,
) -> tuple[np.ndarray, float, tuple[int, int]]:
    """The working copy of an image file or upload, never building the full-resolution array: (working copy,
    factor back to the original's pixels, original (width, height)). Every entry point (the page, ``detect``,
    ``batch``, ``eval``) decodes through here, so the same file gives the same detections everywhere.

    A JPEG whose longer side is at least three times ``max_side`` is decoded by libjpeg-turbo at 1/2, 1/4
    or 1/8 scale (``jpeg_reduction``: its scaled inverse DCT, no full-size pixels at all), the largest
    reduction that keeps the longer side at least ``JPEG_MARGIN`` (1.5) times ``max_side``. A large
    Pillow-decoded image is box-reduced inside Pillow by an integer factor (its longer side stays at least
    twice ``max_side``). Either is then area-shrunk to exactly the size ``working_copy`` gives for the
    original: a 40 MP PNG costs Pillow's own buffer only, not another 120 MB array, and a 12 MP JPEG is
    decoded as 3 MP (24 MP as 6 MP, 40 MP as 2.5 MP). The detections equal those of a full decode + area
    resize within rounding (tests/engine/test_large_jpeg.py; docs/speed.md).
    """
    array, (width, height) = _load(source, name, max_pixels, max_bytes, warnings, work_side=max_side)
    longest = max(width, height)
    if longest <= max_side:
        return array, 1.0, (width, height)
    scale = max_side / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    import cv2

    small = cv2.resize(array, size, interpolation=cv2.INTER_AREA)
    return small, longest / max_side, (width, height)


_REDUCIBLE_MODES = ("RGB", "RGBA", "L", "LA", "CMYK")
JPEG_REDUCTIONS = (8, 4, 2)
"""libjpeg-turbo's scaled decodes that ``load_working`` uses: 1/8, 1/4, 1/2 (its SIMD-accelerated reduced
inverse DCTs; the other M/8 scales are plain C and slower)."""

JPEG_MARGIN = 1.5
"""A reduced JPEG decode keeps its longer side at least this many working sides, so that the area resize
after it still shrinks by 1.5x or more. Measured with Yolo-Fastest on the shared images scaled up to 8-32 MP
(docs/speed.md): decoding down to just above the working side (1061 px for a 1024 side) and then shrinking
by 1.04x moved the weakest detection's score by 0.037 against a full decode + area resize; from 1.5x on, by
0.019 at most."""


def jpeg_reduction(width: int, height: int, min_side: int) -> int:
    """The factor (8, 4, 2, or 1: full size) a ``width`` x ``height`` JPEG is decoded smaller by so that its
    longer side stays at least ``min_side``; libjpeg rounds a scaled side up (``ceil(side / factor)``)."""
    longest = max(width, height)
    return next((f for f in JPEG_REDUCTIONS if -(-longest // f) >= min_side), 1)


def _load(
    source: str | Path | bytes,
    name: str | None,
    max_pixels: int,
    max_bytes: int | None,
    warnings: list[str] | None,
    work_side: int | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """The decode behind ``load_image`` and ``load_working``: (array, original (width, height)). With
    ``work_side``, a large image is decoded smaller (see ``load_working``): a JPEG at the scale
    ``jpeg_reduction`` gives for ``work_side``, a Pillow image box-reduced by an integer factor (its longer
    side never below twice ``work_side``)."""
    name, data = _read_source(source, name, default_max_file_bytes(max_pixels) if max_bytes is None else max_bytes)
    im, is_jpeg, (width, height) = _open_checked(data, name, max_pixels)
    if warnings is not None and not is_jpeg:
        warnings.extend(_frame_warnings(im))
    reduction = jpeg_reduction(width, height, math.ceil(JPEG_MARGIN * work_side)) if is_jpeg and work_side else 1
    pixels = -(-width // reduction) * -(-height // reduction)  # what the decode holds
    # Budget = the pixel limit: one largest-allowed image at a time (a 40 MP PNG costs ~305 MiB to decode);
    # two at once put 8 concurrent sessions over the Deployment's 2Gi (bench/app_bench.py).
    gate = DECODE_GATE.hold(pixels, max_pixels) if pixels > GATED_DECODE_PIXELS else nullcontext()
    with gate:
        if is_jpeg:
            array, turned = _decode_jpeg(data, im, name, warnings, reduction)
            return array, (height, width) if turned else (width, height)
        return _decode_pillow(im, name, 2 * work_side if work_side else None)


def _read_source(source: str | Path | bytes, name: str | None, max_bytes: int) -> tuple[str, bytes]:
    """(the name messages use, the encoded bytes): an upload's bytes, or a file read within ``max_bytes``."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        name = name or "upload"
        if len(source) > max_bytes:
            raise ImageError(name, _too_large(len(source), max_bytes))
        data = bytes(source)
    else:
        name = name or str(source)
        data = _read_bounded(Path(source), name, max_bytes)
    if not data:
        raise ImageError(name, "file is empty (0 bytes)")
    return name, data


def _open_checked(data: bytes, name: str, max_pixels: int) -> tuple[Image.Image, bool, tuple[int, int]]:
    """The image opened lazily (header only), whether it is a JPEG, and its stored (width, height), whose
    pixel count is checked against ``max_pixels`` before anything is decoded."""
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(name, f"not an image ({SUPPORTED})") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken headers
        raise ImageError(name, f"cannot read image header ({exc})") from None
    if im.format not in FORMATS:
        raise ImageError(name, f"unsupported image format {im.format}; {SUPPORTED}")
    is_jpeg = im.format in ("JPEG", "MPO")
    width, height = im.size
    if is_jpeg:  # libjpeg's header is the one that sizes the decode
        try:
            height, width = simplejpeg.decode_jpeg_header(data)[:2]
        except ValueError as exc:
            raise ImageError(name, f"image data is truncated or corrupt ({exc})") from None
    if width < 1 or height < 1:
        raise ImageError(name, f"image has no pixels ({width}x{height})")
    pixels = width * height
    if pixels > max_pixels:
        raise ImageError(
            name,
            f"image is {width}x{height} = {pixels:,} pixels, more than the limit of "
            f"{max_pixels:,} (OBJDET_MAX_IMAGE_PIXELS)",
        )
    return im, is_jpeg, (width, height)


def _decode_pillow(im: Image.Image, name: str, reduce_to: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    """A non-JPEG decoded by Pillow, EXIF-rotated, box-reduced toward ``reduce_to`` when given."""
    try:
        im.load()
        im = ImageOps.exif_transpose(im)
        size = im.size
        factor = max(size) // reduce_to if reduce_to else 0
        if factor >= 2 and im.mode in _REDUCIBLE_MODES:
            im = im.reduce(factor)  # a box filter inside Pillow: no full-size array is made
        return _to_rgb(im), size
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data in any codec
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason.lower() or isinstance(exc, (OSError, SyntaxError, EOFError)):
            raise ImageError(name, f"image data is truncated or corrupt ({reason})") from None
        raise ImageError(name, f"cannot decode image ({reason})") from None


def _too_large(size: int, max_bytes: int) -> str:
    return f"file is {size:,} bytes, more than the limit of {max_bytes:,} (OBJDET_MAX_FILE_BYTES)"


def _refuse_special(mode: int, name: str) -> None:
    if stat.S_ISDIR(mode):
        raise ImageError(name, "is a directory, not an image")
    if not stat.S_ISREG(mode):
        kind = next((what for test, what in _SPECIAL_FILES if test(mode)), "not a regular file")
        raise ImageError(name, f"is {kind}, not an image file: refused without reading it")


def _read_bounded(path: Path, name: str, max_bytes: int) -> bytes:
    """The file's bytes, refused up front when it is not a regular file or is larger than
    ``max_bytes``; never more than ``max_bytes + 1`` bytes are read (a file may grow meanwhile)."""
    try:
        st = os.stat(path)
        _refuse_special(st.st_mode, name)
        if st.st_size > max_bytes:
            raise ImageError(name, _too_large(st.st_size, max_bytes))
        # O_NONBLOCK: should the path be swapped for a FIFO after the stat, open must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ImageError(name, "file not found") from None
    except OSError as exc:
        raise ImageError(name, f"cannot read file ({exc.strerror or exc})") from None
    with open(fd, "rb", buffering=0) as fh:
        try:
            _refuse_special(os.fstat(fd).st_mode, name)
            want = min(st.st_size, max_bytes) + 1
            data = fh.read(want)
            if len(data) == want and want <= max_bytes:  # the file grew since the stat
                data += fh.read(max_bytes + 1 - len(data))
        except OSError as exc:
            raise ImageError(name, f"cannot read file ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise ImageError(name, _too_large(len(data), max_bytes))
    return data


def _frame_warnings(im: Image.Image) -> list[str]:
    try:
        frames = int(getattr(im, "n_frames", 1))
    except Exception:  # noqa: BLE001 - a broken page chain: page 1 is still decoded (or refused)
        return []
    if frames <= 1:
        return []
    if im.format == "TIFF":
        return [f"multi-page TIFF with {frames} pages: only page 1 is used"]
    return [f"animated {im.format} with {frames} frames: only frame 1 is used"]


def _decode_jpeg(
    data: bytes, header: Image.Image, name: str, warnings: list[str] | None, reduction: int = 1
) -> tuple[np.ndarray, bool]:
    """libjpeg-turbo in strict mode (any decoder warning, e.g. premature end of data, is an error), at
    1/``reduction`` scale; CMYK/YCCK is converted the way Pillow converts it; EXIF orientation from Pillow's
    header. Returns the array and whether the orientation swapped width and height."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        cmyk = colorspace in ("CMYK", "YCCK")
        # simplejpeg picks the smallest libjpeg scale whose sides reach these minimums: exactly 1/reduction.
        smaller = {"min_width": -(-width // reduction), "min_height": -(-height // reduction)} if reduction > 1 else {}
        arr = simplejpeg.decode_jpeg(data, colorspace="CMYK" if cmyk else "RGB", strict=True, **smaller)
    except ValueError as exc:
        raise ImageError(name, f"image data is truncated or corrupt ({exc})") from None
    if cmyk:  # Pillow assumes Adobe's inverted CMYK, as Photoshop writes it
        im = Image.frombuffer("CMYK", (arr.shape[1], arr.shape[0]), arr.tobytes(), "raw", "CMYK;I", 0, 1)
        arr = np.array(im.convert("RGB"), dtype=np.uint8)
    try:
        orientation = header.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - unreadable EXIF: the pixels are still good
        orientation = 1
        if warnings is not None:
            warnings.append("EXIF data is unreadable: orientation not applied")
    turned = _oriented(arr, orientation, warnings)
    return turned, turned.shape[:2] != arr.shape[:2]


def _oriented(arr: np.ndarray, orientation, warnings: list[str] | None) -> np.ndarray:
    """The array turned as EXIF orientation 1-8 says (the same transposes as ``ImageOps.exif_transpose``)."""
    if orientation == 1:
        return arr
    turned = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
        8: lambda a: np.rot90(a, 1),
    }.get(orientation)
    if turned is None:
        if warnings is not None:
            warnings.append(f"EXIF orientation {orientation!r} is not a valid value (1-8): ignored")
        return arr
    return np.ascontiguousarray(turned(arr))


def _to_rgb(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.stack([gray] * 3, axis=-1))
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    if im.mode != "RGB":
        im = im.convert("RGB")
    width, height = im.size
    if width * height <= GATED_DECODE_PIXELS:
        return np.array(im, dtype=np.uint8)  # a writable copy, owned by the caller
    # Large: copy in strips of ~4 MB. ``np.array(im)`` goes through ``im.tobytes()``, whose chunks and
    # their join coexist with Pillow's 4-byte pixels: a 6000x6000 PNG peaked at 344 MB for a 103 MB
    # array that way, 275 MB this way (and no slower).
    out = np.empty((height, width, 3), np.uint8)
    band = max(1, (4 << 20) // (width * 4))
    for top in range(0, height, band):
        out[top : top + band] = np.asarray(im.crop((0, top, width, min(height, top + band))))
    return out


def working_copy(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The image shrunk (area interpolation) so that its longer side is at most ``max_side``, and the
    factor that maps its pixel coordinates back to the original's (1.0: the image itself, not copied).

    Both networks see at most 416x416 pixels, so a working copy of a few megapixels gives the same
    detections as the original at a fraction of the memory (a 6000x6000 image is 108 MB as uint8 and
    432 MB as SSD's float tensor).
    """
    import cv2

    height, width = image.shape[:2]
    longest = max(height, width)
    if longest <= max_side:
        return image, 1.0
    scale = max_side / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return small, longest / max_side
