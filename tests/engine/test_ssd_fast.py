"""``ssd_fast``: the onnxruntime engine's transform and decode equal torchvision's, called directly.

Golden values: torchvision's ``GeneralizedRCNNTransform`` on the same images (within OpenCV's resize's
rounding), and
``SSD.postprocess_detections`` on the same random head outputs, over the whole threshold range, including
thresholds low enough that a class passes more than ``topk_candidates`` boxes and NMS takes torchvision's
per-class path.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import resize_boxes

from app.engine.detectors.ssd import build_model
from app.engine.detectors.ssd_fast import FastSSD, resize_in_bands
from app.engine.images import load_image

ARCHS = ("ssdlite320_mobilenet_v3_large", "ssd300_vgg16")


@pytest.fixture(scope="module", params=ARCHS)
def model_and_anchors(request):
    torch.manual_seed(0)
    model = build_model(request.param).eval()
    size = int(model.transform.min_size[0])
    with torch.inference_mode():
        batch = torch.zeros(1, 3, size, size)
        features = list(model.backbone(batch).values())
        anchors = model.anchor_generator(ImageList(batch, [(size, size)]), features)
    return model, anchors, size


def _images(images_dir):
    rng = np.random.default_rng(0)
    yield from (load_image(images_dir / n) for n in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"))
    yield rng.integers(0, 256, (97, 211, 3), dtype=np.uint8)  # smaller than the input: upscaled
    yield rng.integers(0, 256, (1024, 777, 3), dtype=np.uint8)
    yield rng.integers(0, 256, (320, 320, 3), dtype=np.uint8)  # SSDlite's own size: not resized
    yield rng.integers(0, 256, (1, 5, 3), dtype=np.uint8)


def test_prepare_equals_torchvision_transform(model_and_anchors, images_dir):
    model, anchors, size = model_and_anchors
    fast = FastSSD(model, size, anchors[0])
    for image in _images(images_dir):
        tensor = torch.from_numpy(image).permute(2, 0, 1).float().div(255.0)
        with torch.inference_mode():
            want = model.transform([tensor])[0].tensors.numpy()
        got = fast.prepare(image)
        assert got.shape == want.shape == (1, 3, size, size) and got.dtype == np.float32
        assert got.flags.c_contiguous
        # OpenCV's bilinear weights are not torch's to the last bit (ssd_fast): within 0.05 of one pixel-value
        # step, 1/(255 std) in normalised units (1.0 for SSD300's std of 1/255, 0.0078 for SSDlite's 0.5), and
        # within 0.005 of a step on average.
        step = 1.0 / (255.0 * min(model.transform.image_std))
        np.testing.assert_allclose(got, want, atol=0.05 * step, rtol=0)
        assert np.abs(got - want).mean() < 0.005 * step


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


def test_rescale_equals_torchvision_resize_boxes(model_and_anchors):
    model, anchors, size = model_and_anchors
    boxes = torch.rand(50, 4, generator=torch.Generator().manual_seed(0)) * size
    fast = FastSSD(model, size, anchors[0])
    for original in [(300, 451), (427, 640), (1, 5), (4032, 3024), (size, size)]:
        want = resize_boxes(boxes, (size, size), original).numpy()
        assert _same_array(fast.rescale(boxes.numpy(), original), want), original


def _head_outputs(model, size, seed, spread):
    """Random head outputs of the model's shapes; ``spread`` widens the logits so that more classes pass."""
    g = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        features = list(model.backbone(torch.zeros(1, 3, size, size)).values())
        shapes = model.head(features)
    reg = torch.randn(shapes["bbox_regression"].shape, generator=g)
    logits = torch.randn(shapes["cls_logits"].shape, generator=g) * spread
    return reg, logits


@pytest.mark.parametrize(
    ("seed", "spread", "conf", "iou", "cap"),
    [
        (1, 4.0, 0.30, 0.45, 100),
        (2, 4.0, 0.60, 0.30, 10),
        (3, 2.0, 0.05, 0.50, 300),
        (4, 1.0, 0.001, 0.45, 300),  # thousands of candidates: topk_candidates per class and per-class NMS
        (5, 6.0, 0.95, 0.45, 100),
        (6, 0.1, 0.50, 0.45, 100),  # nothing passes
    ],
)
def test_select_equals_postprocess_detections(model_and_anchors, seed, spread, conf, iou, cap):
    model, anchors, size = model_and_anchors
    reg, logits = _head_outputs(model, size, seed, spread)
    model.score_thresh, model.nms_thresh, model.detections_per_img = conf, iou, cap
    with torch.inference_mode():
        want = model.postprocess_detections({"bbox_regression": reg, "cls_logits": logits}, anchors, [(size, size)])[0]
        scores = torch.softmax(logits[0], dim=-1)  # what SSDDetector keeps from a forward
        got_boxes, got_scores, got_labels = FastSSD(model, size, anchors[0]).select(scores, reg[0], conf, iou, cap)
        best = scores[:, 1:].amax(dim=1).numpy()  # given, as the exported graph gives it: the same selection
        fast = FastSSD(model, size, anchors[0])
        for given in (
            fast.select(scores.numpy(), reg[0].numpy(), conf, iou, cap, best),
            fast.select(scores, reg[0], conf, iou, cap, torch.from_numpy(best)),
        ):
            assert all(map(_same_array, given, (got_boxes, got_scores, got_labels)))
    assert got_labels.tolist() == want["labels"].tolist()
    assert _same_array(got_scores, want["scores"].numpy())
    assert _same_array(got_boxes, want["boxes"].numpy())  # the same shape and dtype too when nothing passes
    if seed == 4:  # the case is what it claims: a class over topk_candidates before NMS
        passing = (torch.softmax(logits[0], -1)[:, 1:] > conf).sum(0)
        assert int(passing.max()) > model.topk_candidates
    if seed == 6:
        assert len(want["labels"]) == 0


@pytest.mark.parametrize(
    ("shape", "bands"),
    [
        ((400, 600), "rows"),  # coffee: 320 / gcd(400, 320) = 4 output rows per whole source offset
        ((512, 512), "rows"),  # astronaut
        ((427, 640), None),  # rocket: 427 is prime to 320
        ((300, 451), None),  # chelsea: rows enlarged, 451 prime to 320
        ((1024, 777), "rows"),
        ((427, 641), None),
        ((97, 211), None),  # enlarged both ways
        ((320, 320), "rows"),
        ((4032, 3024), "rows"),
        ((1, 5), None),
    ],
)
def test_resize_in_bands_equals_one_resize(shape, bands, monkeypatch):
    """The bands are the one resize (within 0.001 of a pixel value: float32 source coordinates), for SSDlite's
    320 in bands of at most 63 rows where the band edges fall on whole source rows, else in one call; and for
    SSD300's 300."""
    pixels = np.random.default_rng(0).random((*shape, 3), dtype=np.float32) * 255
    resize, outputs = cv2.resize, []

    def spy(*args, **kwargs):
        out = resize(*args, **kwargs)
        outputs.append(out.shape[:2])
        return out

    monkeypatch.setattr(cv2, "resize", spy)
    for size in (320, 300):
        outputs.clear()
        got = resize_in_bands(pixels, size)
        want = resize(pixels, (size, size), interpolation=cv2.INTER_LINEAR)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)
        image = pixels.astype(np.uint8)  # what prepare hands it: converted to float band by band
        want = resize(image.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(resize_in_bands(image, size), want, rtol=0, atol=1e-3)
        if size != 320:
            continue
        if bands is None:
            assert outputs == [(size, size)] * 2
        else:
            assert len(outputs) > 2 and max(rows for rows, _ in outputs) <= 63 + 2, outputs
