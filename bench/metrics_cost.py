"""What recording metrics (and the JSON event line) costs the detection pipeline: ``python -m app bench``'s
pipeline call, ``detector.detect`` on a decoded image, timed with recording on and off in one process,
alternated call by call so that machine noise hits both alike. Medians and their ratio are printed.

    .venv/bin/python bench/metrics_cost.py --repeat 30 [--model yolo|ssd|all] [--json]

The detectors are the registry's (instrumented, as in ``serve``); with recording on, each call records
three stage observations, two counters and one JSON log line (written to /dev/null). The recording
path alone is also timed over many calls, since on a busy machine the medians' noise exceeds it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.cli.bench import _default_images
from app.engine.catalog import family
from app.engine.config import Settings
from app.engine.images import load_image
from app.engine.registry import get_detector
from app.engine.result import DetectParams
from app.ops import logs  # after the path set-up above
from app.ops import prometheus as metrics

RECORD_CALLS = 5000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="all")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = Settings.from_env()
    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    logs.configure("json", "info", devnull)  # as serve logs each image, without filling the terminal
    images = [load_image(p) for p in _default_images()]
    params = DetectParams()
    models = list(settings.models) if args.model == "all" else [args.model]
    report = {"repeat": args.repeat, "images": len(images), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            model_settings, _ = family(model).detector_class().bench_settings(settings, Path(tmp))
            detector = get_detector(model, model_settings)
            for image in images:  # warm-up
                detector.detect(image, params)
            timings: dict[bool, list[float]] = {True: [], False: []}
            for run in range(args.repeat):
                for image in images:
                    for on in (run % 2 == 0, run % 2 == 1):  # which goes first alternates too
                        metrics.enable(on)
                        t0 = time.perf_counter()
                        detector.detect(image, params)
                        timings[on].append((time.perf_counter() - t0) * 1000)
            # The recording path alone (what "on" adds per image), timed over many calls: on a busy machine
            # the alternated medians above are noisier than this difference.
            metrics.enable(True)
            result = detector.detect(images[0], params)
            t0 = time.perf_counter()
            for _ in range(RECORD_CALLS):
                metrics.record_result(model, result)
            record_us = (time.perf_counter() - t0) / RECORD_CALLS * 1e6
            metrics.enable(False)
            on, off = statistics.median(timings[True]), statistics.median(timings[False])
            report["models"][model] = {
                "metrics_on_median_ms": round(on, 3),
                "metrics_off_median_ms": round(off, 3),
                "ratio": round(on / off, 4),
                "runs_each": len(timings[True]),
                "record_us": round(record_us, 1),
                "record_share_of_off_median": round(record_us / 1000 / off, 5),
            }
    logging.shutdown()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{len(images)} images x {args.repeat} runs, metrics on / off alternated, one process")
        for model, r in report["models"].items():
            print(
                f"{model:6} on {r['metrics_on_median_ms']:9.2f} ms  off {r['metrics_off_median_ms']:9.2f} ms  "
                f"ratio {r['ratio']:.4f}  ({r['runs_each']} runs each); recording alone {r['record_us']:.1f} us "
                f"= {100 * r['record_share_of_off_median']:.2f} % of the off median"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
