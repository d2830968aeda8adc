"""Video: detect on every Nth frame within a time budget, write an annotated MP4 and per-frame rows."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2

from .annotate import annotate
from .config import DEFAULT_MAX_IMAGE_PIXELS, default_max_file_bytes
from .result import DetectionResult, DetectParams, detection_rows


class VideoError(ValueError):
    """A video that cannot be used; str() names the file and what is wrong."""


@dataclass
class VideoReport:
    mp4: bytes
    rows: list[dict] = field(default_factory=list)
    frames_read: int = 0
    frames_detected: int = 0
    stopped_by_budget: bool = False
    fps: float = 0.0
    notes: list[str] = field(default_factory=list)  # a partly processed video says why, e.g. truncated


def process_video(
    data: bytes,
    name: str,
    detect: Callable,
    params: DetectParams,
    every_n: int = 5,
    budget_s: float = 60.0,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    progress: Callable[[float, str], None] | None = None,
    max_bytes: int | None = None,
) -> VideoReport:
    """``detect(rgb_image, params) -> DetectionResult`` runs on frames 0, N, 2N, ...; frames between
    keep the last boxes, so the MP4 plays at the source frame rate.

    The upload is refused before it is written to disk when it is empty or larger than ``max_bytes``
    (default: the image file limit, ``OBJDET_MAX_FILE_BYTES``), and before a frame is decoded when
    the container's frame size is over ``max_pixels``. A file that ends early (or whose header
    claims more frames than it holds) is processed as far as it decodes, with a note.
    """
    max_bytes = default_max_file_bytes(max_pixels) if max_bytes is None else max_bytes
    if not data:
        raise VideoError(f"{name}: file is empty (0 bytes)")
    if len(data) > max_bytes:
        raise VideoError(
            f"{name}: file is {len(data):,} bytes, more than the limit of {max_bytes:,} (OBJDET_MAX_FILE_BYTES)"
        )
    suffix = os.path.splitext(name)[1] or ".mp4"
    with tempfile.TemporaryDirectory(prefix="objdet-video-") as tmp:
        src = os.path.join(tmp, "in" + suffix)
        with open(src, "wb") as fh:
            fh.write(data)
        cap = cv2.VideoCapture(src)
        try:
            if cap.isOpened():  # the container's frame size, before the decoder allocates a frame
                _check_size(
                    name, int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), max_pixels
                )
            ok, frame = cap.read() if cap.isOpened() else (False, None)
            if not ok or frame is None:
                raise VideoError(
                    f"{name}: OpenCV cannot decode this video: it is damaged, truncated or not "
                    "a video (supported: mp4, mov, avi, webm with common codecs)"
                )
            height, width = frame.shape[:2]
            _check_size(name, width, height, max_pixels)
            fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
            fps = fps if 1.0 <= fps <= 240.0 else 25.0
            total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            total = total if 0 < total < 10**8 else 0  # a header may claim anything; it only drives progress
            out_path = os.path.join(tmp, "out.mp4")
            writer = _writer(out_path, fps, width, height, name)
            report = VideoReport(b"", fps=fps)
            start = time.monotonic()
            last: DetectionResult | None = None
            index = 0
            while ok:
                if frame.shape[:2] != (height, width):
                    report.notes.append(
                        f"frame {index} is {frame.shape[1]}x{frame.shape[0]}, unlike the first "
                        f"frame's {width}x{height}: stopped there"
                    )
                    break
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                if index % every_n == 0:
                    if time.monotonic() - start > budget_s:
                        report.stopped_by_budget = True
                        break
                    last = detect(rgb, params)
                    report.frames_detected += 1
                    for row in detection_rows(last):
                        report.rows.append({"frame": index, "time_s": round(index / fps, 3), **row})
                drawn = annotate(rgb, last) if last is not None else rgb
                writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
                index += 1
                report.frames_read = index
                if progress is not None and (index % max(1, every_n) == 0):
                    frac = min(1.0, index / total) if total else 0.0
                    progress(frac, f"frame {index}{f' of {total}' if total else ''}")
                ok, frame = cap.read()
            writer.release()
            if not report.stopped_by_budget and not report.notes and index + max(1, total // 50) < total:
                report.notes.append(
                    f"the header claims {total} frames but only {index} could be decoded: the "
                    "file is truncated or damaged; those frames were processed"
                )
        finally:
            cap.release()
        with open(out_path, "rb") as fh:
            report.mp4 = fh.read()
        return report


def _check_size(name: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise VideoError(
            f"{name}: frames are {width}x{height} = {width * height:,} pixels, more than the limit "
            f"of {max_pixels:,} (OBJDET_MAX_IMAGE_PIXELS)"
        )


def _writer(path: str, fps: float, width: int, height: int, name: str) -> cv2.VideoWriter:
    """H.264 where this OpenCV build has it (plays in browsers), else MPEG-4 Part 2."""
    for fourcc in ("avc1", "mp4v"):
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
        if writer.isOpened():
            return writer
    raise VideoError(f"{name}: cannot open an MP4 writer for {width}x{height} frames in this OpenCV build")
