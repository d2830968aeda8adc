"""app/ops/prometheus.py and app/ops/logs.py in this process, on the real Yolo-Fastest detector.

Golden figures come from the detector's own class methods called directly (the registry's hook
wraps the instance only), and from prometheus-client's parser over what the metrics port serves.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.engine.config import ConfigError, Settings
from app.engine.images import ImageError, load_image
from app.engine.registry import get_detector
from app.engine.result import DetectParams
from app.ops import logs
from app.ops import prometheus as metrics


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def recording():
    was = metrics.enabled()
    metrics.enable(True)
    yield
    metrics.enable(was)


@pytest.fixture
def json_log(capsys):
    """The app's log configured as JSON lines at debug level (restored afterwards)."""
    handlers, level = list(logs.LOGGER.handlers), logs.LOGGER.level
    logs.configure("json", "debug")
    yield lambda: [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    logs.LOGGER.handlers[:], logs.LOGGER.level = handlers, level


def stage_counts(model: str) -> dict[str, float]:
    return {s: value("objdet_stage_seconds_count", model=model, stage=s) for s in metrics.STAGES}


def test_a_network_run_is_recorded_once_whatever_the_decodes(yolo_env, images_dir, recording, json_log):
    detector = get_detector("yolo", Settings.from_env())
    image = load_image(images_dir / "coffee.png")
    params = DetectParams(conf=0.3)
    expected = type(detector).decode(detector, type(detector).forward(detector, image), params)  # unwrapped
    counts, images, found = (
        stage_counts("yolo"),
        value("objdet_images_total", model="yolo"),
        value("objdet_detections_total", model="yolo"),
    )
    raw = detector.forward(image)
    result = detector.decode(raw, params)
    detector.decode(raw, DetectParams(conf=0.9))  # a slider move on the same output: not a new image
    assert len(result.detections) == len(expected.detections) > 0
    assert value("objdet_images_total", model="yolo") - images == 1
    assert value("objdet_detections_total", model="yolo") - found == len(expected.detections)
    after = stage_counts("yolo")
    assert {s: after[s] - counts[s] for s in metrics.STAGES} == dict.fromkeys(metrics.STAGES, 1)
    (event,) = [e for e in json_log() if e["message"] == "detection"]
    height, width = image.shape[:2]
    assert (event["model"], event["outcome"], event["width"], event["height"]) == ("yolo", "ok", width, height)
    assert event["detections"] == len(expected.detections) and set(event["timings_ms"]) == set(metrics.STAGES)


def test_a_model_error_is_counted_and_raised(yolo_env, recording):
    detector = get_detector("yolo", Settings.from_env())
    before = value("objdet_failures_total", model="yolo", kind="model_error")
    with pytest.raises(Exception):  # noqa: B017 - whatever OpenCV raises for a 1-D array
        detector.forward(np.zeros(7, np.uint8))
    assert value("objdet_failures_total", model="yolo", kind="model_error") - before == 1
    with pytest.raises(ValueError, match="unknown class"):  # the request's fault: not a model error
        detector.decode(detector.forward(np.zeros((64, 64, 3), np.uint8)), DetectParams(classes={"unicorn"}))
    assert value("objdet_failures_total", model="yolo", kind="model_error") - before == 1


def test_nothing_is_recorded_when_off(yolo_env, images_dir):
    """The CLI, ``bench`` and ``batch``: recording stays off, the figures are only in --json."""
    assert not metrics.enabled()
    detector = get_detector("yolo", Settings.from_env())
    images = value("objdet_images_total", model="yolo")
    detector.detect(load_image(images_dir / "coffee.png"))
    assert value("objdet_images_total", model="yolo") == images


def test_refusals_by_kind_and_limit(recording, json_log):
    with pytest.raises(ImageError) as too_big:
        load_image(b"x" * 100, "/home/someone/private/holiday.png", max_bytes=10)
    with pytest.raises(ImageError) as not_image:
        load_image(b"plain text", "notes.png")
    before = {
        "bad": value("objdet_failures_total", model="ssd", kind="bad_image"),
        "bytes": value("objdet_uploads_refused_total", limit="file_bytes"),
        "pixels": value("objdet_uploads_refused_total", limit="image_pixels"),
    }
    for exc in (too_big.value, not_image.value):
        metrics.record_refused(exc.name, exc.reason, ["ssd"])
    assert value("objdet_failures_total", model="ssd", kind="bad_image") - before["bad"] == 2
    assert value("objdet_uploads_refused_total", limit="file_bytes") - before["bytes"] == 1
    assert value("objdet_uploads_refused_total", limit="image_pixels") - before["pixels"] == 0
    events = [e for e in json_log() if e["message"] == "input refused"]
    assert [e["file"] for e in events] == ["holiday.png", "notes.png"]  # base names only
    assert "/home/someone" not in json.dumps(events)


def test_metrics_port_serves_only_metrics(recording):
    server = metrics.start_server(0, "127.0.0.1", ["yolo"])
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
            text = r.read().decode()
            assert r.headers["Content-Type"].startswith("text/plain")
        names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
        assert "objdet_images_total" in names and names <= metrics.metric_names()
        assert 'objdet_failures_total{kind="timeout",model="yolo"} 0.0' in text  # series exist from the start
        for path in ("/", "/kubernetes-object-detection/metrics", "/metrics/", "/_stcore/health"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(base + path, timeout=10)
            assert err.value.code == 404, path
    finally:
        server.shutdown()
        server.server_close()


def test_label_names_are_bounded():
    allowed = {"model", "stage", "kind", "state", "limit", "le", "sha256"}
    for family in metrics.REGISTRY.collect():
        for sample in family.samples:
            assert set(sample.labels) <= allowed, (sample.name, sample.labels)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OBJDET_METRICS_PORT": "70000"}, "OBJDET_METRICS_PORT"),
        ({"OBJDET_METRICS_PORT": "nine"}, "OBJDET_METRICS_PORT"),
        ({"OBJDET_LOG_FORMAT": "xml"}, "OBJDET_LOG_FORMAT"),
        ({"OBJDET_LOG_LEVEL": "loud"}, "OBJDET_LOG_LEVEL"),
    ],
)
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_settings_defaults_and_values():
    default = Settings.from_env({})
    assert (default.metrics_port, default.log_format, default.log_level) == (0, "text", "info")
    given = Settings.from_env({"OBJDET_METRICS_PORT": "9464", "OBJDET_LOG_FORMAT": "JSON", "OBJDET_LOG_LEVEL": "Debug"})
    assert (given.metrics_port, given.log_format, given.log_level) == (9464, "json", "debug")


def test_text_log_is_one_line_per_event(capsys):
    handlers, level = list(logs.LOGGER.handlers), logs.LOGGER.level
    try:
        logs.configure("text", "info")
        logs.event("detection", model="ssd", timings_ms={"inference": 12.5}, note="two words")
        logs.event("hidden", level="debug")
        logs.event("warning: weights dir is empty", level="warning")
    finally:
        logs.LOGGER.handlers[:], logs.LOGGER.level = handlers, level
    assert capsys.readouterr().err.splitlines() == [
        '[objdet] detection model=ssd timings_ms=inference:12.5 note="two words"',
        "[objdet] warning: weights dir is empty",
    ]


def test_detect_json_prints_the_same_figures(yolo_env, images_dir, tmp_path):
    """The CLI pushes nothing; its JSON carries what serve would count: stages, detections, failure kind."""
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a picture")
    proc = subprocess.run(
        [sys.executable, "-m", "app", "detect", "--model", "yolo", "--json", str(images_dir / "coffee.png"), str(bad)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=240,
    )
    good, failed = json.loads(proc.stdout)["images"]
    (result,) = good["results"]
    assert set(result["timings_ms"]) == set(metrics.STAGES)
    assert result["detection_count"] == len(result["detections"]) > 0
    assert failed["error_kind"] == "bad_image" and "broken.png" in failed["error"]


def test_video_frames_and_timeouts(recording):
    frames, timeouts = (
        value("objdet_video_frames_total", model="yolo"),
        value("objdet_failures_total", model="yolo", kind="timeout"),
    )
    metrics.record_video("yolo", 7, stopped_by_budget=False)
    metrics.record_video("yolo", 3, stopped_by_budget=True)
    assert value("objdet_video_frames_total", model="yolo") - frames == 10
    assert value("objdet_failures_total", model="yolo", kind="timeout") - timeouts == 1


def test_slot_gauges_follow_the_semaphore():
    slots = metrics.SlotGauges(threading.BoundedSemaphore(1), 1)
    entered = threading.Event()

    def second_run():
        with slots:
            entered.set()

    with slots:
        assert value("objdet_inference_slots_in_use") == 1 and value("objdet_inference_slots") == 1
        waiter = threading.Thread(target=second_run)
        waiter.start()
        for _ in range(3000):  # the second run blocks on the semaphore (bounded wait: never hangs the suite)
            if value("objdet_inference_slots_waiting") == 1:
                break
            threading.Event().wait(0.01)
        assert value("objdet_inference_slots_waiting") == 1
        assert not entered.is_set()
    waiter.join(timeout=30)
    assert entered.is_set()
    assert value("objdet_inference_slots_in_use") == 0 and value("objdet_inference_slots_waiting") == 0
