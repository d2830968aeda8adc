"""The app's benchmark (issue 3): slider latency without inference, memory per session, cold start.

    .venv/bin/python bench/app_bench.py [--sessions 8]

1. Slider change -> new table through streamlit.testing (AppTest), models cached: median rerun time
   and the number of network calls it made (must be 0).
2. Memory: resident memory (VmRSS) of one `python -m app serve` process with SSDlite and
   Yolo-Fastest-1.1 loaded, after one browser session detected on an image, then after N concurrent
   headless-Chromium sessions each detected on an image.
3. Cold start: process start -> /_stcore/health 200.
Without official SSD weights, seeded random SSDlite weights stand in (same architecture and memory).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from serving import Server  # noqa: E402

SHARED = Path(os.environ.get("OBJDET_SHARED_DIR", REPO.parent / "shared"))
YOLO = SHARED / "assets" / "weights" / "yolo-fastest-1.1"
COFFEE = SHARED / "assets" / "images" / "coffee.png"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def env_for(ssd: Path) -> dict:
    return {"OBJDET_MODELS": "ssd,yolo", "OBJDET_SSD_WEIGHTS": str(ssd),
            "OBJDET_YOLO_WEIGHTS": str(YOLO / "yolo-fastest-1.1.weights"),
            "OBJDET_YOLO_CONFIG": str(YOLO / "yolo-fastest-1.1.cfg"), "OBJDET_YOLO_NAMES": str(YOLO / "coco.names")}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def slider_bench(env: dict, repeats: int = 15) -> dict:
    os.environ.update(env)
    from streamlit.testing.v1 import AppTest

    from app.config import Settings
    from app.registry import get_detector

    at = AppTest.from_file(str(REPO / "app" / "streamlit_app.py"), default_timeout=300)
    at.run()
    settings = Settings.from_env()
    calls = {"n": 0}
    for model in settings.models:
        det = get_detector(model, settings)
        original = det.forward

        def counted(image, _orig=original):
            calls["n"] += 1
            return _orig(image)

        det.forward = counted
    at.file_uploader(key="images").set_value(("coffee.png", COFFEE.read_bytes(), "image/png")).run()
    first_calls = calls["n"]
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        at.slider(key="conf").set_value(0.35 + 0.05 * (i % 10)).run()
        times.append((time.perf_counter() - t0) * 1000)
    return {"upload_network_calls": first_calls, "slider_network_calls": calls["n"] - first_calls,
            "slider_rerun_median_ms": round(statistics.median(times), 1), "reruns": repeats}


def session(browser, base: str) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(base + "/", wait_until="domcontentloaded", timeout=120_000)
    page.get_by_text("Object detection: SSD and YOLO").wait_for(timeout=120_000)
    page.locator("[data-testid='stFileUploaderDropzoneInput']").first.set_input_files(str(COFFEE))
    page.locator("[data-testid='stDataFrame']").nth(1).wait_for(timeout=300_000)
    return page


def server_bench(env: dict, sessions: int) -> dict:
    from playwright.sync_api import sync_playwright

    t0 = time.monotonic()
    server = Server(env)
    try:
        server.wait_healthy(timeout=600)
        cold = time.monotonic() - t0
        pid = server.proc.pid
        loaded = rss_mb(pid)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
            pages = [session(browser, server.base)]
            time.sleep(1)
            one = rss_mb(pid)
            import concurrent.futures  # noqa: F401 - pages share one Playwright thread: open them in turn
            t1 = time.monotonic()
            for page in pages:
                page.close()
            pages = []
            # N sessions at once: start all uploads, then wait for every table
            for _ in range(sessions):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(server.base + "/", wait_until="domcontentloaded", timeout=120_000)
                pages.append(page)
            for page in pages:
                page.get_by_text("Object detection: SSD and YOLO").wait_for(timeout=120_000)
                page.locator("[data-testid='stFileUploaderDropzoneInput']").first.set_input_files(str(COFFEE))
            for page in pages:
                page.locator("[data-testid='stDataFrame']").nth(1).wait_for(timeout=300_000)
            concurrent_s = time.monotonic() - t1
            time.sleep(1)
            many = rss_mb(pid)
            browser.close()
        return {"cold_start_s": round(cold, 2), "rss_models_loaded_mb": round(loaded, 1),
                "rss_one_session_mb": round(one, 1), f"rss_{sessions}_sessions_mb": round(many, 1),
                "growth_vs_one_session_pct": round((many - one) / one * 100, 1),
                f"{sessions}_sessions_wall_s": round(concurrent_s, 1)}
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8)
    args = parser.parse_args()
    if not YOLO.exists():
        print(f"needs the shared assets at {SHARED} (OBJDET_SHARED_DIR)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        from ssd_weights import make_state_dict

        ssd = make_state_dict("ssdlite320_mobilenet_v3_large", Path(tmp) / "ssdlite-seed0.pth")
        env = env_for(ssd)
        report = server_bench(env, args.sessions)
        report.update(slider_bench(env))
    width = max(len(k) for k in report)
    for key, value in report.items():
        print(f"{key:{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
