"""The one result type both model families return, and the call-time parameters."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class DetectParams:
    """Score threshold, NMS IoU, class filter and maximum detections of one call."""

    conf: float = 0.3
    iou: float = 0.45
    classes: frozenset[str] | None = None  # None or empty: all classes
    max_det: int = 100

    def __post_init__(self):
        if not 0.0 <= self.conf <= 1.0:
            raise ValueError(f"score threshold {self.conf} must be between 0 and 1")
        if not 0.0 < self.iou <= 1.0:
            raise ValueError(f"NMS IoU {self.iou} must be above 0 and at most 1")
        if self.max_det < 1:
            raise ValueError(f"maximum detections {self.max_det} must be at least 1")
        if self.classes is not None:
            object.__setattr__(self, "classes", frozenset(self.classes) or None)

    def to_dict(self) -> dict:
        """The parameters as JSON documents record them (``detect --json``, the page's JSON download)."""
        return {
            "conf": self.conf,
            "iou": self.iou,
            "max_det": self.max_det,
            "classes": sorted(self.classes) if self.classes else None,
        }


@dataclass(frozen=True)
class Detection:
    label: str
    class_id: int
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original-image pixels, clipped

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "class_id": self.class_id,
            "score": round(self.score, 5),
            "box": [round(v, 2) for v in self.box],
        }


@dataclass
class DetectionResult:
    model: str
    image_size: tuple[int, int]  # width, height
    detections: list[Detection]
    timings_ms: dict[str, float] = field(default_factory=dict)  # preprocess, inference, postprocess

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "image_size": {"width": self.image_size[0], "height": self.image_size[1]},
            "detections": [d.to_dict() for d in self.detections],
            "detection_count": len(self.detections),  # what serve adds to objdet_detections_total
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
        }

    def rescaled(self, factor: float, image_size: tuple[int, int]) -> DetectionResult:
        """The result of a working copy mapped back to the original image (``images.working_copy``):
        boxes multiplied by ``factor`` and clipped to ``image_size`` (width, height)."""
        if factor == 1.0 and image_size == self.image_size:
            return self
        width, height = image_size
        detections = [
            Detection(
                d.label,
                d.class_id,
                d.score,
                (
                    min(max(d.box[0] * factor, 0.0), width),
                    min(max(d.box[1] * factor, 0.0), height),
                    min(max(d.box[2] * factor, 0.0), width),
                    min(max(d.box[3] * factor, 0.0), height),
                ),
            )
            for d in self.detections
        ]
        return DetectionResult(self.model, image_size, detections, dict(self.timings_ms))

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.detections:
            out[d.label] = out.get(d.label, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def detection_rows(result: DetectionResult) -> list[dict]:
    """Flat rows (label, score, x1..y2) for tables and CSV."""
    rows = []
    for d in result.detections:
        row = asdict(d)
        x1, y1, x2, y2 = row.pop("box")
        row.update(x1=round(x1, 1), y1=round(y1, 1), x2=round(x2, 1), y2=round(y2, 1), score=round(d.score, 4))
        rows.append(row)
    return rows
