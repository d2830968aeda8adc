"""Where SSD's pipeline spends its time beyond the onnxruntime session: each step alone on warm caches, and
the same step right after the session (as ``detect`` runs it).

    .venv/bin/python bench/ssd_gap.py [--rounds 25] [--calls 9]

``bench --compare`` gives the ratio (the fast pipeline against the session on a ready input); this says what
the difference is made of. One process, SSDlite with torchvision's random initialisation (seed 0, the
weights ``bench`` uses without a configured file), the four shared images as ``bench`` loads them. Per round
and image each measurement is the median of ``--calls`` calls; reported: the median over rounds and images.
"After the session" times only the step, right after an untimed session run: the network has just filled the
caches with its weights and activations, as in every ``detect``. Rows:

- the session on a ready input, and the whole ``detect``;
- ``prepare`` (float copy, OpenCV's bilinear resize, normalise to NCHW), ``decode`` (threshold, NMS, rescale,
  the result), each warm and after the session;
- the session right after ``prepare`` against right after nothing (what ``prepare`` does to the session: when
  the resize runs on OpenCV's thread pool, a worker spins for a millisecond or two afterwards; see
  ``ssd_fast.resize_in_bands``).
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
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("OBJDET_SHARED_DIR", REPO.parent / "shared")).resolve()
IMAGES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")


def _median_ms(step, calls: int, before=None) -> float:
    times = []
    for _ in range(calls):
        if before is not None:
            before()
        t0 = time.perf_counter_ns()
        step()
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--calls", type=int, default=9)
    args = parser.parse_args(argv)
    if not (SHARED / "assets" / "images").is_dir():
        print(f"ssd_gap: {SHARED}/assets/images not found (set OBJDET_SHARED_DIR)", file=sys.stderr)
        return 2

    from dataclasses import replace

    from app.engine.config import Settings
    from app.engine.detectors.ssd import SSDDetector
    from app.engine.images import load_image
    from app.engine.registry import get_detector
    from app.engine.result import DetectParams

    settings = replace(Settings.from_env(), ssd_engine="onnxruntime")
    settings, weights = SSDDetector.bench_settings(settings, tempfile.mkdtemp())
    det = get_detector("ssd", settings)
    params = DetectParams()
    images = [load_image(SHARED / "assets" / "images" / name) for name in IMAGES]
    rows: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for image in images:
            batch = det.fast.prepare(image)
            raw = det.forward(image)

            def session(batch=batch):
                det.onnx.run(batch)

            steps = {
                "session on a ready input": (session, None),
                "detect (the pipeline)": (lambda image=image: det.detect(image, params), None),
                "prepare, warm": (lambda image=image: det.fast.prepare(image), None),
                "prepare, after the session": (lambda image=image: det.fast.prepare(image), session),
                "decode, warm": (lambda raw=raw: det.decode(raw, params), None),
                "decode, after the session": (lambda raw=raw: det.decode(raw, params), session),
                "session, after nothing": (session, session),
                "session, after prepare": (session, lambda image=image: det.fast.prepare(image)),
            }
            for name, (step, before) in steps.items():
                rows.setdefault(name, []).append(_median_ms(step, args.calls, before))
    medians = {name: statistics.median(values) for name, values in rows.items()}
    session_ms = medians["session on a ready input"]
    print(f"SSD ({settings.ssd_arch}, {weights}), {len(images)} images x {args.rounds} rounds, median of {args.calls}")
    print(f"{'step':32s} {'ms':>7s} {'/ session':>10s}")
    for name, ms in medians.items():
        print(f"{name:32s} {ms:7.3f} {ms / session_ms:10.3f}")
    warm = medians["prepare, warm"] + medians["decode, warm"]
    print(
        f"pipeline / session {medians['detect (the pipeline)'] / session_ms:.3f}; with prepare and decode at their "
        f"warm cost it would be {(session_ms + warm) / session_ms:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
