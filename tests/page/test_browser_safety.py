"""The page as a visitor meets it, in a real headless Chromium against ``python -m app serve``: text from outside
(URL parameters, uploaded file names, COCO names, zip member names) is shown as text and makes the browser fetch
nothing; uploads with the same name are separate images; weights copied in after start-up are picked up by
"Re-check models"; both models side by side fit a 1400 px window. The screenshot of the last one is the one in
README.md (``UPDATE_DOCS=1`` writes it to docs/page.jpg)."""

from __future__ import annotations

import http.server
import io
import json
import os
import shutil
import threading
import urllib.parse
import zipfile
from pathlib import Path

import pytest
from support.serving import models_env, serving

pytestmark = [pytest.mark.browser, pytest.mark.server]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"
MAIN = "[data-testid='stMain']"


class Counting:
    """An HTTP server on loopback that counts every request it gets (an attacker's server in the tests)."""

    def __init__(self):
        self.paths: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.paths.append(self.path)
                self.send_response(204)
                self.end_headers()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def yolo_server(yolo_dir, ssd_weights):
    yield from serving(models_env(ssd_weights, yolo_dir, models="yolo"))


@pytest.fixture
def attacker():
    server = Counting()
    yield server
    server.close()


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    yield page
    page.close()


def open_page(page, base: str, query: str = "") -> None:
    page.goto(base + "/" + query, wait_until="domcontentloaded", timeout=60_000)
    page.get_by_text("Object detection: SSD and YOLO").wait_for(timeout=60_000)


def upload_images(page, files: list[tuple[str, bytes]]) -> None:
    uploader = page.locator("[data-testid='stFileUploader']").filter(has_text="Images").first
    uploader.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(
        [{"name": name, "mimeType": "image/png", "buffer": data} for name, data in files]
    )


def no_exception_box(page) -> None:
    assert page.locator("[data-testid='stException']").count() == 0


def links_to(page, host: str) -> list[str]:
    hrefs = page.eval_on_selector_all(
        "a[href]", "links => links.map(a => a.href + ' <- ' + a.parentElement.outerHTML.slice(0, 300))"
    )
    return [href for href in hrefs if host in href.split(" <- ")[0]]


def test_text_from_outside_is_shown_as_text_and_fetches_nothing(page, yolo_server, attacker, images_dir):
    """Every way in: the URL's classes and model (a code span broken out of, a link that asks to log in again), an
    uploaded file's name, a COCO file's category names and file_names, a zip's member names. Zero requests reach
    the attacker's server, no link to it is on the page, and the text is there as written."""
    host = attacker.host
    query = "?" + urllib.parse.urlencode(
        {
            "classes": f"cup,![x](http://{host}/classes.png)",
            "model": f"yolo` [log in again](http://{host}/login) ![m](http://{host}/model.png) `",
        }
    )
    open_page(page, yolo_server.base, query)
    page.get_by_text("left out", exact=False).first.wait_for(timeout=60_000)  # the classes notice is drawn
    coffee = (images_dir / "coffee.png").read_bytes()
    upload_images(page, [(f"![u](http:{host}).png", coffee)])  # no "/" in a file name: http:HOST is a full URL
    table = page.locator(f"{MAIN} [data-testid='stDataFrame']").first
    table.locator("[role='gridcell']").filter(has_text="cup").first.wait_for(state="attached", timeout=120_000)

    page.get_by_role("tab", name="Evaluate").click()
    doc = {
        "images": [
            {"id": 1, "file_name": "coffee.png", "width": 600, "height": 400},
            {"id": 2, "file_name": f"![f](http://{host}/file_name.png).png"},
        ],
        "categories": [{"id": 1, "name": "cup"}, {"id": 2, "name": f"![c](http://{host}/category.png)"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [165, 20, 245, 244]},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [10, 10, 50, 50]},
        ],
    }
    annotations = page.locator("[data-testid='stFileUploader']").filter(has_text="Annotations")
    annotations.locator("input").set_input_files(
        {"name": "mine.json", "mimeType": "application/json", "buffer": json.dumps(doc).encode()}
    )
    images = page.locator("[data-testid='stFileUploader']").filter(has_text="Images").last
    images.locator("input").set_input_files({"name": "coffee.png", "mimeType": "image/png", "buffer": coffee})
    page.get_by_text("cannot predict", exact=False).first.wait_for(timeout=120_000)
    page.get_by_text("annotated image(s) not uploaded", exact=False).wait_for(timeout=30_000)

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("set/instances.json", json.dumps(doc))
        zf.writestr("set/coffee.png", coffee)
        zf.writestr(f"set/![z](http://{host}/member.png).txt", "x")
    annotations.locator("input").set_input_files(
        {"name": "set.zip", "mimeType": "application/zip", "buffer": archive.getvalue()}
    )
    page.get_by_text("refused, not an image", exact=False).wait_for(timeout=120_000)
    page.wait_for_timeout(1500)  # time for any image on the page to be fetched
    no_exception_box(page)
    assert attacker.paths == [], attacker.paths
    assert links_to(page, host) == []
    # shown as written (an invisible word joiner before "http" keeps each from becoming a bare link)
    for text in ("/member.png).txt: refused", "/file_name.png).png", "/category.png"):
        assert "\u2060http://" in page.get_by_text(f"{host}{text}", exact=False).first.inner_text(), text
    page.get_by_role("tab", name="Images").click()
    assert page.get_by_text(f"![u](\u2060http:{host}).png", exact=False).count() >= 1
    assert "![x](\u2060http://" in page.get_by_text(f"{host}/classes.png)", exact=False).first.inner_text()
    assert "[log in again](\u2060http://" in page.get_by_text(f"{host}/login)", exact=False).first.inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-injection.png"), full_page=True)


def test_same_name_and_same_file_twice_are_separate_images(page, yolo_server, images_dir):
    """Two different files called a.png, then one of them again (the uploader keeps earlier files): three images
    in the summary grid, three details, no exception box."""
    open_page(page, yolo_server.base)
    coffee, chelsea = (images_dir / "coffee.png").read_bytes(), (images_dir / "chelsea.png").read_bytes()
    upload_images(page, [("a.png", coffee), ("a.png", chelsea)])
    page.get_by_text("2 images").wait_for(timeout=120_000)
    upload_images(page, [("a.png", coffee)])
    page.get_by_text("3 images").wait_for(timeout=120_000)
    details = page.locator(f"{MAIN} [data-testid='stExpander']")
    details.nth(2).wait_for(timeout=60_000)
    labels = [details.nth(i).locator("summary").inner_text().splitlines()[-1] for i in range(details.count())]
    assert labels == ["a.png: YOLO: cup 1, dining table 1", "a.png: YOLO: cat 1", "a.png: YOLO: cup 1, dining table 1"]
    grid = page.locator(f"{MAIN} [data-testid='stDataFrame']").first
    cells = grid.locator("[role='gridcell']").filter(has_text="a.png")
    cells.nth(2).wait_for(state="attached", timeout=30_000)  # the grid's accessible twin is filled in after it draws
    assert cells.count() == 3
    no_exception_box(page)


@pytest.fixture
def empty_weights(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    return folder


def test_weights_copied_in_after_start_up_are_picked_up(page, browser, empty_weights, yolo_dir, images_dir):
    """Start with YOLO's files absent: the set-up guide. Copy them in as the page says, press "Re-check models":
    the same process now detects (no restart)."""
    env = {"OBJDET_MODELS": "yolo", "OBJDET_REQUIRED_MODELS": "", "OBJDET_WEIGHTS_DIR": str(empty_weights)}
    for srv in serving(env):
        pid = srv.proc.pid
        open_page(page, srv.base)
        page.get_by_text("No model is loaded yet").wait_for(timeout=60_000)
        for name in ("yolo-fastest-1.1.weights", "yolo-fastest-1.1.cfg", "coco.names"):
            shutil.copy(yolo_dir / name, empty_weights / name)
        page.get_by_role("button", name="Re-check models").first.click()
        upload_images(page, [("coffee.png", (images_dir / "coffee.png").read_bytes())])
        table = page.locator(f"{MAIN} [data-testid='stDataFrame']").first
        table.locator("[role='gridcell']").filter(has_text="cup").first.wait_for(state="attached", timeout=120_000)
        assert srv.proc.pid == pid and srv.proc.poll() is None
        # a page opened afterwards (a reload) finds the model too
        other = browser.new_page()
        try:
            open_page(other, srv.base)
            other.get_by_text("Images").first.wait_for(timeout=60_000)
            assert other.get_by_text("No model is loaded yet").count() == 0
        finally:
            other.close()
        no_exception_box(page)


@pytest.fixture(scope="module")
def both_server(yolo_dir, ssd_weights):
    yield from serving(models_env(ssd_weights, yolo_dir))


def test_both_models_side_by_side_fit_1400_px(page, both_server, images_dir):
    """At 1400 px with the sidebar open, each model's table shows every column (no horizontal scrolling) and
    the annotated pictures come first."""
    open_page(page, both_server.base)
    upload_images(page, [("coffee.png", (images_dir / "coffee.png").read_bytes())])
    page.get_by_text("Where SSD (torchvision) and YOLO (OpenCV DNN) agree").wait_for(timeout=120_000)
    tables = page.locator(f"{MAIN} [data-testid='stDataFrame']")
    tables.nth(2).wait_for(timeout=60_000)
    for i in range(2):  # SSD's and YOLO's tables (the third is the agreement's)
        overflow = tables.nth(i).evaluate(
            "el => { const s = el.querySelector('.dvn-scroller'); return s ? s.scrollWidth - s.clientWidth : -1 }"
        )
        assert 0 <= overflow <= 1, f"table {i} scrolls sideways by {overflow} px"
    first_image = page.locator(f"{MAIN} [data-testid='stImage']").first
    assert "coffee.png · ssd" in first_image.inner_text()  # the annotated picture, not the original, comes first
    no_exception_box(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-compare.png"), full_page=True)


def test_readme_screenshot(page, yolo_server, images_dir):
    """README's picture of the page: YOLO on the example coffee photo, as a visitor sees it at 1400x1000.
    Written to artifacts/page.jpg; with UPDATE_DOCS=1 also to docs/page.jpg (what README shows)."""
    open_page(page, yolo_server.base)
    page.locator("[data-testid='stSelectbox']").filter(has_text="Try an example").first.click()
    page.get_by_role("option", name="coffee.jpg").click()
    page.get_by_text("coffee.jpg · yolo").wait_for(timeout=120_000)
    page.locator(f"{MAIN} [data-testid='stImage'] img").first.evaluate("img => img.decode()")
    no_exception_box(page)
    page.wait_for_timeout(500)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page.jpg"), type="jpeg", quality=80)
    if os.environ.get("UPDATE_DOCS") == "1":
        shutil.copy(ARTIFACTS / "page.jpg", REPO / "docs" / "page.jpg")
