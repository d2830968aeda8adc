"""Video: detect on every Nth frame within a time budget; write the annotated video twice, as a WebM to watch
(VP8, which every current browser plays inline: the pip OpenCV's FFmpeg has no H.264 encoder, and its MPEG-4
Part 2 does not play in browsers), at most ``WEB_SIDE`` px, and as a full-resolution MP4 to download; per-frame
rows, small JPEGs of the annotated key frames and the per-class timeline."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
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
# OpenCV's FFmpeg writer prints "tag 0x30385056/'VP80' is not supported with codec id 139 and format 'webm /
# WebM'" for every WebM it opens: the webm muxer keeps no tag table, so FFmpeg writes the codec's own tag and the
# file plays. Said once per video it reads as an error in the server's log, so opening the writer keeps it out.
HARMLESS_NOTES = (b"is not supported with codec id 139 and format 'webm / WebM'",)
_STDERR_LOCK = threading.Lock()


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
    (app/engine/video_jobs.py) an upload larger than half of it is refused, and processing stops, with a note,
    before the files written grow past it.
    """
    _check_upload(name, data, default_max_file_bytes(max_pixels) if max_bytes is None else max_bytes)
    _check_scratch_share(name, data, max_scratch_bytes)
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
            frame, fps, total = _first_frame(cap, name, max_pixels)
            height, width = frame.shape[:2]
            out = _Outputs(tmp, name, fps, (width, height))
            report = VideoReport(b"", out.web_format, fps=fps, web_size=out.web_size)
            run = _FrameRun(report, out, (width, height), every_n, total, progress)
            run.scratch = (tmp, max_scratch_bytes)
            start = time.monotonic()
            last: DetectionResult | None = None
            while frame is not None and run.same_size(frame) and run.room_for(frame):
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                if run.detects_now():
                    if time.monotonic() - start > budget_s:
                        report.stopped_by_budget = True
                        break
                    last = run.detected(detect(rgb, params))
                run.write(annotate(rgb, last) if last is not None else rgb)
                ok, frame = cap.read()
                frame = frame if ok else None
            out.release()
            run.note_truncation()
        finally:
            cap.release()
        report.mp4, report.video = out.read()
        return report


def _check_upload(name: str, data: bytes, max_bytes: int) -> None:
    if not data:
        raise VideoError(f"{name}: file is empty (0 bytes)")
    if len(data) > max_bytes:
        raise VideoError(
            f"{name}: file is {len(data):,} bytes, more than the limit of {max_bytes:,} (OBJDET_MAX_FILE_BYTES)"
        )


def _check_scratch_share(name: str, data: bytes, max_scratch_bytes: int | None) -> None:
    if max_scratch_bytes is not None and len(data) > max_scratch_bytes // 2:
        raise VideoError(
            f"{name}: file is {len(data):,} bytes; a video job may write {max_scratch_bytes:,} bytes of temporary "
            "files (OBJDET_VIDEO_SCRATCH_MB), the upload and the annotated videos together: use a shorter clip"
        )


def _scratch_used(folder: str) -> int:
    return sum(entry.stat().st_size for entry in os.scandir(folder) if entry.is_file())


def _first_frame(cap: cv2.VideoCapture, name: str, max_pixels: int) -> tuple[np.ndarray, float, int]:
    """The first frame (size checked against ``max_pixels`` from the container before it is decoded, and
    again after), the frame rate and the frame count the header claims (0: unknown or absurd)."""
    if cap.isOpened():  # the container's frame size, before the decoder allocates a frame
        _check_size(name, int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), max_pixels)
    ok, frame = cap.read() if cap.isOpened() else (False, None)
    if not ok or frame is None:
        raise VideoError(
            f"{name}: OpenCV cannot decode this video: it is damaged, truncated or not "
            "a video (supported: mp4, mov, avi, webm with common codecs)"
        )
    _check_size(name, frame.shape[1], frame.shape[0], max_pixels)
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    fps = fps if 1.0 <= fps <= 240.0 else 25.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    return frame, fps, total if 0 < total < 10**8 else 0  # a header may claim anything; it only drives progress


class _Outputs:
    """The two annotated videos being written: the full-size MP4 and, where the build has VP8, the WebM."""

    def __init__(self, tmp: str, name: str, fps: float, size: tuple[int, int]):
        self.size = size
        self.mp4_path, self.web_path = os.path.join(tmp, "out.mp4"), os.path.join(tmp, "out.webm")
        self.full = _writer(self.mp4_path, MP4, fps, size)
        if self.full is None:
            raise VideoError(f"{name}: cannot open a video writer for {size[0]}x{size[1]} frames in this OpenCV build")
        fitted = _fit(*size, WEB_SIDE)
        with _without_harmless_notes():
            self.web = _writer(self.web_path, WEBM, fps, fitted)
        self.web_format = (WEBM[0], WEBM[2]) if self.web is not None else (MP4[0], MP4[2])
        self.web_size = fitted if self.web is not None else size
        self.small_size = fitted  # the key-frame JPEGs' size, WebM or not

    def small(self, drawn: np.ndarray) -> np.ndarray:
        return (
            drawn if self.small_size == self.size else cv2.resize(drawn, self.small_size, interpolation=cv2.INTER_AREA)
        )

    def write(self, drawn: np.ndarray, small: np.ndarray) -> None:
        self.full.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        if self.web is not None:
            self.web.write(cv2.cvtColor(small, cv2.COLOR_RGB2BGR))

    def release(self) -> None:
        self.full.release()
        if self.web is not None:
            self.web.release()

    def read(self) -> tuple[bytes, bytes]:
        """(full-size MP4, the video to watch): the MP4 twice where no WebM was written."""
        with open(self.mp4_path, "rb") as fh:
            mp4 = fh.read()
        if self.web is None:
            return mp4, mp4
        with open(self.web_path, "rb") as fh:
            return mp4, fh.read()


class _FrameRun:
    """The bookkeeping of one pass over the frames: which are detected, the rows and key frames kept, the
    report's counters and notes, and the progress callback."""

    def __init__(self, report: VideoReport, out: _Outputs, size: tuple[int, int], every_n, total, progress):
        self.report, self.out, self.size = report, out, size
        self.every_n, self.total, self.progress = max(1, every_n), total, progress
        self.index = 0
        self.scratch: tuple[str, int | None] = ("", None)  # the job's folder and its byte share
        self.key_stride = 1  # keep every key_stride-th detected frame's JPEG

    def same_size(self, frame: np.ndarray) -> bool:
        """False, with a note, at a frame whose size differs from the first one's: processing stops there."""
        width, height = self.size
        if frame.shape[:2] == (height, width):
            return True
        self.report.notes.append(
            f"frame {self.index} is {frame.shape[1]}x{frame.shape[0]}, unlike the first "
            f"frame's {width}x{height}: stopped there"
        )
        return False

    def room_for(self, frame: np.ndarray) -> bool:
        """False, with a note, when writing this frame to both writers (each buffers up to about a raw frame)
        could take the job's temporary files past their share of the scratch volume."""
        folder, limit = self.scratch
        if limit is None:
            return True
        used = _scratch_used(folder)
        if used + 2 * frame.nbytes <= limit:
            return True
        self.report.notes.append(
            f"stopped at frame {self.index}: the temporary files reached {used / 2**20:.0f} MiB of the "
            f"{limit / 2**20:.0f} MiB one video job may use (OBJDET_VIDEO_SCRATCH_MB); the frames before were processed"
        )
        return False

    def detects_now(self) -> bool:
        return self.index % self.every_n == 0

    def detected(self, result: DetectionResult) -> DetectionResult:
        report = self.report
        report.frames_detected += 1
        report.detected_frames.append(self.index)
        for row in detection_rows(result):
            report.rows.append({"frame": self.index, "time_s": round(self.index / report.fps, 3), **row})
        return result

    def write(self, drawn: np.ndarray) -> None:
        small = self.out.small(drawn)
        if self.detects_now() and (self.report.frames_detected - 1) % self.key_stride == 0:
            self._keep_key_frame(small)
        self.out.write(drawn, small)
        self.index += 1
        self.report.frames_read = self.index
        if self.progress is not None and self.index % self.every_n == 0:
            frac = min(1.0, self.index / self.total) if self.total else 0.0
            self.progress(frac, f"frame {self.index}{f' of {self.total}' if self.total else ''}")

    def _keep_key_frame(self, small: np.ndarray) -> None:
        frames = self.report.key_frames
        frames.append((self.index, _jpeg(small)))
        if len(frames) > MAX_KEY_FRAMES:
            self.report.key_frames = frames[::2]
            self.key_stride *= 2

    def note_truncation(self) -> None:
        """A note when fewer frames decoded than the header claims (and nothing else explains it)."""
        report, total = self.report, self.total
        if not report.stopped_by_budget and not report.notes and self.index + max(1, total // 50) < total:
            report.notes.append(
                f"the header claims {total} frames but only {self.index} could be decoded: the "
                "file is truncated or damaged; those frames were processed"
            )


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


@contextlib.contextmanager
def _without_harmless_notes():
    """Run the block with the process's stderr (file descriptor 2, where OpenCV and FFmpeg write) held in a
    temporary file, then write back every line but ``HARMLESS_NOTES``: lines other threads write meanwhile arrive
    a moment late, none is lost."""
    with _STDERR_LOCK, tempfile.TemporaryFile() as held:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [
                line for line in held.read().splitlines(keepends=True) if not any(n in line for n in HARMLESS_NOTES)
            ]
            if kept:
                os.write(2, b"".join(kept))


def _writer(path: str, kind: tuple[str, str, str], fps: float, size: tuple[int, int]) -> cv2.VideoWriter | None:
    """An open writer of ``kind`` (extension, FourCC, MIME type), or None where this OpenCV build has none."""
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*kind[1]), fps, size)
    return writer if writer.isOpened() else None
