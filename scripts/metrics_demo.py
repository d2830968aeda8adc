"""Real data for docs/observability.md's dashboard picture: ``python -m app serve`` with both models and its
metrics port, several Chromium sessions uploading distinct images (and one file that is not an image
each), the metrics port scraped every half second; the dashboard's panels drawn from the scrapes.

    .venv/bin/python scripts/metrics_demo.py [--sessions 3] [--images 8] [--out docs/observability-dashboard.png]

The panels are those of components/monitoring/dashboard.json, computed here from the scraped samples
as PromQL would (rates and histogram quantiles over a sliding window). SSD runs on seeded random
weights (tests/support/ssd_weights.py): same architecture and cost as the published file. Pillow draws.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("OBJDET_SHARED_DIR", REPO.parent / "shared"))
MODELS = ("ssd", "yolo")
STAGES = ("preprocess", "inference", "postprocess")
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def distinct_images(folder: Path, count: int) -> list[Path]:
    """``count`` different PNGs (crops and scales of the shared test images): each is a new network run."""
    sources = [Image.open(p).convert("RGB") for p in sorted((SHARED / "assets" / "images").iterdir())]
    out = []
    for i in range(count):
        im = sources[i % len(sources)]
        w, h = im.size
        f = 1.0 - 0.05 * (i // len(sources))
        crop = im.crop((0, 0, int(w * f), int(h * f)))
        path = folder / f"demo-{i:02d}.png"
        crop.save(path)
        out.append(path)
    return out


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - our own loopback http URL
        text = r.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items())


def quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """PromQL's histogram_quantile over (upper bound, cumulative count) pairs."""
    buckets = sorted(buckets)
    total = buckets[-1][1]
    if total <= 0:
        return math.nan
    rank, prev_bound, prev_count = q * total, 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / max(count - prev_count, 1e-12)
        prev_bound, prev_count = bound, count
    return prev_bound


def series(scrapes: list[tuple[float, dict]], window: float):
    """The dashboard's panels as {panel: {legend: [(t, value)]}} from the scrapes."""
    panels: dict[str, dict[str, list]] = {
        "Latency p95 by model and stage (ms)": {},
        "Throughput (images/s)": {},
        "Failures (cumulative, by model and kind)": {},
        "Open sessions": {},
        "Inference slots": {},
        "Cache (MiB)": {},
    }
    t0 = scrapes[0][0]
    for i, (t, now) in enumerate(scrapes):
        j = max(k for k in range(i + 1) if t - scrapes[k][0] >= window or k == 0)
        tp, past = scrapes[j]
        x = t - t0
        dt = max(t - tp, 1e-9)
        for model in MODELS:
            for stage in STAGES:
                bounds = {
                    dict(ls)["le"]
                    for (n, ls) in now
                    if n == "objdet_stage_seconds_bucket" and dict(ls)["model"] == model and dict(ls)["stage"] == stage
                }
                buckets = [
                    (
                        float(le),
                        value(now, "objdet_stage_seconds_bucket", model=model, stage=stage, le=le)
                        - value(past, "objdet_stage_seconds_bucket", model=model, stage=stage, le=le),
                    )
                    for le in bounds
                ]
                if buckets and stage != "postprocess":
                    p95 = quantile(0.95, buckets) * 1000 if j < i else math.nan
                    panels["Latency p95 by model and stage (ms)"].setdefault(f"{model} {stage}", []).append((x, p95))
            rate = (
                value(now, "objdet_images_total", model=model) - value(past, "objdet_images_total", model=model)
            ) / dt
            panels["Throughput (images/s)"].setdefault(model, []).append((x, rate if j < i else 0.0))
            for kind in ("bad_image", "model_error"):
                panels["Failures (cumulative, by model and kind)"].setdefault(f"{model} {kind}", []).append(
                    (x, value(now, "objdet_failures_total", model=model, kind=kind))
                )
        panels["Open sessions"].setdefault("sessions", []).append((x, value(now, "objdet_sessions")))
        slots = panels["Inference slots"]
        slots.setdefault("in use", []).append((x, value(now, "objdet_inference_slots_in_use")))
        slots.setdefault("waiting", []).append((x, value(now, "objdet_inference_slots_waiting")))
        slots.setdefault("total", []).append((x, value(now, "objdet_inference_slots")))
        panels["Cache (MiB)"].setdefault("cache bytes", []).append((x, value(now, "objdet_cache_bytes") / 2**20))
    return panels


def draw(panels: dict, out: Path, subtitle: str) -> None:
    width, height, cols = 1500, 900, 3
    rows = math.ceil(len(panels) / cols)
    img = Image.new("RGB", (width, height), "#111217")
    d = ImageDraw.Draw(img)
    fonts = "/usr/share/fonts/truetype/dejavu/"
    try:
        font, small = ImageFont.truetype(fonts + "DejaVuSans.ttf", 16), ImageFont.truetype(fonts + "DejaVuSans.ttf", 12)
    except OSError:
        font = small = ImageFont.load_default()
    d.text((16, 10), "Object detection (objdet): metrics of a real serve process", fill="#e0e0e0", font=font)
    d.text((16, 32), subtitle, fill="#a0a0a0", font=small)
    top, pw, ph = 56, width // cols, (height - 56) // rows
    xmax = max(p[0] for lines in panels.values() for pts in lines.values() for p in pts) or 1
    for n, (title, lines) in enumerate(panels.items()):
        x0, y0 = (n % cols) * pw + 8, top + (n // cols) * ph + 4
        d.rectangle((x0, y0, x0 + pw - 16, y0 + ph - 8), fill="#181b1f", outline="#2c3235")
        d.text((x0 + 8, y0 + 6), title, fill="#e0e0e0", font=small)
        ax0, ay0, ax1, ay1 = x0 + 50, y0 + 28, x0 + pw - 28, y0 + ph - 70
        points = [p for pts in lines.values() for p in pts if not math.isnan(p[1])]
        if not points:
            continue
        ymax = max(p[1] for p in points) * 1.1 or 1
        for k in range(5):
            y, tick = ay1 - (ay1 - ay0) * k / 4, ymax * k / 4
            d.line((ax0, y, ax1, y), fill="#2c3235")
            d.text((x0 + 6, y - 7), f"{tick:.0f}" if ymax >= 20 else f"{tick:.2g}", fill="#a0a0a0", font=small)
        d.text((ax1 - 40, ay1 + 4), f"{xmax:.0f} s", fill="#a0a0a0", font=small)
        for c, (legend, pts) in enumerate(lines.items()):
            colour = COLOURS[c % len(COLOURS)]
            xy = [
                (ax0 + (ax1 - ax0) * px / xmax, ay1 - (ay1 - ay0) * py / ymax) for px, py in pts if not math.isnan(py)
            ]
            if len(xy) > 1:
                d.line(xy, fill=colour, width=2)
            lx, ly = x0 + 10 + (c % 3) * ((pw - 30) // 3), ay1 + 22 + (c // 3) * 15
            d.rectangle((lx, ly + 3, lx + 10, ly + 11), fill=colour)
            d.text((lx + 14, ly), legend, fill="#c0c0c0", font=small)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--images", type=int, default=8, help="distinct images per session")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "observability-dashboard.png")
    args = parser.parse_args()
    serving = load("_demo_serving", REPO / "tests" / "support" / "serving.py")
    ssd_weights = load("_demo_ssd_weights", REPO / "tests" / "support" / "ssd_weights.py")
    from playwright.sync_api import sync_playwright

    yolo = SHARED / "assets" / "weights" / "yolo-fastest-1.1"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ssd = ssd_weights.make_state_dict("ssdlite320_mobilenet_v3_large", tmp / "ssdlite.pth")
        images = distinct_images(tmp, args.sessions * args.images)
        bad = []  # one per session, each different: a refused content is counted once per process
        for s in range(args.sessions):
            bad.append(tmp / f"not-an-image-{s}.png")
            bad[-1].write_bytes(f"plain text {s}\n".encode())
        metrics_port = serving.free_port()
        server = serving.Server(
            serving.models_env(ssd, yolo, ",".join(MODELS))
            | {"OBJDET_METRICS_PORT": str(metrics_port), "OBJDET_LOG_LEVEL": "warning"}
        )
        scrapes: list[tuple[float, dict]] = []
        stop = threading.Event()

        def scraper():
            while not stop.is_set():
                scrapes.append((time.monotonic(), scrape(f"http://127.0.0.1:{metrics_port}/metrics")))
                stop.wait(0.5)

        try:
            server.wait_healthy()
            thread = threading.Thread(target=scraper, daemon=True)
            thread.start()
            time.sleep(2)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=serving.CHROMIUM_ARGS)
                pages = []
                for _ in range(args.sessions):
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    page.goto(server.base + "/", wait_until="domcontentloaded", timeout=60_000)
                    page.get_by_text("Object detection: SSD and YOLO").wait_for(timeout=60_000)
                    pages.append(page)
                    time.sleep(1)
                for s, page in enumerate(pages):  # every session uploads at once: they share the slots
                    mine = [str(p) for p in images[s * args.images : (s + 1) * args.images]] + [str(bad[s])]
                    page.locator("[data-testid='stFileUploaderDropzoneInput']").first.set_input_files(mine)
                for page in pages:
                    page.locator("[data-testid='stDataFrame']").nth(2 * args.images - 1).wait_for(timeout=600_000)
                time.sleep(3)
                for page in pages:
                    page.close()
                time.sleep(5)
                browser.close()
        finally:
            stop.set()
            server.stop()
    total = value(scrapes[-1][1], "objdet_images_total")
    subtitle = (
        f"{args.sessions} Chromium sessions x {args.images} distinct images + 1 bad file each (all distinct); "
        f"SSDlite (seeded) and Yolo-Fastest on {os.cpu_count()} CPUs; {int(total)} network runs; "
        "scraped every 0.5 s, 5 s windows"
    )
    draw(series(scrapes, 5.0), args.out, subtitle)
    print(f"{args.out}: {len(scrapes)} scrapes, {int(total)} network runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
