"""SSD's onnxruntime engine: torchvision's own detections on both architectures, and its export cache.

Golden values come from torchvision's model called directly (support/ssd_weights.torchvision_direct). The
fast path resizes with OpenCV, not torch (ssd_fast), so its detections must be equivalent, not identical: the
same labels, boxes of IoU >= 0.99 and scores within 1e-3 at the same thresholds, on both architectures and
every shared image (tests/support/detections.py: as multisets, since seeded weights give tied scores).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from support.detections import assert_equivalent_detections
from support.ssd_weights import make_state_dict, torchvision_direct

from app.engine.detectors import ssd_onnx
from app.engine.detectors.base import ModelLoadError
from app.engine.detectors.ssd import SSDDetector
from app.engine.images import load_image
from app.engine.result import DetectParams
from app.ops import threads

ARCHS = ("ssdlite320_mobilenet_v3_large", "ssd300_vgg16")
IMAGES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")


@pytest.fixture(scope="module", params=ARCHS)
def arch_weights(request, tmp_path_factory):
    arch = request.param
    return arch, make_state_dict(arch, tmp_path_factory.mktemp(arch) / f"{arch}-seed0.pth")


@pytest.fixture(scope="module")
def fast(arch_weights, tmp_path_factory):
    arch, weights = arch_weights
    return SSDDetector(arch, weights, device="cpu", engine="onnxruntime", cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.mark.parametrize("image", IMAGES)
def test_same_detections_as_torchvision(fast, arch_weights, images_dir, image):
    arch, weights = arch_weights
    assert fast.onnx is not None and fast.engine == "onnxruntime"
    for conf, iou, max_det in ((0.3, 0.45, 100), (0.6, 0.3, 10)):
        want = torchvision_direct(arch, weights, images_dir / image, conf, iou, max_det)
        got = fast.detect(load_image(images_dir / image), DetectParams(conf=conf, iou=iou, max_det=max_det))
        assert len(want["scores"]) > 0
        assert_equivalent_detections(got.detections, want, max_det, conf, min_iou=0.99, score_atol=1e-3)


def test_second_load_reads_the_cache(arch_weights, tmp_path, monkeypatch):
    arch, weights = arch_weights
    first = SSDDetector(arch, weights, device="cpu", cache_dir=tmp_path)
    cached = list(tmp_path.glob("*.onnx"))
    assert len(cached) == 1 and first.onnx.where == str(cached[0])
    assert not list(tmp_path.glob(".*.tmp")), "the temp file was renamed, not left behind"

    def no_export(*args):
        raise AssertionError("exported again although the cache holds the graph")

    monkeypatch.setattr(ssd_onnx, "export", no_export)
    second = SSDDetector(arch, weights, device="cpu", cache_dir=tmp_path)
    assert second.onnx.where == first.onnx.where


def test_other_weights_get_their_own_graph(tmp_path):
    arch = ARCHS[0]
    a = make_state_dict(arch, tmp_path / "a.pth", seed=1)
    b = make_state_dict(arch, tmp_path / "b.pth", seed=2)
    assert ssd_onnx.cache_key(a, arch, 320) != ssd_onnx.cache_key(b, arch, 320)
    assert ssd_onnx.cache_key(a, arch, 320) == ssd_onnx.cache_key(a, arch, 320)
    assert ssd_onnx.cache_key(a, arch, 320) != ssd_onnx.cache_key(a, arch, 300)


def test_unwritable_cache_folder_loads_from_memory(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be")
    det = SSDDetector(ARCHS[0], make_state_dict(ARCHS[0], tmp_path / "w.pth"), device="cpu", cache_dir=blocker / "c")
    assert "in memory" in det.onnx.where
    assert det.detect(np.zeros((64, 80, 3), np.uint8)).image_size == (80, 64)


def test_damaged_cache_file_is_a_clear_error(tmp_path):
    weights = make_state_dict(ARCHS[0], tmp_path / "w.pth")
    good = SSDDetector(ARCHS[0], weights, device="cpu", cache_dir=tmp_path / "cache")
    other = SSDDetector(
        ARCHS[0], make_state_dict(ARCHS[0], tmp_path / "x.pth", seed=5), device="cpu", cache_dir=tmp_path
    )
    # a graph of other weights under this file's name: loads in onnxruntime, gives other outputs
    os.replace(other.onnx.where, good.onnx.where)
    with pytest.raises(ModelLoadError) as err:
        SSDDetector(ARCHS[0], weights, device="cpu", cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert good.onnx.where in msg and "OBJDET_SSD_ENGINE=torch" in msg and str(weights) in msg


def test_concurrent_processes_share_one_cache_file(tmp_path):
    """Two processes exporting at once: both load, one complete file remains (atomic rename)."""
    weights = make_state_dict(ARCHS[0], tmp_path / "w.pth")
    cache = tmp_path / "cache"
    code = (
        "import sys; from app.engine.detectors.ssd import SSDDetector; "
        f"d = SSDDetector({ARCHS[0]!r}, {str(weights)!r}, device='cpu', num_threads=1, cache_dir={str(cache)!r}); "
        "print(d.onnx.where)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    files = list(cache.glob("*.onnx"))
    assert len(files) == 1 and not list(cache.glob(".*.tmp"))
    assert {out.strip() for out, _ in outs} == {str(files[0])}


def test_torch_engine_has_no_onnx_and_bad_engine_is_refused(tmp_path):
    weights = make_state_dict(ARCHS[0], tmp_path / "w.pth")
    assert SSDDetector(ARCHS[0], weights, device="cpu", engine="torch").onnx is None
    with pytest.raises(ModelLoadError, match="engine 'tensorrt' is not supported; allowed: onnxruntime, torch"):
        SSDDetector(ARCHS[0], weights, device="cpu", engine="tensorrt")


def test_thread_policy(monkeypatch):
    import cv2

    for name in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS"):  # recorded, so the test's values do not leak
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("KMP_BLOCKTIME", "7")  # the user's own value wins
    monkeypatch.setattr(threads, "_applied", {})
    threads.configure(2)
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and os.environ["KMP_BLOCKTIME"] == "7"
    assert cv2.getNumThreads() == 2 and torch.get_num_threads() == 2
    options = threads.onnxruntime_options(2)
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    # onnxruntime engine: torch runs only the small pre- and postprocessing, on one thread; OpenCV keeps 2
    threads.configure(2, threads.torch_threads(2, "onnxruntime"))
    assert torch.get_num_threads() == 1 and cv2.getNumThreads() == 2
    assert threads.torch_threads(2, "torch") == 2
