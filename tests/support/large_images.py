"""Large photos made from the shared images: each scaled up (bicubic) to a given number of megapixels and
encoded as a JPEG at quality 90 (4:2:0, as phones write them), in a folder the test owns (never in git)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2

SHARED_NAMES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")


def scaled_up(source: Path, megapixels: float):
    """The image (BGR, as OpenCV reads it) scaled up so that it has about ``megapixels`` million pixels."""
    image = cv2.imread(str(source), cv2.IMREAD_COLOR)
    height, width = image.shape[:2]
    factor = math.sqrt(megapixels * 1e6 / (width * height))
    size = (round(width * factor), round(height * factor))
    return cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)


def large_jpeg(source: Path, megapixels: float, folder: Path, quality: int = 90) -> Path:
    """``folder/<stem>-<N>mp.jpg``: ``source`` scaled up to ``megapixels`` and encoded at ``quality``."""
    path = Path(folder) / f"{Path(source).stem}-{megapixels:g}mp.jpg"
    if not path.exists():
        assert cv2.imwrite(str(path), scaled_up(source, megapixels), [cv2.IMWRITE_JPEG_QUALITY, quality]), path
    return path


def large_png(source: Path, megapixels: float, folder: Path) -> Path:
    """The same picture as ``large_jpeg`` as a PNG (decoded by Pillow, reduced by a box filter)."""
    path = Path(folder) / f"{Path(source).stem}-{megapixels:g}mp.png"
    if not path.exists():
        assert cv2.imwrite(str(path), scaled_up(source, megapixels), [cv2.IMWRITE_PNG_COMPRESSION, 1]), path
    return path
