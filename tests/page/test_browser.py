"""A real headless Chromium (Debian's, driven by Playwright) against ``python -m app serve``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support.serving import Server

pytestmark = [pytest.mark.browser, pytest.mark.server]

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


@pytest.fixture(scope="module")
def server(yolo_dir):
    env = {
        "OBJDET_MODELS": "yolo",
        "OBJDET_YOLO_WEIGHTS": str(yolo_dir / "yolo-fastest-1.1.weights"),
        "OBJDET_YOLO_CONFIG": str(yolo_dir / "yolo-fastest-1.1.cfg"),
        "OBJDET_YOLO_NAMES": str(yolo_dir / "coco.names"),
    }
    srv = Server(env, base_path="kubernetes-object-detection")
    try:
        srv.wait_healthy()
        yield srv
    finally:
        srv.stop()


def test_upload_see_cup_download_json(browser, server, images_dir, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    try:
        page.goto(server.base + "/", wait_until="domcontentloaded", timeout=60_000)
        page.get_by_text("Object detection: SSD and YOLO").wait_for(timeout=60_000)
        page.locator("[data-testid='stFileUploaderDropzoneInput']").first.set_input_files(
            str(images_dir / "coffee.png")
        )
        page.get_by_text("YOLO (OpenCV DNN)").first.wait_for(timeout=60_000)
        table = page.locator("[data-testid='stDataFrame']").first
        table.wait_for(timeout=60_000)
        # the grid is drawn on a canvas; its accessible twin holds the cell text
        table.locator("[role='gridcell']").filter(has_text=re.compile(r"^cup$")).first.wait_for(
            state="attached", timeout=30_000
        )
        annotated = page.locator("[data-testid='stImage']").filter(has_text="coffee.png · yolo").locator("img")
        annotated.wait_for(timeout=30_000)  # the annotated picture first
        assert annotated.evaluate("img => img.naturalWidth") == 600
        # shown at its own width in the ~900 px column, not stretched (and blurred) to fill it
        assert annotated.evaluate("img => img.getBoundingClientRect().width") == 600
        page.get_by_role("button", name="Original (600x400)").click()  # the original, one click away
        original = page.locator("[data-testid='stPopoverBody'] [data-testid='stImage'] img")
        original.wait_for(timeout=30_000)
        assert original.evaluate("img => img.naturalWidth") == 600
        page.keyboard.press("Escape")
        with page.expect_download(timeout=30_000) as info:
            page.get_by_role("button", name="JSON").first.click()
        target = tmp_path / info.value.suggested_filename
        info.value.save_as(target)
        doc = json.loads(target.read_text())
        assert info.value.suggested_filename == "coffee.yolo.json"
        assert doc["file"] == "coffee.png" and doc["model"] == "yolo"
        assert "cup" in [d["label"] for d in doc["detections"]]
        cup = next(d for d in doc["detections"] if d["label"] == "cup")
        assert cup["score"] > 0.5 and len(cup["box"]) == 4
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-coffee.png"), full_page=True)
    finally:
        page.close()
