"""Where two detectors agree on one image: pairs of same-label boxes that overlap, and what each found alone.

Computed from decoded results only (no network run), so the comparison follows every slider move for free.
Matching is greedy by score: the detections of both models are taken in falling score order, and each one
not yet matched claims the other model's unmatched detection of the same label with the highest IoU, if that
IoU is at least the threshold. A detection is in at most one pair; labels never match across classes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .result import Detection, DetectionResult

DEFAULT_MATCH_IOU = 0.5


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes; 0 when either has no area."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Pair:
    first: Detection
    second: Detection
    iou: float


@dataclass(frozen=True)
class Agreement:
    """The split of two models' detections: pairs found by both, and the rest of each model's."""

    first_model: str
    second_model: str
    threshold: float
    both: tuple[Pair, ...]
    only_first: tuple[Detection, ...]
    only_second: tuple[Detection, ...]

    @property
    def mean_iou(self) -> float | None:
        """Mean IoU of the matched pairs; None when nothing matched."""
        return sum(p.iou for p in self.both) / len(self.both) if self.both else None

    def per_class(self) -> list[dict]:
        """One row per label: found by both, only by the first model, only by the second (most first)."""
        counts: dict[str, list[int]] = {}
        for pair in self.both:
            counts.setdefault(pair.first.label, [0, 0, 0])[0] += 1
        for det in self.only_first:
            counts.setdefault(det.label, [0, 0, 0])[1] += 1
        for det in self.only_second:
            counts.setdefault(det.label, [0, 0, 0])[2] += 1
        rows = [
            {"label": label, "both": c[0], f"only {self.first_model}": c[1], f"only {self.second_model}": c[2]}
            for label, c in counts.items()
        ]
        return sorted(rows, key=lambda r: (-sum(v for k, v in r.items() if k != "label"), r["label"]))

    def to_dict(self) -> dict:
        """The JSON export's ``agreement`` block (boxes as in the detections, in the original's pixels)."""
        mean = self.mean_iou
        return {
            "models": [self.first_model, self.second_model],
            "match_iou": self.threshold,
            "mean_iou": None if mean is None else round(mean, 4),
            "per_class": self.per_class(),
            "both": [
                {
                    "label": p.first.label,
                    "iou": round(p.iou, 4),
                    self.first_model: p.first.to_dict(),
                    self.second_model: p.second.to_dict(),
                }
                for p in self.both
            ],
            f"only_{self.first_model}": [d.to_dict() for d in self.only_first],
            f"only_{self.second_model}": [d.to_dict() for d in self.only_second],
        }


def match(first: DetectionResult, second: DetectionResult, threshold: float = DEFAULT_MATCH_IOU) -> Agreement:
    """Greedy matching by score (see the module docstring); both results must be in the same pixels."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"match IoU {threshold} must be above 0 and at most 1")
    dets = (first.detections, second.detections)
    order = sorted(
        ((det.score, side, index) for side in (0, 1) for index, det in enumerate(dets[side])),
        key=lambda t: (-t[0], t[1], t[2]),
    )
    partner: list[dict[int, tuple[int, float]]] = [{}, {}]  # side -> index -> (other index, iou)
    for _, side, index in order:
        if index in partner[side]:
            continue
        det, other = dets[side][index], 1 - side
        best, best_iou = None, -1.0
        for j, candidate in enumerate(dets[other]):
            if j in partner[other] or candidate.label != det.label:
                continue
            iou = box_iou(det.box, candidate.box)
            if iou >= threshold and iou > best_iou:
                best, best_iou = j, iou
        if best is not None:
            partner[side][index] = (best, best_iou)
            partner[other][best] = (index, best_iou)
    pairs = tuple(Pair(dets[0][i], dets[1][j], iou) for i, (j, iou) in sorted(partner[0].items(), key=lambda kv: kv[0]))
    return Agreement(
        first.model,
        second.model,
        threshold,
        pairs,
        tuple(d for i, d in enumerate(dets[0]) if i not in partner[0]),
        tuple(d for i, d in enumerate(dets[1]) if i not in partner[1]),
    )
