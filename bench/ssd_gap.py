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

Two controls say which part of the difference is the machine rather than the work:

- ``prepare`` and the decode right after a cache sweep (``bench_worker.Sweep``: a read-modify-write pass over
  twice the largest cache, no network, no thread pool): what the same steps cost on caches emptied by anything
  of the network's size;
- the session right after ``prepare`` and the whole ``detect`` with OpenCV's pool set to one thread (for this
  run only): OpenCV's worker then never spins, as if it had a core of its own beside the session's two.
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

    import cv2

    from app.cli.bench_worker import Sweep
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
    sweep, threads = Sweep(), cv2.getNumThreads()
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
                "prepare, after a cache sweep": (lambda image=image: det.fast.prepare(image), sweep),
                "decode, after a cache sweep": (lambda raw=raw: det.decode(raw, params), sweep),
            }
            for name, (step, before) in steps.items():
                rows.setdefault(name, []).append(_median_ms(step, args.calls, before))
        cv2.setNumThreads(1)  # the control: OpenCV's worker never runs, so never spins
        try:
            for image in images:
                batch = det.fast.prepare(image)
                steps = {
                    "1 OpenCV thread: detect": (lambda image=image: det.detect(image, params), None),
                    "1 OpenCV thread: session": (lambda batch=batch: det.onnx.run(batch), None),
                    "1 OpenCV thread: session, after nothing": (
                        lambda batch=batch: det.onnx.run(batch),
                        lambda batch=batch: det.onnx.run(batch),
                    ),
                    "1 OpenCV thread: session, after prepare": (
                        lambda batch=batch: det.onnx.run(batch),
                        lambda image=image: det.fast.prepare(image),
                    ),
                }
                for name, (step, before) in steps.items():
                    rows.setdefault(name, []).append(_median_ms(step, args.calls, before))
        finally:
            cv2.setNumThreads(threads)
    medians = {name: statistics.median(values) for name, values in rows.items()}
    session_ms = medians["session on a ready input"]
    print(f"SSD ({settings.ssd_arch}, {weights}), {len(images)} images x {args.rounds} rounds, median of {args.calls}")
    print(f"{'step':40s} {'ms':>7s} {'/ session':>10s}")
    for name, ms in medians.items():
        print(f"{name:40s} {ms:7.3f} {ms / session_ms:10.3f}")
    _summary(medians)
    return 0


def _summary(m: dict[str, float]) -> None:
    """The difference between pipeline and session, split into the work and the two controls' shares."""
    session = m["session on a ready input"]
    warm = m["prepare, warm"] + m["decode, warm"]
    cold = m["prepare, after the session"] + m["decode, after the session"] - warm
    swept = m["prepare, after a cache sweep"] + m["decode, after a cache sweep"] - warm
    pool = m["session, after prepare"] - m["session, after nothing"]
    pool_1 = m["1 OpenCV thread: session, after prepare"] - m["1 OpenCV thread: session, after nothing"]
    pipeline = m["detect (the pipeline)"]
    print(f"pipeline / session {pipeline / session:.3f}, {pipeline - session:.3f} ms more:")
    print(f"  prepare and decode at their warm cost  {warm:6.3f} ms  (pipeline would be {1 + warm / session:.3f})")
    print(f"  their first touches after the session {cold:6.3f} ms; after a cache sweep alone {swept:6.3f} ms")
    print(f"  OpenCV's worker on the next session    {pool:6.3f} ms; with OpenCV on one thread {pool_1:6.3f} ms")
    print(
        f"with OpenCV on one thread: pipeline / session "
        f"{m['1 OpenCV thread: detect'] / m['1 OpenCV thread: session']:.3f}"
    )


if __name__ == "__main__":
    sys.exit(main())
