"""The page's pictures, drawn once and sent small.

Every picture is drawn on one long-lived thread: OpenCV 5 sets up its Hershey font once per thread (15-150 ms
on a thread's first ``getTextSize``/``putText``) and Streamlit runs each rerun on a new thread, so drawing
where the rerun runs paid that on every rerun. Each picture is drawn at the width it is shown (not on the
1280 px display copy) and encoded once as JPEG at quality 85; Streamlit then sends the bytes as they are
(given an array it encodes at quality 100 and reopens the result: ~213 KiB and ~10 ms for a 600x400 picture).
The bytes live in the process-wide byte-budget cache (``cache.CACHE``), keyed by what the picture shows (the
image, the width, the detections drawn), so a rerun that leaves a picture's detections as they were (another
image's or model's change, a slider that drops nothing, an expander opened) draws and encodes nothing, and
Streamlit, which names media by their content, hands the browser the URL it already loaded.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import cv2
import numpy as np

from ..engine.agreement import Agreement
from ..engine.annotate import annotate, annotate_agreement
from ..engine.result import DetectionResult
from .cache import CACHE
from .uploads import session_id

JPEG_QUALITY = 85
THUMB_QUALITY = 80
# A picture whose longer side is shorter than this is enlarged on screen until that side reaches it (at most to
# its column's width): a thumbnail's boxes and labels stay legible; others are shown at their own width, never
# stretched (and blurred) to the column, nor a thin strip blown up to a height of thousands of pixels.
MIN_SHOWN = 320

T = TypeVar("T")

_DRAWING = ThreadPoolExecutor(max_workers=1, thread_name_prefix="objdet-draw")


def on_drawing_thread(draw: Callable[..., T], *args, **kwargs) -> T:
    """``draw(*args, **kwargs)`` run on the page's one drawing thread (its font set up once per process), its
    result or exception returned here. ``draw`` must not call this again (it would wait for itself)."""
    return _DRAWING.submit(draw, *args, **kwargs).result()


def fitted(size: tuple[int, int], width: int) -> tuple[int, int]:
    """The (width, height) of a picture of ``size`` shrunk to at most ``width`` pixels wide (``shown_copy``'s)."""
    current, height = size
    return size if current <= width else (width, max(1, round(height * width / current)))


def shown_copy(image: np.ndarray, width: int) -> tuple[np.ndarray, float]:
    """``image`` shrunk (area interpolation) to at most ``width`` pixels wide, and the factor from its pixels to
    ``image``'s (1.0: the image itself)."""
    current = image.shape[1]
    size = fitted((current, image.shape[0]), width)
    if size[0] == current:
        return image, 1.0
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), current / width


def on_screen_width(size: tuple[int, int], column: int) -> int:
    """How wide a picture of ``size`` (width, height) is shown in a column ``column`` pixels wide: its own width,
    enlarged only until its longer side is ``MIN_SHOWN``, at most the column. Pictures are drawn for it and
    ``st.image`` is given it."""
    width, height = size
    enlarge = max(1.0, MIN_SHOWN / max(width, height, 1))
    return max(1, min(column, round(width * enlarge)))


def jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """The RGB ``image`` as JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _cached(key: tuple, make: Callable[[], bytes]) -> bytes:
    return CACHE.get_or_compute(key, lambda: on_drawing_thread(make), owner=session_id())


def annotated_jpeg(image_key: tuple, display: np.ndarray, result: DetectionResult, width: int) -> bytes:
    """The display copy with ``result``'s boxes (in ``result.image_size`` pixels, the original's), for a column
    ``width`` pixels wide: drawn on a copy at most that wide, its boxes and labels sized for the width it is shown
    at (``on_screen_width``), as JPEG; cached by (image, width, the detections)."""

    def make() -> bytes:
        small, _ = shown_copy(display, width)
        size = (small.shape[1], small.shape[0])
        boxes = result.rescaled(size[0] / result.image_size[0], size)
        return jpeg(annotate(small, boxes, shown_width=on_screen_width(size, width)))

    return _cached(("picture", image_key, width, tuple(result.detections)), make)


def agreement_jpeg(
    image_key: tuple, display: np.ndarray, agreement: Agreement, to_display: float, titles: tuple[str, str], width: int
) -> bytes:
    """The agreement overlay (``annotate_agreement``) at most ``width`` pixels wide, sized for the width it is
    shown at (``on_screen_width``), as JPEG; ``to_display`` maps the agreement's boxes (the original's pixels)
    to ``display``'s. Cached by (image, width, agreement)."""

    def make() -> bytes:
        small, factor = shown_copy(display, width)
        shown = on_screen_width((small.shape[1], small.shape[0]), width)
        return jpeg(annotate_agreement(small, agreement, to_display / factor, titles, shown_width=shown))

    return _cached(("agreement", image_key, width, agreement, titles), make)


def original_jpeg(image_key: tuple, display: np.ndarray) -> bytes:
    """The display copy as JPEG: encoded once per image, whatever the settings."""
    return _cached(("original", image_key), lambda: jpeg(display))


def thumbnail_url(image_key: tuple, display: np.ndarray, result: DetectionResult | None, side: int) -> str:
    """A copy at most ``side`` pixels on its longer side with ``result``'s boxes (None: none), as a JPEG data
    URL for the summary grid; cached by (image, side, the detections)."""

    def make() -> bytes:
        height, width = display.shape[:2]
        small, _ = shown_copy(display, max(1, round(side * width / max(width, height))))
        if result is not None:
            size = (small.shape[1], small.shape[0])
            small = annotate(small, result.rescaled(size[0] / result.image_size[0], size))
        return jpeg(small, THUMB_QUALITY)

    found = tuple(result.detections) if result is not None else None
    data = _cached(("thumbnail", image_key, side, found), make)
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
