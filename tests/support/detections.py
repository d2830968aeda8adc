"""Detections compared with torchvision's own, where equal scores make the order arbitrary.

Seeded random weights give many detections of exactly the same score (flat image regions give identical
features). Which of a tied group comes first, and which members survive a ``max_det`` cut inside the group,
depends on kernels and thread counts, so two correct implementations may differ there. The comparison is
therefore as multisets: every golden detection has its own match (label, score within ``score_atol``, box
within ``box_atol``); at the cut, the tied group that straddles it is compared by count, labels and scores.
"""

from __future__ import annotations

import numpy as np


def assert_same_detections(got, want, max_det: int, box_atol: float = 1e-3, score_atol: float = 1e-4) -> None:
    """``got``: the project's ``Detection`` list; ``want``: torchvision's output dict (boxes, scores, labels)."""
    w_boxes, w_scores, w_labels = want["boxes"].numpy(), want["scores"].numpy(), want["labels"].tolist()
    assert len(got) == len(w_scores) <= max_det, (len(got), len(w_scores))
    g_scores = np.array([d.score for d in got])
    assert np.all(np.diff(g_scores) <= score_atol), "detections are not in decreasing score order"
    cut = float(w_scores.min()) + score_atol if len(w_scores) == max_det else -np.inf
    unmatched = [d for d in got if d.score > cut]
    for box, score, label in zip(w_boxes, w_scores, w_labels, strict=True):
        if score <= cut:
            continue
        match = next(
            (
                d
                for d in unmatched
                if d.class_id == label
                and abs(d.score - score) <= score_atol
                and np.max(np.abs(np.asarray(d.box) - box)) <= box_atol
            ),
            None,
        )
        assert match is not None, f"torchvision's {label} {score:.5f} {box.round(3).tolist()} has no match"
        unmatched.remove(match)
    assert not unmatched, f"detections torchvision does not give: {[(d.class_id, d.score) for d in unmatched]}"
    at_cut = [(d.class_id, round(d.score, 4)) for d in got if d.score <= cut]
    want_at_cut = [(la, round(float(s), 4)) for s, la in zip(w_scores, w_labels, strict=True) if s <= cut]
    assert sorted(at_cut) == sorted(want_at_cut), "the tied group at the max_det cut differs"


def box_iou(a, b) -> float:
    """IoU of two (x1, y1, x2, y2) boxes; two empty boxes at the same place count as equal (1.0)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    if union <= 0:
        return 1.0 if np.allclose(a, b, atol=1e-3) else 0.0
    return inter / union


def assert_equivalent_detections(
    got, want, max_det: int, conf: float, min_iou: float = 0.99, score_atol: float = 1e-3
) -> None:
    """Equivalent, not identical: every golden detection has its own match with the same label, a box of IoU
    >= ``min_iou`` and a score within ``score_atol``, and nothing else is found. What an inexact but
    equivalent preprocessing may change is allowed at the two edges only: a detection within ``score_atol``
    of the threshold ``conf`` may be on either side of it, and at a ``max_det`` cut the detections within
    ``score_atol`` of the last kept score are compared by count (which of a near-tie survives the cut is
    arbitrary)."""
    w_boxes, w_scores, w_labels = want["boxes"].numpy(), want["scores"].numpy(), want["labels"].tolist()
    assert len(got) <= max_det
    g_scores = np.array([d.score for d in got])
    assert np.all(np.diff(g_scores) <= 1e-6), "detections are not in decreasing score order"
    full = len(w_scores) == max_det or len(got) == max_det
    floor = min([*w_scores.tolist(), *g_scores.tolist()], default=conf)
    cut = floor + score_atol if full else -np.inf
    unmatched = list(got)
    for box, score, label in zip(w_boxes, w_scores, w_labels, strict=True):
        match = next(
            (
                d
                for d in unmatched
                if d.class_id == label and abs(d.score - score) <= score_atol and box_iou(d.box, box) >= min_iou
            ),
            None,
        )
        if match is not None:
            unmatched.remove(match)
            continue
        assert score <= conf + score_atol or score <= cut, (
            f"torchvision's {label} {score:.5f} {box.round(2).tolist()} has no equivalent"
        )
    extra = [(d.class_id, round(d.score, 5)) for d in unmatched if d.score > conf + score_atol and d.score > cut]
    assert not extra, f"detections torchvision does not give: {extra}"
    if full:
        assert len(got) == len(w_scores), (len(got), len(w_scores))
