"""The Evaluate tab through streamlit.testing (AppTest) with the real Yolo-Fastest and the seeded SSD, and the
zip upload's refusals."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest
from support.apptest import SCRIPT, Counter, shown
from support.reference import REFERENCE

from app.engine.config import Settings
from app.page.evaluate_tab import MAX_ZIP_RATIO, UploadError, collect_upload, read_zip

IMAGES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")


def tab_script():
    """The tab alone, with every enabled model (what page.main passes as ``loaded``)."""
    from app.engine.config import Settings
    from app.page.evaluate_tab import evaluate_tab

    settings = Settings.from_env()
    evaluate_tab(list(settings.models), settings)


@pytest.fixture(autouse=True)
def empty_process_cache():
    """The page's cache is process-wide: each test starts empty, so its network runs are its own."""
    from app.page.cache import CACHE

    CACHE.clear()
    yield
    CACHE.clear()


def new_tab() -> AppTest:
    at = AppTest.from_function(tab_script, default_timeout=300)
    at.run()
    assert not at.exception, at.exception
    return at


def upload(at: AppTest, annotations: tuple, images: list[tuple]) -> None:
    at.file_uploader(key="eval_ann").set_value(annotations)
    if images:
        at.file_uploader(key="eval_images").set_value(images)
    at.run()
    assert not at.exception, at.exception


def frame(at: AppTest, model: str, models=("yolo",)):
    """The model's metrics table: one per model, in the order of the loaded models (AppTest shows no keys)."""
    tables = [d.value for d in at.dataframe if "AR100" in d.value.columns]
    assert len(tables) == len(models)
    return tables[models.index(model)]


def counts_caption(at: AppTest) -> list[str]:
    return [shown(c.value) for c in at.caption if shown(c.value).startswith("At IoU 0.5")]


def pngs(images_dir, names=IMAGES) -> list[tuple]:
    return [(n, (images_dir / n).read_bytes(), "image/png") for n in names]


def test_both_models_tables_side_by_side(both_env, images_dir, monkeypatch):
    pytest.importorskip("torch")
    from app.engine.registry import get_detector

    counters = {m: Counter(monkeypatch, get_detector(m, both_env)) for m in ("ssd", "yolo")}
    at = new_tab()
    upload(at, ("reference.json", json.dumps(REFERENCE).encode(), "application/json"), pngs(images_dir))
    assert not at.error, [shown(e.value) for e in at.error]
    yolo, ssd = frame(at, "yolo", ("ssd", "yolo")), frame(at, "ssd", ("ssd", "yolo"))
    assert yolo["AP50"][0] >= 0.99 and yolo["images"][0] == 4
    assert ssd["images"][0] == 4  # the seeded SSD is untrained: scored, its numbers mean nothing
    texts = " ".join(shown(m.value) for m in at.markdown)
    assert "SSD (torchvision)" in texts and "YOLO (OpenCV DNN)" in texts
    assert len([m for m in at.metric if m.label == "Median latency"]) == 2
    assert "At IoU 0.5, score ≥ 0.30: 3 TP, 1 FP, 0 FN." in " ".join(counts_caption(at))  # YOLO's, by hand
    labels = [b.label for b in at.get("download_button")]
    assert {"Metrics JSON", "Metrics CSV", "Per-image CSV"} <= set(labels)
    assert {m: c.calls for m, c in counters.items()} == {"ssd": 4, "yolo": 4}  # once per image
    # A threshold change re-decodes and re-scores; no network runs again.
    at.slider(key="eval_count_conf").set_value(0.5).run()
    assert not at.exception, at.exception
    assert "At IoU 0.5, score ≥ 0.50: 3 TP, 0 FP, 0 FN." in " ".join(counts_caption(at))  # the table's 0.44 drops
    at.number_input(key="eval_conf").set_value(0.2).run()
    assert not at.exception
    assert {m: c.calls for m, c in counters.items()} == {"ssd": 4, "yolo": 4}


def test_a_zip_of_both_and_the_gallery_of_misses(yolo_env, images_dir):
    doc = json.loads(json.dumps(REFERENCE))
    doc["annotations"].append({"id": 4, "image_id": 4, "category_id": 1, "bbox": [10, 10, 50, 80]})  # no one there
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("set/instances.json", json.dumps(doc))
        for name in IMAGES:
            zf.writestr(f"set/images/{name}", (images_dir / name).read_bytes())
        zf.writestr("set/notes.txt", "hello")
        zf.writestr("../evil.png", b"x")
    at = new_tab()
    upload(at, ("set.zip", buf.getvalue(), "application/zip"), [])
    warnings = " ".join(shown(w.value) for w in at.warning)
    assert "set.zip: set/notes.txt: refused, not an image" in warnings
    assert "set.zip: ../evil.png: refused, its path leaves the archive" in warnings
    assert frame(at, "yolo")["images"][0] == 4
    assert "At IoU 0.5, score ≥ 0.30: 3 TP, 1 FP, 1 FN." in " ".join(counts_caption(at))
    gallery = [shown(i.proto.imgs[0].caption) for i in at.image]
    assert gallery == ["set/images/rocket.jpg: 1 missed, 0 found, 0 false"]  # the one image with a miss
    charts = list(at.get("vega_lite_chart"))
    assert len(charts) == 2  # YOLO's AP bars and its PR curves
    pr = next(c for c in charts if json.loads(c.proto.spec)["mark"]["type"] == "line")
    spec = json.loads(pr.proto.spec)
    assert spec["encoding"]["color"]["field"] == "class" and spec["params"][0]["bind"] == "legend"
    # curves that coincide (three classes found perfectly) stay apart: a dash pattern and a marker shape each
    assert spec["encoding"]["strokeDash"]["field"] == spec["encoding"]["shape"]["field"] == "class"
    assert len({tuple(d) for d in spec["encoding"]["strokeDash"]["scale"]["range"]}) == 3
    import pyarrow as pa

    points = pa.ipc.open_stream(pr.proto.datasets[0].data.data).read_all().to_pandas()
    assert set(points["class"]) == {"person", "cat", "cup"} and points["precision"].max() == 1.0


def test_malformed_annotations_give_a_clear_error(yolo_env, images_dir):
    doc = json.loads(json.dumps(REFERENCE))
    doc["annotations"][2]["category_id"] = 5
    at = new_tab()
    upload(at, ("mine.json", json.dumps(doc).encode(), "application/json"), pngs(images_dir, ["coffee.png"]))
    assert [shown(e.value) for e in at.error] == [
        "mine.json: annotations[2] (id 3): category_id 5 is not the id of any entry of 'categories'"
    ]
    assert not at.dataframe
    at.file_uploader(key="eval_ann").set_value(("mine.json", b"\x89PNG not json", "application/json")).run()
    assert not at.exception
    assert "mine.json: not UTF-8 text (byte 0x89 at offset 0)" in shown(at.error[0].value)


def test_images_not_uploaded_are_left_out_and_named(yolo_env, images_dir):
    at = new_tab()
    upload(at, ("reference.json", json.dumps(REFERENCE).encode(), "application/json"), pngs(images_dir, ["coffee.png"]))
    assert any(
        "3 annotated image(s) not uploaded" in shown(w.value) and "astronaut.png" in shown(w.value) for w in at.warning
    )
    assert frame(at, "yolo")["images"][0] == 1


def test_images_over_the_pixel_limit_are_refused_by_name(yolo_env, images_dir, monkeypatch):
    # 200,000 pixels: chelsea (451 x 300 = 135,300) passes; astronaut, coffee and rocket do not.
    monkeypatch.setenv("OBJDET_MAX_IMAGE_PIXELS", "200000")
    at = new_tab()
    upload(at, ("reference.json", json.dumps(REFERENCE).encode(), "application/json"), pngs(images_dir))
    errors = [shown(e.value) for e in at.error]
    assert len(errors) == 3 and all("left out of the evaluation" in e for e in errors)
    assert any(e.startswith("astronaut.png: ") and "262,144" in e for e in errors), errors
    assert frame(at, "yolo")["images"][0] == 1
    assert "1 of 4 images evaluated" in " ".join(shown(c.value) for c in at.caption)


def hostile(kind: str) -> bytes:
    """The reference file with one hostile value: numbers too large for a float or for the metric library's ids,
    file_names no file system takes (a NUL byte, a 300-character component, a path of more than 4,096 bytes)."""
    text = json.dumps(REFERENCE)
    if kind == "10^400":
        return text.replace('"width": 512', '"width": 1' + "0" * 400).encode()
    if kind == "5001 digits":
        return text.replace('"width": 512', '"width": 1' + "0" * 5000).encode()
    doc = json.loads(text)
    if kind == "image id 2^70":
        doc["images"][2]["id"] = doc["annotations"][2]["image_id"] = 2**70
    elif kind == "category id 2^70":
        doc["categories"][2]["id"] = doc["annotations"][2]["category_id"] = 2**70
    elif kind == "annotation id 2^70":
        doc["annotations"][2]["id"] = 2**70
    elif kind == "NUL":
        doc["images"][2]["file_name"] = "cof\x00fee.png"
    elif kind == "300 characters":
        doc["images"][2]["file_name"] = "c" * 300 + "/coffee.png"
    elif kind == "4096+ path":
        doc["images"][2]["file_name"] = "/".join(["folder"] * 600) + "/coffee.png"
    return json.dumps(doc).encode()


HOSTILE = ("10^400", "5001 digits", "image id 2^70", "category id 2^70", "annotation id 2^70", "NUL",
           "300 characters", "4096+ path")  # fmt: skip


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_annotations_give_one_line_naming_the_file(yolo_env, images_dir, kind):
    """No exception box, whatever the file holds: either one error line that names the file and says what is
    wrong, or (a file_name no file system takes, which the page never opens) the evaluation itself."""
    at = new_tab()
    upload(at, ("hostile.json", hostile(kind), "application/json"), pngs(images_dir))
    assert not at.exception, at.exception
    errors = [shown(e.value) for e in at.error]
    if errors:
        assert len(errors) == 1 and errors[0].startswith("hostile.json"), errors
        assert "Traceback" not in errors[0] and "/site-packages/" not in errors[0] and len(errors[0]) < 300, errors
    else:
        assert frame(at, "yolo")["images"][0] >= 3, kind
    if kind in ("10^400", "5001 digits"):  # the loader's bound, the same as `python -m app eval`'s
        assert "holds an integer of" in errors[0] and "digits" in errors[0], errors
    if "2^70" in kind:
        assert f"must be an integer from {0 if 'annotation' not in kind else 1} to 2**63-1, got {2**70}" in errors[0]


def test_the_example_needs_no_upload(yolo_env):
    """'Try an example': the example images against their hand-drawn boxes, with YOLO; the space shuttle is a
    class no model knows (reported, not scored) and APs and APm have no object of that size: shown as an en dash."""
    at = new_tab()
    at.toggle(key="eval_example").set_value(True).run()
    assert not at.exception and not at.error, [shown(e.value) for e in at.error]
    table = frame(at, "yolo")
    assert table["images"][0] == 3 and table["AP50"][0] >= 0.75
    assert table["APs"].isna()[0] and table["APm"].isna()[0]
    metrics = next(d for d in at.dataframe if "AR100" in d.value.columns)
    assert metrics.proto.placeholder == "\u2013"  # what an empty cell shows: not "None"
    assert any("cannot predict space shuttle" in shown(i.value) for i in at.info)
    assert "example: coco-examples.json: 3 of 3 images evaluated, 6 boxes" in " ".join(
        shown(c.value) for c in at.caption
    )


def test_the_example_file_names_the_example_images():
    from app.engine.coco import parse_annotations
    from app.page.evaluate_tab import EXAMPLE_ANNOTATIONS, EXAMPLES_DIR

    path = EXAMPLES_DIR / EXAMPLE_ANNOTATIONS
    gt = parse_annotations(path.read_bytes(), str(path))
    assert sorted(i["file_name"] for i in gt.images) == sorted(p.name for p in EXAMPLES_DIR.glob("*.jpg"))
    from PIL import Image

    for entry in gt.images:
        assert Image.open(EXAMPLES_DIR / entry["file_name"]).size == (entry["width"], entry["height"])
    for ann in gt.annotations:  # every box inside its image
        image = next(i for i in gt.images if i["id"] == ann["image_id"])
        x, y, w, h = ann["bbox"]
        assert x >= 0 and y >= 0 and x + w <= image["width"] and y + h <= image["height"], ann


# --- the uploads' refusals, without the page ---------------------------------------------------------------


def zip_of(members: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_zip_bomb_member_is_refused_by_name():
    settings = Settings.from_env({})
    bomb = b"\0" * (MAX_ZIP_RATIO * 1000 * 10)  # zeros deflate about 1000 to 1
    upload = read_zip(zip_of({"a.json": b"{}", "b.png": bomb}), "up.zip", settings)
    assert upload.images == {}
    assert len(upload.notes) == 1 and upload.notes[0].startswith("up.zip: b.png: refused, it unpacks to")
    assert "zip bomb" in upload.notes[0]


def test_zip_needs_exactly_one_annotations_file():
    settings = Settings.from_env({})
    with pytest.raises(
        UploadError, match=r"up\.zip: needs exactly one \.json annotations file, found 2 \(a.json, b.json\)"
    ):
        read_zip(zip_of({"a.json": b"{}", "b.json": b"{}"}), "up.zip", settings)
    with pytest.raises(UploadError, match=r"up\.zip: not a readable zip file"):
        read_zip(b"PK\x03\x04 nonsense", "up.zip", settings)
    stored = read_zip(zip_of({"x/a.json": b"{}", "x/b.png": b"png"}, zipfile.ZIP_STORED), "up.zip", settings)
    assert stored.annotations_name == "up.zip: x/a.json" and stored.images == {"x/b.png": b"png"}


def test_zip_members_over_the_file_limit_are_refused_by_name():
    settings = Settings.from_env({"OBJDET_MAX_FILE_BYTES": "1000"})
    upload = read_zip(
        zip_of({"a.json": b"{}", "big.png": bytes(range(256)) * 8, "ok.png": b"x" * 10}), "up.zip", settings
    )
    assert upload.images == {"ok.png": b"x" * 10}
    assert upload.notes == ["up.zip: big.png: refused, 2,048 bytes is more than the limit of 1,000"]


@dataclass
class Uploaded:
    """What st.file_uploader returns, as far as collect_upload reads it."""

    name: str
    data: bytes

    def getvalue(self) -> bytes:
        return self.data


def test_all_images_together_are_bounded(monkeypatch):
    import app.page.evaluate_tab as tab

    monkeypatch.setattr(tab, "MAX_TOTAL_BYTES", 100)
    settings = Settings.from_env({})
    ok = collect_upload(Uploaded("a.json", b"{}"), [Uploaded("x.png", b"1" * 60)], settings)
    assert ok.images == {"x.png": b"1" * 60}
    with pytest.raises(UploadError, match="the images add up to 120 bytes, more than the 100 one evaluation may use"):
        collect_upload(
            Uploaded("a.json", b"{}"), [Uploaded("x.png", b"1" * 60), Uploaded("y.png", b"2" * 60)], settings
        )
    with pytest.raises(UploadError, match=r"up\.zip: its members unpack to 120 bytes, more than the 100"):
        collect_upload(Uploaded("up.zip", zip_of({"a.json": b"{}", "x.png": b"1" * 118})), [], settings)


def test_the_page_has_the_evaluate_tab(yolo_env, images_dir):
    """Wired into page.main: the full page's fourth tab takes the same uploads and shows YOLO's table."""
    at = AppTest.from_file(SCRIPT, default_timeout=300)
    at.run()
    assert not at.exception, at.exception
    assert [t.label for t in at.tabs] == ["Images", "Camera", "Video", "Evaluate"]
    upload(at, ("reference.json", json.dumps(REFERENCE).encode(), "application/json"), pngs(images_dir))
    assert not at.error, [shown(e.value) for e in at.error]
    assert frame(at, "yolo")["AP50"][0] >= 0.99
    assert "At IoU 0.5, score ≥ 0.30: 3 TP, 1 FP, 0 FN." in " ".join(counts_caption(at))
