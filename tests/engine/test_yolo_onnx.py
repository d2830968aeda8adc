"""ONNX YOLO exports (v5 and v8 layouts) on synthetic graphs with known outputs. Runs on OpenCV 4
and 5 (CI runs this file in a second environment with OpenCV 5 and no torch)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from support.onnx_models import build_yolo_onnx

from app.engine.detectors.base import ModelLoadError
from app.engine.detectors.yolo import LETTERBOX_FILL, YoloDetector, letterbox
from app.engine.labels import COCO80
from app.engine.result import DetectParams

S = 320


def to_input(box, width, height, size=S):
    """Original-image box -> (cx, cy, w, h) in the letterboxed input, computed here from the definition
    of a centred letterbox (scale to fit, pad the rest equally on both sides)."""
    r = min(size / width, size / height)
    pad_x, pad_y = (size - round(width * r)) // 2, (size - round(height * r)) // 2
    x1, y1, x2, y2 = box
    return ((x1 + x2) / 2 * r + pad_x, (y1 + y2) / 2 * r + pad_y, (x2 - x1) * r, (y2 - y1) * r)


def v5_table(objects, width, height, n_rows=30, n_cls=80):
    """(1, N, 5+C): cx, cy, w, h, objectness, class probabilities; unused rows are zero."""
    table = np.zeros((1, n_rows, 5 + n_cls), np.float32)
    for row, (box, cls, obj, prob) in enumerate(objects):
        table[0, row, :4] = to_input(box, width, height)
        table[0, row, 4] = obj
        table[0, row, 5 + cls] = prob
    return table


def v8_table(objects, width, height, n_cols=30, n_cls=80):
    """(1, 4+C, N): cx, cy, w, h, class scores, one column per candidate."""
    table = np.zeros((1, 4 + n_cls, n_cols), np.float32)
    for col, (box, cls, score) in enumerate(objects):
        table[0, :4, col] = to_input(box, width, height)
        table[0, 4 + cls, col] = score
    return table


def image(width, height):
    return np.full((height, width, 3), 90, np.uint8)


@pytest.mark.parametrize("width,height", [(600, 400), (300, 640), (320, 320)])
def test_v5_layout_decodes_and_maps_letterbox_back(tmp_path, width, height):
    cup, person = COCO80.index("cup"), COCO80.index("person")
    objects = [
        ((50, 40, 250, 300), cup, 0.9, 0.8),  # score 0.72
        ((60, 45, 245, 290), cup, 0.8, 0.5),  # overlaps the first: suppressed by NMS
        ((20, 30, 120, 200), person, 0.95, 0.6),  # 0.57, another class
        ((10, 10, 40, 40), person, 0.3, 0.5),  # 0.15, below the threshold
    ]
    objects = [
        ((x1 * width / 600, y1 * height / 400, x2 * width / 600, y2 * height / 400), c, o, p)
        for (x1, y1, x2, y2), c, o, p in objects
    ]
    model = build_yolo_onnx(tmp_path / "v5.onnx", v5_table(objects, width, height), S)
    det = YoloDetector(model, input_size=S)
    result = det.detect(image(width, height), DetectParams(conf=0.3, iou=0.45))
    assert det.layout == "v5"
    assert [(d.label, round(d.score, 4)) for d in result.detections] == [("cup", 0.72), ("person", 0.57)]
    for d, want in zip(result.detections, (objects[0][0], objects[2][0]), strict=True):
        assert d.box == pytest.approx(want, abs=1.0)


@pytest.mark.parametrize("width,height", [(640, 360), (250, 500)])
def test_v8_layout_decodes_and_maps_letterbox_back(tmp_path, width, height):
    dog, cat = COCO80.index("dog"), COCO80.index("cat")
    objects = [
        ((0.1 * width, 0.2 * height, 0.5 * width, 0.9 * height), dog, 0.88),
        ((0.6 * width, 0.1 * height, 0.95 * width, 0.5 * height), cat, 0.41),
        ((0.62 * width, 0.12 * height, 0.93 * width, 0.5 * height), cat, 0.35),
    ]  # same cat: suppressed
    model = build_yolo_onnx(tmp_path / "v8.onnx", v8_table(objects, width, height), S, decoy_first=True)
    det = YoloDetector(model, input_size=S)
    result = det.detect(image(width, height), DetectParams(conf=0.25, iou=0.5))
    assert det.layout == "v8"
    assert [(d.label, round(d.score, 4)) for d in result.detections] == [("dog", 0.88), ("cat", 0.41)]
    assert result.detections[0].box == pytest.approx(objects[0][0], abs=1.0)
    assert result.detections[1].box == pytest.approx(objects[1][0], abs=1.0)
    only_cats = det.detect(image(width, height), DetectParams(conf=0.25, classes=frozenset({"cat"})))
    assert [d.label for d in only_cats.detections] == ["cat"]
    loose = det.detect(image(width, height), DetectParams(conf=0.25, iou=0.99))
    assert [d.label for d in loose.detections] == ["dog", "cat", "cat"]


def test_output_chosen_by_shape_not_position(tmp_path):
    objects = [((100, 100, 200, 200), COCO80.index("cup"), 0.9, 0.9)]
    model = build_yolo_onnx(tmp_path / "decoy.onnx", v5_table(objects, 400, 400), S, decoy_first=True)
    det = YoloDetector(model, input_size=S)
    assert det.output_names[0] != "output0" or len(det.output_names) == 2
    result = det.detect(image(400, 400), DetectParams(conf=0.3))
    assert [d.label for d in result.detections] == ["cup"]


def test_boxes_clipped_to_image(tmp_path):
    objects = [((-50, -20, 700, 300), COCO80.index("car"), 0.9, 0.9)]
    model = build_yolo_onnx(tmp_path / "clip.onnx", v5_table(objects, 600, 400), S)
    result = YoloDetector(model, input_size=S).detect(image(600, 400), DetectParams(conf=0.3))
    assert result.detections[0].box == pytest.approx((0, 0, 600, 300), abs=1.0)


def test_wrong_class_count_is_refused_at_load_naming_the_file_and_fix(tmp_path):
    """The warm-up forward inside the constructor checks the outputs against the names."""
    model = build_yolo_onnx(tmp_path / "c3.onnx", np.zeros((1, 10, 8), np.float32), S)
    with pytest.raises(
        ModelLoadError,
        match=r"c3\.onnx: no output has the shape of .* for 80 classes; outputs "
        r"are \(1, 10, 8\)\. Check OBJDET_YOLO_NAMES .*80 names from the "
        r"built-in COCO list",
    ):
        YoloDetector(model, input_size=S)
    names = tmp_path / "five.names"
    names.write_text("a\nb\nc\nd\ne\n")
    with pytest.raises(ModelLoadError, match=rf"for 5 classes; .*5 names from {names}"):
        YoloDetector(model, names=names, input_size=S)


def test_layout_is_known_right_after_loading(tmp_path):
    table = np.zeros((1, 5, 85), np.float32)
    det = YoloDetector(build_yolo_onnx(tmp_path / "v5.onnx", table, S), input_size=S)
    assert det.layout == "v5"  # the warm-up ran; no image was needed


@pytest.mark.parametrize("content", [b"", bytes(range(256)) * 64, b"\x08\x07" + b"\xff" * 100])
def test_file_that_is_not_onnx_names_the_file(tmp_path, content):
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(content)
    with pytest.raises(ModelLoadError, match=rf"YOLO weights {bogus}: OpenCV cannot read this ONNX file"):
        YoloDetector(bogus, input_size=S)


def test_custom_names_file_used_as_given(tmp_path):
    names = tmp_path / "my.names"
    names.write_text("widget\ngadget\nsofa\n")
    table = np.zeros((1, 5, 8), np.float32)
    table[0, 0, :4] = (160, 160, 100, 100)
    table[0, 0, 4], table[0, 0, 5 + 2] = 1.0, 0.9
    model = build_yolo_onnx(tmp_path / "c3.onnx", table, S)
    det = YoloDetector(model, names=names, input_size=S)
    assert det.labels == ("widget", "gadget", "sofa")  # "sofa" stays as written: not the COCO list
    assert [d.label for d in det.detect(image(S, S)).detections] == ["sofa"]


def test_letterbox_places_the_image_centred():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, :100] = 255  # left half white
    boxed, scale, (pad_x, pad_y) = letterbox(img, 320)
    assert boxed.shape == (320, 320, 3) and scale == pytest.approx(1.6)
    assert (pad_x, pad_y) == (0, 80)
    assert (boxed[:80] == LETTERBOX_FILL).all() and (boxed[240:] == LETTERBOX_FILL).all()
    assert (boxed[85:235, 5:155] == 255).all() and (boxed[85:235, 165:315] == 0).all()


def test_preprocess_letterbox_blob_is_rgb_over_255(tmp_path):
    model = build_yolo_onnx(tmp_path / "v5.onnx", v5_table([], 10, 10), S)
    det = YoloDetector(model, input_size=S)
    img = np.zeros((S, S, 3), np.uint8)
    img[..., 0] = 255  # red in RGB
    blob, mapping = det.preprocess(img)
    assert blob.shape == (1, 3, S, S) and blob.dtype == np.float32
    assert np.allclose(blob[0, 0], 1.0) and np.allclose(blob[0, 1:], 0.0)
    assert mapping == {"scale": 1.0, "pad": (0.0, 0.0)}


def test_empty_output_is_a_normal_empty_result(tmp_path):
    model = build_yolo_onnx(tmp_path / "v5.onnx", v5_table([], 10, 10), S)
    result = YoloDetector(model, input_size=S).detect(image(50, 40))
    assert result.detections == [] and result.image_size == (50, 40)


def test_opencv_version_is_what_ci_asked_for():
    wanted = __import__("os").environ.get("EXPECT_OPENCV_MAJOR")
    if not wanted:
        pytest.skip("EXPECT_OPENCV_MAJOR not set (CI sets it for each environment)")
    assert cv2.__version__.split(".")[0] == wanted
