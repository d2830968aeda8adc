"""Builds each detector once per process and reports the state of every configured model.

The CLI, the benchmark, ``serve`` and the Streamlit app all get their detectors from here, so a
model is constructed once however many images, sessions or reruns use it. torch is imported only
when an SSD detector is built.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..ops import prometheus, threads
from ..ops.cpus import available_cpus
from . import weights
from .catalog import family
from .config import Settings
from .detectors.base import Detector, ModelLoadError
from .weights import CORRUPT, MISSING, FileCheck, check_file

_cache: dict[tuple[str, Settings], Detector] = {}
_cache_lock = threading.Lock()
BUILD_COUNT: dict[str, int] = {}  # constructions per model name: lets tests prove "once per process"

LOADED, FAILED = "loaded", "failed"


_checks: dict[tuple, FileCheck] = {}  # (path, role, size, mtime, inode) -> its check
_checks_lock = threading.Lock()


def checked_file(path: Path, role: str = "weights") -> FileCheck:
    """``weights.check_file``, hashed once per process for an unchanged file (same size, mtime, inode)."""
    try:
        st = os.stat(path)
    except OSError:
        return check_file(path, role)
    key = (str(path), role, st.st_size, st.st_mtime_ns, st.st_ino)
    with _checks_lock:
        found = _checks.get(key)
    if found is None:
        found = check_file(path, role)
        with _checks_lock:
            _checks[key] = found
    return found


def refuse_corrupt_files(model: str, settings: Settings) -> None:
    """Every path that builds a model (detect, bench, serve, the app) refuses a file whose NAME is in
    the weights manifest but whose content is not the published file: it would load and give
    silently different (or no) detections."""
    for role, path in settings.model_files(model).items():
        if Path(path).name not in weights.MANIFEST:
            continue  # a custom file: the user's own, nothing to compare with
        check = checked_file(path, role)
        if check.state == CORRUPT:
            raise ModelLoadError(
                f"{model} {role} file {path} does not match the weights manifest entry of that name: expected "
                f"sha256 {check.expected}, actual {check.actual}. It is damaged or not the published file. Fix: "
                f"delete it and run `python -m app weights fetch --dest {Path(path).parent}`, or give your own "
                "file a name that is not in the manifest (`python -m app weights list`)"
            )


def build_detector(model: str, settings: Settings) -> Detector:
    """A new detector for ``model`` (a family of ``app.engine.catalog``); raises ``ModelLoadError`` with the fix."""
    fam = family(model)
    refuse_corrupt_files(model, settings)
    # before the detector's module imports torch (OpenMP reads its variables then)
    threads.configure(settings.num_threads, threads.torch_threads(settings.num_threads, settings.ssd_engine))
    try:
        detector_class = fam.detector_class()
    except ImportError as exc:
        raise ModelLoadError(f"{fam.label} cannot be imported ({exc}); {fam.install_hint}") from None
    return detector_class.from_settings(settings)


def get_detector(model: str, settings: Settings) -> Detector:
    """The process-wide detector for ``model`` under ``settings``, built on first use, its forward and
    decode measured (``prometheus.instrument``: recorded only while ``serve`` records)."""
    key = (model, settings)
    with _cache_lock:
        detector = _cache.get(key)
        if detector is None:
            detector = prometheus.instrument(build_detector(model, settings), model)
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
    files = [checked_file(path, role) for role, path in settings.model_files(model).items()]
    missing = [f for f in files if f.state == MISSING]
    corrupt = [f for f in files if f.state == CORRUPT]
    env = family(model).weights_env
    fetch_fix = (
        f"run `python -m app weights fetch --dest {settings.weights_dir}` "
        f"or point {env} (and the other OBJDET_{model.upper()}_* variables) at your files"
    )
    if missing:
        return ModelStatus(
            model,
            MISSING,
            files,
            "missing: " + ", ".join(f"{f.role} {f.path} ({f.detail or 'not found'})" for f in missing),
            fetch_fix,
        )
    if corrupt:
        return ModelStatus(
            model,
            CORRUPT,
            files,
            "; ".join(f"{f.role} {f.path} is {f.describe()}" for f in corrupt),
            f"delete the file and {fetch_fix}",
        )
    if not load:
        return ModelStatus(model, "unloaded", files)
    try:
        get_detector(model, settings)
    except ModelLoadError as exc:
        return ModelStatus(
            model, FAILED, files, str(exc), "see the message; `python -m app weights verify` checks the files"
        )
    return ModelStatus(model, LOADED, files)


_slots: dict[int, prometheus.SlotGauges] = {}


def inference_slot_count(settings: Settings) -> int:
    """(CPUs this process may use: cgroup quota, affinity, count) // (threads per inference), at least 1."""
    return max(1, available_cpus() // max(1, settings.num_threads))


def inference_slots(settings: Settings) -> prometheus.SlotGauges:
    """Bounds concurrent network runs across all sessions so that CPUs are not oversubscribed
    (``inference_slot_count`` of them): a semaphore as a context manager that keeps the slots in use
    and the runs waiting in ``objdet_inference_slots_in_use`` / ``_waiting``."""
    count = inference_slot_count(settings)
    with _cache_lock:
        if count not in _slots:
            _slots[count] = prometheus.SlotGauges(threading.BoundedSemaphore(count), count)
        return _slots[count]
