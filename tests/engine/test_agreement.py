"""app.engine.agreement.match on hand-built boxes: every expected split and IoU below is worked out by hand."""

from __future__ import annotations

import pytest

from app.engine.agreement import box_iou, match
from app.engine.result import Detection, DetectionResult


def det(label: str, score: float, box) -> Detection:
    return Detection(label, 0, score, tuple(float(v) for v in box))


def result(model: str, *detections: Detection) -> DetectionResult:
    return DetectionResult(model, (200, 200), list(detections))


def test_iou_by_hand():
    # 10x10 boxes shifted by 5 in x: intersection 5*10 = 50, union 100 + 100 - 50 = 150
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges
    assert box_iou((0, 0, 0, 10), (0, 0, 0, 10)) == 0.0  # no area


@pytest.mark.parametrize(
    ("shift", "matched"),
    [
        # 100x100 boxes shifted by s in x: IoU = (100 - s) / (100 + s). s = 33 gives 67/133 = 0.5038 (above 0.5),
        # s = 34 gives 66/134 = 0.4925 (below).
        (33, True),
        (34, False),
    ],
)
def test_iou_just_above_and_below_the_threshold(shift, matched):
    ssd = result("ssd", det("cat", 0.9, (0, 0, 100, 100)))
    yolo = result("yolo", det("cat", 0.8, (shift, 0, 100 + shift, 100)))
    agreement = match(ssd, yolo, 0.5)
    if matched:
        assert len(agreement.both) == 1 and not agreement.only_first and not agreement.only_second
        assert agreement.mean_iou == pytest.approx((100 - shift) / (100 + shift))
        assert agreement.per_class() == [{"label": "cat", "both": 1, "only ssd": 0, "only yolo": 0}]
    else:
        assert agreement.both == () and agreement.mean_iou is None
        assert agreement.per_class() == [{"label": "cat", "both": 0, "only ssd": 1, "only yolo": 1}]


def test_iou_exactly_at_the_threshold_matches():
    # (0, 0, 100, 100) and its top half (0, 0, 100, 50): IoU 5000 / 10000 = 0.5 exactly, and >= matches
    agreement = match(
        result("ssd", det("dog", 0.9, (0, 0, 100, 100))), result("yolo", det("dog", 0.9, (0, 0, 100, 50)))
    )
    assert len(agreement.both) == 1 and agreement.both[0].iou == 0.5


def test_two_candidates_the_highest_scoring_detection_claims_its_best_overlap():
    ssd_box = det("person", 0.9, (0, 0, 100, 100))
    near = det("person", 0.5, (10, 0, 110, 100))  # IoU 90/110 = 0.818
    far = det("person", 0.7, (30, 0, 130, 100))  # IoU 70/130 = 0.538
    agreement = match(result("ssd", ssd_box), result("yolo", far, near))
    # the SSD box has the top score (0.9), so it claims first and takes the larger overlap
    assert [(p.first, p.second) for p in agreement.both] == [(ssd_box, near)]
    assert agreement.only_second == (far,) and agreement.only_first == ()
    assert agreement.mean_iou == pytest.approx(90 / 110)


def test_two_candidates_a_higher_scoring_other_box_claims_first():
    ssd_box = det("person", 0.6, (0, 0, 100, 100))
    near = det("person", 0.5, (10, 0, 110, 100))  # IoU 0.818 with the SSD box
    far = det("person", 0.95, (30, 0, 130, 100))  # IoU 0.538, but the top score: it claims the SSD box first
    agreement = match(result("ssd", ssd_box), result("yolo", far, near))
    assert [(p.first, p.second) for p in agreement.both] == [(ssd_box, far)]
    assert agreement.only_second == (near,)
    assert agreement.mean_iou == pytest.approx(70 / 130)


def test_different_labels_never_match():
    box = (0, 0, 100, 100)
    agreement = match(result("ssd", det("cat", 0.9, box)), result("yolo", det("dog", 0.9, box)))
    assert agreement.both == ()
    assert agreement.per_class() == [
        {"label": "cat", "both": 0, "only ssd": 1, "only yolo": 0},
        {"label": "dog", "both": 0, "only ssd": 0, "only yolo": 1},
    ]


def test_mixed_split_and_json_block():
    ssd = result(
        "ssd",
        det("cup", 0.9, (0, 0, 50, 100)),
        det("cup", 0.8, (100, 0, 150, 100)),
        det("person", 0.4, (0, 100, 100, 200)),
    )
    yolo = result(
        "yolo",
        det("cup", 0.7, (0, 0, 50, 90)),  # IoU 4500/5000 = 0.9 with the first cup
        det("chair", 0.6, (100, 100, 200, 200)),
    )
    agreement = match(ssd, yolo)
    assert agreement.per_class() == [
        {"label": "cup", "both": 1, "only ssd": 1, "only yolo": 0},
        {"label": "chair", "both": 0, "only ssd": 0, "only yolo": 1},
        {"label": "person", "both": 0, "only ssd": 1, "only yolo": 0},
    ]
    doc = agreement.to_dict()
    assert doc["models"] == ["ssd", "yolo"] and doc["match_iou"] == 0.5 and doc["mean_iou"] == 0.9
    assert [d["box"] for d in doc["only_ssd"]] == [[100.0, 0.0, 150.0, 100.0], [0.0, 100.0, 100.0, 200.0]]
    assert [d["label"] for d in doc["only_yolo"]] == ["chair"]
    assert doc["both"][0]["yolo"]["box"] == [0.0, 0.0, 50.0, 90.0]


def test_bad_threshold_refused():
    with pytest.raises(ValueError, match="match IoU 0 must be above 0"):
        match(result("ssd"), result("yolo"), 0)


def test_overlay_draws_three_distinct_styles_and_a_legend():
    """On a white picture: the pair's box edge is solid, only-SSD's dashed, only-YOLO's dotted, each in its colour
    (measured along each box's bottom edge, where no tag is drawn); a legend strip is added below."""
    import numpy as np

    from app.engine.annotate import AGREEMENT_STYLES, annotate_agreement

    pair = (det("cat", 0.9, (20, 60, 120, 140)), det("cat", 0.8, (20, 60, 120, 140)))
    agreement = match(
        result("ssd", pair[0], det("dog", 0.7, (160, 60, 260, 140))),
        result("yolo", pair[1], det("bird", 0.6, (300, 60, 400, 140))),
    )
    white = np.full((200, 420, 3), 255, np.uint8)
    out = annotate_agreement(white, agreement, 1.0, ("SSD", "YOLO"))
    assert out.shape[1] == 420 and out.shape[0] > 200 and (out[:200] != 255).any()
    assert np.array_equal(white, np.full((200, 420, 3), 255, np.uint8))  # the input is untouched

    def inked(group, x1, x2):
        colour = np.array(AGREEMENT_STYLES[group][0], np.uint8)
        edge = out[140, x1 + 4 : x2 - 4]
        return float(np.mean(np.all(edge == colour, axis=1)))

    both, first, second = inked("both", 20, 120), inked("first", 160, 260), inked("second", 300, 400)
    assert both == 1.0  # solid
    assert 0.6 < first < 0.95  # long dashes, short gaps
    assert 0.1 < second <= 0.5  # dots
    legend = out[200:]
    for colour, _ in AGREEMENT_STYLES.values():
        assert np.all(legend == np.array(colour, np.uint8), axis=2).any()
