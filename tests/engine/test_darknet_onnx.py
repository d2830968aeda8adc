"""Darknet -> ONNX (app/engine/detectors/darknet_onnx.py) against OpenCV 4's own Darknet importer, on the real
Yolo-Fastest models and a seeded YOLOv3-tiny-shaped network. Runs in both environments: under OpenCV 4 the converted
graph's raw outputs are compared with the importer's in one process; under OpenCV 5 the final detections
are compared with golden ones computed by the OpenCV 4 environment's Python (tests/support/opencv4_darknet.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnx.numpy_helper
import pytest
from support.onnx_models import TINY_CLASSES, TINY_INPUT, write_tiny_darknet

from app.engine.catalog import DARKNET_ONNX
from app.engine.detectors.base import ModelLoadError
from app.engine.detectors.darknet import DarknetError
from app.engine.detectors.darknet_onnx import cache_key, cached_onnx, convert, converted_facts, decode_head, save
from app.engine.detectors.yolo import YoloDetector
from app.engine.images import load_image
from app.engine.result import DetectParams

REPO = Path(__file__).resolve().parents[2]
OPENCV_MAJOR = int(cv2.__version__.split(".")[0])
IMAGES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")
MODELS = ("yolo-fastest-1.1", "yolo-fastest-1.1-xl", "tiny", "tiny-v0.1")


def opencv4_python() -> str | None:
    """The OpenCV 4 environment's Python: $OBJDET_OPENCV4_PYTHON (the Makefile sets it), else .venv-cv4."""
    path = os.environ.get("OBJDET_OPENCV4_PYTHON") or str(REPO / ".venv-cv4" / "bin" / "python")
    return path if Path(path).is_file() else None


@pytest.fixture(scope="module")
def models(yolo_dir, tmp_path_factory) -> dict[str, tuple[Path, Path, Path]]:
    """(cfg, weights, names) of each model: the shared Yolo-Fastest pair and two seeded tiny networks
    whose .weights headers differ (version 0.2: 20 bytes with an int64 ``seen``; 0.1: 16 bytes)."""
    out = {}
    for name in MODELS[:2]:
        folder = yolo_dir.parent / name
        if (folder / f"{name}.weights").is_file():
            out[name] = (folder / f"{name}.cfg", folder / f"{name}.weights", folder / "coco.names")
    for name, version in (("tiny", (0, 2, 0)), ("tiny-v0.1", (0, 1, 0))):
        folder = tmp_path_factory.mktemp(name)
        cfg, weights = write_tiny_darknet(folder, version)
        (folder / "tiny.names").write_text("".join(f"class{i}\n" for i in range(TINY_CLASSES)))
        out[name] = (cfg, weights, folder / "tiny.names")
    return out


def model(models, name):
    if name not in models:
        pytest.skip(f"{name} weights not in the shared assets")
    return models[name]


def blob(path: Path, size: int) -> np.ndarray:
    return cv2.dnn.blobFromImage(cv2.imread(str(path)), 1 / 255.0, (size, size), swapRB=True, crop=False)


@pytest.mark.skipif(OPENCV_MAJOR >= 5, reason="compares with OpenCV 4's Darknet importer, absent from OpenCV 5")
@pytest.mark.parametrize("name", MODELS)
def test_converted_graph_gives_the_darknet_importers_outputs(models, name, images_dir, tmp_path):
    cfg, weights, _ = model(models, name)
    onnx_path = save(convert(cfg, weights), tmp_path / "model.onnx")
    _, specs = converted_facts(onnx_path)
    darknet = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    converted = cv2.dnn.readNetFromONNX(str(onnx_path))
    # the importer names its heads yolo_<layer index>; the converter darknet_yolo_<layer index>
    names = list(darknet.getUnconnectedOutLayersNames())
    assert sorted(converted.getUnconnectedOutLayersNames()) == sorted(DARKNET_ONNX.output_prefix + n[5:] for n in names)
    size = TINY_INPUT if name.startswith("tiny") else 320
    for image in IMAGES:
        darknet.setInput(blob(images_dir / image, size))
        converted.setInput(blob(images_dir / image, size))
        want = darknet.forward(names)
        heads = [DARKNET_ONNX.output_prefix + n[5:] for n in names]
        got = dict(zip(heads, converted.forward(heads), strict=True))
        for n, head, a in zip(names, heads, want, strict=True):
            # the graph gives the head's convolution; decode_head is the region layer on it
            b = decode_head(got[head], specs[head], full=True)
            assert a.shape == b.shape, (image, n)
            assert np.abs(a - b).max() <= 1e-5, (image, n, float(np.abs(a - b).max()))
            assert (a[:, 5:] > 0).any() or name.startswith("yolo"), "a seeded head should score something"
            # the detector's rows: exactly the importer's rows whose objectness passes the threshold
            kept = decode_head(got[head], specs[head])
            passing = a[a[:, 4] > specs[head].thresh]
            assert kept.shape == passing.shape and np.abs(kept - passing).max(initial=0) <= 1e-5, (image, n)


def box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.skipif(OPENCV_MAJOR < 5, reason="the OpenCV 5 path (conversion at load) against OpenCV 4's importer")
@pytest.mark.parametrize("name", MODELS[:3])
def test_opencv5_detections_match_opencv4_darknet(models, name, images_dir, tmp_path, monkeypatch):
    python = opencv4_python()
    if python is None:
        pytest.skip("no OpenCV 4 environment (make test creates .venv-cv4; or set OBJDET_OPENCV4_PYTHON)")
    cfg, weights, names = model(models, name)
    conf, iou = 0.3, 0.45
    paths = [str(images_dir / image) for image in IMAGES]
    run = subprocess.run(
        [python, str(REPO / "tests" / "support" / "opencv4_darknet.py"), *map(str, (cfg, weights, conf, iou)), *paths],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    golden = json.loads(run.stdout)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    detector = YoloDetector(weights, cfg, names)
    assert detector.converted and detector.layout == "darknet"
    assert list((tmp_path / DARKNET_ONNX.cache_subdir).glob("*.onnx")), "the converted model is cached"
    found = 0
    for path in paths:
        result = detector.detect(load_image(Path(path)), DetectParams(conf=conf, iou=iou, max_det=1000))
        want = golden[path]
        assert [d.class_id for d in result.detections] == [w[0] for w in want], path
        for ours, theirs in zip(result.detections, want, strict=True):
            assert ours.score == pytest.approx(theirs[1], abs=1e-3), path
            assert box_iou(ours.box, theirs[2:]) >= 0.99, (path, ours.box, theirs[2:])
        found += len(want)
    assert found, "the golden run found objects to compare"


def test_weights_convert_command_writes_a_model_the_detector_reads(models, images_dir, tmp_path):
    cfg, weights, names = model(models, "yolo-fastest-1.1")
    out = tmp_path / "fastest.onnx"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, "-m", "app", "weights", "convert", str(cfg), str(weights), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert str(out) in run.stdout and "darknet_yolo_121 [1, 255, 10, 10]" in run.stdout
    from_onnx = YoloDetector(out, names=names)  # the .onnx alone: recognised as converted, size from the graph
    assert (from_onnx.converted, from_onnx.layout, from_onnx.input_size) == (True, "darknet", 320)
    from_darknet = YoloDetector(weights, cfg, names)
    for image in IMAGES:
        rgb = load_image(images_dir / image)
        a, b = from_onnx.detect(rgb).detections, from_darknet.detect(rgb).detections
        assert [d.label for d in a] == [d.label for d in b], image
        for x, y in zip(a, b, strict=True):
            assert x.score == pytest.approx(y.score, abs=1e-4) and box_iou(x.box, y.box) >= 0.999

    bad = subprocess.run(
        [sys.executable, "-m", "app", "weights", "convert", str(cfg), str(models["tiny"][1]), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert bad.returncode == 1 and "tiny.weights" in bad.stderr and "too short" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_cache_converts_once_even_with_concurrent_processes(models, tmp_path):
    cfg, weights, _ = model(models, "tiny")
    cache = tmp_path / "cache"
    script = "import sys; from app.engine.detectors.darknet_onnx import cached_onnx; print(cached_onnx(*sys.argv[1:4]))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(cfg), str(weights), str(cache)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(3)
    ]
    paths = {p.communicate(timeout=300)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    converted = Path(paths.pop())
    assert not paths and sorted(cache.iterdir()) == [converted, Path(f"{converted}.sha256")]  # no temp file left
    assert cache_key(cfg, weights)[:16] in converted.name
    onnx.checker.check_model(onnx.load(str(converted)))
    stamp = converted.stat().st_mtime_ns
    assert cached_onnx(cfg, weights, cache) == converted and converted.stat().st_mtime_ns == stamp  # reused

    other_cfg, other_weights = write_tiny_darknet(tmp_path, seed=1)  # other weights: another key
    assert cached_onnx(other_cfg, other_weights, cache) != converted


def test_a_file_without_head_metadata_is_refused_with_the_fix(models, tmp_path):
    """A .onnx converted before version 2 (decode in the graph, no head metadata) or stripped of it: a load
    error naming the file and the command, not wrong boxes."""
    cfg, weights, names = model(models, "tiny")
    converted = convert(cfg, weights)
    del converted.metadata_props[:]
    path = save(converted, tmp_path / "old.onnx")
    with pytest.raises(ModelLoadError) as err:
        YoloDetector(path, names=names)
    assert str(path) in str(err.value) and "python -m app weights convert" in str(err.value)


def test_unwritable_cache_gives_the_model_from_memory(models, tmp_path):
    cfg, weights, _ = model(models, "tiny")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be")
    data = cached_onnx(cfg, weights, blocker / "cache")
    assert isinstance(data, bytes)
    assert [o.name for o in onnx.load_from_string(data).graph.output] == ["darknet_yolo_15", "darknet_yolo_21"]


def test_layers_the_converter_cannot_build_are_named(models, tmp_path):
    cfg, weights, _ = model(models, "tiny")
    text = cfg.read_text()

    def refused(new_text: str) -> str:
        bad = tmp_path / "bad.cfg"
        bad.write_text(new_text)
        with pytest.raises(DarknetError) as err:
            convert(bad, weights)
        assert str(bad) in str(err.value)
        return str(err.value)

    assert "activation=selu is not supported" in refused(text.replace("activation=mish", "activation=selu", 1))
    assert "[reorg]" in refused(text.replace("[dropout]\nprobability=0.1", "[reorg]\nstride=1"))
    wrong_classes = text.replace(f"classes={TINY_CLASSES}", "classes=80", 1)
    assert "fix filters= or classes=" in refused(wrong_classes)


@pytest.mark.skipif(OPENCV_MAJOR < 5, reason="OpenCV 5 runs Darknet models converted to ONNX (and cached)")
def test_a_tampered_or_truncated_cached_model_is_rebuilt(yolo_dir, images_dir, tmp_path):
    """The cache is keyed by the source files' hash; the cached file itself is checked against the sha256
    recorded beside it when it was written. A valid graph with other weights (which detected nothing) and a
    truncated file (which was named but never rebuilt) are both converted again, through ``detect``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBJDET_")} | {
        "XDG_CACHE_HOME": str(tmp_path),
        "OBJDET_MODELS": "yolo",
        "OBJDET_YOLO_WEIGHTS": str(yolo_dir / "yolo-fastest-1.1.weights"),
        "OBJDET_YOLO_CONFIG": str(yolo_dir / "yolo-fastest-1.1.cfg"),
        "OBJDET_YOLO_NAMES": str(yolo_dir / "coco.names"),
    }

    def detect() -> list:
        proc = subprocess.run(
            [sys.executable, "-m", "app", "detect", "--json", str(images_dir / "coffee.png")],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)["images"][0]["results"][0]["detections"]

    reference = detect()
    assert reference, "Yolo-Fastest finds the cup in coffee.png"
    (cached,) = (tmp_path / DARKNET_ONNX.cache_subdir).glob("*.onnx")
    written = cached.read_bytes()
    tampered = onnx.load(str(cached))
    for tensor in tampered.graph.initializer:  # a valid graph whose weights are all zero
        array = onnx.numpy_helper.to_array(tensor)
        tensor.CopyFrom(onnx.numpy_helper.from_array(np.zeros_like(array), tensor.name))
    cached.write_bytes(tampered.SerializeToString())
    assert detect() == reference and cached.read_bytes() == written
    cached.write_bytes(written[: len(written) // 3])
    assert detect() == reference and cached.read_bytes() == written
