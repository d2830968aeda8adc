"""Real Yolo-Fastest-1.1 Darknet weights through the project, checked against cv2.dnn called directly.

On OpenCV 4 the detector uses its Darknet importer; on OpenCV 5 it converts the model to ONNX at load
(tests/engine/test_darknet_onnx.py checks the conversion against the importer), so the same tests run on both."""

from __future__ import annotations

import threading
from itertools import pairwise

import cv2
import numpy as np
import pytest

from app.engine.detectors.base import ModelLoadError
from app.engine.detectors.darknet_onnx import decode_heads
from app.engine.images import load_image
from app.engine.result import DetectParams

OPENCV_MAJOR = int(cv2.__version__.split(".")[0])
needs_cv4 = pytest.mark.skipif(OPENCV_MAJOR >= 5, reason=f"OpenCV {cv2.__version__} has no Darknet importer")

EXPECTED = {"astronaut.png": "person", "chelsea.png": "cat", "coffee.png": "cup", "rocket.jpg": None}


def direct_cv2(yolo_dir, path, conf=0.3, nms=0.45):
    """The textbook OpenCV Darknet recipe, independent of app/: BGR file, swapRB, class-agnostic NMS."""
    net = cv2.dnn.readNetFromDarknet(str(yolo_dir / "yolo-fastest-1.1.cfg"), str(yolo_dir / "yolo-fastest-1.1.weights"))
    names = [n.strip() for n in (yolo_dir / "coco.names").read_text().splitlines() if n.strip()]
    img = cv2.imread(str(path))
    h, w = img.shape[:2]
    net.setInput(cv2.dnn.blobFromImage(img, 1 / 255.0, (320, 320), swapRB=True, crop=False))
    boxes, scores, labels = [], [], []
    for out in net.forward(net.getUnconnectedOutLayersNames()):
        for row in out:
            cid = int(np.argmax(row[5:]))
            score = float(row[5 + cid])
            if score > conf:
                cx, cy, bw, bh = row[0] * w, row[1] * h, row[2] * w, row[3] * h
                boxes.append([cx - bw / 2, cy - bh / 2, bw, bh])
                scores.append(score)
                labels.append(names[cid])
    keep = cv2.dnn.NMSBoxes(boxes, scores, conf, nms) if boxes else []
    return [(labels[i], scores[i], boxes[i]) for i in np.asarray(keep).reshape(-1)]


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


@pytest.fixture(scope="module")
def detector(yolo_dir, tmp_path_factory):
    from app.engine.detectors.yolo import YoloDetector

    with pytest.MonkeyPatch.context() as patch:  # OpenCV 5 caches the converted model: not in the user's cache
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        return YoloDetector(
            yolo_dir / "yolo-fastest-1.1.weights", yolo_dir / "yolo-fastest-1.1.cfg", yolo_dir / "coco.names"
        )


@needs_cv4
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_expected_objects_and_agreement_with_direct_cv2(detector, images_dir, yolo_dir, name):
    image = load_image(images_dir / name)
    result = detector.detect(image, DetectParams(conf=0.3, iou=0.45))
    h, w = image.shape[:2]
    assert result.image_size == (w, h)
    assert set(result.timings_ms) == {"preprocess", "inference", "postprocess"}
    want = EXPECTED[name]
    if want is None:
        assert result.detections == []
        assert direct_cv2(yolo_dir, images_dir / name) == []
        return
    ours = [d for d in result.detections if d.label == want]
    assert ours, f"no {want} in {name}: {result.detections}"
    theirs = [(lab, s, b) for lab, s, b in direct_cv2(yolo_dir, images_dir / name) if lab == want]
    assert theirs
    top = max(theirs, key=lambda t: t[1])
    x, y, bw, bh = top[2]
    ref = [max(0, x), max(0, y), min(w, x + bw), min(h, y + bh)]  # ours are clipped to the image
    assert iou(ours[0].box, ref) >= 0.9
    assert ours[0].score == pytest.approx(top[1], abs=1e-4)
    for d in result.detections:
        x1, y1, x2, y2 = d.box
        assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h


def test_torchvision_spelling_for_darknet_names(detector, images_dir):
    result = detector.detect(load_image(images_dir / "coffee.png"), DetectParams(conf=0.3))
    labels = {d.label for d in result.detections}
    assert "dining table" in labels and "diningtable" not in labels
    assert "dining table" in detector.labels and "tv" in detector.labels and "tvmonitor" not in detector.labels


def test_params_filter_cap_and_decode_without_network(detector, images_dir):
    image = load_image(images_dir / "coffee.png")
    raw = detector.forward(image)
    low = detector.decode(raw, DetectParams(conf=0.0, iou=0.45))  # OpenCV's region layer already zeroes < 0.2
    assert len(low.detections) >= 2
    assert all(a.score >= b.score for a, b in pairwise(low.detections))
    only_cups = detector.decode(raw, DetectParams(conf=0.0, classes=frozenset({"cup"})))
    assert only_cups.detections and {d.label for d in only_cups.detections} == {"cup"}
    capped = detector.decode(raw, DetectParams(conf=0.0, max_det=1))
    assert [d.score for d in capped.detections] == [d.score for d in low.detections[:1]]
    high = detector.decode(raw, DetectParams(conf=0.6))
    assert all(d.score >= 0.6 for d in high.detections)
    assert len(high.detections) < len(low.detections)
    # looser NMS keeps at least as many boxes
    loose = detector.decode(raw, DetectParams(conf=0.0, iou=0.9))
    assert len(loose.detections) >= len(low.detections)
    with pytest.raises(ValueError, match="unknown class"):
        detector.decode(raw, DetectParams(classes=frozenset({"unicorn"})))


def test_shared_detector_is_thread_safe(detector, images_dir):
    names = sorted(EXPECTED)
    images = [load_image(images_dir / n) for n in names]
    expected = [[(d.label, round(d.score, 5)) for d in detector.detect(im).detections] for im in images]
    results, errors = {}, []

    def worker(k):
        try:
            for rep in range(6):
                i = (k + rep) % len(images)
                results[(k, rep)] = (i, [(d.label, round(d.score, 5)) for d in detector.detect(images[i]).detections])
        except Exception as exc:  # noqa: BLE001 - any failure in a thread is collected and reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 24
    for i, dets in results.values():
        assert dets == expected[i]


@pytest.mark.skipif(OPENCV_MAJOR < 5, reason="only OpenCV 5 lacks the Darknet importer")
def test_darknet_on_opencv5_is_converted_once_and_cached(yolo_dir, images_dir, tmp_path, monkeypatch):
    from app.engine.catalog import DARKNET_ONNX
    from app.engine.detectors.yolo import YoloDetector

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = YoloDetector(yolo_dir / "yolo-fastest-1.1.weights", yolo_dir / "yolo-fastest-1.1.cfg")
    (cached,) = (tmp_path / DARKNET_ONNX.cache_subdir).glob("*.onnx")  # beside it: its sha256, NAME.onnx.sha256
    stamp = cached.stat().st_mtime_ns
    second = YoloDetector(yolo_dir / "yolo-fastest-1.1.weights", yolo_dir / "yolo-fastest-1.1.cfg")
    assert first.converted and second.converted and cached.stat().st_mtime_ns == stamp
    assert [d.label for d in second.detect(load_image(images_dir / "coffee.png")).detections][:1] == ["cup"]


def test_bad_darknet_files_give_a_clear_error(yolo_dir, tmp_path):
    from app.engine.detectors.yolo import YoloDetector

    with pytest.raises(ModelLoadError, match=r"yolo-fastest-1\.1\.cfg: file not found"):
        YoloDetector(yolo_dir / "yolo-fastest-1.1.weights", tmp_path / "yolo-fastest-1.1.cfg")
    broken_cfg = tmp_path / "broken.cfg"
    broken_cfg.write_text("[net]\nwidth=320\nheight=320\n[convolutional]\nfilters=banana\n")
    with pytest.raises(ModelLoadError, match=r"broken\.cfg"):
        YoloDetector(yolo_dir / "yolo-fastest-1.1.weights", broken_cfg)


def test_layout_known_right_after_loading(detector):
    """The constructor runs one warm-up forward : no image is needed to know the layout."""
    assert detector.layout == "darknet"


def test_objectness_prefilter_keeps_every_scoring_row(detector, images_dir):
    """decode skips rows whose objectness is at or below the region threshold: none of them may score."""
    for name in sorted(EXPECTED):
        image = load_image(images_dir / name)
        blob = cv2.dnn.blobFromImage(image, 1 / 255.0, (320, 320), swapRB=False, crop=False)
        detector.net.setInput(blob)
        outs = detector.net.forward(detector.output_names)
        if detector.converted:  # the graph gives the heads; every row of the region layer, decoded
            rows = decode_heads(dict(zip(detector.output_names, outs, strict=True)), detector.heads, full=True)
        else:
            rows = np.concatenate(outs)
        scoring = rows[(rows[:, 5:] > 0).any(axis=1)]
        assert len(scoring) == len(detector.forward(image).data["scores"]), name
        assert (scoring[:, 4] > detector.region_thresh).all() and detector.region_thresh == 0.2
