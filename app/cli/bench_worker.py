"""One variant of ``python -m app bench --compare``, in its own process, driven over stdin/stdout.

OpenCV 4 and 5 cannot share a process, and torch's thread pools change what runs after them, so each
variant is a worker: ``python -m app.cli.bench_worker VARIANT`` builds its models once, prints one JSON line
(``ready`` with its versions and build time, or ``error``), then answers each ``run N`` line with one JSON
line of N timed (raw, pipeline) pairs, alternated so that machine noise hits both alike, until ``quit``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from ..engine.config import Settings
from ..engine.detectors.base import ms_since
from ..engine.result import DetectParams

PARAMS = DetectParams(conf=0.3, iou=0.45, max_det=100)

# variant -> (models it builds, the SSD engine, what "raw" and "pipeline" time)
VARIANTS = {
    "yolo-cv4": ("yolo", None, "raw: net.forward on a ready blob; pipeline: detect"),
    "yolo-cv5": ("yolo", None, "raw: net.forward on a ready blob; pipeline: detect"),
    "ssd-contiguous": ("ssd", "torch", "torch engine, contiguous weights (no channels_last); raw: torchvision's model"),
    "ssd-torch": ("ssd", "torch", "raw: torchvision's model (channels_last) on a ready tensor; pipeline: detect"),
    "ssd-onnxruntime": ("ssd", "onnxruntime", "raw: the onnxruntime session on a ready input; pipeline: detect"),
    "yolo-after-ssd": (
        "ssd,yolo",
        None,
        "raw: YOLO detect alone; pipeline: YOLO detect right after an SSD detect (the SSD call untimed)",
    ),
    # The noise floor: two processes that do exactly the same (this environment's OpenCV), timed the same way.
    "yolo-only": ("yolo", None, "raw: net.forward on a ready blob; pipeline: detect (this environment)"),
    "yolo-twin": ("yolo", None, "the same as yolo-only, in a second process: their ratio is the noise floor"),
    # YOLO after the caches were emptied by something that is not SSD: what a cold cache alone costs.
    "yolo-after-sweep": (
        "yolo",
        None,
        "raw: YOLO detect alone; pipeline: YOLO detect right after a sweep of twice the largest cache (untimed)",
    ),
}


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return ms_since(t0)


class Worker:
    """The variant's detectors and the two callables it times, per image."""

    def __init__(self, variant: str, images: list[Path], folder: Path):
        from ..engine.catalog import family
        from ..engine.images import load_image
        from ..engine.registry import get_detector

        models, engine, self.what = VARIANTS[variant]
        settings = Settings.from_env()
        if engine:
            settings = replace(settings, ssd_engine=engine)
        arrays = [load_image(p, max_pixels=settings.max_image_pixels) for p in images]
        t0 = time.perf_counter()
        detectors = {}
        self.weights = {}
        for model in models.split(","):
            model_settings, self.weights[model] = family(model).detector_class().bench_settings(settings, folder)
            detectors[model] = get_detector(model, model_settings)
        self.build_ms = ms_since(t0)
        if variant == "ssd-contiguous":  # the torchvision model exactly as the detector ran it before channels_last
            import torch

            detectors["ssd"].model = detectors["ssd"].model.to(memory_format=torch.contiguous_format)
        if variant == "yolo-after-ssd":
            yolo, ssd = detectors["yolo"], detectors["ssd"]
            self.pairs = [
                (
                    lambda image=image: yolo.detect(image, PARAMS),
                    lambda image=image: self._after(lambda image=image: ssd.detect(image, PARAMS), yolo, image),
                )
                for image in arrays
            ]
        elif variant == "yolo-after-sweep":
            yolo, sweep = detectors["yolo"], Sweep()
            self.pairs = [
                (lambda image=image: yolo.detect(image, PARAMS), lambda image=image: self._after(sweep, yolo, image))
                for image in arrays
            ]
        else:
            det = detectors[models]
            self.pairs = [
                (det.baseline(image, PARAMS), lambda image=image, det=det: det.detect(image, PARAMS))
                for image in arrays
            ]
        for raw, pipeline in self.pairs:  # warm-up
            raw()
            pipeline()

    @staticmethod
    def _after(before, yolo, image) -> float:
        before()
        return _time(lambda: yolo.detect(image, PARAMS))

    def run(self, count: int) -> dict:
        raw_ms, pipe_ms = [], []
        for _ in range(count):
            for raw, pipeline in self.pairs:
                raw_ms.append(_time(raw))
                t0 = time.perf_counter()
                timed = pipeline()  # yolo-after-ssd times only YOLO's part itself
                pipe_ms.append(timed if isinstance(timed, float) else ms_since(t0))
        return {"raw": raw_ms, "pipeline": pipe_ms}


def largest_cache_bytes(default: int = 32 << 20) -> int:
    """The largest CPU cache of CPU 0 (Linux sysfs), ``default`` when unknown."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    sizes = []
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = path.read_text().strip()
        if text[:-1].isdigit() and text[-1] in units:
            sizes.append(int(text[:-1]) * units[text[-1]])
    return max(sizes, default=default)


class Sweep:
    """Reads and writes back every byte of a buffer of twice the largest cache: afterwards no cache holds the
    weights, activations, buffers or interpreter state of what ran before, as after a network, but no other
    thread pool ran. A read-modify-write pass: a large ``fill`` (memset) left the caches as they were here
    (SSD's ``prepare`` right after a 64 MB fill took its warm time, 0.28 against 0.27 ms; right after this pass
    0.38 ms): large fills may be written with streaming stores that bypass the caches; a read-modify-write pass
    must bring every line in."""

    def __init__(self):
        import numpy as np

        self.buffer = np.zeros(2 * largest_cache_bytes(), np.uint8)

    def __call__(self) -> None:
        import numpy as np

        np.add(self.buffer, 1, out=self.buffer)


def versions() -> dict:
    found = {"python": sys.version.split()[0]}
    for name in ("cv2", "torch", "onnxruntime"):
        module = sys.modules.get(name)
        if module is not None:
            found[name] = module.__version__
    return found


def main(argv: list[str]) -> int:
    variant, folder, images = argv[0], Path(argv[1]), [Path(p) for p in argv[2:]]
    try:
        worker = Worker(variant, images, folder)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as this variant's row
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    ready = {"ready": True, "build_ms": worker.build_ms, "what": worker.what, "weights": worker.weights}
    print(json.dumps({**ready, "versions": versions()}), flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[:1] == ["run"]:
            print(json.dumps(worker.run(int(command[1]))), flush=True)
        elif command[:1] == ["quit"]:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
