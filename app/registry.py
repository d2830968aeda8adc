"""Builds each detector once per process and reports the state of every configured model.

The CLI, the benchmark, ``serve`` and the Streamlit app all get their detectors from here, so a
model is constructed once however many images, sessions or reruns use it. torch is imported only
when an SSD detector is built.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .config import Settings
from .detectors.base import Detector, ModelLoadError
from .weights import CORRUPT, MISSING, FileCheck, check_file

_cache: dict[tuple[str, Settings], Detector] = {}
_cache_lock = threading.Lock()
BUILD_COUNT: dict[str, int] = {}  # constructions per model name: lets tests prove "once per process"

LOADED, FAILED = "loaded", "failed"


def build_detector(model: str, settings: Settings) -> Detector:
    """A new detector for ``model`` (``ssd`` or ``yolo``); raises ``ModelLoadError`` with the fix."""
    if model == "ssd":
        try:
            from .detectors.ssd import SSDDetector
        except ImportError as exc:
            raise ModelLoadError(f"SSD needs torch and torchvision ({exc}); install the `ssd` extra "
                                 "(`pip install .[ssd]`) or set OBJDET_MODELS=yolo") from None
        return SSDDetector(settings.ssd_arch, settings.ssd_weights, settings.device, settings.num_threads)
    if model == "yolo":
        from .detectors.yolo import YoloDetector

        return YoloDetector(settings.yolo_weights, settings.yolo_config, settings.yolo_names,
                            settings.yolo_input_size, settings.num_threads)
    raise ValueError(f"unknown model {model!r}")


def get_detector(model: str, settings: Settings) -> Detector:
    """The process-wide detector for ``model`` under ``settings``, built on first use."""
    key = (model, settings)
    with _cache_lock:
        detector = _cache.get(key)
        if detector is None:
            detector = build_detector(model, settings)
            BUILD_COUNT[model] = BUILD_COUNT.get(model, 0) + 1
            _cache[key] = detector
        return detector


@dataclass
class ModelStatus:
    """What the status panel and ``serve`` report about one model."""

    model: str
    state: str  # loaded / missing / corrupt / failed
    files: list[FileCheck] = field(default_factory=list)
    message: str = ""
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.state == LOADED


def model_status(model: str, settings: Settings, load: bool = True) -> ModelStatus:
    """Check the model's files against the manifest, then (if ``load``) build it once."""
    files = [check_file(path, role) for role, path in settings.model_files(model).items()]
    missing = [f for f in files if f.state == MISSING]
    corrupt = [f for f in files if f.state == CORRUPT]
    env = {"ssd": "OBJDET_SSD_WEIGHTS", "yolo": "OBJDET_YOLO_WEIGHTS"}[model]
    fetch_fix = (f"run `python -m app weights fetch --dest {settings.weights_dir}` "
                 f"or point {env} (and the other OBJDET_{model.upper()}_* variables) at your files")
    if missing:
        return ModelStatus(model, MISSING, files,
                           "missing: " + ", ".join(f"{f.role} {f.path}" for f in missing), fetch_fix)
    if corrupt:
        return ModelStatus(model, CORRUPT, files,
                           "; ".join(f"{f.role} {f.path} is {f.describe()}" for f in corrupt),
                           f"delete the file and {fetch_fix}")
    if not load:
        return ModelStatus(model, "unloaded", files)
    try:
        get_detector(model, settings)
    except ModelLoadError as exc:
        return ModelStatus(model, FAILED, files, str(exc), "see the message; `python -m app weights verify` "
                                                           "checks the files")
    return ModelStatus(model, LOADED, files)


_slots: dict[int, threading.BoundedSemaphore] = {}


def inference_slots(settings: Settings) -> threading.BoundedSemaphore:
    """Bounds concurrent network runs across all sessions so that CPUs are not oversubscribed:
    (CPUs this process may use) // (threads per inference), at least 1."""
    from .config import available_cpus

    count = max(1, available_cpus() // max(1, settings.num_threads))
    with _cache_lock:
        return _slots.setdefault(count, threading.BoundedSemaphore(count))
