"""SSD through the project equals torchvision's own model called directly on the same input."""

from __future__ import annotations

import pytest
import torch
import torchvision
from support.detections import assert_equivalent_detections, assert_same_detections
from support.ssd_weights import make_state_dict, torchvision_direct
from torchvision.models import detection

from app.engine.detectors.base import ModelLoadError
from app.engine.detectors.ssd import SSDDetector
from app.engine.images import load_image
from app.engine.result import DetectParams

ARCH = "ssdlite320_mobilenet_v3_large"


@pytest.fixture(scope="session")
def ssdlite_weights(tmp_path_factory):
    return make_state_dict(ARCH, tmp_path_factory.mktemp("ssd") / "ssdlite-seed0.pth")


@pytest.fixture(scope="module", params=["onnxruntime", "torch"])
def ssd(ssdlite_weights, request, tmp_path_factory):
    """Both engines: each must give torchvision's own detections."""
    return SSDDetector(
        ARCH, ssdlite_weights, device="cpu", engine=request.param, cache_dir=tmp_path_factory.mktemp("c")
    )


@pytest.mark.parametrize("conf,iou,max_det", [(0.3, 0.45, 100), (0.5, 0.6, 20), (0.8, 0.3, 5)])
def test_equals_torchvision_direct(ssd, ssdlite_weights, images_dir, conf, iou, max_det):
    path = images_dir / "coffee.png"
    want = torchvision_direct(ARCH, ssdlite_weights, path, conf, iou, max_det)
    assert len(want["scores"]) > 0, "the seeded weights must produce detections for this test to mean anything"
    got = ssd.detect(load_image(path), DetectParams(conf=conf, iou=iou, max_det=max_det))
    if ssd.engine == "torch":  # torchvision's own transform: the same numbers
        assert_same_detections(got.detections, want, max_det, box_atol=1e-3, score_atol=1e-5)
    else:  # OpenCV's bilinear resize (ssd_fast): equivalent detections
        assert_equivalent_detections(got.detections, want, max_det, conf)
    cats = detection.SSDLite320_MobileNet_V3_Large_Weights.COCO_V1.meta["categories"]
    assert all(d.label == cats[d.class_id] for d in got.detections)
    assert all(d.score > conf for d in got.detections)


def test_class_filter_then_cap(ssd, ssdlite_weights, images_dir):
    path = images_dir / "astronaut.png"
    full = torchvision_direct(ARCH, ssdlite_weights, path, 0.3, 0.45, 100_000)
    cats = detection.SSDLite320_MobileNet_V3_Large_Weights.COCO_V1.meta["categories"]
    labels = [cats[i] for i in full["labels"].tolist()]
    wanted = {labels[0], labels[-1]}
    expect = [(lab, float(s)) for lab, s in zip(labels, full["scores"].tolist(), strict=True) if lab in wanted][:7]
    got = ssd.detect(load_image(path), DetectParams(conf=0.3, iou=0.45, classes=frozenset(wanted), max_det=7))
    assert [(d.label, pytest.approx(d.score, rel=1e-5)) for d in got.detections] == [
        (lab, pytest.approx(s, rel=1e-5)) for lab, s in expect
    ]
    assert {d.label for d in got.detections} <= wanted


def test_decode_reuses_one_forward(ssd, images_dir, monkeypatch):
    calls = []
    handle = ssd.model.backbone.register_forward_hook(lambda *a: calls.append(1))
    if ssd.onnx is not None:  # the exported backbone + head runs instead of torch's
        session_run = ssd.onnx.run
        monkeypatch.setattr(ssd.onnx, "run", lambda batch: calls.append(1) or session_run(batch))
    try:
        raw = ssd.forward(load_image(images_dir / "chelsea.png"))
        a = ssd.decode(raw, DetectParams(conf=0.3, max_det=100_000))
        b = ssd.decode(raw, DetectParams(conf=0.7, max_det=100_000))
        c = ssd.decode(raw, DetectParams(conf=0.3, max_det=3))
    finally:
        handle.remove()
    assert len(calls) == 1
    assert len(b.detections) < len(a.detections)
    assert [d.score for d in c.detections] == [d.score for d in a.detections[:3]]
    assert a.image_size == (451, 300)
    assert set(a.timings_ms) == {"preprocess", "inference", "postprocess"}
    for d in a.detections:
        x1, y1, x2, y2 = d.box
        assert 0 <= x1 <= x2 <= 451 and 0 <= y1 <= y2 <= 300


@pytest.mark.parametrize("engine", ["onnxruntime", "torch"])  # torch: channels_last weights on CPU
def test_ssd300_vgg16_equals_torchvision_direct(tmp_path, images_dir, engine):
    weights = make_state_dict("ssd300_vgg16", tmp_path / "vgg.pth")
    path = images_dir / "chelsea.png"
    want = torchvision_direct("ssd300_vgg16", weights, path, 0.5, 0.45, 50)
    det = SSDDetector("ssd300_vgg16", weights, device="cpu", engine=engine, cache_dir=tmp_path)
    got = det.detect(load_image(path), DetectParams(0.5, 0.45, None, 50))
    assert len(want["scores"]) > 0
    if engine == "torch":
        assert_same_detections(got.detections, want, 50)
    else:
        assert_equivalent_detections(got.detections, want, 50, 0.5)


def test_wrong_architecture_is_a_short_clear_error(ssdlite_weights):
    with pytest.raises(ModelLoadError) as err:
        SSDDetector("ssd300_vgg16", ssdlite_weights, device="cpu")
    msg = str(err.value)
    assert str(ssdlite_weights) in msg and "do not fit architecture ssd300_vgg16" in msg
    assert "OBJDET_SSD_ARCH=ssdlite320_mobilenet_v3_large" in msg
    assert len(msg.splitlines()) == 1 and len(msg) < 600


def test_other_class_count_is_reported(tmp_path):
    model = detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5)
    path = tmp_path / "five.pth"
    torch.save(model.state_dict(), path)
    det = SSDDetector(ARCH, path, device="cpu")
    assert len(det.labels) == 5 and det.labels[1] == "class1"


def test_not_a_state_dict(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a torch file" * 10)
    with pytest.raises(ModelLoadError, match=r"junk\.pth: not a loadable torch state dict"):
        SSDDetector(ARCH, junk, device="cpu")
    tensor_file = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor_file)
    with pytest.raises(ModelLoadError, match="not a state dict"):
        SSDDetector(ARCH, tensor_file, device="cpu")
    with pytest.raises(ModelLoadError, match=r"file not found.*weights fetch"):
        SSDDetector(ARCH, tmp_path / "absent.pth", device="cpu")


def test_training_checkpoint_wrapper_loads(tmp_path, ssdlite_weights):
    wrapped = tmp_path / "ckpt.pth"
    torch.save({"model": torch.load(ssdlite_weights, weights_only=True), "epoch": 3}, wrapped)
    assert SSDDetector(ARCH, wrapped, device="cpu").arch == ARCH


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_cuda(ssdlite_weights):
    with pytest.raises(ModelLoadError, match="OBJDET_DEVICE=cuda"):
        SSDDetector(ARCH, ssdlite_weights, device="cuda")


def test_labels_module_matches_torchvision():
    from app.engine.labels import COCO80, COCO_CATEGORIES

    assert tuple(detection.SSD300_VGG16_Weights.COCO_V1.meta["categories"]) == COCO_CATEGORIES
    assert len(COCO80) == 80 and "N/A" not in COCO80
    assert torchvision.__version__


def test_the_comparison_sees_a_moved_box_a_lost_detection_and_a_wrong_label():
    """assert_same_detections is order-free among ties, not blind: each kind of difference fails it."""
    from app.engine.result import Detection

    want = {
        "boxes": torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 2, 2]]),
        "scores": torch.tensor([0.9, 0.9, 0.5]),
        "labels": torch.tensor([1, 1, 3]),
    }
    swapped = [
        Detection("a", 1, 0.9, (5, 5, 20, 20)),
        Detection("a", 1, 0.9, (0, 0, 10, 10)),
        Detection("c", 3, 0.5, (1, 1, 2, 2)),
    ]
    assert_same_detections(swapped, want, max_det=100)
    for broken in (
        [swapped[0], Detection("a", 1, 0.9, (0, 0, 10, 11)), swapped[2]],
        swapped[:2],
        [swapped[0], swapped[1], Detection("d", 4, 0.5, (1, 1, 2, 2))],
    ):
        with pytest.raises(AssertionError):
            assert_same_detections(broken, want, max_det=100)
