"""Video: detect on every Nth frame within a time budget, write an annotated MP4 and per-frame rows."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

import cv2

from .annotate import annotate
from .result import DetectParams, DetectionResult, detection_rows


class VideoError(ValueError):
    """A video OpenCV cannot decode; str() names the file."""


@dataclass
class VideoReport:
    mp4: bytes
    rows: list[dict] = field(default_factory=list)
    frames_read: int = 0
    frames_detected: int = 0
    stopped_by_budget: bool = False
    fps: float = 0.0


def process_video(data: bytes, name: str, detect: Callable, params: DetectParams, every_n: int = 5,
                  budget_s: float = 60.0, max_pixels: int = 40_000_000,
                  progress: Callable[[float, str], None] | None = None) -> VideoReport:
    """``detect(rgb_image, params) -> DetectionResult`` runs on frames 0, N, 2N, ...; frames between
    keep the last boxes, so the MP4 plays at the source frame rate."""
    suffix = os.path.splitext(name)[1] or ".mp4"
    with tempfile.TemporaryDirectory(prefix="objdet-video-") as tmp:
        src = os.path.join(tmp, "in" + suffix)
        with open(src, "wb") as fh:
            fh.write(data)
        cap = cv2.VideoCapture(src)
        try:
            ok, frame = cap.read() if cap.isOpened() else (False, None)
            if not ok or frame is None:
                raise VideoError(f"{name}: OpenCV cannot decode this video (supported: mp4, mov, avi, webm "
                                 "with common codecs)")
            height, width = frame.shape[:2]
            if width * height > max_pixels:
                raise VideoError(f"{name}: frames are {width}x{height}, more than the limit of {max_pixels:,} "
                                 "pixels (OBJDET_MAX_IMAGE_PIXELS)")
            fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
            fps = fps if 1.0 <= fps <= 240.0 else 25.0
            total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or 0
            out_path = os.path.join(tmp, "out.mp4")
            writer = _writer(out_path, fps, width, height)
            report = VideoReport(b"", fps=fps)
            start = time.monotonic()
            last: DetectionResult | None = None
            index = 0
            while ok:
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
        finally:
            cap.release()
        with open(out_path, "rb") as fh:
            report.mp4 = fh.read()
        return report


def _writer(path: str, fps: float, width: int, height: int) -> cv2.VideoWriter:
    """H.264 where this OpenCV build has it (plays in browsers), else MPEG-4 Part 2."""
    for fourcc in ("avc1", "mp4v"):
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
        if writer.isOpened():
            return writer
    raise VideoError("cannot open an MP4 writer in this OpenCV build")
