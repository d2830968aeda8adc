"""The video cap through the real page: `python -m app serve` with OBJDET_VIDEO_JOBS=1 and two browser sessions.
While the first session's video is processed, the second one's is refused with the "busy, try again" message;
once the first is done, the second one's goes through. The temporary files land in OBJDET_VIDEO_SCRATCH_DIR."""

from __future__ import annotations

import os
import re

import cv2
import numpy as np
import pytest
from support.serving import Server, models_env

pytestmark = [pytest.mark.browser, pytest.mark.server]


@pytest.fixture(scope="module")
def long_clip(images_dir, tmp_path_factory):
    """600 frames (60 s at 10 fps) of coffee.png and astronaut.png: the page needs several seconds for it,
    the window in which the second session asks."""
    path = tmp_path_factory.mktemp("busy") / "long.mp4"
    frames = [cv2.resize(cv2.imread(str(images_dir / f)), (640, 480)) for f in ("coffee.png", "astronaut.png")]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (640, 480))
    for i in range(600):
        writer.write(frames[(i // 50) % 2] if i % 7 else np.ascontiguousarray(frames[(i // 50) % 2][:, ::-1]))
    writer.release()
    return path


@pytest.fixture(scope="module")
def busy_server(yolo_dir, tmp_path_factory):
    scratch = tmp_path_factory.mktemp("video-scratch")
    env = models_env("unused.pth", yolo_dir, models="yolo")
    env |= {"OBJDET_VIDEO_JOBS": "1", "OBJDET_VIDEO_SCRATCH_DIR": str(scratch)}
    srv = Server(env)
    srv.scratch = scratch
    try:
        srv.wait_healthy()
        yield srv
    finally:
        srv.stop()


def video_page(browser, server, clip):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(server.base + "/", wait_until="domcontentloaded", timeout=60_000)
    page.get_by_text("Object detection: SSD and YOLO").wait_for(timeout=60_000)
    page.get_by_role("tab", name="Video").click()
    uploader = page.locator("[data-testid='stFileUploader']").filter(has_text="Video")
    uploader.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(str(clip))
    page.wait_for_function("() => [...document.querySelectorAll('button')].some(b => "
                           "b.innerText.includes('Process video') && !b.disabled)", timeout=60_000)  # fmt: skip
    return page


def test_second_video_is_refused_while_the_first_runs_then_accepted(browser, busy_server, long_clip, images_dir):
    first = video_page(browser, busy_server, long_clip)
    second = video_page(browser, busy_server, images_dir.parent / "videos" / "astronaut-coffee.mp4")
    try:
        first.get_by_role("button", name="Process video").click()
        first.get_by_text(re.compile(r"^frame \d+ of 600$")).first.wait_for(timeout=60_000)  # its progress: running
        assert [p for p in os.listdir(busy_server.scratch) if p.startswith("objdet-video-")], "scratch folder unused"
        second.get_by_role("button", name="Process video").click()
        busy = second.get_by_text("The server is busy", exact=False)
        busy.wait_for(timeout=60_000)
        text = busy.inner_text()
        assert "OBJDET_VIDEO_JOBS=1" in text and "Try again" in text, text
        assert first.locator("video[data-testid='stVideo']").count() == 0, "the first video must still be running"
        first.locator("video[data-testid='stVideo']").wait_for(timeout=300_000)
        second.get_by_role("button", name="Process video").click()  # the slot is free again
        second.locator("video[data-testid='stVideo']").wait_for(timeout=180_000)
        assert second.get_by_text("The server is busy", exact=False).count() == 0
        assert os.listdir(busy_server.scratch) == [], "each job removes its scratch folder"
    finally:
        first.close()
        second.close()
