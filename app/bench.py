"""``python -m app bench``: the raw framework call against the full pipeline, in one process.

Raw: ``net.forward`` on a ready blob (YOLO); the torchvision model called on a ready tensor with
the same thresholds (SSD). Pipeline: preprocess + inference + postprocess from a decoded image
(file decoding excluded). Runs alternate raw / pipeline so that machine noise hits both alike;
medians and their ratio are printed. Each family's ``bench_settings`` says which weights are timed:
without an SSD weights file, seeded random weights stand in (same architecture and cost; see README).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from .catalog import family
from .config import REPO_ROOT, Settings
from .detectors.base import ModelLoadError, ms_since
from .images import ImageError, load_image
from .result import DetectParams

DEFAULT_IMAGES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")


def _default_images() -> list[Path]:
    shared = Path(os.environ.get("OBJDET_SHARED_DIR", REPO_ROOT.parent / "shared"))
    return [shared / "assets" / "images" / name for name in DEFAULT_IMAGES]


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return ms_since(t0)


def run_bench(args, settings: Settings) -> int:
    from .registry import BUILD_COUNT, get_detector

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
