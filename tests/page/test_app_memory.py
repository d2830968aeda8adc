"""The page's memory across sessions through streamlit.testing (AppTest): one decode
per process for an image however many sessions upload it, working and display copies instead of the
full-resolution array, boxes in original pixels, a failed model beside a serving one, load warnings."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("streamlit")
pytest.importorskip("torch")
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from support.apptest import Counter, new_app, shown, table_labels, upload

from app.engine.config import Settings
from app.engine.registry import get_detector
from app.engine.result import DetectParams
from app.page.cache import CACHE

DISPLAY_SIDE = 1280  # the page's display copy: longer side at most this
# The networks' working copy: twice the largest input the loaded networks see (SSDlite 320 and
# Yolo-Fastest 320 here), at least 1024 (app.engine.images.work_side's documented rule, restated here).
WORK_SIDE = max(1024, 2 * 320)


@pytest.fixture(autouse=True)
def empty_process_cache():
    CACHE.clear()
    yield
    CACHE.clear()


@pytest.fixture
def decodes(monkeypatch):
    """Every call of images.load_working (the page's decode) in this process (the app looks it up per call)."""
    import app.engine.images

    calls = []
    real_load = app.engine.images.load_working
    monkeypatch.setattr(
        app.engine.images,
        "load_working",
        lambda *a, **k: calls.append(a[1] if len(a) > 1 else k.get("name")) or real_load(*a, **k),
    )
    return calls


@pytest.fixture
def media_images(monkeypatch):
    """(width, height) of every picture the page hands to Streamlit's media storage (what a session keeps)."""
    sizes = []
    real = MemoryMediaFileStorage.load_and_get_id

    def recording(self, path_or_data, mimetype, kind, filename=None):
        if isinstance(path_or_data, bytes) and mimetype.startswith("image/"):
            sizes.append(Image.open(io.BytesIO(path_or_data)).size)
        return real(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", recording)
    return sizes


def big_png(images_dir, width=7000, height=5000) -> tuple[bytes, np.ndarray]:
    """A large synthetic PNG (stripes, the coffee photo enlarged x8 by nearest neighbour) and its pixels."""
    rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = (rows // 7 % 256).astype(np.uint8)
    image[..., 1] = (cols // 11 % 256).astype(np.uint8)
    image[..., 2] = np.where((rows // 50 + cols // 50) % 2 == 0, 190, 60)
    photo = np.asarray(Image.open(images_dir / "coffee.png").convert("RGB"))
    photo = photo.repeat(8, axis=0).repeat(8, axis=1)  # 4800 x 3200
    top, left = height - photo.shape[0] - 300, width - photo.shape[1] - 100
    image[top : top + photo.shape[0], left : left + photo.shape[1]] = photo
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert ok
    return buf.tobytes(), image


def arrays_in(value, seen=None):
    """Every numpy array reachable from ``value`` (containers, objects' __dict__)."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from arrays_in(v, seen)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            yield from arrays_in(v, seen)
    elif hasattr(value, "__dict__") and not isinstance(value, type):
        yield from arrays_in(vars(value), seen)


def test_two_sessions_uploading_one_image_share_one_decode_and_one_forward(both_env, images_dir, monkeypatch, decodes):
    counters = {m: Counter(monkeypatch, get_detector(m, both_env)) for m in ("ssd", "yolo")}
    data = (images_dir / "coffee.png").read_bytes()
    first, second = new_app(), new_app()
    upload(first, "coffee.png", data)
    upload(second, "my-copy.png", data)  # another session, another file name, the same bytes
    assert decodes == ["coffee.png"]  # decoded once in the process, not once per session
    assert {m: c.calls for m, c in counters.items()} == {"ssd": 1, "yolo": 1}
    assert table_labels(first, 1) == table_labels(second, 1) and "cup" in table_labels(second, 1)
    images = [k for k in CACHE._entries if k[0] == "image"]
    assert len(images) == 1
    for at in (first, second):  # reruns in either session decode and run nothing
        at.slider(key="conf").set_value(0.6).run()
        assert table_labels(at, 1) == ["cup"]
    assert len(decodes) == 1 and {m: c.calls for m, c in counters.items()} == {"ssd": 1, "yolo": 1}
    kinds = sorted(k[0] for k in CACHE._entries if k[0] in ("image", "raw"))
    assert kinds == ["image", "raw", "raw"]  # one image, two network outputs
    pictures = [k for k in CACHE._entries if k[0] == "picture"]  # drawn once per model and detections, not session
    assert len(pictures) <= 4, pictures  # two models, two thresholds


def test_a_model_chosen_later_decodes_again_only_if_the_working_copy_was_let_go(
    both_env, images_dir, monkeypatch, decodes
):
    counters = {m: Counter(monkeypatch, get_detector(m, both_env)) for m in ("ssd", "yolo")}
    at = new_app()
    at.radio(key="model").set_value("yolo").run()
    upload(at, "coffee.png", (images_dir / "coffee.png").read_bytes())
    entry = next(e for k, e in CACHE._entries.items() if k[0] == "image")
    assert entry.value.working is not None  # SSD has not run on it yet: the working copy stays
    at.radio(key="model").set_value("both").run()
    assert decodes == ["coffee.png"] and {m: c.calls for m, c in counters.items()} == {"ssd": 1, "yolo": 1}
    entry = next(e for k, e in CACHE._entries.items() if k[0] == "image")
    assert entry.value.working is None  # every loaded model has run: only the display copy is kept
    assert len(at.dataframe) == 3 and "cup" in table_labels(at, 1)  # SSD, YOLO, then the agreement table


def test_huge_upload_gives_boxes_in_original_pixels_and_keeps_only_small_copies(
    yolo_env, images_dir, decodes, media_images, monkeypatch
):
    data, pixels = big_png(images_dir)
    height, width = pixels.shape[:2]
    # golden: the detector called directly on a working copy made here (images.load_working's documented
    # rule: Pillow's box reduce by the integer factor that keeps the longer side >= 2 x the working side,
    # then area interpolation to the working side), scaled back by a factor computed here
    scale = WORK_SIDE / max(width, height)
    reduced = np.asarray(Image.fromarray(pixels).reduce(max(width, height) // (2 * WORK_SIDE)))
    small = cv2.resize(reduced, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    factor = max(width, height) / WORK_SIDE
    detector = get_detector("yolo", Settings.from_env())
    golden = detector.detect(small, DetectParams(conf=0.30, iou=0.45, max_det=100))
    assert golden.detections, "the enlarged coffee photo must give the network something to find"
    expected = [
        (d.label, [min(max(v * factor, 0), lim) for v, lim in zip(d.box, (width, height, width, height), strict=True)])
        for d in golden.detections
    ]

    forward_inputs = []
    real_forward = detector.forward
    monkeypatch.setattr(detector, "forward", lambda image: forward_inputs.append(image.shape) or real_forward(image))
    at = new_app()
    upload(at, "huge.png", data)
    table = at.dataframe[0].value
    assert list(table["label"]) == [label for label, _ in expected]
    for (_, box), (_, row) in zip(expected, table.iterrows(), strict=True):
        assert [row.x1, row.y1, row.x2, row.y2] == pytest.approx(box, abs=1.0)
    assert table["x2"].max() > WORK_SIDE  # original pixels, not the working copy's
    assert any(f"original's pixels ({width}x{height})" in shown(c.value) for c in at.caption)
    assert decodes == ["huge.png"]

    # nothing in the session state is larger than a display copy (the arrays live in the shared cache)
    display_bytes = DISPLAY_SIDE * DISPLAY_SIDE * 3
    for value in at.session_state.values():
        for array in arrays_in(value):
            assert array.nbytes <= display_bytes
    # what the page hands Streamlit to keep for the session: display copies only
    assert media_images and all(max(size) <= DISPLAY_SIDE for size in media_images)
    # the networks ran on the working copy; once both outputs are cached the image entry keeps only the
    # display copy (the 105 MB original was never kept)
    assert forward_inputs == [(round(height * scale), WORK_SIDE, 3)]
    entry = next(e for k, e in CACHE._entries.items() if k[0] == "image")
    prepared = entry.value
    assert prepared.working is None and max(prepared.display.shape[:2]) == min(DISPLAY_SIDE, WORK_SIDE)
    assert entry.nbytes == prepared.display.nbytes
    assert prepared.original_size == (width, height)
    at.slider(key="conf").set_value(0.5).run()  # a rerun needs neither the working copy nor a decode
    assert decodes == ["huge.png"] and len(forward_inputs) == 1


def test_a_failed_model_shows_as_failed_while_the_other_serves(
    ssd_weights, yolo_dir, images_dir, tmp_path, monkeypatch
):
    broken = tmp_path / "broken.weights"
    broken.write_bytes((yolo_dir / "yolo-fastest-1.1.weights").read_bytes()[:4096])  # a truncated copy
    monkeypatch.setenv("OBJDET_MODELS", "ssd,yolo")
    monkeypatch.setenv("OBJDET_REQUIRED_MODELS", "")
    monkeypatch.setenv("OBJDET_SSD_WEIGHTS", str(ssd_weights))
    monkeypatch.setenv("OBJDET_YOLO_WEIGHTS", str(broken))
    monkeypatch.setenv("OBJDET_YOLO_CONFIG", str(yolo_dir / "yolo-fastest-1.1.cfg"))
    monkeypatch.setenv("OBJDET_YOLO_NAMES", str(yolo_dir / "coco.names"))
    at = new_app()
    labels = [shown(e.label) for e in at.expander]
    assert "YOLO (OpenCV DNN): failed" in labels and "SSD (torchvision): loaded" in labels
    problem = " ".join(shown(m.value) for m in at.markdown if m.value.startswith("**Problem:**"))
    assert "broken.weights" in problem
    assert at.radio(key="model").options == ["SSD"] and at.radio(key="model").value == "ssd"
    upload(at, "coffee.png", (images_dir / "coffee.png").read_bytes())
    assert len(at.dataframe) == 1 and not at.error
    assert "SSD (torchvision)" in " ".join(shown(m.value) for m in at.markdown)


def test_multi_page_tiff_shows_the_loader_warning_under_the_original(yolo_env, images_dir):
    coffee = Image.open(images_dir / "coffee.png").convert("RGB")
    buf = io.BytesIO()
    coffee.save(buf, "TIFF", save_all=True, append_images=[coffee.rotate(90), coffee.rotate(180)])
    at = new_app()
    upload(at, "pages.tif", buf.getvalue(), mime="image/tiff")
    notes = [shown(c.value) for c in at.caption if "pages.tif" in shown(c.value)]
    assert notes and "3 pages" in notes[0] and "page 1" in notes[0]
    assert "cup" in table_labels(at)
