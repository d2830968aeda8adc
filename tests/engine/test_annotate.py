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
        # a constant-ish share of the image (OpenCV 5 measures the Hershey glyphs ~20 % taller than 4.x)
        assert 0.008 <= th / width <= 0.06, (width, th)
        assert tw < width  # fits


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
