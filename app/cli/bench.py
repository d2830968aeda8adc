"""``python -m app bench``: the raw framework call against the full pipeline, in one process.

Raw: ``net.forward`` on a ready blob (YOLO); the torchvision model called on a ready tensor with
the same thresholds (SSD). Pipeline: preprocess + inference + postprocess from a decoded image
(file decoding excluded). Runs alternate raw / pipeline so that machine noise hits both alike;
medians and their ratio are printed. Each family's ``bench_settings`` says which weights are timed:
without an SSD weights file, seeded random weights stand in (same architecture and cost; see docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from ..engine.catalog import family
from ..engine.config import REPO_ROOT, Settings
from ..engine.detectors.base import ModelLoadError, ms_since
from ..engine.images import ImageError, load_image
from ..engine.result import DetectParams

DEFAULT_IMAGES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")


def _default_images() -> list[Path]:
    shared = Path(os.environ.get("OBJDET_SHARED_DIR", REPO_ROOT.parent / "shared"))
    return [shared / "assets" / "images" / name for name in DEFAULT_IMAGES]


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return ms_since(t0)


def run_bench(args, settings: Settings) -> int:
    from ..engine.registry import BUILD_COUNT, get_detector

    images = [Path(p) for p in args.images] or _default_images()
    try:  # every image or none: figures over fewer images than asked would not compare with other runs
        arrays = [
            load_image(p, max_pixels=settings.max_image_pixels, max_bytes=settings.max_file_bytes) for p in images
        ]
    except ImageError as exc:
        print(f"error: {exc}; nothing was timed (give only images that decode)", file=sys.stderr)
        return 1
    params = DetectParams(conf=0.3, iou=0.45, max_det=100)
    models = list(settings.models) if args.model == "all" else [args.model]
    report = {"images": [str(p) for p in images], "repeat": args.repeat, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            fam = family(model)
            try:
                model_settings, source = fam.detector_class().bench_settings(settings, Path(tmp))
            except ImportError as exc:
                print(f"error: {model}: {fam.label} cannot be imported ({exc}); {fam.install_hint}", file=sys.stderr)
                return 1
            t0 = time.perf_counter()
            try:
                detector = get_detector(model, model_settings)
            except ModelLoadError as exc:  # a damaged or mismatched model file: one message, no traceback
                print(f"error: {model}: {exc}", file=sys.stderr)
                return 1
            build_ms = ms_since(t0)
            raw_calls = [detector.baseline(image, params) for image in arrays]
            for image, raw_call in zip(arrays, raw_calls, strict=True):  # warm-up
                raw_call()
                detector.detect(image, params)
            raw_ms, pipe_ms = [], []
            for _ in range(args.repeat):
                for image, raw_call in zip(arrays, raw_calls, strict=True):
                    raw_ms.append(_time(raw_call))
                    pipe_ms.append(_time(partial(detector.detect, image, params)))
            raw_med, pipe_med = statistics.median(raw_ms), statistics.median(pipe_ms)
            report["models"][model] = {
                "weights": source,
                "input_size": detector.input_size,
                "build_ms": round(build_ms, 1),
                "constructions": BUILD_COUNT.get(model, 0),
                "raw_median_ms": round(raw_med, 3),
                "pipeline_median_ms": round(pipe_med, 3),
                "ratio": round(pipe_med / raw_med, 4),
                "runs": len(raw_ms),
            }
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print(f"{len(arrays)} images x {args.repeat} runs, alternating raw / pipeline, one process")
        print(f"{'model':6} {'raw median ms':>14} {'pipeline ms':>12} {'ratio':>7} {'builds':>7}  weights")
        for model, r in report["models"].items():
            print(
                f"{model:6} {r['raw_median_ms']:14.2f} {r['pipeline_median_ms']:12.2f} {r['ratio']:7.3f} "
                f"{r['constructions']:7d}  {r['weights']}"
            )
    return 0


# --- across processes: `python -m app bench --compare` ----------------------------------------------------------

# (numerator, denominator, what is compared, target): each ratio is taken within one run of --compare.
COMPARISONS = (
    ("yolo-cv4", "yolo-cv5", "pipeline", "YOLO pipeline: OpenCV 4 / OpenCV 5 (converted ONNX)", ">= 1.5"),
    ("yolo-cv4", "yolo-cv5", "raw", "YOLO raw forward: OpenCV 4 / OpenCV 5", None),
    ("ssd-contiguous", "ssd-onnxruntime", "pipeline", "SSD pipeline: torch contiguous / onnxruntime", ">= 2"),
    ("ssd-torch", "ssd-onnxruntime", "pipeline", "SSD pipeline: torch engine (channels_last) / onnxruntime", None),
    ("ssd-contiguous", "ssd-torch", "pipeline", "SSD pipeline: torch contiguous / torch channels_last", None),
    ("ssd-onnxruntime", "ssd-contiguous", "pipeline/raw", "SSD fast pipeline / raw torchvision call", "<= 1.10"),
    ("ssd-onnxruntime", "ssd-onnxruntime", "pipeline/raw", "SSD fast pipeline / its onnxruntime session", None),
    ("yolo-after-ssd", "yolo-after-ssd", "pipeline/raw", "YOLO detect after SSD / alone (one process)", "<= 1.10"),
    ("yolo-after-sweep", "yolo-after-sweep", "pipeline/raw", "YOLO detect after a cache sweep / alone", None),
    ("yolo-twin", "yolo-only", "pipeline", "Noise floor: YOLO pipeline, twin process / YOLO-only", None),
    ("yolo-cv5", "yolo-cv5", "pipeline/raw", "YOLO pipeline / raw forward, OpenCV 5", "<= 1.15"),
)


def reference_ms() -> float:
    """A fixed single-threaded workload (pure Python), timed at each block start: when the machine
    flips to a slower state, this figure says so next to the block's timings."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        total = 0
        for i in range(300_000):
            total += i * i
        best = min(best, ms_since(t0))
    return best


def _interpreter(opencv_major: int | None) -> str | None:
    """This Python, or (for a YOLO variant) the first of the repository's environments whose OpenCV has
    that major version: OpenCV 4 and 5 live in separate environments."""
    candidates = [sys.executable, *(str(p) for p in sorted(REPO_ROOT.glob(".venv*/bin/python")))]
    if opencv_major is None:
        return sys.executable
    for python in dict.fromkeys(candidates):
        try:
            out = subprocess.run(
                [python, "-c", "import cv2; print(cv2.__version__)"], capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip().split(".")[0] == str(opencv_major):
            return python
    return None


class _Variant:
    """A running worker process (app/cli/bench_worker.py) and the timings it sent back, per block."""

    def __init__(self, name: str, python: str | None, images: list[Path], folder: str):
        self.name, self.python, self.blocks, self.info = name, python, [], {}
        self.proc = None
        if python is None:
            self.info = {"error": f"no Python with OpenCV {name[-1]} found (the repository's .venv* environments)"}
            return
        self.proc = subprocess.Popen(
            [python, "-m", "app.cli.bench_worker", name, folder, *map(str, images)],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.info = json.loads(self.proc.stdout.readline() or '{"error": "the worker exited at start"}')
        if "error" in self.info:
            self.close()

    @property
    def ok(self) -> bool:
        return self.proc is not None and "error" not in self.info

    def run(self, count: int, ref: float) -> None:
        self.proc.stdin.write(f"run {count}\n")
        self.proc.stdin.flush()
        self.blocks.append({"reference_ms": ref, **json.loads(self.proc.stdout.readline())})

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)

    def median(self, kind: str) -> float:
        return statistics.median(t for b in self.blocks for t in b[kind])

    def block_medians(self, kind: str) -> list[float]:
        return [statistics.median(b[kind]) for b in self.blocks]


def run_compare(args, settings: Settings) -> int:
    """Each variant in its own worker process, blocks rotated (variant order shifts by one each block),
    one worker timing at a time; medians, ratios within this run, spread and each block's machine state."""
    from .bench_worker import VARIANTS

    images = [Path(p) for p in args.images] or _default_images()
    names = list(VARIANTS) if not args.variants else args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        print(f"error: unknown variant {', '.join(unknown)}; allowed: {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        variants = {}
        for name in names:
            major = int(name.split("-cv")[1]) if "-cv" in name else None
            variants[name] = _Variant(name, _interpreter(major), images, tmp)
        running = [v for v in variants.values() if v.ok]
        try:
            for block in range(args.blocks):
                order = running[block % len(running) :] + running[: block % len(running)] if running else []
                for variant in order:
                    variant.run(args.repeat, reference_ms())
        finally:
            for variant in variants.values():
                variant.close()
    report = _compare_report(variants, images, args)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        _print_compare(report)
    return 0


def _compare_report(variants: dict, images: list[Path], args) -> dict:
    rows = {}
    for name, v in variants.items():
        if not v.ok:
            rows[name] = {"available": False, "why": v.info.get("error", "")}
            continue
        raw, pipe = v.block_medians("raw"), v.block_medians("pipeline")
        rows[name] = {
            "available": True,
            "raw_median_ms": round(v.median("raw"), 3),
            "pipeline_median_ms": round(v.median("pipeline"), 3),
            "raw_block_medians_ms": [round(x, 3) for x in raw],
            "pipeline_block_medians_ms": [round(x, 3) for x in pipe],
            "reference_ms": [round(b["reference_ms"], 2) for b in v.blocks],
            "runs": sum(len(b["raw"]) for b in v.blocks),
            "build_ms": round(v.info["build_ms"], 1),
            "versions": v.info["versions"],
            "weights": v.info["weights"],
            "what": v.info["what"],
        }
    ratios = []
    for num, den, kind, label, target in COMPARISONS:
        a, b = rows.get(num, {}), rows.get(den, {})
        if not (a.get("available") and b.get("available")):
            ratios.append({"what": label, "ratio": None, "target": target})
            continue
        top, bottom = ("pipeline", "raw") if kind == "pipeline/raw" else (kind, kind)
        ratio = a[f"{top}_median_ms"] / b[f"{bottom}_median_ms"]
        per_block = [
            x / y for x, y in zip(a[f"{top}_block_medians_ms"], b[f"{bottom}_block_medians_ms"], strict=False) if y > 0
        ]
        ratios.append(
            {
                "what": label,
                "ratio": round(ratio, 3),
                "block_range": [round(min(per_block), 3), round(max(per_block), 3)] if per_block else None,
                "target": target,
            }
        )
    ratios.append(_after_ssd_vs_yolo_only(rows))
    return {
        "images": [str(p) for p in images],
        "blocks": args.blocks,
        "runs_per_image_per_block": args.repeat,
        "variants": rows,
        "ratios": ratios,
    }


def _print_compare(report: dict) -> None:
    print(
        f"{len(report['images'])} images x {report['runs_per_image_per_block']} runs x {report['blocks']} blocks "
        "per variant; each variant its own process, blocks rotated"
    )
    print(f"{'variant':16} {'raw ms':>8} {'pipe ms':>8} {'pipe/raw':>8}  {'block medians (pipeline)':28} ref ms")
    for name, r in report["variants"].items():
        if not r["available"]:
            print(f"{name:16} not available: {r['why']}")
            continue
        blocks = ", ".join(f"{x:.2f}" for x in r["pipeline_block_medians_ms"])
        refs = ", ".join(f"{x:.1f}" for x in r["reference_ms"])
        ratio = r["pipeline_median_ms"] / r["raw_median_ms"]
        print(f"{name:16} {r['raw_median_ms']:8.2f} {r['pipeline_median_ms']:8.2f} {ratio:8.3f}  {blocks:28} {refs}")
    print()
    print(f"{'ratio (this run)':52} {'median':>7} {'blocks':>15} target")
    for r in report["ratios"]:
        value = "n/a" if r["ratio"] is None else f"{r['ratio']:.3f}"
        spread = "" if not r.get("block_range") else f"{r['block_range'][0]:.2f}-{r['block_range'][1]:.2f}"
        print(f"{r['what']:52} {value:>7} {spread:>15} {r['target'] or ''}")


def _after_ssd_vs_yolo_only(rows: dict) -> dict:
    """YOLO right after SSD against YOLO in a process that never loaded torch, on the same OpenCV: the
    in-process "alone" blocks cannot show a pool that keeps spinning between calls (it slows both)."""
    label = "YOLO detect after SSD / YOLO-only process (same OpenCV)"
    after = rows.get("yolo-after-ssd", {})
    cv = after.get("versions", {}).get("cv2") if after.get("available") else None
    alone = next(
        (
            r
            for n, r in rows.items()
            if n in ("yolo-only", "yolo-cv4", "yolo-cv5") and r.get("available") and r["versions"]["cv2"] == cv
        ),
        None,
    )
    if alone is None:
        return {"what": label, "ratio": None, "target": "<= 1.10"}
    return {
        "what": label,
        "ratio": round(after["pipeline_median_ms"] / alone["pipeline_median_ms"], 3),
        "block_range": None,
        "target": "<= 1.10",
    }


def cmd_bench(args, settings: Settings) -> int:
    """``bench``: raw framework call against the pipeline, or ``--compare``: engines in their own processes."""
    return run_compare(args, settings) if args.compare else run_bench(args, settings)
