"""The interface both model families implement.

A detection is split in two so the app can move sliders without running the network again:
``forward`` (preprocess + inference, the expensive part) returns a ``RawOutput``; ``decode``
(score threshold, NMS, class filter, cap: cheap) turns it into a ``DetectionResult`` for any
``DetectParams``. ``detect`` does both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..result import DetectParams, DetectionResult


class ModelLoadError(RuntimeError):
    """A model cannot be built: the message names the file, what is wrong and the fix."""


@dataclass
class RawOutput:
    """What ``forward`` produced for one image: network outputs plus what decoding needs."""

    model: str
    image_size: tuple[int, int]  # width, height of the original image
    data: Any
    timings_ms: dict[str, float] = field(default_factory=dict)


class Detector(Protocol):
    name: str
    labels: tuple[str, ...]

    def forward(self, image: np.ndarray) -> RawOutput: ...

    def decode(self, raw: RawOutput, params: DetectParams) -> DetectionResult: ...

    def detect(self, image: np.ndarray, params: DetectParams | None = None) -> DetectionResult: ...


class DetectorMixin:
    """``detect`` = ``forward`` + ``decode``, and the unknown-class check shared by both families."""

    name: str
    labels: tuple[str, ...]

    def detect(self, image: np.ndarray, params: DetectParams | None = None) -> DetectionResult:
        return self.decode(self.forward(image), params or DetectParams())

    def check_classes(self, params: DetectParams) -> None:
        if params.classes:
            unknown = sorted(set(params.classes) - set(self.labels))
            if unknown:
                raise ValueError(f"{self.name}: unknown class {', '.join(unknown)}; this model knows "
                                 f"{len(set(self.labels) - {'N/A', '__background__'})} classes such as "
                                 f"{', '.join(list(dict.fromkeys(l for l in self.labels if l not in ('N/A', '__background__')))[:5])}")


def ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    out = boxes.astype(np.float64, copy=True)
    np.clip(out[:, 0::2], 0, width, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, height, out=out[:, 1::2])
    return out
