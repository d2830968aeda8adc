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
