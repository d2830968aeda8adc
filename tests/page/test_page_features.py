"""The page as people use it, through streamlit.testing (AppTest): the annotated video inline with
its timeline, the example images, the agreement view of both models, and settings carried by the URL."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("streamlit")
pytest.importorskip("torch")
import pyarrow as pa
from streamlit.testing.v1 import AppTest
from support.apptest import SCRIPT, open_details, shown

from app.engine.labels import COCO80
from app.engine.result import DetectParams
from app.page.cache import CACHE

EXAMPLES = Path(SCRIPT).parent / "page" / "examples"


@pytest.fixture(autouse=True)
def empty_process_cache():
    """The app's cache is process-wide: each test starts empty."""
    CACHE.clear()
    yield
    CACHE.clear()


def new_app(query: dict | None = None) -> AppTest:
    at = AppTest.from_file(SCRIPT, default_timeout=180)
    at.query_params.update(query or {})
    at.run()
    assert not at.exception, at.exception
    return at


def table(at: AppTest, index: int = -1):
    return at.dataframe[index].value.reset_index(drop=True)


# --- video ---------------------------------------------------------------------------------------------------


def labels_yolo_finds_on_frames(yolo_dir, clip_path, frames) -> set[str]:
    """What Yolo-Fastest finds on the clip's frames, read by OpenCV here and detected one by one."""
    from app.engine.detectors.yolo import YoloDetector

    detector = YoloDetector(
        yolo_dir / "yolo-fastest-1.1.weights", yolo_dir / "yolo-fastest-1.1.cfg", names=yolo_dir / "coco.names"
    )
    cap = cv2.VideoCapture(str(clip_path))
    found, index = set(), 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if index in frames:
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            found |= {d.label for d in detector.detect(rgb, DetectParams()).detections}
        index += 1
    cap.release()
    return found


def test_video_plays_inline_with_a_timeline_per_class(yolo_env, yolo_dir, images_dir):
    clip_path = images_dir.parent / "videos" / "astronaut-coffee.mp4"
    at = new_app()
    at.file_uploader(key="video").set_value(("astronaut-coffee.mp4", clip_path.read_bytes(), "video/mp4"))
    at.run()
    at.button(key="run_video").click().run()
    assert not at.exception and not at.error
    assert any("astronaut-coffee.mp4: 40 frames, detection on 8" in shown(s.value) for s in at.success)
    videos = at.get("video")
    assert len(videos) == 1 and videos[0].proto.url.endswith(".webm")
    charts = at.get("vega_lite_chart")
    assert len(charts) == 1
    spec = __import__("json").loads(charts[0].proto.spec)
    assert spec["encoding"]["color"]["field"] == "label" and spec["mark"]["type"] == "line"
    data = pa.ipc.open_stream(charts[0].proto.datasets[0].data.data).read_all().to_pandas()
    # classes with equal counts lie on one line: each has its boxes' colour, its own dash pattern and marker
    from app.engine.annotate import class_hex

    colour = spec["encoding"]["color"]["scale"]
    assert colour["range"] == [class_hex(label) for label in colour["domain"]]
    dashes, shapes = spec["encoding"]["strokeDash"]["scale"]["range"], spec["encoding"]["shape"]["scale"]["range"]
    assert len({tuple(d) for d in dashes}) == len(dashes) == len(set(data["label"])) == len(set(shapes))
    # one series per class Yolo-Fastest finds on the detected frames (0, 5, ..., 35), each on every detected frame
    expected = labels_yolo_finds_on_frames(yolo_dir, clip_path, set(range(0, 40, 5)))
    assert {"person", "cup"} <= expected
    assert set(data["label"]) == expected
    assert all(sorted(g["frame"]) == list(range(0, 40, 5)) for _, g in data.groupby("label"))
    seen = data[data["count"] > 0]
    first_time = seen.groupby("label")["time_s"].min()
    assert first_time["person"] == 0.0 and first_time["person"] < first_time["cup"]  # person first
    last = seen[seen["time_s"] == data["time_s"].max()]
    assert "cup" in set(last["label"]) and "person" not in set(last["label"])  # cup last
    # the key-frame slider reruns the page from the session's result: no second processing
    assert at.select_slider(key="key_frame").options == [f"{i} ({i / 10:.1f} s)" for i in range(0, 40, 5)]
    at.select_slider(key="key_frame").set_value(35).run()
    assert len(at.get("video")) == 1 and any("frame 35" in (shown(i.proto.imgs[0].caption)) for i in at.image)
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["Annotated video (.webm, 640x480)", "Annotated MP4 (source size)", "Per-frame CSV"]


def test_processed_video_lives_in_the_process_cache_not_the_session(yolo_env, images_dir):
    """Memory per process, not per session: the report is a CACHE entry counted by its bytes and owned by
    the session; the session holds its key only; a released entry gives a notice, not an error."""
    from app.page.cache import CACHE

    clip = (images_dir.parent / "videos" / "astronaut-coffee.mp4").read_bytes()
    at = new_app()
    at.file_uploader(key="video").set_value(("astronaut-coffee.mp4", clip, "video/mp4"))
    at.run()
    before = CACHE.bytes
    at.button(key="run_video").click().run()
    assert not at.exception and not at.error
    name, model, key, _ = at.session_state["video_result"]
    assert (name, model) == ("astronaut-coffee.mp4", "yolo") and key[0] == "video"
    report = CACHE.get(key)
    encoded = len(report.video) + len(report.mp4) + sum(len(jpeg) for _, jpeg in report.key_frames)
    assert encoded > 100_000 and CACHE.bytes - before == encoded  # counted by its bytes, once
    CACHE.clear()  # what the byte budget (or the session's end) does to it
    at.run()
    assert not at.exception and not at.error
    assert any("was released to keep the server's memory within its budget" in shown(i.value) for i in at.info)
    assert not at.get("video")


# --- examples ------------------------------------------------------------------------------------------------


def test_example_gives_the_same_table_as_uploading_the_file(yolo_env):
    at = new_app()
    assert at.selectbox(key="example").options == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg"]
    at.selectbox(key="example").set_value("coffee.jpg").run()
    assert not at.exception and not at.error
    from_example = table(at)
    assert "cup" in list(from_example["label"])
    assert any(shown(s.value) == "coffee.jpg" for s in at.subheader)

    CACHE.clear()  # the upload decodes and detects on its own
    at = new_app()
    at.file_uploader(key="images").set_value(("coffee.jpg", (EXAMPLES / "coffee.jpg").read_bytes(), "image/jpeg"))
    at.run()
    assert table(at).equals(from_example)
    # the same example chosen beside the upload of the same name: the summary grid and two images' tables,
    # no clash of widget keys
    at.selectbox(key="example").set_value("coffee.jpg").run()
    open_details(at)
    assert not at.exception and len(at.dataframe) == 3 and table(at, 1).equals(table(at, 2))
    assert list(table(at, 0)["image"]) == ["coffee.jpg", "coffee.jpg"]


def test_examples_are_small_and_recorded():
    files = sorted(p.name for p in EXAMPLES.iterdir() if p.suffix == ".jpg")
    assert sum((EXAMPLES / f).stat().st_size for f in files) < 400_000
    readme = (EXAMPLES / "README.md").read_text()
    for name in files:
        row = next(line for line in readme.splitlines() if line.startswith(f"| {name} |"))
        assert "public domain" in row or "CC0" in row
        Image.open(EXAMPLES / name).verify()


# --- agreement -----------------------------------------------------------------------------------------------

S = 320  # the synthetic YOLO's input size


def to_letterboxed(box, width, height):
    """Original-image box -> (cx, cy, w, h) in a centred letterbox of side S (scale to fit, pad equally)."""
    r = min(S / width, S / height)
    pad_x, pad_y = (S - round(width * r)) // 2, (S - round(height * r)) // 2
    x1, y1, x2, y2 = box
    return ((x1 + x2) / 2 * r + pad_x, (y1 + y2) / 2 * r + pad_y, (x2 - x1) * r, (y2 - y1) * r)


def test_agreement_counts_an_object_both_find_once(both_env, ssd_weights, tmp_path, monkeypatch):
    """SSD (seeded weights) runs for real; the YOLO is a synthetic ONNX graph whose output is written here: a
    copy of SSD's top box with SSD's label (found by both), the same box under another label, and a box of a
    label SSD did not find (both only YOLO). The expected split follows from that construction alone (SSD's
    own boxes of one label overlap by less than its NMS IoU 0.45, under the 0.5 match IoU)."""
    from support.onnx_models import build_yolo_onnx

    width, height = 600, 400
    rng = np.random.default_rng(7)
    picture = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, "PNG")
    data = buf.getvalue()

    at = new_app({"model": "ssd", "conf": "0.5", "max_det": "8"})  # SSD alone, from the URL
    at.file_uploader(key="images").set_value(("noise.png", data, "image/png")).run()
    ssd = table(at)
    assert len(ssd) >= 2, "the seeded SSD should find a few boxes on noise at 0.5"
    top = ssd.iloc[0]
    other_label = next(c for c in ("toothbrush", "hair drier", "scissors") if c not in set(ssd["label"]))
    absent_label = next(c for c in ("teddy bear", "vase", "clock") if c not in set(ssd["label"]) | {other_label})
    top_box = (top.x1, top.y1, top.x2, top.y2)
    rows = np.zeros((1, 10, 85), np.float32)
    # the other label's copy scores highest, so it claims first: only a label check keeps it off SSD's box
    planted = [(top_box, other_label, 1.0), (top_box, top.label, 0.9), ((20.0, 20.0, 120.0, 120.0), absent_label, 0.7)]
    for row, (box, label, score) in enumerate(planted):
        rows[0, row, :4] = to_letterboxed(box, width, height)
        rows[0, row, 4] = 1.0
        rows[0, row, 5 + COCO80.index(label)] = score
    model = build_yolo_onnx(tmp_path / "synthetic.onnx", rows, S)
    for key in ("OBJDET_YOLO_CONFIG", "OBJDET_YOLO_NAMES"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("OBJDET_YOLO_WEIGHTS", str(model))
    monkeypatch.setenv("OBJDET_YOLO_INPUT_SIZE", str(S))

    CACHE.clear()
    at = new_app({"model": "both", "conf": "0.5", "max_det": "8"})
    at.file_uploader(key="images").set_value(("noise.png", data, "image/png")).run()
    assert not at.exception and not at.error
    assert table(at, 0).equals(ssd)  # SSD gives the same table with YOLO beside it
    assert list(table(at, 1)["label"]) == [other_label, top.label, absent_label]

    expected = {label: [0, 0, 0] for label in set(ssd["label"]) | {other_label, absent_label}}
    expected[top.label][0] += 1  # both
    for label in ssd["label"].iloc[1:]:
        expected[label][1] += 1  # only SSD: every other SSD box
    expected[other_label][2] += 1  # only YOLO
    expected[absent_label][2] += 1
    agreement = table(at, 2)
    assert list(agreement.columns) == ["label", "both", "only ssd", "only yolo"]
    got = {r.label: [r.both, r["only ssd"], r["only yolo"]] for _, r in agreement.iterrows()}
    assert got == expected
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Found by both"] == "1" and metrics["Only ssd"] == str(len(ssd) - 1) and metrics["Only yolo"] == "2"
    assert float(metrics["Mean IoU of the pairs"]) > 0.95  # the copy differs by float32 rounding only
    assert any("agreement" in (shown(i.proto.imgs[0].caption)) for i in at.image)

    # the match IoU lives in the sidebar (and the URL); the copy is still a pair at its highest setting; moving
    # it (or the score threshold) re-matches the decoded results without running either network
    from app.engine.config import Settings
    from app.engine.registry import get_detector

    calls = []
    for name in ("ssd", "yolo"):
        detector = get_detector(name, Settings.from_env())
        monkeypatch.setattr(detector, "forward", lambda image, name=name: calls.append(name))
    at.slider(key="match_iou").set_value(0.95).run()
    assert at.query_params["match_iou"] == "0.95"
    assert {m.label: m.value for m in at.metric}["Found by both"] == "1"
    at.slider(key="conf").set_value(0.95).run()  # YOLO keeps only its 1.0 box (the other label)
    assert not at.exception and calls == []
    after = {r.label: [r.both, r["only ssd"], r["only yolo"]] for _, r in table(at, 2).iterrows()}
    assert (
        all(counts[0] == 0 for counts in after.values()) and {m.label: m.value for m in at.metric}["Only yolo"] == "1"
    )


# --- settings in the URL -------------------------------------------------------------------------------------


def test_query_parameters_set_the_sidebar_and_reproduce_the_view(yolo_env, images_dir):
    at = new_app({"conf": "0.6", "iou": "0.5", "max_det": "7", "classes": "cup,dining table", "model": "yolo"})
    assert not at.warning
    assert (at.slider(key="conf").value, at.slider(key="iou").value, at.slider(key="max_det").value) == (0.6, 0.5, 7)
    assert at.multiselect(key="classes").value == ["cup", "dining table"]
    assert at.radio(key="model").value == "yolo"
    at.file_uploader(key="images").set_value(("coffee.png", (images_dir / "coffee.png").read_bytes(), "image/png"))
    at.run()
    assert list(table(at)["label"]) == ["cup"]  # the dining table (0.44 in the assets README) is under 0.6
    # moving a slider writes the URL, so the address bar is always a link to this view
    at.slider(key="conf").set_value(0.3).run()
    assert at.query_params["conf"] == "0.30" and at.query_params["classes"] == "cup,dining table"
    assert list(table(at)["label"]) == ["cup", "dining table"]


@pytest.mark.parametrize(
    ("query", "notice", "key", "default", "in_url"),
    [
        ({"conf": "abc"}, "'conf=abc' is not a number; the default 0.30 is used", "conf", 0.30, "0.30"),
        ({"iou": "7"}, "'iou=7' is outside 0.1 to 0.95; the default 0.45 is used", "iou", 0.45, "0.45"),
        ({"max_det": "2.5"}, "'max_det=2.5' is not a whole number; the default 100 is used", "max_det", 100, "100"),
        ({"conf": "nan"}, "'conf=nan' is outside", "conf", 0.30, "0.30"),
        ({"model": "resnet"}, "'model=resnet' is not one of yolo; the default yolo is used", "model", "yolo", "yolo"),
    ],
)
def test_bad_query_value_falls_back_with_a_notice(yolo_env, query, notice, key, default, in_url):
    at = new_app(query)
    assert not at.exception
    assert any(notice in shown(w.value) for w in at.warning), [shown(w.value) for w in at.warning]
    widget = at.radio(key=key) if key == "model" else at.slider(key=key)
    assert widget.value == default
    assert at.query_params[key] == in_url  # the URL now holds the value in use


def test_unknown_class_in_the_url_is_left_out(yolo_env):
    at = new_app({"classes": "cup,unicorn"})
    assert at.multiselect(key="classes").value == ["cup"]
    assert any("unknown 'unicorn' left out" in shown(w.value) for w in at.warning)
