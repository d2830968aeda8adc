"""One file, the same detections from every entry point: the page's upload pipeline, ``detect``, ``batch`` and
``eval``, all decoding through ``images.load_working``. Real files (a 12 MP JPEG, which is decoded at reduced
scale; an 18 MP PNG, which Pillow box-reduces; a small PNG, passed as it is), the real Yolo-Fastest-1.1, real
subprocesses of ``python -m app``."""

from __future__ import annotations

import json

import pytest
from support.large_images import large_jpeg, large_png
from support.serving import run_app

from app.engine.result import DetectParams

PARAMS = DetectParams(conf=0.3, iou=0.45, max_det=100)  # detect's and batch's defaults


@pytest.fixture(scope="module")
def files(images_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("agree")
    paths = [
        large_jpeg(images_dir / "coffee.png", 12, folder),
        large_png(images_dir / "astronaut.png", 18, folder),
        folder / "chelsea.png",
    ]
    paths[2].write_bytes((images_dir / "chelsea.png").read_bytes())
    return paths


def page_result(path, settings) -> dict:
    """What the page shows for an upload of ``path``: its upload pipeline's working copy, the network, and the
    result mapped back to the original's pixels (render.show_image's steps)."""
    from app.engine.registry import get_detector
    from app.page.uploads import decode_upload, loaded_work_side

    prepared = decode_upload(path.name, path.read_bytes(), settings, loaded_work_side(settings, ["yolo"]))
    result = get_detector("yolo", settings).detect(prepared.working, PARAMS)
    return result.rescaled(prepared.working_factor, prepared.original_size).to_dict()


def test_page_detect_batch_and_eval_agree(files, yolo_env, tmp_path):
    from app.engine.config import Settings

    proc = run_app(["detect", "--json", *map(str, files)], yolo_env)
    assert proc.returncode == 0, proc.stderr
    detected = {entry["file"]: entry["results"][0] for entry in json.loads(proc.stdout)["images"]}
    folder = files[0].parent
    batch = run_app(["batch", str(folder), "--output", str(tmp_path / "out"), "--workers", "1"], yolo_env)
    assert batch.returncode == 0, batch.stderr
    lines = (tmp_path / "out" / "part-0-of-1.jsonl").read_text().splitlines()
    batched = {rec["file"]: rec for rec in map(json.loads, lines) if "file" in rec}  # not the settings line
    settings = Settings.from_env()
    found = 0
    for path in files:
        want = detected[str(path)]
        found += len(want["detections"])
        assert batched[path.name]["results"][0]["detections"] == want["detections"], path.name
        assert batched[path.name]["image_size"] == want["image_size"], path.name
        page = page_result(path, settings)
        assert page["detections"] == want["detections"], path.name
        assert page["image_size"] == want["image_size"], path.name
    assert found >= 3, "cup, dining table, person, cat: the comparison means nothing without detections"
    # eval, scored against detect's own boxes: every box found again at every IoU up to 0.95, nothing else
    labels = sorted({d["label"] for r in detected.values() for d in r["detections"]})
    ids = {label: i + 1 for i, label in enumerate(labels)}
    coco = {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for n, i in ids.items()]}
    for image_id, path in enumerate(files, 1):
        size = detected[str(path)]["image_size"]
        coco["images"].append({"id": image_id, "file_name": path.name, **size})
        for d in detected[str(path)]["detections"]:
            x1, y1, x2, y2 = d["box"]
            box = [x1, y1, x2 - x1, y2 - y1]
            coco["annotations"].append(
                {"id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": ids[d["label"]], "bbox": box}
            )
    annotations = tmp_path / "detect.json"
    annotations.write_text(json.dumps(coco))
    args = ["eval", "--annotations", str(annotations), "--images", str(folder), "--conf", "0.3", "--json"]
    proc = run_app([*args, "--model", "yolo"], yolo_env)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr, proc.stderr  # the image sizes eval saw are detect's
    scored = json.loads(proc.stdout)["models"]["yolo"]
    assert scored["counts_at_iou_0.5"] == {"score_threshold": 0.3, "tp": found, "fp": 0, "fn": 0}
    assert scored["metrics"]["AP"] == pytest.approx(1.0)  # IoU >= 0.95 for every box
