"""What every command shares: exit statuses, usage errors, the ``--model`` choice, loading the chosen
detectors, one image file through them, and the progress line of long runs.

Only light modules are imported at the top: ``detect --model yolo`` never imports torch.
"""

from __future__ import annotations

import argparse
import sys
import time

from ..engine.catalog import FAMILIES
from ..engine.config import Settings
from ..ops.terminal import printable

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
MODEL_CHOICES = (*FAMILIES, "all")
PROGRESS_EVERY_S = 10.0  # a log line this often when stderr is not a terminal


def say(text: object, stream=None) -> None:
    """One line of a command's report on stderr (or ``stream``). Names in it come from files and folders, so
    it is written through ``printable``: no control sequence reaches the terminal, and a name that is not
    UTF-8 cannot make the print itself fail."""
    (sys.stderr if stream is None else stream).write(printable(text) + "\n")


class UsageError(Exception):
    """A command line that cannot run as given (exit 2); str() says what to change."""


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (``bench --repeat 0`` has no median to report)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def detect_params(args):
    """``--conf``, ``--iou``, ``--classes`` and ``--max-det`` as ``DetectParams``; a bad value is a usage error."""
    from ..engine.result import DetectParams

    classes = frozenset(c.strip() for c in args.classes.split(",") if c.strip()) or None
    try:
        return DetectParams(conf=args.conf, iou=args.iou, classes=classes, max_det=args.max_det)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


class NoModelReady(Exception):
    """No model can run: every enabled one was skipped (exit 1); str() says why and what to do."""


def chosen_models(choice: str | None, settings: Settings, stream=sys.stderr) -> list[str]:
    """``--model``: one family, ``all`` = every model OBJDET_MODELS enables. Not given (None): the enabled
    models whose files are in place and match the manifest, each one left out named on ``stream`` in one
    line; ``NoModelReady`` when none is. An explicit choice is taken as given, so a missing file fails."""
    if choice is not None:
        return list(settings.models) if choice == "all" else [choice]
    from ..engine.registry import model_status

    ready, reasons = [], []
    for model in settings.models:
        status = model_status(model, settings, load=False)  # files only: no torch import for a missing SSD
        if status.state in ("missing", "corrupt"):
            reasons.append(skipped(model, status.message, status.fix, stream))
        else:
            ready.append(model)
    if not ready:
        raise NoModelReady("no model can run: " + "; ".join(reasons))
    return ready


def skipped(model: str, why: str, fix: str, stream=sys.stderr) -> str:
    """Say on ``stream`` that ``model`` is left out of a run without ``--model``, why, and the fix; returns why."""
    say(f"note: {model} skipped, {why}. To add it: {fix}", stream)
    return f"{model}: {why}"


def load_detectors(choice: str | None, settings: Settings) -> dict | None:
    """The chosen models' detectors (``--model``), or None after printing the one that cannot load (exit 1).
    Without ``--model`` a model that fails to load is skipped with a note, like one whose files are missing."""
    from ..engine.detectors.base import ModelLoadError
    from ..engine.registry import get_detector

    detectors, reasons = {}, []
    for model in chosen_models(choice, settings):
        try:
            detectors[model] = get_detector(model, settings)
        except ModelLoadError as exc:
            if choice is not None:
                say(f"error: {model}: {exc}")
                return None
            reasons.append(skipped(model, str(exc), "`python -m app weights verify` checks its files"))
    if not detectors:
        raise NoModelReady("no model can run: " + "; ".join(reasons))
    return detectors


def detect_file(path, detectors: dict, params, settings: Settings, warnings: list[str] | None = None, slot=None):
    """Decode one image file into its working copy and run every detector on it: ``(size, {model: result})``,
    the original's (width, height) and boxes in its pixels. ``detect``, ``batch`` and ``eval`` share it, and
    decode through ``images.load_working`` as the page does, so a file gives the same detections in all of
    them (a large JPEG is decoded at reduced scale). ``slot`` (a context manager, e.g.
    ``registry.inference_slots``) is held around the network runs only. Raises ``ImageError``."""
    from contextlib import nullcontext

    from ..engine.images import load_working, work_side

    # The networks run on a copy of at most work_side pixels a side: memory follows that, not the input.
    small, factor, size = load_working(
        path,
        max_side=work_side(d.input_size for d in detectors.values()),
        max_pixels=settings.max_image_pixels,
        max_bytes=settings.max_file_bytes,
        warnings=warnings,
    )
    with slot if slot is not None else nullcontext():
        results = {m: detector.detect(small, params).rescaled(factor, size) for m, detector in detectors.items()}
    return size, results


def full_image(path, settings: Settings):
    """The whole image at its own size, for annotated outputs (``detect --out``, ``batch --annotate``): a second
    decode of the file, made only when one is asked for; the detections come from ``detect_file``."""
    from ..engine.images import load_image

    return load_image(path, max_pixels=settings.max_image_pixels, max_bytes=settings.max_file_bytes)


class Progress:
    """A bar on a terminal; otherwise one line every ``PROGRESS_EVERY_S`` (pod logs)."""

    def __init__(self, label: str, total: int, stream=sys.stderr):
        self.label, self.total, self.stream = label, total, stream
        self.tty = stream.isatty()
        self.done = self.failed = 0
        self.start = self.last = time.monotonic()

    def rate(self) -> float:
        return self.done / max(1e-9, time.monotonic() - self.start)

    def update(self, failed: bool) -> None:
        self.done += 1
        self.failed += failed
        now = time.monotonic()
        if self.tty:
            filled = int(30 * self.done / max(1, self.total))
            self.stream.write(
                f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} "
                f"{self.rate():.1f} img/s {self.failed} failed"
            )
            self.stream.flush()
        elif now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            self.stream.write(
                f"{self.label}: {self.done}/{self.total} images, {self.rate():.1f}/s, {self.failed} failed\n"
            )
            self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
        self.stream.write(
            f"{self.label}: {self.done} processed in {time.monotonic() - self.start:.1f} s "
            f"({self.rate():.1f} images/s), {self.failed} failed\n"
        )
        self.stream.flush()
