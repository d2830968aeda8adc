"""Image decoding with Pillow: every refusal names the file and what is wrong.

The pixel limit is checked from the header, before any pixel is decoded, so a decompression
bomb never reaches memory.
"""

from __future__ import annotations

import io
import warnings as pywarnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import DEFAULT_MAX_IMAGE_PIXELS

FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "MPO")
# Pillow's own bomb guard is disabled: ours (from the header, before decoding) replaces it.
Image.MAX_IMAGE_PIXELS = None


class ImageError(ValueError):
    """An input that cannot be used as an image; str() names the file and the reason."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


def load_image(source: str | Path | bytes, name: str | None = None,
               max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, max_bytes: int | None = None,
               warnings: list[str] | None = None) -> np.ndarray:
    """Decode a file path or bytes into an RGB ``uint8`` array of shape (H, W, 3).

    EXIF orientation is applied; grayscale, palette, RGBA/LA (composited on white), CMYK and
    16-bit images are converted. ``max_bytes`` (default: sized from ``max_pixels``) refuses larger
    files before they are read. Messages about a usable image (e.g. "multi-page TIFF: page 1 used")
    are appended to ``warnings`` when a list is given.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = name or "upload"
    else:
        path = Path(source)
        name = name or str(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImageError(name, "file not found") from None
        except IsADirectoryError:
            raise ImageError(name, "is a directory, not an image") from None
        except OSError as exc:
            raise ImageError(name, f"cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise ImageError(name, "file is empty (0 bytes)")
    try:
        with pywarnings.catch_warnings():
            pywarnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(name, "not an image (supported: JPEG, PNG, WebP, BMP, TIFF)") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken headers
        raise ImageError(name, f"cannot read image header ({exc})") from None
    if im.format not in FORMATS:
        raise ImageError(name, f"unsupported image format {im.format}; supported: JPEG, PNG, WebP, BMP, TIFF")
    width, height = im.size
    if width < 1 or height < 1:
        raise ImageError(name, f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(
            name,
            f"image is {width}x{height} = {width * height:,} pixels, more than the limit of "
            f"{max_pixels:,} (OBJDET_MAX_IMAGE_PIXELS)",
        )
    try:
        im.load()
        im = ImageOps.exif_transpose(im)
        return _to_rgb(im)
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data in any codec
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason.lower() or isinstance(exc, (OSError, SyntaxError, EOFError)):
            raise ImageError(name, f"image data is truncated or corrupt ({reason})") from None
        raise ImageError(name, f"cannot decode image ({reason})") from None


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
    return np.array(im, dtype=np.uint8)  # a writable copy, owned by the caller


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
