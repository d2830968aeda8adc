"""The app's benchmark: slider latency without inference, memory under concurrent sessions,
cold start.

    .venv/bin/python bench/app_bench.py [--sessions 8] [--arena both|default|2] [--no-slider]

1. Memory: one `python -m app serve` process with SSDlite and Yolo-Fastest-1.1 loaded;
   N concurrent headless-Chromium sessions (one browser process, one small page per browser context) each
   upload the largest image the default limits allow (a 6320x6320 PNG, just under 40 MP, patterns plus a
   pasted real photo) and wait for both models' tables; then every page closes. VmRSS and VmHWM of the
   server are sampled from /proc every 100 ms. Reported: idle RSS (models loaded, no page served yet),
   idle RSS after one small session (coffee.png) came and went (the page's libraries, e.g. pyarrow for
   the tables, are loaded by the first session and stay), peak RSS while the N sessions ran, RSS after
   the pages closed and a settle time. Run without MALLOC_ARENA_MAX and with
   MALLOC_ARENA_MAX=2 (``--arena``). Target: peak < 75 % of the Deployment's 2Gi limit (1536 MiB), after
   close within 15 % of idle.
2. Cold start: process start -> /_stcore/health 200 (first server run).
3. Slider change -> new table through streamlit.testing (AppTest), models cached: median rerun time
   and the number of network calls it made (must be 0).
Without official SSD weights, seeded random SSDlite weights stand in (same architecture and memory).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _from_tests(module: str):
    """A helper module of tests/ (the server runner, the seeded SSD weights) loaded by file path, so the
    bench shares them without putting tests/ on sys.path."""
    spec = importlib.util.spec_from_file_location(f"_bench_{module}", REPO / "tests" / "support" / f"{module}.py")
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


_serving = _from_tests("serving")
Server = _serving.Server

SHARED = Path(os.environ.get("OBJDET_SHARED_DIR", REPO.parent / "shared"))
YOLO = SHARED / "assets" / "weights" / "yolo-fastest-1.1"
COFFEE = SHARED / "assets" / "images" / "coffee.png"
CHROMIUM_ARGS = [*_serving.CHROMIUM_ARGS, "--disable-dev-shm-usage"]  # 8 pages share /dev/shm
LIMIT_MIB = 2048  # the Deployment's memory limit (base/deployment.yaml: 2Gi)
BIG_SIDE = 6320  # 6320 x 6320 = 39,942,400 pixels: just under the 40 MP default of OBJDET_MAX_IMAGE_PIXELS


def env_for(ssd: Path) -> dict:
    return {
        "OBJDET_MODELS": "ssd,yolo",
        "OBJDET_SSD_WEIGHTS": str(ssd),
        "OBJDET_YOLO_WEIGHTS": str(YOLO / "yolo-fastest-1.1.weights"),
        "OBJDET_YOLO_CONFIG": str(YOLO / "yolo-fastest-1.1.cfg"),
        "OBJDET_YOLO_NAMES": str(YOLO / "coco.names"),
    }


def make_big_pngs(folder: Path, count: int, side: int = BIG_SIDE) -> list[Path]:
    """``count`` highly compressible PNGs of side x side pixels: gradients and stripes with the coffee
    photo enlarged (nearest neighbour, x10: 6000x4000) in the middle, so both networks find objects in it. Each
    carries a different stamp in a corner, so every session uploads its own image (no sharing)."""
    import cv2
    import numpy as np

    rows = np.arange(side, dtype=np.uint16)
    image = np.empty((side, side, 3), np.uint8)
    image[..., 0] = (rows[:, None] // 8 % 256).astype(np.uint8)
    image[..., 1] = (rows[None, :] // 16 % 256).astype(np.uint8)
    image[..., 2] = np.where((rows[:, None] // 64 + rows[None, :] // 64) % 2 == 0, 200, 40).astype(np.uint8)
    photo = cv2.imread(str(COFFEE), cv2.IMREAD_COLOR)  # BGR, as imwrite expects
    photo = cv2.resize(photo, None, fx=10, fy=10, interpolation=cv2.INTER_NEAREST)
    top, left = (side - photo.shape[0]) // 2, (side - photo.shape[1]) // 2
    image[top : top + photo.shape[0], left : left + photo.shape[1]] = photo
    paths = []
    for index in range(count):
        image[:32, :32] = (index * 29) % 256
        path = folder / f"big-{side}x{side}-{index}.png"
        if not cv2.imwrite(str(path), image, [cv2.IMWRITE_PNG_COMPRESSION, 6]):
            raise RuntimeError(f"cannot write {path}")
        paths.append(path)
    return paths


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS since the process started) of ``pid``, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def rss_mib(pid: int) -> float:
    return memory_kib(pid)["VmRSS"] / 1024


class Sampler(threading.Thread):
    """Samples the server's VmRSS every 100 ms; ``peak_mib`` is the largest since the last ``reset``."""

    def __init__(self, pid: int, period_s: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.period_s = pid, period_s
        self.peak_kib = 0
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.period_s):
            try:
                rss = memory_kib(self.pid)["VmRSS"]
            except (OSError, KeyError):
                return
            self.peak_kib = max(self.peak_kib, rss)
            self.samples += 1

    def reset(self) -> None:
        self.peak_kib = 0

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def settle_rss(pid: int, seconds: float) -> float:
    """RSS after ``seconds`` of quiet (the smallest of the last few samples: allocator noise aside)."""
    time.sleep(max(0.0, seconds - 2))
    samples = []
    for _ in range(5):
        samples.append(rss_mib(pid))
        time.sleep(0.4)
    return min(samples)


def run_sessions(base: str, images: list[Path], timeout_ms: int = 600_000) -> float:
    """One page per image (one browser, one context each) uploads it, all at about the same time; returns the
    seconds until every page shows both models' tables. Closes everything before returning."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        try:
            contexts = [browser.new_context(viewport={"width": 900, "height": 700}) for _ in images]
            pages = [c.new_page() for c in contexts]
            for page in pages:
                page.goto(base + "/", wait_until="domcontentloaded", timeout=120_000)
            for page in pages:
                page.get_by_text("Object detection: SSD and YOLO").wait_for(timeout=120_000)
            t0 = time.monotonic()
            for page, image in zip(pages, images, strict=True):  # each call returns once the file is handed over
                page.locator("[data-testid='stFileUploaderDropzoneInput']").first.set_input_files(str(image))
            for page in pages:
                page.locator("[data-testid='stDataFrame']").nth(1).wait_for(state="attached", timeout=timeout_ms)
            wall = time.monotonic() - t0
            for context in contexts:
                context.close()
        finally:
            browser.close()
    return wall


def memory_bench(env: dict, images: list[Path], settle_s: float, arena: str | None) -> dict:
    """One server run: idle, peak during N sessions, after they closed (see the module docstring)."""
    env = dict(env)
    if arena:
        env["MALLOC_ARENA_MAX"] = arena
    t0 = time.monotonic()
    server = Server(env)
    try:
        server.wait_healthy(timeout=600)
        cold = time.monotonic() - t0
        pid = server.proc.pid
        idle = settle_rss(pid, 5)
        run_sessions(server.base, [COFFEE])  # one small session first: the page's libraries load once
        idle_warm = settle_rss(pid, 8)
        sampler = Sampler(pid)
        sampler.start()
        try:
            wall = run_sessions(server.base, images)
            peak = sampler.peak_mib
            after = settle_rss(pid, settle_s)
        finally:
            sampler.stop()
        hwm = memory_kib(pid)["VmHWM"] / 1024
    finally:
        server.stop()
    tag, sessions = f"arena={arena or 'default'}", len(images)
    return {
        f"{tag} cold_start_s": round(cold, 1),
        f"{tag} rss_idle_mib": round(idle),
        f"{tag} rss_idle_after_one_small_session_mib": round(idle_warm),
        f"{tag} rss_peak_{sessions}_sessions_mib": round(peak),
        f"{tag} peak_pct_of_2Gi": round(peak / LIMIT_MIB * 100, 1),
        f"{tag} vmhwm_mib": round(hwm),
        f"{tag} rss_after_close_{settle_s:g}s_mib": round(after),
        f"{tag} after_close_vs_idle_pct": round((after - idle) / idle * 100, 1),
        f"{tag} after_close_vs_idle_after_one_small_session_pct": round((after - idle_warm) / idle_warm * 100, 1),
        f"{tag} {sessions}_sessions_wall_s": round(wall, 1),
        f"{tag} samples": sampler.samples,
    }


def slider_bench(env: dict, repeats: int = 15) -> dict:
    os.environ.update(env)
    from streamlit.testing.v1 import AppTest

    from app.engine.config import Settings
    from app.engine.registry import get_detector

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
    return {
        "upload_network_calls": first_calls,
        "slider_network_calls": calls["n"] - first_calls,
        "slider_rerun_median_ms": round(statistics.median(times), 1),
        "reruns": repeats,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument(
        "--arena",
        choices=["both", "default", "2"],
        default="both",
        help="run without MALLOC_ARENA_MAX, with MALLOC_ARENA_MAX=2, or both (default)",
    )
    parser.add_argument("--settle", type=float, default=20.0, help="seconds after the pages close")
    parser.add_argument(
        "--image",
        type=Path,
        help="every session uploads this image (shared) instead of its own generated 6320x6320 PNG",
    )
    parser.add_argument("--no-slider", action="store_true", help="skip the AppTest slider benchmark")
    args = parser.parse_args()
    if not YOLO.exists():
        print(f"needs the shared assets at {SHARED} (OBJDET_SHARED_DIR)", file=sys.stderr)
        return 2
    report: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        ssd = _from_tests("ssd_weights").make_state_dict(
            "ssdlite320_mobilenet_v3_large", Path(tmp) / "ssdlite-seed0.pth"
        )
        env = env_for(ssd)
        images = [args.image] * args.sessions if args.image else make_big_pngs(Path(tmp), args.sessions)
        report["images"] = f"{len(set(images))} distinct, {images[0].name} {images[0].stat().st_size / 2**20:.1f} MiB"
        arenas = {"both": [None, "2"], "default": [None], "2": ["2"]}[args.arena]
        for arena in arenas:
            report.update(memory_bench(env, images, args.settle, arena))
        if not args.no_slider:
            report.update(slider_bench(env))
    width = max(len(k) for k in report)
    for key, value in report.items():
        print(f"{key:{width}}  {value}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
