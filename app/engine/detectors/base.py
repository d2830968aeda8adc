"""The interface every model family implements: one base class, ``Detector``.

A detection is split in two so the app can move sliders without running the network again:
``forward`` (preprocess + inference, the expensive part) returns a ``RawOutput``; ``decode``
(score threshold, NMS, class filter, cap: cheap) turns it into a ``DetectionResult`` for any
``DetectParams``. ``detect`` does both.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..labels import did_you_mean
from ..result import DetectionResult, DetectParams

if TYPE_CHECKING:
    from ..config import Settings


class ModelLoadError(RuntimeError):
    """A model cannot be built: the message names the file, what is wrong and the fix."""


@dataclass
class RawOutput:
    """What ``forward`` produced for one image: network outputs plus what decoding needs."""

    model: str
    image_size: tuple[int, int]  # width, height of the original image
    data: Any
    timings_ms: dict[str, float] = field(default_factory=dict)


class Detector(ABC):
    """What every family implements (``forward``, ``decode``, ``baseline``, ``from_settings``); ``detect``
    and the unknown-class check are shared. The registry builds one with ``from_settings``."""

    name: str  # the family's name in app/engine/catalog.py (an instance may carry another)
    labels: tuple[str, ...]
    input_size: int  # the square side the network sees

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Settings) -> Detector:
        """The detector the configuration describes (its family's variables; threads; device)."""

    @abstractmethod
    def forward(self, image: np.ndarray) -> RawOutput:
        """Preprocess + inference on an RGB image: the expensive part, independent of ``DetectParams``."""

    @abstractmethod
    def decode(self, raw: RawOutput, params: DetectParams) -> DetectionResult:
        """Thresholds, NMS, class filter and cap on a ``forward`` output: cheap, run per slider move."""

    @abstractmethod
    def baseline(self, image: np.ndarray, params: DetectParams) -> Callable[[], object]:
        """The raw framework call on input prepared from ``image`` once, for ``python -m app bench``
        to time against ``detect``: what a user of the framework alone would run."""

    @classmethod
    def bench_settings(cls, settings: Settings, folder: Path) -> tuple[Settings, str]:
        """The settings ``python -m app bench`` times this family with, and what its weights are: the
        configured files (a family without them may write a stand-in into ``folder``)."""
        return settings, str(settings.model_files(cls.name)["weights"])

    def detect(self, image: np.ndarray, params: DetectParams | None = None) -> DetectionResult:
        return self.decode(self.forward(image), params or DetectParams())

    def check_classes(self, params: DetectParams) -> None:
        """``ValueError`` naming the classes of ``params`` this model does not know, and some it does."""
        if params.classes:
            unknown = sorted(set(params.classes) - set(self.labels))
            if unknown:
                known = list(dict.fromkeys(n for n in self.labels if n not in ("N/A", "__background__")))
                raise ValueError(
                    f"{self.name}: unknown class {', '.join(unknown)}{did_you_mean(unknown, known)}; this model "
                    f"knows {len(known)} classes such as {', '.join(known[:5])}"
                )


def ms_since(start: float) -> float:
    """Milliseconds since ``start`` (a ``time.perf_counter()`` value): the one timing helper."""
    return (time.perf_counter() - start) * 1000.0


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    out = boxes.astype(np.float64, copy=True)
    np.clip(out[:, 0::2], 0, width, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, height, out=out[:, 1::2])
    return out
