"""The Streamlit page through streamlit.testing (AppTest): real Yolo-Fastest weights, seeded SSD."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

pytest.importorskip("streamlit")
pytest.importorskip("torch")
from support.apptest import Counter, new_app, open_details, shown, table_labels, upload

from app.engine.registry import get_detector


@pytest.fixture(autouse=True)
def empty_process_cache():
    """The app's cache is process-wide (shared by sessions and so by tests): each test starts empty,
    so counts of decodes and network calls are this test's own."""
    from app.page.cache import CACHE

    CACHE.clear()
    yield
    CACHE.clear()


def test_yolo_finds_the_cup(yolo_env, images_dir):
    at = new_app()
    assert [r.options for r in at.radio if r.key == "model"] == [["yolo"]] or at.radio(key="model").value == "yolo"
    upload(at, "coffee.png", (images_dir / "coffee.png").read_bytes())
    assert "cup" in table_labels(at)
    assert any("coffee.png" in shown(s.value) for s in at.subheader)
    labels = [b.label for b in at.get("download_button")]
    assert labels.count("PNG") == 1 and "JSON" in labels and "CSV" in labels


def test_compare_mode_shows_both_models(both_env, images_dir):
    at = new_app()
    assert at.radio(key="model").value == "both"
    upload(at, "coffee.png", (images_dir / "coffee.png").read_bytes())
    assert len(at.dataframe) == 3  # one per model, then the agreement table
    assert list(at.dataframe[2].value.columns) == ["label", "both", "only ssd", "only yolo"]
    texts = " ".join(shown(m.value) for m in at.markdown)
    assert "SSD (torchvision)" in texts and "YOLO (OpenCV DNN)" in texts
    assert "cup" in table_labels(at, 1)
    assert len([m for m in at.metric if m.label == "Latency"]) == 2


def test_slider_changes_rows_without_running_the_network(both_env, images_dir, monkeypatch):
    at = new_app()
    counters = {m: Counter(monkeypatch, get_detector(m, both_env)) for m in ("ssd", "yolo")}
    import app.engine.images

    decodes = []
    real_load = app.engine.images.load_working  # the page's decode
    monkeypatch.setattr(app.engine.images, "load_working", lambda *a, **k: decodes.append(1) or real_load(*a, **k))
    upload(at, "coffee.png", (images_dir / "coffee.png").read_bytes())
    assert {m: c.calls for m, c in counters.items()} == {"ssd": 1, "yolo": 1}
    at.slider(key="max_det").set_value(300).run()
    before_yolo, before_ssd = table_labels(at, 1), list(at.dataframe[0].value["score"])
    assert before_yolo == ["cup", "dining table"] and min(before_ssd) < 0.9
    at.slider(key="conf").set_value(0.6).run()
    assert table_labels(at, 1) == ["cup"]
    at.slider(key="conf").set_value(0.9).run()
    assert table_labels(at, 1) == []
    after_ssd = list(at.dataframe[0].value["score"])
    assert after_ssd and min(after_ssd) >= 0.9 and after_ssd != before_ssd
    at.slider(key="iou").set_value(0.9).run()
    at.slider(key="max_det").set_value(3).run()
    assert len(table_labels(at, 0)) == 3
    assert {m: c.calls for m, c in counters.items()} == {"ssd": 1, "yolo": 1}  # no second network call
    assert len(decodes) == 1  # and the upload was decoded once, not on every rerun


def test_class_filter(yolo_env, images_dir):
    at = new_app()
    upload(at, "coffee.png", (images_dir / "coffee.png").read_bytes())
    at.multiselect(key="classes").set_value(["dining table"]).run()
    assert table_labels(at) == ["dining table"]
    at.multiselect(key="classes").set_value(["person"]).run()
    assert table_labels(at) == []


def test_bad_upload_shows_error_then_next_good_upload_works(yolo_env, images_dir):
    at = new_app()
    upload(at, "broken.png", b"\x89PNG\r\n\x1a\nnot really")
    assert any("broken.png" in shown(e.value) for e in at.error)
    assert len(at.dataframe) == 0
    upload(at, "coffee.png", (images_dir / "coffee.png").read_bytes())
    assert not at.error and "cup" in table_labels(at)


def test_several_images_one_bad(yolo_env, images_dir):
    at = new_app()
    files = [
        ("coffee.png", (images_dir / "coffee.png").read_bytes(), "image/png"),
        ("empty.jpg", b"", "image/jpeg"),
        ("chelsea.png", (images_dir / "chelsea.png").read_bytes(), "image/png"),
    ]
    at.file_uploader(key="images").set_value(files).run()
    assert [shown(e.value) for e in at.error] == ["empty.jpg: file is empty (0 bytes)"]
    # the summary grid first (a row per image, the bad one with its error), then each good image's table
    summary = at.dataframe[0].value
    assert list(summary["image"]) == ["coffee.png", "empty.jpg", "chelsea.png"]
    assert list(summary["YOLO: found"]) == ["cup 1, dining table 1", "empty.jpg: file is empty (0 bytes)", "cat 1"]
    assert summary["picture"][0].startswith("data:image/jpeg;base64,") and pd.isna(summary["picture"][1])
    assert [shown(e.label) for e in at.expander][:3] == [
        "coffee.png: YOLO: cup 1, dining table 1",
        "empty.jpg: error",
        "chelsea.png: YOLO: cat 1",
    ]
    assert len(at.dataframe) == 1  # a closed image's details hold its pictures only: tables come when opened
    open_details(at)
    assert len(at.dataframe) == 3 and "cat" in table_labels(at, 2)


def test_pixel_limit_enforced(yolo_env, images_dir, monkeypatch):
    monkeypatch.setenv("OBJDET_MAX_IMAGE_PIXELS", "1000")
    at = new_app()
    upload(at, "coffee.png", (images_dir / "coffee.png").read_bytes())
    assert any(
        "coffee.png: image is 600x400" in shown(e.value) and "OBJDET_MAX_IMAGE_PIXELS" in shown(e.value)
        for e in at.error
    )


def test_camera_snapshot(yolo_env, images_dir):
    at = new_app()
    buf = io.BytesIO()
    Image.open(images_dir / "coffee.png").convert("RGB").save(buf, "JPEG", quality=95)
    at.camera_input(key="camera").set_value(("snap.jpg", buf.getvalue(), "image/jpeg")).run()
    assert not at.exception
    assert "cup" in table_labels(at)


def make_video(path, frame, n=12, fps=10):
    h, w = frame.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for _ in range(n):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path.read_bytes()


def test_video_every_nth_frame_with_downloads(yolo_env, images_dir, tmp_path):
    frame = np.asarray(Image.open(images_dir / "coffee.png").convert("RGB"))
    data = make_video(tmp_path / "clip.mp4", frame)
    at = new_app()
    at.file_uploader(key="video").set_value(("clip.mp4", data, "video/mp4"))
    at.number_input(key="every_n").set_value(4).run()
    at.button(key="run_video").click().run()
    assert not at.exception and not at.error
    assert any("clip.mp4: 12 frames, detection on 3" in shown(s.value) for s in at.success)
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["Annotated video (.webm, 600x400)", "Annotated MP4 (source size)", "Per-frame CSV"]


def test_undecodable_video_names_the_file(yolo_env):
    at = new_app()
    at.file_uploader(key="video").set_value(("junk.mp4", b"\x00" * 2048, "video/mp4")).run()
    at.button(key="run_video").click().run()
    assert any("junk.mp4: OpenCV cannot decode" in shown(e.value) for e in at.error)


def test_missing_weights_show_setup_guide(tmp_path):
    import os

    os.environ["OBJDET_WEIGHTS_DIR"] = str(tmp_path)  # removed again by the autouse fixture
    at = new_app()
    assert not at.exception
    assert any("No model is loaded" in shown(w.value) for w in at.warning)
    page = " ".join(shown(m.value) for m in at.markdown)
    assert "Set-up guide" in page and "python -m app weights fetch" in page
    assert str(tmp_path / "yolo-fastest-1.1.weights") in page  # the status panel names the file
    assert "missing" in " ".join(shown(e.label) for e in at.expander)


def test_setup_guide_names_the_weights_claim_and_the_init_container(tmp_path, monkeypatch):
    monkeypatch.setenv("OBJDET_WEIGHTS_DIR", str(tmp_path))
    at = new_app()
    page = " ".join(" ".join(m.value.split()) for m in at.markdown)  # line breaks of the source do not matter
    assert "`objdet-weights` volume" in page  # the PersistentVolumeClaim's name in base/ and overlays/
    assert "object-detection-model-weights" not in page
    assert "init container (`python -m app weights prepare`) fills or checks it" in page


def test_model_whose_outputs_do_not_fit_shows_as_failed_not_traceback(images_dir, tmp_path, monkeypatch):
    """The outputs are checked against the names when the model is built: the model
    shows as failed in the status panel, naming the file and the variable to fix; the page keeps running."""
    from support.onnx_models import build_yolo_onnx

    model = build_yolo_onnx(tmp_path / "three-classes.onnx", np.zeros((1, 10, 8), np.float32), 320)
    monkeypatch.setenv("OBJDET_MODELS", "yolo")
    monkeypatch.setenv("OBJDET_YOLO_WEIGHTS", str(model))
    monkeypatch.setenv("OBJDET_YOLO_INPUT_SIZE", "320")
    at = new_app()
    assert [shown(e.label) for e in at.expander] == ["YOLO (OpenCV DNN): failed"]
    problem = " ".join(shown(m.value) for m in at.markdown if m.value.startswith("**Problem:**"))
    assert "three-classes.onnx" in problem and "OBJDET_YOLO_NAMES" in problem
    assert any("No model is loaded" in shown(w.value) for w in at.warning)


def test_a_failure_on_one_image_is_one_line_and_the_others_show(yolo_env, images_dir, monkeypatch):
    """An unexpected exception while handling one image (here the first decode raises) is that image's one-line
    error, without a traceback; the next image is shown and the page has no exception box."""
    from app.engine.config import Settings

    detector = get_detector("yolo", Settings.from_env())
    real_decode, calls = detector.decode, []

    def decode_failing_once(raw, params):
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("boom")
        return real_decode(raw, params)

    monkeypatch.setattr(detector, "decode", decode_failing_once)
    at = new_app()
    files = [
        ("coffee.png", (images_dir / "coffee.png").read_bytes(), "image/png"),
        ("chelsea.png", (images_dir / "chelsea.png").read_bytes(), "image/png"),
    ]
    at.file_uploader(key="images").set_value(files).run()
    assert not at.exception
    errors = [shown(e.value) for e in at.error]
    assert errors == ["coffee.png: could not be processed (KeyError); the server log has the details"]
    open_details(at)  # a rerun: the first image's decode now succeeds, the second's table is there as before
    assert "cat" in table_labels(at)


def test_a_missing_model_is_said_once_in_the_main_area(yolo_env, tmp_path, monkeypatch):
    """SSD enabled without its file: one notice in the main area with the offline routes and the docs, the status
    panel lists the file once (no second "Problem" line), and the page serves YOLO."""
    monkeypatch.setenv("OBJDET_MODELS", "ssd,yolo")
    monkeypatch.setenv("OBJDET_REQUIRED_MODELS", "")
    monkeypatch.setenv("OBJDET_WEIGHTS_DIR", str(tmp_path))
    at = new_app()
    notices = [shown(w.value) for w in at.warning if "is not available" in shown(w.value)]
    assert len(notices) == 1
    (notice,) = notices
    missing = tmp_path / "ssdlite320_mobilenet_v3_large_coco-a79551df.pth"
    assert notice.startswith(f"**SSD is not available:** its weights file {missing} is missing")
    assert "OBJDET_SSD_WEIGHTS" in notice and f"into {tmp_path}" in notice and "docs/models.md" in notice
    assert "Re-check models" in [b.label for b in at.button]
    panel = [shown(m.value) for m in at.markdown if str(missing) in shown(m.value)]
    assert len(panel) == 1 and not any(m.value.startswith("**Problem:**") for m in at.markdown)
    assert at.radio(key="model").options == ["YOLO"]


def test_a_new_page_finds_weights_copied_in_after_start_up(yolo_dir, tmp_path, monkeypatch):
    """Models are looked for again when a page is opened (a reload): no restart needed."""
    monkeypatch.setenv("OBJDET_MODELS", "yolo")
    monkeypatch.setenv("OBJDET_WEIGHTS_DIR", str(tmp_path))
    at = new_app()
    assert any("No model is loaded" in shown(w.value) for w in at.warning)
    for name in ("yolo-fastest-1.1.weights", "yolo-fastest-1.1.cfg", "coco.names"):
        (tmp_path / name).write_bytes((yolo_dir / name).read_bytes())
    at = new_app()
    assert not any("No model is loaded" in shown(w.value) for w in at.warning)
    assert at.radio(key="model").value == "yolo"
