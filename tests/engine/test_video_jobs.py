"""Video jobs (app/engine/video_jobs.py): the per-process cap on concurrent video jobs, the scratch folder they write
to and the scratch space one job may use, with the real clip and the real Yolo-Fastest."""

from __future__ import annotations

import os
import threading

import pytest

from app.engine.config import ConfigError, Settings
from app.engine.result import DetectParams
from app.engine.video import VideoError, process_video
from app.engine.video_jobs import JobGate, VideoBusy, VideoLimits, busy_message, gate

PARAMS = DetectParams(conf=0.3, iou=0.45, max_det=100)


def test_gate_refuses_one_job_more_than_its_cap_and_frees_slots():
    g = JobGate(2)
    with g.slot(), g.slot():
        assert g.running == 2
        with pytest.raises(VideoBusy) as busy, g.slot():
            pass
        assert str(busy.value) == busy_message(2)
        assert "busy" in str(busy.value) and "OBJDET_VIDEO_JOBS=2" in str(busy.value) and "Try again" in str(busy.value)
        assert g.running == 2, "a refused job takes no slot"
    assert g.running == 0
    with pytest.raises(RuntimeError), g.slot():  # a failing job gives its slot back
        raise RuntimeError("boom")
    with g.slot():
        assert g.running == 1


def test_gate_holds_across_threads():
    """Sessions run in threads of one process: exactly `jobs` of many simultaneous starts get a slot."""
    g, start, release = JobGate(3), threading.Barrier(10), threading.Event()
    results: list[str] = []
    lock = threading.Lock()

    def job():
        start.wait()
        try:
            with g.slot():
                with lock:
                    results.append("ran")
                release.wait(10)
        except VideoBusy:
            with lock:
                results.append("busy")

    threads = [threading.Thread(target=job) for _ in range(10)]
    for t in threads:
        t.start()
    for _ in range(200):
        if len(results) == 10:
            break
        threading.Event().wait(0.01)
    release.set()
    for t in threads:
        t.join(10)
    assert sorted(results) == ["busy"] * 7 + ["ran"] * 3
    assert g.running == 0


def test_gate_is_per_process_and_per_cap():
    assert gate(VideoLimits(jobs=2)) is gate(VideoLimits(jobs=2, scratch_mb=64))
    assert gate(VideoLimits(jobs=3)).jobs == 3


def test_limits_from_the_environment():
    s = Settings.from_env({})
    assert s.video == VideoLimits() and (s.video.jobs, s.video.scratch_dir, s.video.scratch_mb) == (2, None, 320)
    s = Settings.from_env(
        {"OBJDET_VIDEO_JOBS": "1", "OBJDET_VIDEO_SCRATCH_DIR": "/var/tmp/v", "OBJDET_VIDEO_SCRATCH_MB": "64"}
    )
    assert (s.video.jobs, str(s.video.scratch_dir), s.video.scratch_bytes) == (1, "/var/tmp/v", 64 * 2**20)
    for key, value, why in (
        ("OBJDET_VIDEO_JOBS", "0", "out of range; allowed: 1-64"),
        ("OBJDET_VIDEO_JOBS", "two", "not an integer"),
        ("OBJDET_VIDEO_SCRATCH_MB", "8", "out of range; allowed: 16-65536"),
    ):
        with pytest.raises(ConfigError, match=f"{key}='{value}' is {why}"):
            Settings.from_env({key: value})


def test_video_writes_its_temporary_files_in_the_scratch_folder(clip, detect, tmp_path):
    scratch = tmp_path / "video-scratch"
    scratch.mkdir()
    seen: list[list[str]] = []

    def watching(image, params):
        seen.append(sorted(os.listdir(scratch)))
        return detect(image, params)

    report = process_video(clip, "clip.mp4", watching, PARAMS, every_n=10, scratch_dir=scratch)
    assert report.frames_read == 40 and not report.notes
    (job,) = {tuple(s) for s in seen}
    assert len(job) == 1 and job[0].startswith("objdet-video-"), seen
    assert os.listdir(scratch) == [], "the job's folder is removed when it ends"


def test_a_job_stops_before_its_files_outgrow_its_share(clip, detect, tmp_path):
    # The upload, the margin the check keeps (two raw 640x480 frames) and 600 kB for the outputs, which the
    # whole clip takes 1.3 MB of (MP4 0.47 MB, WebM 0.85 MB): processing must stop about halfway.
    budget = len(clip) + 2 * 640 * 480 * 3 + 600_000
    report = process_video(clip, "clip.mp4", detect, PARAMS, every_n=5, scratch_dir=tmp_path, max_scratch_bytes=budget)
    assert 0 < report.frames_read < 40, report.frames_read
    (note,) = report.notes
    assert f"stopped at frame {report.frames_read}" in note and "OBJDET_VIDEO_SCRATCH_MB" in note
    assert report.mp4 and report.video, "what was processed before the stop is delivered"
    full = process_video(clip, "clip.mp4", detect, PARAMS, every_n=5, max_scratch_bytes=64 * 2**20)
    assert full.frames_read == 40 and not full.notes


def test_an_upload_over_half_the_share_is_refused_before_it_is_written(clip, detect, tmp_path):
    with pytest.raises(VideoError, match=r"clip\.mp4: file is 414,377 bytes.*OBJDET_VIDEO_SCRATCH_MB"):
        process_video(clip, "clip.mp4", detect, PARAMS, scratch_dir=tmp_path, max_scratch_bytes=2 * len(clip) - 2)
    assert os.listdir(tmp_path) == []


def test_a_missing_scratch_folder_is_named(clip, detect, tmp_path):
    with pytest.raises(VideoError, match=r"clip\.mp4: cannot write temporary files in .*absent.*SCRATCH_DIR"):
        process_video(clip, "clip.mp4", detect, PARAMS, scratch_dir=tmp_path / "absent")
