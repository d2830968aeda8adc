"""Annotation draws on a copy, with a stable colour per class and text that scales with the image."""

from __future__ import annotations

import cv2
import numpy as np

from app.engine.annotate import annotate, class_colour, text_scale
from app.engine.result import Detection, DetectionResult


def result(w, h, dets):
    return DetectionResult("m", (w, h), dets)


def test_draws_on_a_copy_with_the_class_colour():
    img = np.zeros((200, 300, 3), np.uint8)
    det = Detection("cup", 41, 0.9, (50.0, 60.0, 150.0, 160.0))
    out = annotate(img, result(300, 200, [det]))
    assert not img.any()  # original untouched
    colour = np.array(class_colour("cup"))
    assert (out[110, 50] == colour).all() and (out[160, 100] == colour).all()  # left and bottom edges
    assert not out[110, 100].any()  # inside the box stays untouched
    assert out[40:60, 50:120].any()  # tag above the box


def test_colours_are_stable_and_distinct():
    assert class_colour("person") == class_colour("person")
    labels = ["person", "cup", "cat", "dog", "car", "dining table"]
    assert len({class_colour(x) for x in labels}) == len(labels)


def test_text_readable_from_small_to_huge_images():
    for width in (200, 640, 2000, 8000):
        font, thick, _ = text_scale(width, width * 3 // 4)
        (tw, th), _ = cv2.getTextSize("person 0.99", cv2.FONT_HERSHEY_SIMPLEX, font, thick)
        assert th >= 8, width  # at least 8 px tall
        # a constant-ish share of the image (OpenCV 5 measures the Hershey glyphs ~20 % taller than 4.x); a small
        # picture's labels keep a readable minimum instead
        assert 0.008 <= th / width <= (0.08 if width < 640 else 0.06), (width, th)
        assert tw < width  # fits


def stroke_width(out: np.ndarray, row: int, colour) -> int:
    """How many pixels of ``colour`` a row crosses at the box's left edge: the drawn stroke's width."""
    hits = np.flatnonzero((out[row] == np.array(colour)).all(axis=1))
    assert hits.size, "the box's colour is not on that row"
    return int(np.flatnonzero(np.diff(hits) > 1)[0] + 1) if (np.diff(hits) > 1).any() else int(hits.size)


def test_box_stroke_grows_with_the_picture():
    """A 500 px picture gets a box at least 2 px wide, a 2000 px one at least twice that (measured on the
    drawing, not read from the formula); every stroke has a contrasting edge on each side."""
    widths = {}
    for side in (500, 2000):
        img = np.zeros((side * 3 // 4, side, 3), np.uint8)
        box = (side * 0.2, side * 0.1, side * 0.8, side * 0.6)
        out = annotate(img, result(side, side * 3 // 4, [Detection("cup", 41, 0.9, box)]))
        widths[side] = stroke_width(out, round(side * 0.4), class_colour("cup"))
        left = round(box[0]) - widths[side] // 2 - 1  # just outside the coloured stroke: the edge
        assert out[round(side * 0.4), left].any(), "a dark box needs its light edge to be seen on dark ground"
    assert widths[500] >= 2 and widths[2000] >= 2 * widths[500], widths


def test_box_stroke_follows_the_width_on_screen():
    """A 2000 px picture shown 300 px wide gets boxes drawn thicker in its pixels, so they are still at least 2 px
    on screen; drawn for its own size they would be about 1 px there."""
    img = np.zeros((1500, 2000, 3), np.uint8)
    det = Detection("dog", 17, 0.9, (300.0, 200.0, 1500.0, 1200.0))
    on_screen = 300 / 2000
    shown = stroke_width(annotate(img, result(2000, 1500, [det]), shown_width=300), 700, class_colour("dog"))
    own_size = stroke_width(annotate(img, result(2000, 1500, [det])), 700, class_colour("dog"))
    assert shown * on_screen >= 2 and own_size * on_screen < 2, (shown, own_size)


def test_tags_stay_inside_the_picture():
    """Boxes touching every edge and corner: each tag is inside the picture, above its box when there is room."""
    from app.engine.annotate import FONT, tag_rect

    width, height = 300, 200
    font, thick, _ = text_scale(width, height)
    size, base = cv2.getTextSize("dining table 0.99", FONT, font, thick)
    for box in [(0, 0, 300, 200), (250, 150, 300, 200), (-20, -20, 40, 40), (280, 0, 300, 10), (0, 190, 10, 200)]:
        x1, y1, x2, y2 = tag_rect(box, size, base, (width, height))
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, (box, (x1, y1, x2, y2))
    x1, y1, x2, y2 = tag_rect((100, 120, 200, 190), size, base, (width, height))
    assert y2 == 120  # room above: the tag sits on the box


def test_tag_stays_inside_for_boxes_at_the_edge():
    img = np.zeros((100, 120, 3), np.uint8)
    out = annotate(img, result(120, 100, [Detection("person", 1, 0.5, (0.0, 0.0, 120.0, 100.0))]))
    assert out.shape == img.shape and out[5:15, 5:40].any()


def test_result_json_carries_the_image_warnings():
    import json

    from app.engine.exports import result_json

    det = Detection("cup", 41, 0.91234, (1.0, 2.0, 3.0, 4.0))
    plain = json.loads(result_json(result(10, 8, [det]), "a.tiff"))
    assert "warnings" not in plain and plain["file"] == "a.tiff"
    warned = json.loads(
        result_json(
            result(10, 8, [det]), "a.tiff", {"conf": 0.3}, ["multi-page TIFF with 3 pages: only page 1 is used"]
        )
    )
    assert warned["warnings"] == ["multi-page TIFF with 3 pages: only page 1 is used"]
    assert warned["params"] == {"conf": 0.3} and warned["detections"][0]["box"] == [1.0, 2.0, 3.0, 4.0]


def test_rescaled_maps_a_working_copy_back_and_clips():
    det = Detection("cup", 41, 0.9, (10.0, 20.0, 300.0, 150.0))
    small = DetectionResult("m", (300, 150), [det], {"inference": 1.0})
    big = small.rescaled(4.0, (1198, 600))
    assert big.image_size == (1198, 600) and big.timings_ms == {"inference": 1.0}
    assert big.detections[0].box == (40.0, 80.0, 1198.0, 600.0)  # 1200 clipped to the width
    assert (big.detections[0].label, big.detections[0].score) == ("cup", 0.9)
    assert small.rescaled(1.0, (300, 150)) is small
