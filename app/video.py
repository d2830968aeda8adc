"""Video: detect on every Nth frame within a time budget; write the annotated video as WebM (VP8, which every
current browser plays inline: the pip OpenCV's FFmpeg has no H.264 encoder, and its MPEG-4 Part 2 does not play
in browsers), per-frame rows, small JPEGs of the annotated key frames and the per-class timeline."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from .annotate import annotate
from .config import DEFAULT_MAX_IMAGE_PIXELS, default_max_file_bytes
from .result import DetectionResult, DetectParams, detection_rows

# (extension, FourCC, MIME type) tried in order: VP8 WebM opens in the pip OpenCV 5 and 4 builds (VP9 too, but
# encodes about 5x slower: 5.9 s against 1.1 s for the 40 frames of the 640x480 test clip); MPEG-4 Part 2 is
# the last resort of a build without libvpx (downloads, no inline playback).
VIDEO_FORMATS = (("webm", "VP80", "video/webm"), ("mp4", "mp4v", "video/mp4"))
KEY_FRAME_SIDE = 640  # longer side of the key-frame JPEGs the page's slider shows
MAX_KEY_FRAMES = 64  # past this, every other key frame is dropped (and then only every 2nd, 4th... is kept)


class VideoError(ValueError):
    """A video that cannot be used; str() names the file and what is wrong."""


@dataclass
class VideoReport:
    video: bytes  # the annotated video in ``video_format``
    video_format: tuple[str, str] = ("webm", "video/webm")  # extension, MIME type
    rows: list[dict] = field(default_factory=list)
    detected_frames: list[int] = field(default_factory=list)  # indices of the frames detection ran on
    key_frames: list[tuple[int, bytes]] = field(default_factory=list)  # (frame index, annotated JPEG)
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
    keep the last boxes, so the annotated video plays at the source frame rate.

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
            writer, (ext, mime), out_path = _writer(tmp, fps, width, height, name)
            report = VideoReport(b"", (ext, mime), fps=fps)
            key_stride = 1  # keep every key_stride-th detected frame's JPEG
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
                    report.detected_frames.append(index)
                    for row in detection_rows(last):
                        report.rows.append({"frame": index, "time_s": round(index / fps, 3), **row})
                drawn = annotate(rgb, last) if last is not None else rgb
                if index % every_n == 0 and (report.frames_detected - 1) % key_stride == 0:
                    report.key_frames.append((index, _key_frame_jpeg(drawn)))
                    if len(report.key_frames) > MAX_KEY_FRAMES:
                        report.key_frames = report.key_frames[::2]
                        key_stride *= 2
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
            report.video = fh.read()
        return report


def timeline(report: VideoReport) -> list[dict]:
    """Detections per class on every detected frame, 0 where a class is absent (so each series drops back
    to 0 when its objects leave): rows of frame, time_s, label, count, in frame then label order."""
    labels = sorted({row["label"] for row in report.rows})
    counts: dict[tuple[int, str], int] = {}
    for row in report.rows:
        counts[row["frame"], row["label"]] = counts.get((row["frame"], row["label"]), 0) + 1
    return [
        {"frame": frame, "time_s": round(frame / report.fps, 3), "label": label, "count": counts.get((frame, label), 0)}
        for frame in report.detected_frames
        for label in labels
    ]


def _key_frame_jpeg(rgb: np.ndarray) -> bytes:
    """The annotated frame as a JPEG, its longer side at most ``KEY_FRAME_SIDE`` (a few tens of kB)."""
    height, width = rgb.shape[:2]
    factor = KEY_FRAME_SIDE / max(height, width)
    if factor < 1.0:
        rgb = cv2.resize(
            rgb, (max(1, round(width * factor)), max(1, round(height * factor))), interpolation=cv2.INTER_AREA
        )
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise RuntimeError("JPEG encoding of a key frame failed")
    return buf.tobytes()


def _check_size(name: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise VideoError(
            f"{name}: frames are {width}x{height} = {width * height:,} pixels, more than the limit "
            f"of {max_pixels:,} (OBJDET_MAX_IMAGE_PIXELS)"
        )


def _writer(folder: str, fps: float, width: int, height: int, name: str):
    """(writer, (extension, MIME type), path) of the first of ``VIDEO_FORMATS`` this OpenCV build opens."""
    for ext, fourcc, mime in VIDEO_FORMATS:
        path = os.path.join(folder, f"out.{ext}")
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
        if writer.isOpened():
            return writer, (ext, mime), path
    raise VideoError(f"{name}: cannot open a video writer for {width}x{height} frames in this OpenCV build")
