"""The upload pipeline every session shares: an upload is decoded once per process into a working copy (what
the networks see) and a display copy (what the page shows), and each network runs once per (model, image);
both live in the process-wide byte-budget cache (``cache.CACHE``) keyed by content digest. The page and its
Evaluate tab both go through here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np
from streamlit.runtime.scriptrunner import get_script_run_ctx

from ..engine import images as image_io  # load_image looked up per call (tests count decodes)
from ..engine.config import Settings
from ..engine.detectors.base import RawOutput
from ..engine.images import ImageError
from ..engine.registry import get_detector, inference_slots
from ..ops import prometheus
from .cache import CACHE, malloc_trim

IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"]
DISPLAY_SIDE = 1280  # longer side of the copy the page shows and annotates (what Streamlit keeps per session)


@dataclass(frozen=True)
class PreparedImage:
    """An upload decoded once: the working copy for the networks, the display copy for the page, and
    what maps both back to the original (``x_original = x_copy * factor``). ``working`` becomes None
    once every loaded model's output for the image is cached (nothing needs it any more)."""

    working: np.ndarray | None
    working_factor: float
    display: np.ndarray
    display_factor: float
    original_size: tuple[int, int]  # width, height
    warnings: tuple[str, ...] = ()

    @property
    def display_size(self) -> tuple[int, int]:
        return self.display.shape[1], self.display.shape[0]


def session_id() -> str | None:
    """This script run's Streamlit session (the owner recorded on cache entries), None outside one."""
    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else None


def loaded_work_side(settings: Settings, loaded: list[str]) -> int:
    """The working copy's side for every loaded model (so a model chosen later needs no new decode)."""
    return image_io.work_side(get_detector(m, settings).input_size for m in loaded)


def decode_upload(name: str, data: bytes, settings: Settings, side: int) -> PreparedImage:
    """Decode the upload into a working copy (``load_working``: through the gate that bounds concurrent
    large decodes, never building the full-resolution array) and a display copy. A refusal is returned,
    not raised, so it is cached like an image."""
    notes: list[str] = []
    try:
        working, working_factor, (width, height) = image_io.load_working(
            data,
            name,
            max_side=side,
            max_pixels=settings.max_image_pixels,
            max_bytes=settings.max_file_bytes,
            warnings=notes,
        )
    except ImageError as exc:
        return exc
    if working_factor != 1.0:  # hand the decoder's freed blocks back now: each session's thread has its own arena
        malloc_trim()
    display, display_factor = image_io.working_copy(working, DISPLAY_SIDE)
    return PreparedImage(
        working, working_factor, display, working_factor * display_factor, (width, height), tuple(notes)
    )


def image_key(digest: str, settings: Settings) -> tuple:
    return ("image", digest, settings.max_image_pixels, settings.max_file_bytes, DISPLAY_SIDE)


def raw_key(model: str, digest: str, settings: Settings) -> tuple:
    return ("raw", model, settings, digest)


def decode_once(
    name: str, data: bytes, settings: Settings, models: list[str], loaded: list[str]
) -> tuple[str, PreparedImage]:
    """(digest, prepared image) of an upload, decoded once per process whatever the number of sessions
    that upload it; an ``ImageError`` is remembered too (and re-raised with this session's file name).
    Decodes again only when one of ``models`` has no cached output and the working copy was let go."""
    digest = hashlib.sha256(data).hexdigest()
    key = image_key(digest, settings)
    side = loaded_work_side(settings, loaded)

    def decode() -> PreparedImage | ImageError:
        value = decode_upload(name, data, settings, side)
        if isinstance(value, ImageError):  # counted once per refused content, like the decode itself
            prometheus.record_refused(name, value.reason, models)
        return value

    value = CACHE.get_or_compute(key, decode, owner=session_id())
    if isinstance(value, ImageError):
        raise ImageError(name, value.reason)
    if value.working is None and any(raw_key(m, digest, settings) not in CACHE for m in models):
        value = decode_upload(name, data, settings, side)
        CACHE.put(key, value, owner=session_id())
    return digest, value


def release_working_copy(digest: str, prepared: PreparedImage, settings: Settings, loaded: list[str]) -> None:
    """Keep only the display copy once every loaded model's output is cached: the working copy is the
    largest entry (12.6 MB at 2048x2048) and no slider, class filter or rerun needs it."""
    if prepared.working is not None and all(raw_key(m, digest, settings) in CACHE for m in loaded):
        CACHE.put(image_key(digest, settings), replace(prepared, working=None), owner=session_id())


def forward_once(model: str, digest: str, prepared: PreparedImage, settings: Settings) -> RawOutput:
    """The network output for (model, image) on the working copy, computed once per process."""

    def run() -> RawOutput:
        if prepared.working is None:  # only if the output was evicted between decode_once and here
            raise RuntimeError("the image left the cache meanwhile; rerun the page (R) to decode it again")
        detector = get_detector(model, settings)
        with inference_slots(settings):
            return detector.forward(prepared.working)

    return CACHE.get_or_compute(raw_key(model, digest, settings), run, owner=session_id())
