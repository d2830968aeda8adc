"""The app's benchmark: what a person waits for against a floor page, memory under concurrent sessions,
cold start, slider reruns without inference.

    .venv/bin/python bench/app_bench.py [--sessions 8] [--arena both|default|2] [--no-slider]
    .venv/bin/python bench/app_bench.py --latency [--repeats 5] [--moves 4]

0. Latency (``--latency``, on its own): one `python -m app serve` (SSDlite with seeded weights, Yolo-Fastest-1.1)
   and the floor page (bench/floor_page.py: receives the same upload, decodes it, draws one box and one text
   per picture, st.image, redrawn on every slider move) served at once, driven by one headless Chromium. Per
   scenario (coffee.png with YOLO; the 4 shared images with both models; coffee.png scaled up to a 12 MP JPEG at
   quality 90 with YOLO; the model chosen through the URL's ``model``)
   and page, ``--repeats`` new sessions alternated between the pages: the upload of freshly changed copies
   (one pixel per repetition, so no cache of either page has them) until every annotated picture (st.image
   captioned "<file> · <model>") is loaded and the script run is over, then ``--moves`` clicks on the
   "Score threshold" slider between 0.30 and 0.50 until a new picture is loaded and the run is over (Streamlit's
   ``data-test-script-state`` and the pictures' load events, in the page's clock). Prints the medians and
   the ratios to the floor as a table. ``--profile DIR``: the same steps once, on the app whose page runs
   under pyinstrument (bench/profiled_serve.py; ``pip install '.[bench]'``): per step the wait, the part until
   the script run is over, the page's script time on the server, the websocket and picture bytes received;
   pyinstrument's call trees into DIR.

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
import subprocess
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


# --- latency: the app against the floor page, in headless Chromium ------------------------------------------------

FLOOR_PAGE = Path(__file__).resolve().parent / "floor_page.py"
SHARED_IMAGES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")
# (name, URL query, images, pictures per image): the four rows are each scenario's upload and slider
# ("coffee.png@12": the shared image scaled up to a 12 MP JPEG, quality 90, as a phone's photo)
SCENARIOS = (
    ("1 image, YOLO", "model=yolo", ("coffee.png",), 1),
    ("4 images, both models", "model=both", SHARED_IMAGES, 2),
    ("1 photo of 12 MP, YOLO", "model=yolo", ("coffee.png@12",), 1),
)
# Installed in every page before Streamlit's own script: when the script run state changes (Streamlit's
# data-test-script-state on stApp) and when each <img> finishes loading, in the page's own clock.
WATCH_JS = """
window.__bench = {states: [], loads: new Map(), frames: []};
// Every websocket message from the server, in the page's clock: a script run that ends within one of the
// frontend's renders never shows "running" in the attribute below, but its messages always arrive.
const NativeSocket = window.WebSocket;
window.WebSocket = class extends NativeSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", () => window.__bench.frames.push(performance.now()));
  }
};
const watchApp = () => {
  const app = document.querySelector("[data-testid='stApp']");
  if (!app) { setTimeout(watchApp, 5); return; }
  const record = () => window.__bench.states.push([performance.now(), app.getAttribute("data-test-script-state")]);
  new MutationObserver(record).observe(app, {attributes: true, attributeFilter: ["data-test-script-state"]});
};
watchApp();
document.addEventListener("load", (e) => {
  if (e.target.tagName === "IMG") window.__bench.loads.set(e.target.currentSrc, performance.now());
}, true);
// The annotated pictures: st.image elements captioned "<file> · <model>" (both pages caption them so). The
// caption is read as textContent: innerText is empty inside a collapsed expander (not rendered), where the app
// puts each image's details when there are several, though its pictures are fetched and decoded all the same.
window.__pictures = () => [...document.querySelectorAll("[data-testid='stImage']")]
  .filter((el) => / · (yolo|ssd)$/.test(el.textContent.trim()))
  .map((el) => el.querySelector("img"));
"""
# Done: a script run started after t0 and finished (its "running" state seen, or, for a run too short for the
# frontend to show that state, its messages arrived and none came for 100 ms), the expected number of pictures
# are there, all loaded, and (for a slider move) at least one is new, or none changed a second after the run
# (the same detections give the same picture: nothing new to wait for). Returns [end, run end, changed]: the
# end is the later of the run's end (its last state change or message) and the last load of a picture.
DONE_JS = """([t0, count, before]) => {
  const b = window.__bench;
  const states = b.states.filter(([t]) => t >= t0);
  const frames = b.frames.filter((t) => t >= t0);
  const seen = states.some(([, s]) => s === "running");
  const quiet = frames.length > 0 && performance.now() - frames[frames.length - 1] >= 100;
  const state = document.querySelector("[data-testid='stApp']").getAttribute("data-test-script-state");
  if (!(seen || quiet) || state !== "notRunning") return null;
  const pictures = window.__pictures();
  if (pictures.length !== count || !pictures.every((i) => i.complete && i.naturalWidth > 0)) return null;
  const lastState = states.length ? states[states.length - 1][0] : 0;
  const runEnd = Math.max(lastState, frames.length ? frames[frames.length - 1] : 0);
  const changed = !before || pictures.some((i) => !before.includes(i.currentSrc));
  if (!changed && performance.now() - runEnd < 1000) return null;
  const loads = pictures.map((i) => b.loads.get(i.currentSrc) || 0).filter((t) => t >= t0);
  return [Math.max(runEnd, ...loads), runEnd, changed];
}"""


class Launched:
    """A Streamlit server of this repository on a free loopback port: ``args`` after the Python executable."""

    def __init__(self, args: list[str], env: dict | None = None, what: str = "server"):
        self.port, self.what = _serving.free_port(), what
        self.base = f"http://127.0.0.1:{self.port}"
        full = {k: v for k, v in os.environ.items() if not k.startswith(("OBJDET_", "STREAMLIT_"))} | (env or {})
        full |= {"STREAMLIT_SERVER_PORT": str(self.port), "STREAMLIT_SERVER_ADDRESS": "127.0.0.1"}
        full |= {"STREAMLIT_SERVER_HEADLESS": "true", "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
        self.proc = subprocess.Popen(
            [sys.executable, *args], cwd=REPO, env=full, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def wait_healthy(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while _serving.health(self.base + "/_stcore/health") != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {self.what} did not start (exit {self.proc.poll()})")
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def floor_page() -> Launched:
    """``streamlit run bench/floor_page.py``."""
    return Launched(["-m", "streamlit", "run", str(FLOOR_PAGE)], what="floor page")


def fresh_copies(folder: Path, names: tuple[str, ...], rep: int) -> list[Path]:
    """The shared images with one corner pixel changed per repetition: new content (both pages cache decodes and
    the app network outputs by content), the same pictures and detections."""
    import cv2

    out = folder / f"rep{rep}"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for spec in names:
        name, _, megapixels = spec.partition("@")
        source = SHARED / "assets" / "images" / name
        if megapixels:
            image = _from_tests("large_images").scaled_up(source, float(megapixels))
            name = f"{Path(name).stem}-{megapixels}mp.jpg"
        else:
            image = cv2.imread(str(source), cv2.IMREAD_COLOR)
        image[0, 0] = (rep * 37) % 256
        path = out / name
        params = [cv2.IMWRITE_JPEG_QUALITY, 90 if megapixels else 95] if name.endswith(".jpg") else []
        assert cv2.imwrite(str(path), image, params), path
        paths.append(path)
    return paths


class Traffic:
    """What the browser received: websocket frames (Streamlit's deltas) and /media/ responses (the pictures);
    and how long its main thread worked (Chromium's own counters, through the DevTools protocol)."""

    BUSY = ("TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration")

    def __init__(self, page):
        self.ws_bytes = self.ws_frames = self.media_bytes = self.media_files = 0
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))
        page.on("response", self._response)
        self.cdp = page.context.new_cdp_session(page)
        self.cdp.send("Performance.enable")

    def busy(self) -> dict[str, float]:
        """Seconds of main-thread work so far: all tasks, scripts, layout, style."""
        metrics = {m["name"]: m["value"] for m in self.cdp.send("Performance.getMetrics")["metrics"]}
        return {name: metrics.get(name, 0.0) for name in self.BUSY}

    def _frame(self, payload) -> None:
        self.ws_bytes += len(payload)
        self.ws_frames += 1

    def _response(self, response) -> None:
        if "/media/" in response.url:
            self.media_bytes += int(response.headers.get("content-length") or 0)
            self.media_files += 1

    def snapshot(self) -> tuple[int, int, int, int]:
        return self.ws_bytes, self.ws_frames, self.media_bytes, self.media_files


def open_page(browser, url: str):
    """A new session (its own context) on ``url``, ready: the uploader is there and no script runs; and what it
    receives (``Traffic``, listening from before the page loads)."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script(WATCH_JS)
    page = context.new_page()
    traffic = Traffic(page)
    page.goto(url, wait_until="domcontentloaded", timeout=120_000)
    page.locator("[data-testid='stFileUploaderDropzoneInput']").first.wait_for(state="attached", timeout=120_000)
    page.wait_for_function(
        "() => document.querySelector(\"[data-testid='stApp']\")?.getAttribute('data-test-script-state') "
        "=== 'notRunning'",
        timeout=120_000,
    )
    return context, page, traffic


def timed(page, action, count: int, changed: bool, timeout_ms: int = 300_000) -> tuple[float, float]:
    """Seconds from ``action`` to the pictures shown (``DONE_JS``), in the page's clock, and of them the
    seconds until the script run was over (the rest: fetching, decoding and painting the pictures)."""
    before = page.evaluate("() => window.__pictures().map((i) => i.currentSrc)") if changed else None
    t0 = page.evaluate("() => performance.now()")
    action()
    done = page.wait_for_function(DONE_JS, arg=[t0, count, before], timeout=timeout_ms, polling=5).json_value()
    end, run_end, changed = done
    if not changed:
        print(f"note: {page.url}: a slider move left every picture as it was", file=sys.stderr)
    return (end - t0) / 1000, (run_end - t0) / 1000


def move_slider(page, value: float, low: float = 0.05, high: float = 0.95) -> None:
    """Click the "Score threshold" slider's track where ``value`` lies: one change, one rerun."""
    group = page.get_by_role("group", name="Score threshold")
    track = group.locator("xpath=./div").first
    box = track.bounding_box()
    page.mouse.click(box["x"] + box["width"] * (value - low) / (high - low), box["y"] + box["height"] / 2)


def measure_page(browser, base: str, scenario, folder: Path, rep: int, moves: int, on_step=None) -> dict:
    """One session: the upload (fresh content), then ``moves`` slider moves between 0.30 and 0.50. ``on_step``
    (name, seconds, script seconds, traffic delta) is called after each step (the profile's bookkeeping)."""
    _, query, names, per_image = scenario
    count = per_image * len(names)
    context, page, traffic = open_page(browser, f"{base}/?{query}")
    try:
        files = [str(p) for p in fresh_copies(folder, names, rep)]
        uploader = page.locator("[data-testid='stFileUploaderDropzoneInput']").first

        def step(name, action, changed):
            before, busy = traffic.snapshot(), traffic.busy() if on_step is not None else {}
            total, script = timed(page, action, count, changed)
            if on_step is not None:
                busy = {k: v - busy[k] for k, v in traffic.busy().items()}
                page.wait_for_timeout(200)  # the last frames and picture responses are counted
                on_step(name, total, script, [a - b for a, b in zip(traffic.snapshot(), before, strict=True)], busy)
            return total

        upload = step("upload", lambda: uploader.set_input_files(files), False)
        slider = []
        for move in range(moves):
            value = 0.50 if move % 2 == 0 else 0.30
            slider.append(step("slider", lambda value=value: move_slider(page, value), True))
            shown = page.get_by_role("slider", name="Score threshold").get_attribute("aria-valuetext")
            assert shown == f"{value:.2f}", f"the slider shows {shown}, not {value:.2f}"
        return {"upload": upload, "slider": slider}
    finally:
        context.close()


def latency_bench(env: dict, repeats: int, moves: int, scenarios=SCENARIOS) -> list[dict]:
    """Both pages served at once, one Chromium; for each scenario ``repeats`` sessions per page, the pages
    alternated (app first, then floor first); medians of the steps and their ratios."""
    from playwright.sync_api import sync_playwright

    server, floor = Server(env), floor_page()
    rows = []
    try:
        server.wait_healthy(timeout=600)
        floor.wait_healthy()
        with sync_playwright() as p, tempfile.TemporaryDirectory() as tmp:
            browser = p.chromium.launch(executable_path=_serving.CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                pages = {"app": server.base, "floor": floor.base}
                for scenario in scenarios:
                    for kind, base in pages.items():  # warm-up: each page's first session loads its libraries
                        measure_page(browser, base, scenario, Path(tmp, f"warm-{kind}"), 0, 1)
                    found = {kind: {"upload": [], "slider": []} for kind in pages}
                    for rep in range(1, repeats + 1):
                        for kind in list(pages) if rep % 2 else list(pages)[::-1]:
                            got = measure_page(browser, pages[kind], scenario, Path(tmp, kind), rep, moves)
                            found[kind]["upload"].append(got["upload"])
                            found[kind]["slider"].extend(got["slider"])
                    rows.append({"scenario": scenario[0], **found})
            finally:
                browser.close()
    finally:
        server.stop()
        floor.stop()
    return rows


def profile_bench(env: dict, out_dir: Path) -> list[dict]:
    """The app's page under pyinstrument (bench/profiled_serve.py), one session per scenario as in
    ``latency_bench``: per step the browser's wait, the part until the script run was over, the server's time
    in the page's script runs (pyinstrument's wall time; its call trees go to ``out_dir``), and the bytes the
    browser received (websocket deltas; pictures from /media/)."""
    import json

    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp, "runs")
        runs.mkdir()
        server = Launched(
            [str(REPO / "bench" / "profiled_serve.py")], env | {"OBJDET_BENCH_PROFILE_DIR": str(runs)}, "profiled app"
        )
        try:
            server.wait_healthy()
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=_serving.CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                try:
                    measure_page(browser, server.base, SCENARIOS[-1], Path(tmp, "warm"), 0, 1)
                    for scenario in SCENARIOS:
                        for old in runs.iterdir():
                            old.unlink()

                        def on_step(name, total, script, traffic, busy, scenario=scenario):
                            reruns = sorted(runs.glob("run-*.json"))
                            docs = [json.loads(r.read_text()) for r in reruns]
                            wall = [d["wall_ms"] for d in docs]
                            calls: dict[str, float] = {}
                            for doc in docs:
                                for call, seconds in doc["streamlit_s"].items():
                                    calls[call] = calls.get(call, 0.0) + seconds
                            slug = scenario[0].split(",")[0].replace(" ", "-")
                            for i, run in enumerate(reruns):
                                run.with_suffix(".txt").replace(out_dir / f"{slug}-{len(rows):02d}-{name}-{i}.txt")
                                run.unlink()
                            rows.append(
                                {"scenario": scenario[0], "step": name, "total": total, "script": script}
                                | {"server_ms": wall, "traffic": traffic, "streamlit_s": calls, "browser_s": busy}
                            )

                        measure_page(browser, server.base, scenario, Path(tmp, "p"), 1, 2, on_step)
                finally:
                    browser.close()
        finally:
            server.stop()
    return rows


def print_profile(rows: list[dict], out_dir: Path) -> None:
    print(f"pyinstrument call trees: {out_dir}")
    print(
        "| step | browser waits | page script runs (server) | browser main thread: all (scripts, layout, style) "
        "| websocket | pictures |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        ws_bytes, frames, media_bytes, files = r["traffic"]
        runs = " + ".join(f"{ms:.0f}" for ms in r["server_ms"]) or "-"
        b = {k: v * 1e3 for k, v in r["browser_s"].items()}
        busy = (
            f"{b['TaskDuration']:.0f} ms ({b['ScriptDuration']:.0f}, {b['LayoutDuration']:.0f}, "
            f"{b['RecalcStyleDuration']:.0f})"
        )
        print(
            f"| {r['scenario']}: {r['step']} | {r['total']:.3f} s | {runs} ms | {busy} | "
            f"{ws_bytes / 1024:.1f} KiB in {frames} frames | {media_bytes / 1024:.1f} KiB in {files} files |"
        )
    print()
    print("Inside the page's script runs, per Streamlit command (ms, summed over the step's runs):")
    for r in rows:
        calls = sorted(r["streamlit_s"].items(), key=lambda kv: -kv[1])
        listed = ", ".join(f"{name} {seconds * 1e3:.0f}" for name, seconds in calls)
        print(f"- {r['scenario']}: {r['step']}: {listed}")


def print_latency(rows: list[dict]) -> None:
    print("| what the user does | floor (minimal Streamlit page) | this app | ratio |")
    print("|---|---|---|---|")
    for row in rows:
        for step, label in (("upload", "upload, until the annotated pictures show"), ("slider", "move the threshold")):
            floor, app = statistics.median(row["floor"][step]), statistics.median(row["app"][step])
            n = len(row["app"][step])
            print(f"| {row['scenario']}: {label} (median of {n}) | {floor:.3f} s | {app:.3f} s | {app / floor:.2f}x |")


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
    parser.add_argument(
        "--latency", action="store_true", help="only the latency table: this app against bench/floor_page.py"
    )
    parser.add_argument("--repeats", type=int, default=5, help="--latency: sessions per page and scenario")
    parser.add_argument("--moves", type=int, default=4, help="--latency: slider moves per session")
    parser.add_argument(
        "--scenario",
        action="append",
        metavar="TEXT",
        help="--latency: only the scenarios whose name contains TEXT (repeatable), e.g. '1 image'",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="only the profile: the page under pyinstrument (the `bench` extra), call trees into DIR",
    )
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
        if args.latency:
            chosen = [s for s in SCENARIOS if not args.scenario or any(t in s[0] for t in args.scenario)]
            print_latency(latency_bench(env, args.repeats, args.moves, chosen))
            return 0
        if args.profile:
            print_profile(profile_bench(env, args.profile), args.profile)
            return 0
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
