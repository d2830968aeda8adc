"""Video input: empty, oversized, truncated and lying files give a
``VideoError`` naming the file, or are processed as far as they decode with a note saying why."""

from __future__ import annotations

import os
import struct
import tempfile

import cv2
import numpy as np
import pytest

from app.engine.result import DetectParams
from app.engine.video import VideoError, process_video, timeline

PARAMS = DetectParams(conf=0.3, iou=0.45, max_det=100)


def boxes(data: bytes, start: int, end: int):
    at = start
    while at < end:
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        yield kind, at, size
        at += size


def faststart(mp4: bytes) -> bytes:
    """The same MP4 with its ``moov`` box moved in front of ``mdat`` and the chunk offsets shifted (what
    ``ffmpeg -movflags faststart`` writes): a copy cut short then still has its index, claiming every frame."""
    top = {kind: (at, size) for kind, at, size in boxes(mp4, 0, len(mp4))}
    moov_at, moov_size = top[b"moov"]
    moov = bytearray(mp4[moov_at : moov_at + moov_size])

    def shift(start, end):
        for kind, at, size in boxes(moov, start, end):
            if kind in (b"trak", b"mdia", b"minf", b"stbl"):
                shift(at + 8, at + size)
            elif kind == b"stco":
                count = struct.unpack(">I", moov[at + 12 : at + 16])[0]
                for k in range(count):
                    pos = at + 16 + 4 * k
                    moov[pos : pos + 4] = struct.pack(">I", struct.unpack(">I", moov[pos : pos + 4])[0] + moov_size)

    shift(8, moov_size)
    mdat_at = top[b"mdat"][0]
    return mp4[:mdat_at] + bytes(moov) + mp4[mdat_at:moov_at] + mp4[moov_at + moov_size :]


def frames_opencv_reads(path) -> tuple[int, int]:
    """(frames the header claims, frames that decode), straight from OpenCV."""
    cap = cv2.VideoCapture(str(path))
    claimed = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    return claimed, count


def test_whole_clip_processed_without_notes(clip, detect, tmp_path):
    report = process_video(clip, "clip.mp4", detect, PARAMS, every_n=5)
    assert report.frames_read == 40 and report.frames_detected == 8 and report.notes == []
    assert {row["frame"] % 5 for row in report.rows} == {0}
    # WebM (an EBML header naming the "webm" doc type) holding VP8, all 40 frames at 640x480, read back by OpenCV
    assert report.video_format == ("webm", "video/webm") and report.web_size == (640, 480)
    assert report.mp4[4:8] == b"ftyp"  # and the full-size MP4 for downloads
    assert report.video[:4] == b"\x1a\x45\xdf\xa3" and b"webm" in report.video[:64] and b"V_VP8" in report.video[:4096]
    path = tmp_path / "out.webm"
    path.write_bytes(report.video)
    cap = cv2.VideoCapture(str(path))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (640, 480)
    cap.release()
    assert frames_opencv_reads(path)[1] == 40
    # one key frame per detected frame, each a 640x480 JPEG
    assert report.detected_frames == [0, 5, 10, 15, 20, 25, 30, 35]
    assert [index for index, _ in report.key_frames] == report.detected_frames
    first = cv2.imdecode(np.frombuffer(report.key_frames[0][1], np.uint8), cv2.IMREAD_COLOR)
    assert first.shape == (480, 640, 3)


def test_writing_the_webm_keeps_ffmpegs_tag_note_off_the_terminal(clip, detect, capfd):
    """FFmpeg's "tag ... 'VP80' is not supported ... 'webm / WebM'" line (harmless, once per video) does not reach
    stderr; other lines written while the writer opens still do."""
    process_video(clip, "clip.mp4", detect, PARAMS, every_n=20)
    assert "VP80" not in capfd.readouterr().err
    from app.engine.video import _without_harmless_notes

    with _without_harmless_notes():
        os.write(2, b"a real warning\n")
    assert capfd.readouterr().err == "a real warning\n"


def test_large_frames_play_at_640_and_download_at_full_size(detect, tmp_path):
    source = tmp_path / "wide.mp4"
    writer = cv2.VideoWriter(str(source), cv2.VideoWriter_fourcc(*"mp4v"), 5, (1280, 720))
    for k in range(6):
        writer.write(np.full((720, 1280, 3), 40 * k, np.uint8))
    writer.release()
    report = process_video(source.read_bytes(), "wide.mp4", detect, PARAMS, every_n=2)
    assert report.web_size == (640, 360)
    for suffix, data, size in ((".webm", report.video, (640, 360)), (".mp4", report.mp4, (1280, 720))):
        path = tmp_path / f"out{suffix}"
        path.write_bytes(data)
        cap = cv2.VideoCapture(str(path))
        assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == size
        cap.release()
        assert frames_opencv_reads(path)[1] == 6
    first = cv2.imdecode(np.frombuffer(report.key_frames[0][1], np.uint8), cv2.IMREAD_COLOR)
    assert first.shape == (360, 640, 3) and [i for i, _ in report.key_frames] == [0, 2, 4]


def test_timeline_person_first_cup_last(clip, detect):
    """The clip shows the astronaut (frames 0-14), then the coffee cup (25-39) (shared assets README)."""
    report = process_video(clip, "clip.mp4", detect, PARAMS, every_n=5)
    rows = timeline(report)
    labels = sorted({row["label"] for row in rows})
    assert "person" in labels and "cup" in labels
    assert len(rows) == len(labels) * 8  # every class on every detected frame, 0 where absent
    present = {frame: {r["label"] for r in rows if r["frame"] == frame and r["count"] > 0} for frame in (0, 35)}
    assert "person" in present[0] and "cup" not in present[0]
    assert "cup" in present[35] and "person" not in present[35]
    assert [r["time_s"] for r in rows if r["label"] == "cup"] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]  # 10 fps
    assert sum(r["count"] for r in rows) == len(report.rows)


def test_key_frames_thinned_past_the_cap(clip, detect, monkeypatch):
    import app.engine.video

    monkeypatch.setattr(app.engine.video, "MAX_KEY_FRAMES", 3)
    report = process_video(clip, "clip.mp4", detect, PARAMS, every_n=5)
    # detected 0, 5, ..., 35: the 4th key frame halves the list to 0, 10 (stride 2), then 20 and 30 join; 30
    # makes 4 again, so every 4th detected frame stays: 0 and 20
    assert [index for index, _ in report.key_frames] == [0, 20]


def test_truncated_faststart_clip_processed_as_far_as_it_decodes(clip, detect, tmp_path):
    cut = faststart(clip)[: len(clip) // 2]
    path = tmp_path / "cut.mp4"
    path.write_bytes(cut)
    claimed, decodable = frames_opencv_reads(path)
    assert claimed == 40 and 0 < decodable < 40
    report = process_video(cut, "cut.mp4", detect, PARAMS, every_n=5)
    assert report.frames_read == decodable
    assert report.notes == [
        (
            f"the header claims 40 frames but only {decodable} could be decoded: the file is "
            "truncated or damaged; those frames were processed"
        )
    ]
    assert report.video


@pytest.mark.parametrize("kind", ["cut in half (index at the end)", "garbage"])
def test_undecodable_video_names_the_file(clip, detect, kind):
    data = clip[: len(clip) // 2] if kind.startswith("cut") else b"\x00\x01" * 4096
    with pytest.raises(VideoError, match=r"^broken\.mp4: OpenCV cannot decode this video: it is damaged, truncated"):
        process_video(data, "broken.mp4", detect, PARAMS)


def test_refused_before_anything_is_written(clip, detect, tmp_path, monkeypatch):
    # No temp dir can be made: a refusal that came after writing the upload would be a FileNotFoundError.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "absent"))
    with pytest.raises(VideoError, match=r"^empty\.mp4: file is empty \(0 bytes\)$"):
        process_video(b"", "empty.mp4", detect, PARAMS)
    with pytest.raises(
        VideoError,
        match=rf"^big\.mp4: file is {len(clip):,} bytes, more than the limit of "
        rf"{len(clip) - 1:,} \(OBJDET_MAX_FILE_BYTES\)$",
    ):
        process_video(clip, "big.mp4", detect, PARAMS, max_bytes=len(clip) - 1)


def test_default_byte_limit_follows_the_pixel_limit(clip, detect):
    # Without max_bytes the image file limit applies: 3 bytes a pixel + 16 MiB, here 16 MiB + 921,600 bytes.
    report = process_video(clip, "clip.mp4", detect, PARAMS, every_n=40, max_pixels=640 * 480)
    assert report.frames_read == 40
    with pytest.raises(VideoError, match=r"^long\.mp4: file is 17,698,817 bytes, more than the limit of 17,698,816"):
        process_video(b"\0" * (16 * 2**20 + 921_601), "long.mp4", detect, PARAMS, max_pixels=640 * 480)


def test_frames_over_the_pixel_limit_refused(clip, detect):
    with pytest.raises(
        VideoError,
        match=r"^clip\.mp4: frames are 640x480 = 307,200 pixels, more than the limit "
        r"of 307,199 \(OBJDET_MAX_IMAGE_PIXELS\)$",
    ):
        process_video(clip, "clip.mp4", detect, PARAMS, max_pixels=640 * 480 - 1)


def test_big_frames_made_with_videowriter_refused(detect, tmp_path):
    path = tmp_path / "wide.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (4000, 3000))
    assert writer.isOpened()
    frame = np.full((3000, 4000, 3), 128, np.uint8)
    for _ in range(2):
        writer.write(frame)
    writer.release()
    with pytest.raises(
        VideoError,
        match=r"^wide\.avi: frames are 4000x3000 = 12,000,000 pixels, more than the "
        r"limit of 10,000,000",
    ):
        process_video(path.read_bytes(), "wide.avi", detect, PARAMS, max_pixels=10_000_000)


@pytest.mark.parametrize("side", [40000, 16000])
def test_frames_claiming_a_huge_size_refused(detect, tmp_path, side):
    """An MJPG AVI whose every JPEG frame header claims side x side pixels (the data holds 64x48):
    FFmpeg refuses 40000x40000 itself; 16000x16000 is within FFmpeg's limit but does not decode."""
    import resource

    path = tmp_path / "small.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for _ in range(3):
        writer.write(np.full((48, 64, 3), 100, np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    at = data.find(b"\xff\xc0")
    assert at > 0
    while at >= 0:
        data[at + 5 : at + 9] = struct.pack(">HH", side, side)
        at = data.find(b"\xff\xc0", at + 1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(VideoError, match=r"^huge\.avi: OpenCV cannot decode this video"):
        process_video(bytes(data), "huge.avi", detect, PARAMS)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: no 768 MB frame


def test_a_frame_size_change_mid_stream_is_scaled_to_the_first_size_by_opencv(detect, tmp_path):
    """What the app can and cannot see (docs/hardening.md): OpenCV's FFmpeg reader scales every frame to the
    first frame's size, so a stream whose size changes (two MPEG-TS streams joined, 320x240 then 640x360) is
    processed whole at 320x240, and the note for a size change (kept for readers that do hand over a new
    size) does not appear. This pins that behaviour: if a new OpenCV passes the real size, this fails and
    the note becomes reachable."""
    parts = []
    for name, size, colour in (("a.ts", (320, 240), (0, 0, 200)), ("b.ts", (640, 360), (0, 200, 0))):
        writer = cv2.VideoWriter(str(tmp_path / name), cv2.VideoWriter_fourcc(*"mpg2"), 10, size)
        if not writer.isOpened():
            pytest.skip("this OpenCV build writes no MPEG-2 transport stream")
        for _ in range(10):
            writer.write(np.full((size[1], size[0], 3), colour, np.uint8))
        writer.release()
        parts.append((tmp_path / name).read_bytes())
    report = process_video(b"".join(parts), "joined.ts", detect, PARAMS, every_n=5)
    assert report.frames_read >= 18 and report.notes == []  # (the join may cost the first stream its last frame)
    assert report.web_size == (320, 240)
    last = cv2.imdecode(np.frombuffer(report.key_frames[-1][1], np.uint8), cv2.IMREAD_COLOR)
    assert last.shape == (240, 320, 3) and last[120, 160, 1] > 150  # the second stream's green, scaled down
