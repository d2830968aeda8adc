"""Large JPEGs decoded at the size the networks use: libjpeg-turbo's 1/2, 1/4, 1/8 scaled decode
(``images.load_working``) against a full decode + area resize (``load_image`` + ``working_copy``, the
reference), on real files: the shared images scaled up to 12 and 24 MP and re-encoded at quality 90.

Equivalent, not identical: the same labels, boxes of IoU >= 0.95, scores within 0.02, for the real
Yolo-Fastest-1.1 and the seeded SSDlite (the onnxruntime engine, as the app runs it).
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from support.detections import box_iou
from support.large_images import SHARED_NAMES, large_jpeg

from app.engine.images import JPEG_MARGIN, jpeg_reduction, load_image, load_working, work_side, working_copy
from app.engine.result import DetectParams

SIDE = work_side([320])  # 1024: the working side of the default models
PARAMS = DetectParams(conf=0.3, iou=0.45, max_det=100)


@pytest.fixture(scope="module")
def big_jpegs(images_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("large-jpegs")
    return {(name, mp): large_jpeg(images_dir / name, mp, folder) for name in SHARED_NAMES for mp in (12, 24)}


@pytest.fixture(scope="module")
def yolo(yolo_dir, tmp_path_factory):
    from app.engine.detectors.yolo import YoloDetector

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        return YoloDetector(
            yolo_dir / "yolo-fastest-1.1.weights", yolo_dir / "yolo-fastest-1.1.cfg", yolo_dir / "coco.names"
        )


@pytest.fixture(scope="module")
def ssd(ssd_weights, tmp_path_factory):
    from app.engine.detectors.ssd import SSDDetector

    arch = "ssdlite320_mobilenet_v3_large"
    return SSDDetector(arch, ssd_weights, device="cpu", engine="onnxruntime", cache_dir=tmp_path_factory.mktemp("c"))


def reference(path):
    """Full decode, then area resize to the working side: what every entry point did before."""
    full = load_image(path)
    small, factor = working_copy(full, SIDE)
    return small, factor, (full.shape[1], full.shape[0])


def assert_equivalent(got, want, where: str) -> None:
    """Same labels in the same order, each box IoU >= 0.95, each score within 0.02."""
    assert [d.label for d in got] == [d.label for d in want], where
    for g, w in zip(got, want, strict=True):
        assert box_iou(g.box, w.box) >= 0.95, (where, g, w)
        assert abs(g.score - w.score) <= 0.02, (where, g, w)


def test_large_jpegs_are_decoded_at_a_reduced_scale(big_jpegs):
    for (name, mp), path in big_jpegs.items():
        working, factor, (width, height) = load_working(path, max_side=SIDE)
        assert width * height == pytest.approx(mp * 1e6, rel=0.01)
        want, want_factor, want_size = reference(path)
        assert working.shape == want.shape and factor == want_factor and (width, height) == want_size
        # 12 MP: ~4243 px -> 2122 (1/4 would be 1061, under 1.5 x 1024); 24 MP: ~6000 -> 3000 (1500 < 1536)
        assert jpeg_reduction(width, height, math.ceil(JPEG_MARGIN * SIDE)) == 2, (name, mp)
        # The pixels themselves: a low-pass of the same picture, within a few levels of the reference.
        diff = np.abs(working.astype(np.int16) - want.astype(np.int16))
        assert diff.mean() < 1.5, (name, mp, diff.mean())


@pytest.mark.parametrize("model", ["yolo", "ssd"])
def test_same_detections_as_a_full_decode(big_jpegs, model, request):
    detector = request.getfixturevalue(model)
    found = 0
    for (name, mp), path in big_jpegs.items():
        working, factor, size = load_working(path, max_side=SIDE)
        want_small, want_factor, want_size = reference(path)
        got = detector.detect(working, PARAMS).rescaled(factor, size).detections
        want = detector.detect(want_small, PARAMS).rescaled(want_factor, want_size).detections
        assert_equivalent(got, want, f"{model} {name} {mp} MP")
        found += len(want)
    assert found > 0, "the test means nothing without detections"


def test_peak_memory_is_a_fraction_of_a_full_decode(big_jpegs, images_dir):
    """numpy's allocations (simplejpeg's output, OpenCV's) as tracemalloc sees them: a 24 MP JPEG decoded
    whole holds 72 MB; at 1/2 scale 18 MB."""
    path = big_jpegs[("coffee.png", 24)]

    def peak(call) -> int:
        tracemalloc.start()
        try:
            call()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    reduced, full = peak(lambda: load_working(path, max_side=SIDE)), peak(lambda: reference(path))
    assert full >= 72_000_000
    assert reduced < full / 3, f"load_working peaked at {reduced:,} bytes, a full decode at {full:,}"


@pytest.mark.parametrize(
    ("size", "side", "factor"),
    [
        ((4000, 3000), 1024, 2),
        ((6000, 4000), 1024, 4),
        ((8192, 8192), 1024, 8),
        ((2047, 1000), 1024, 2),
        ((2046, 1000), 1024, 1),
    ],
)
def test_jpeg_reduction_keeps_the_working_side(size, side, factor):
    assert jpeg_reduction(*size, side) == factor
    assert -(-max(size) // factor) >= side


def test_exif_orientation_is_kept_at_reduced_scale(tmp_path, images_dir):
    """An EXIF-rotated large JPEG: the reduced decode is turned as the full one, and the size is the turned one."""
    from PIL import Image

    source = large_jpeg(images_dir / "coffee.png", 12, tmp_path)
    im = Image.open(source)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    turned = tmp_path / "turned.jpg"
    im.save(turned, quality=90, exif=exif)
    working, factor, size = load_working(turned, max_side=SIDE)
    want, want_factor, want_size = reference(turned)
    assert size == want_size and size[1] > size[0] and working.shape == want.shape and factor == want_factor
    assert np.abs(working.astype(np.int16) - want.astype(np.int16)).mean() < 1.5
