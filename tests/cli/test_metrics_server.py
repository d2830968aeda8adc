"""``python -m app serve`` with both models and its metrics port, driven by a real Chromium session.

One good image and one file that is not an image go through the page; the metrics port must show
exactly that (per model: one image in each stage, the detections the page shows, one bad_image
failure, nothing else), and the JSON log one line per event. The metrics are not reachable through
Streamlit's port or base path, and the metrics port serves nothing else.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from support.serving import Server, free_port, models_env

pytestmark = [pytest.mark.browser, pytest.mark.server]

MODELS = ("ssd", "yolo")
STAGES = ("preprocess", "inference", "postprocess")
BASE_PATH = "kubernetes-object-detection"


@pytest.fixture(scope="module")
def served(yolo_dir, ssd_weights):
    metrics_port = free_port()
    env = models_env(ssd_weights, yolo_dir) | {
        "OBJDET_METRICS_PORT": str(metrics_port),
        "OBJDET_LOG_FORMAT": "json",
    }
    srv = Server(env, base_path=BASE_PATH)
    try:
        srv.wait_healthy()
        yield srv, f"http://127.0.0.1:{metrics_port}", env
    finally:
        srv.stop()


def fetch(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode("utf-8", "replace")


def scrape(metrics_url: str) -> dict[tuple[str, frozenset], float]:
    status, _, text = fetch(metrics_url + "/metrics")
    assert status == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_exactly_what_the_browser_did(browser, served, images_dir, tmp_path):
    server, metrics_url, env = served
    before = scrape(metrics_url)
    for model in MODELS:  # the state gauge and the weights' sha256 prefix, computed here independently
        assert sample(before, "objdet_model_state", model=model, state="loaded") == 1
        assert sample(before, "objdet_model_state", model=model, state="failed") == 0
        weights = env["OBJDET_SSD_WEIGHTS" if model == "ssd" else "OBJDET_YOLO_WEIGHTS"]
        digest = hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:12]
        assert sample(before, "objdet_model_weights_info", model=model, sha256=digest) == 1
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a picture\n" * 10)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(server.base + "/", wait_until="domcontentloaded", timeout=60_000)
        page.get_by_text("Object detection: SSD and YOLO").wait_for(timeout=60_000)
        uploader = page.locator("[data-testid='stFileUploaderDropzoneInput']").first
        uploader.set_input_files(str(images_dir / "coffee.png"))
        tables = page.locator("[data-testid='stDataFrame']")
        tables.nth(1).wait_for(timeout=120_000)  # one table per model
        shown = page.locator("[data-testid='stMetric']").filter(has_text="Detections")
        shown.nth(1).wait_for(timeout=30_000)
        page_counts = [int(t) for t in shown.locator("[data-testid='stMetricValue']").all_inner_texts()]
        uploader.set_input_files(str(bad))
        # two images now: the summary grid's row for the broken one carries its error
        page.locator("[role='gridcell']").filter(has_text="broken.png: not an image").first.wait_for(
            state="attached", timeout=60_000
        )
        during = scrape(metrics_url)
        assert sample(during, "objdet_sessions") == 1
    finally:
        page.close()
    after = scrape(metrics_url)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert len(page_counts) == len(MODELS)
    for model, found in zip(MODELS, page_counts, strict=True):  # the page shows SSD's column first
        assert moved("objdet_images_total", model=model) == 1, model
        assert moved("objdet_detections_total", model=model) == found, model
        for stage in STAGES:
            assert moved("objdet_stage_seconds_count", model=model, stage=stage) == 1, (model, stage)
            assert moved("objdet_stage_seconds_bucket", model=model, stage=stage, le="+Inf") == 1
        assert moved("objdet_failures_total", model=model, kind="bad_image") == 1, model
        assert moved("objdet_failures_total", model=model, kind="model_error") == 0, model
        assert moved("objdet_failures_total", model=model, kind="timeout") == 0, model
        assert moved("objdet_video_frames_total", model=model) == 0
    for limit in ("file_bytes", "image_pixels"):  # a broken file is refused by no limit
        assert moved("objdet_uploads_refused_total", limit=limit) == 0
    assert sample(after, "objdet_inference_slots_in_use") == 0 and sample(after, "objdet_inference_slots") >= 1
    assert sample(after, "objdet_cache_bytes") > 0
    for name, labels in after:  # bounded labels: never a file name or a session id
        assert not any("coffee" in v or "broken" in v for _, v in labels), (name, labels)

    lines = server.text().splitlines()
    assert not [line for line in lines if line.startswith("[objdet]")], "OBJDET_LOG_FORMAT=json: every app line is JSON"
    events = [json.loads(line) for line in lines if line.startswith("{")]
    detections = [e for e in events if e["message"] == "detection"]
    width, height = Image.open(images_dir / "coffee.png").size
    assert sorted(e["model"] for e in detections) == sorted(MODELS)  # the warm-up is not an event
    for e in detections:
        assert set(e["timings_ms"]) == set(STAGES) and e["outcome"] == "ok"
        assert e["detections"] == page_counts[MODELS.index(e["model"])]
        assert (e["width"], e["height"]) != (0, 0) and max(e["width"], e["height"]) <= max(width, height)
    refused = [e for e in events if e["message"] == "input refused"]
    assert [(e["file"], e["level"]) for e in refused] == [("broken.png", "warning")]
    assert all(e["level"] in ("debug", "info", "warning", "error") for e in events)


def test_metrics_are_not_served_by_streamlit_and_the_metrics_port_serves_only_metrics(served):
    server, metrics_url, _ = served
    app_root = f"http://127.0.0.1:{server.port}"
    for url in (app_root + "/metrics", f"{server.base}/metrics"):
        status, content_type, body = fetch(url)
        assert "objdet_" not in body and "# TYPE" not in body, url
        assert not content_type.startswith("text/plain; version="), (url, content_type)
    # Streamlit's own /_stcore/metrics (session counts, cached function names) is closed on the app's port,
    # under the base URL path and without it; the health check still answers.
    for url in (f"{server.base}/_stcore/metrics", f"{app_root}/_stcore/metrics", f"{server.base}/_stcore/metrics?x=1"):
        status, _, body = fetch(url)
        assert status == 404 and "objdet_" not in body and "session" not in body, (url, status, body[:200])
    assert fetch(f"{server.base}/_stcore/health")[0] == 200
    for path in ("/", f"/{BASE_PATH}/", f"/{BASE_PATH}/metrics", f"/{BASE_PATH}/_stcore/health"):
        assert fetch(metrics_url + path)[0] == 404, path
    status, content_type, body = fetch(metrics_url + "/metrics")
    assert status == 200 and content_type.startswith("text/plain") and "objdet_images_total" in body


def test_idle_half_sent_requests_neither_pile_up_threads_nor_block_the_port_for_long(served):
    """300 connections that send half a request line and wait: the listener serves at most
    prometheus.MAX_CONNECTIONS at once (the others are closed without a thread) and closes each held one
    REQUEST_S after it was accepted; then a scrape answers."""
    import os
    import socket
    import time

    from app.ops.prometheus import MAX_CONNECTIONS, REQUEST_S

    server, metrics_url, _ = served
    port = int(metrics_url.rsplit(":", 1)[1])
    tasks = f"/proc/{server.proc.pid}/task"
    before = len(os.listdir(tasks))
    socks = []
    try:
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /metr")
            socks.append(sock)
        time.sleep(1.0)
        during = len(os.listdir(tasks))
        assert during <= before + MAX_CONNECTIONS, (before, during)
        start = time.monotonic()
        for sock in socks:  # every one is closed by the server: refused at once, or at its deadline
            sock.settimeout(REQUEST_S + 10)
            assert sock.recv(100) == b""
        assert time.monotonic() - start < REQUEST_S + 5
    finally:
        for sock in socks:
            sock.close()
    status, _, body = fetch(metrics_url + "/metrics")
    assert status == 200 and "objdet_images_total" in body
    assert len(os.listdir(tasks)) <= before + 1
