"""Video: detect on every Nth frame within a time budget; write the annotated video twice, as a WebM to watch
(VP8, which every current browser plays inline: the pip OpenCV's FFmpeg has no H.264 encoder, and its MPEG-4
Part 2 does not play in browsers), at most ``WEB_SIDE`` px, and as a full-resolution MP4 to download; per-frame
rows, small JPEGs of the annotated key frames and the per-class timeline."""

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

# VP8 WebM opens in the pip OpenCV 5 and 4 builds (VP9 too, but encodes about 5x slower: 5.9 s against 1.1 s
# for the 40 frames of the 640x480 test clip). VP8 costs about 25 ms a 640x480 frame, 76 ms at 1280x960 and
# 150 ms at 1920x1440 on 2 cores (MPEG-4 Part 2: 1.5, 6 and 13 ms), so the WebM is written at most WEB_SIDE px:
# the page shows it in half its width anyway. A build without libvpx plays nothing inline; the MP4 remains.
WEBM = ("webm", "VP80", "video/webm")
MP4 = ("mp4", "mp4v", "video/mp4")
WEB_SIDE = 640  # longer side of the WebM and of the key-frame JPEGs the page's slider shows
MAX_KEY_FRAMES = 64  # past this, every other key frame is dropped (and then only every 2nd, 4th... is kept)


class VideoError(ValueError):
    """A video that cannot be used; str() names the file and what is wrong."""


@dataclass
class VideoReport:
    video: bytes  # the annotated video to watch, in ``video_format``, longer side at most WEB_SIDE
    video_format: tuple[str, str] = ("webm", "video/webm")  # extension, MIME type
    mp4: bytes = b""  # the annotated video at the source's size (MPEG-4 Part 2: downloads, not browsers)
    web_size: tuple[int, int] = (0, 0)  # width, height of ``video``
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
    scratch_dir: str | os.PathLike | None = None,
    max_scratch_bytes: int | None = None,
) -> VideoReport:
    """``detect(rgb_image, params) -> DetectionResult`` runs on frames 0, N, 2N, ...; frames between
    keep the last boxes, so the annotated video plays at the source frame rate.

    The upload is refused before it is written to disk when it is empty or larger than ``max_bytes``
    (default: the image file limit, ``OBJDET_MAX_FILE_BYTES``), and before a frame is decoded when
    the container's frame size is over ``max_pixels``. A file that ends early (or whose header
    claims more frames than it holds) is processed as far as it decodes, with a note.

    The temporary files go to ``scratch_dir`` (default: the system temp folder); with ``max_scratch_bytes``
    (app/video_jobs.py) an upload larger than half of it is refused, and processing stops, with a note,
    before the files written grow past it.
    """
    max_bytes = default_max_file_bytes(max_pixels) if max_bytes is None else max_bytes
    if not data:
        raise VideoError(f"{name}: file is empty (0 bytes)")
    if len(data) > max_bytes:
        raise VideoError(
            f"{name}: file is {len(data):,} bytes, more than the limit of {max_bytes:,} (OBJDET_MAX_FILE_BYTES)"
        )
    if max_scratch_bytes is not None and len(data) > max_scratch_bytes // 2:
        raise VideoError(
            f"{name}: file is {len(data):,} bytes; a video job may write {max_scratch_bytes:,} bytes of temporary "
            "files (OBJDET_VIDEO_SCRATCH_MB), the upload and the annotated videos together: use a shorter clip"
        )
    suffix = os.path.splitext(name)[1] or ".mp4"
    try:
        scratch = tempfile.TemporaryDirectory(prefix="objdet-video-", dir=scratch_dir)
    except OSError as exc:
        raise VideoError(
            f"{name}: cannot write temporary files in {scratch_dir or tempfile.gettempdir()} "
            f"(OBJDET_VIDEO_SCRATCH_DIR): {exc.strerror or exc}"
        ) from None
    with scratch as tmp:
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
            web_size = _fit(width, height, WEB_SIDE)
            mp4_path, web_path = os.path.join(tmp, "out.mp4"), os.path.join(tmp, "out.webm")
            full_writer = _writer(mp4_path, MP4, fps, (width, height))
            if full_writer is None:
                raise VideoError(f"{name}: cannot open a video writer for {width}x{height} frames in this OpenCV build")
            web_writer = _writer(web_path, WEBM, fps, web_size)
            web_format = (WEBM[0], WEBM[2]) if web_writer is not None else (MP4[0], MP4[2])
            report = VideoReport(b"", web_format, fps=fps, web_size=web_size if web_writer else (width, height))
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
                # Room for this frame in both writers (each buffers up to about a raw frame) before writing it.
                used = _scratch_used(tmp) if max_scratch_bytes is not None else 0
                if max_scratch_bytes is not None and used + 2 * frame.nbytes > max_scratch_bytes:
                    report.notes.append(
                        f"stopped at frame {index}: the temporary files reached {used / 2**20:.0f} MiB of the "
                        f"{max_scratch_bytes / 2**20:.0f} MiB one video job may use (OBJDET_VIDEO_SCRATCH_MB); "
                        "the frames before were processed"
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
                small = (
                    drawn if web_size == (width, height) else cv2.resize(drawn, web_size, interpolation=cv2.INTER_AREA)
                )
                if index % every_n == 0 and (report.frames_detected - 1) % key_stride == 0:
                    report.key_frames.append((index, _jpeg(small)))
                    if len(report.key_frames) > MAX_KEY_FRAMES:
                        report.key_frames = report.key_frames[::2]
                        key_stride *= 2
                full_writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
                if web_writer is not None:
                    web_writer.write(cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
                index += 1
                report.frames_read = index
                if progress is not None and (index % max(1, every_n) == 0):
                    frac = min(1.0, index / total) if total else 0.0
                    progress(frac, f"frame {index}{f' of {total}' if total else ''}")
                ok, frame = cap.read()
            full_writer.release()
            if web_writer is not None:
                web_writer.release()
            if not report.stopped_by_budget and not report.notes and index + max(1, total // 50) < total:
                report.notes.append(
                    f"the header claims {total} frames but only {index} could be decoded: the "
                    "file is truncated or damaged; those frames were processed"
                )
        finally:
            cap.release()
        with open(mp4_path, "rb") as fh:
            report.mp4 = fh.read()
        if web_writer is not None:
            with open(web_path, "rb") as fh:
                report.video = fh.read()
        else:
            report.video = report.mp4
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


def _scratch_used(folder: str) -> int:
    return sum(entry.stat().st_size for entry in os.scandir(folder) if entry.is_file())


def _fit(width: int, height: int, side: int) -> tuple[int, int]:
    """(width, height) scaled so the longer side is at most ``side``, even numbers (what VP8 encoders like)."""
    factor = min(1.0, side / max(width, height))
    if factor == 1.0:
        return width, height
    return max(2, round(width * factor / 2) * 2), max(2, round(height * factor / 2) * 2)


def _jpeg(rgb: np.ndarray) -> bytes:
    """An annotated key frame (already at most ``WEB_SIDE``) as a JPEG: a few tens of kB."""
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


def _writer(path: str, kind: tuple[str, str, str], fps: float, size: tuple[int, int]) -> cv2.VideoWriter | None:
    """An open writer of ``kind`` (extension, FourCC, MIME type), or None where this OpenCV build has none."""
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*kind[1]), fps, size)
    return writer if writer.isOpened() else None
