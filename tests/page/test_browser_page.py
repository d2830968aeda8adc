"""The page's video, agreement and link features in a real headless
Chromium against ``python -m app serve`` with both models: the annotated video
plays inline, the agreement overlay is on the page (screenshot to the artifacts folder) and in the JSON, and
the address bar carries the sidebar's settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.serving import models_env, serving

from app.page.image_view import AGREEMENT_WIDTH

pytestmark = [pytest.mark.browser, pytest.mark.server]

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


@pytest.fixture(scope="module")
def yolo_server(ssd_weights, yolo_dir):
    """The real Yolo-Fastest alone: the video shows what it finds."""
    yield from serving(models_env(ssd_weights, yolo_dir, models="yolo"))


@pytest.fixture(scope="module")
def planted_server(ssd_weights, yolo_dir, images_dir, tmp_path_factory):
    """Seeded SSD beside a synthetic YOLO (an ONNX graph with a written output, tests/support/onnx_models.py) that
    finds a copy of SSD's top box on coffee.png at conf 0.5, max 5 (found by both) and one box of a label SSD
    did not find (only YOLO): the overlay shows all three styles, and the expected split is known."""
    import numpy as np
    from PIL import Image
    from support.onnx_models import build_yolo_onnx

    from app.engine.config import Settings
    from app.engine.labels import COCO80
    from app.engine.registry import get_detector
    from app.engine.result import DetectParams

    env = models_env(ssd_weights, yolo_dir, models="ssd")
    image = np.asarray(Image.open(images_dir / "coffee.png").convert("RGB"))
    ssd = get_detector("ssd", Settings.from_env(env)).detect(image, DetectParams(conf=0.5, max_det=5)).detections
    assert ssd, "the seeded SSD should find something on coffee.png at 0.5"
    absent = next(c for c in ("teddy bear", "vase", "clock") if c not in {d.label for d in ssd})
    planted = [(ssd[0].box, ssd[0].label, 0.9), ((330.0, 60.0, 560.0, 330.0), absent, 0.8)]
    rows = np.zeros((1, 10, 85), np.float32)
    r = 320 / 600  # coffee.png is 600x400: letterboxed into 320x320 at 320/600, 53 px of padding above and below
    for row, ((x1, y1, x2, y2), label, score) in enumerate(planted):
        rows[0, row, :5] = ((x1 + x2) / 2 * r, (y1 + y2) / 2 * r + 53, (x2 - x1) * r, (y2 - y1) * r, 1.0)
        rows[0, row, 5 + COCO80.index(label)] = score
    model = build_yolo_onnx(tmp_path_factory.mktemp("planted") / "planted.onnx", rows, 320)
    env = models_env(ssd_weights, yolo_dir) | {"OBJDET_YOLO_WEIGHTS": str(model), "OBJDET_YOLO_INPUT_SIZE": "320"}
    del env["OBJDET_YOLO_CONFIG"], env["OBJDET_YOLO_NAMES"]
    for srv in serving(env):
        srv.planted = (ssd, absent)
        yield srv


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    yield page
    page.close()


def open_page(page, server, query: str = "") -> None:
    page.goto(server.base + "/" + query, wait_until="domcontentloaded", timeout=60_000)
    page.get_by_text("Object detection: SSD and YOLO").wait_for(timeout=60_000)


def test_annotated_video_plays_inline(page, yolo_server, images_dir):
    open_page(page, yolo_server)
    page.get_by_role("tab", name="Video").click()
    video_uploader = page.locator("[data-testid='stFileUploader']").filter(has_text="Video")  # not Evaluate's
    video_uploader.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(
        str(images_dir.parent / "videos" / "astronaut-coffee.mp4")
    )
    button = page.get_by_role("button", name="Process video")
    button.wait_for(timeout=30_000)
    page.wait_for_function("() => [...document.querySelectorAll('button')].some(b => "
                           "b.innerText.includes('Process video') && !b.disabled)", timeout=30_000)  # fmt: skip
    button.click()
    video = page.locator("video[data-testid='stVideo']")  # not the camera tab's hidden <video>
    video.wait_for(timeout=180_000)
    # the state is read in the same call that sees the first frame decoded: a rerun may re-mount the element
    # (or Chromium suspend its preload) between two calls
    state = page.wait_for_function(
        "() => { const v = document.querySelector(\"video[data-testid='stVideo']\"); "
        "return v && v.readyState >= 2 && v.duration > 0 && {ready: v.readyState, duration: v.duration, "
        "width: v.videoWidth, height: v.videoHeight, error: v.error && v.error.code, src: v.currentSrc} }",
        timeout=60_000,
    ).json_value()
    assert state["ready"] >= 2 and state["error"] is None
    assert 3.5 <= state["duration"] <= 4.5  # 40 frames at 10 fps
    assert (state["width"], state["height"]) == (640, 480) and ".webm" in state["src"]
    page.get_by_text("Detections per class over time").wait_for(timeout=30_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-video.png"), full_page=True)


def test_agreement_overlay_and_json(page, planted_server, images_dir, tmp_path):
    ssd, absent = planted_server.planted
    open_page(page, planted_server, "?conf=0.5&max_det=5")
    page.locator("[data-testid='stFileUploaderDropzoneInput']").first.set_input_files(str(images_dir / "coffee.png"))
    page.get_by_text("Where SSD (torchvision) and YOLO (OpenCV DNN) agree").wait_for(timeout=120_000)
    overlay = page.locator("[data-testid='stImage']").filter(has_text="coffee.png · agreement").first
    overlay.wait_for(timeout=30_000)
    overlay.locator("img").evaluate("img => img.decode()")
    # drawn and sent at the width of its column (the 600 px display copy is wider): no pixel the browser drops
    assert overlay.locator("img").evaluate("img => img.naturalWidth") == AGREEMENT_WIDTH < 600
    ARTIFACTS.mkdir(exist_ok=True)
    overlay.screenshot(path=str(ARTIFACTS / "browser-agreement.png"))
    print(f"agreement overlay screenshot: {ARTIFACTS / 'browser-agreement.png'}")
    # the address bar carries the settings: the URL's own, and the rest written by the page
    for setting in ("conf=0.50", "max_det=5", "model=both", "match_iou=0.50", "iou=0.45"):
        assert setting in page.url
    with page.expect_download(timeout=30_000) as info:
        page.get_by_role("button", name="JSON").last.click()
    target = tmp_path / info.value.suggested_filename
    info.value.save_as(target)
    doc = json.loads(target.read_text())
    assert info.value.suggested_filename == "coffee.yolo.json" and doc["params"]["conf"] == 0.5
    block = doc["agreement"]
    assert block["models"] == ["ssd", "yolo"] and block["match_iou"] == 0.5
    assert [p["label"] for p in block["both"]] == [ssd[0].label] and block["both"][0]["iou"] > 0.95
    assert [d["label"] for d in block["only_yolo"]] == [absent]
    assert len(block["only_ssd"]) == len(ssd) - 1
