"""``python -m app eval`` as a user runs it (a subprocess), with the real Yolo-Fastest-1.1 on the shared images
against a COCO file built from the reference detections of ../shared/assets/README.md (OpenCV called directly)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from support.reference import REFERENCE
from support.serving import run_app as run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def annotations(tmp_path) -> Path:
    path = tmp_path / "reference.json"
    path.write_text(json.dumps(REFERENCE))
    return path


def test_yolo_fastest_on_the_reference_boxes(yolo_env, images_dir, annotations, tmp_path):
    out = tmp_path / "out"
    proc = run(
        ["eval", "--annotations", str(annotations), "--images", str(images_dir), "--json", "--out", str(out)], yolo_env
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    yolo = doc["models"]["yolo"]
    assert yolo["images"] == 4
    assert yolo["metrics"]["AP50"] >= 0.99  # the boxes are the same network's, through OpenCV directly
    assert {r["name"]: r["AP50"] for r in yolo["per_class"]} == pytest.approx(
        {"person": 1.0, "cat": 1.0, "cup": 1.0, "diningtable": None}
    )
    # By hand from the reference at score 0.3: person, cat, cup found (3 TP), the dining table is a false
    # positive (1 FP), nothing missed; rocket has neither boxes nor detections.
    assert yolo["counts_at_iou_0.5"] == {"score_threshold": 0.3, "tp": 3, "fp": 1, "fn": 0}
    assert [(r["file_name"], r["tp"], r["fp"], r["fn"]) for r in yolo["per_image"]] == [
        ("astronaut.png", 1, 0, 0),
        ("chelsea.png", 1, 0, 0),
        ("coffee.png", 1, 1, 0),
        ("rocket.jpg", 0, 0, 0),
    ]
    assert yolo["cannot_predict"] == [] and yolo["latency_ms_median"] > 0 and yolo["images_per_s"] > 0
    assert doc["library"].startswith("faster-coco-eval ")
    # --out: the same document, the CSVs and one PR-curve picture per model
    assert json.loads((out / "metrics.json").read_text())["models"]["yolo"]["metrics"] == yolo["metrics"]
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert [(r["file_name"], r["tp"], r["fp"], r["fn"]) for r in rows][2] == ("coffee.png", "1", "1", "0")
    metrics_rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert metrics_rows[0]["class"] == "all" and float(metrics_rows[0]["AP50"]) == yolo["metrics"]["AP50"]
    picture = cv2.imread(str(out / "pr-yolo.png"))
    assert picture is not None and picture.shape == (640, 900, 3)


def test_human_table_and_a_missing_image(yolo_env, images_dir, annotations, tmp_path):
    doc = json.loads(annotations.read_text())
    doc["images"][1]["width"] = 450  # chelsea.png is 451 wide
    doc["images"].append({"id": 9, "file_name": "gone.png"})
    doc["annotations"].append({"id": 9, "image_id": 9, "category_id": 1, "bbox": [0, 0, 10, 10]})
    annotations.write_text(json.dumps(doc))
    proc = run(["eval", "--annotations", str(annotations), "--images", str(images_dir)], yolo_env)
    assert proc.returncode == 1  # a file failed; the others were evaluated
    assert f"gone.png: not found in {images_dir} (image id 9 left out)" in proc.stderr
    assert "TP 3, FP 1, FN 0" in proc.stdout  # the missing image's box is not counted as a miss
    assert "chelsea.png: warning: the annotations give 450x300, the file is 451x300: its boxes may not line up" in (
        proc.stderr
    )
    header = next(line for line in proc.stdout.splitlines() if line.startswith("model"))
    assert header.split() == ["model", "images", "AP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "ms/img", "img/s"]
    yolo_row = next(line for line in proc.stdout.splitlines() if line.startswith("yolo "))
    assert yolo_row.split()[1] == "4"


def test_a_malformed_file_exits_1_naming_the_problem(yolo_env, images_dir, tmp_path):
    bad = tmp_path / "bad.json"
    doc = json.loads(json.dumps(REFERENCE))
    doc["annotations"][0]["bbox"] = [18, 67, 346]
    bad.write_text(json.dumps(doc))
    proc = run(["eval", "--annotations", str(bad), "--images", str(images_dir)], yolo_env)
    assert proc.returncode == 1
    assert (
        f"{bad}: annotations[0] (id 1): bbox must be 4 numbers [x, y, width, height], got [18, 67, 346]" in proc.stderr
    )
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--conf", "1.5"], "--conf: score threshold 1.5 must be between 0 and 1"),
        (["--count-conf", "-1"], "--count-conf -1.0 must be between 0 and 1"),
        (["--model", "rcnn"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2(yolo_env, images_dir, annotations, extra, needle):
    proc = run(["eval", "--annotations", str(annotations), "--images", str(images_dir), *extra], yolo_env)
    assert proc.returncode == 2
    assert needle in proc.stderr


def test_yolo_only_eval_never_imports_torch(yolo_env, images_dir, annotations):
    code = (
        "import sys; import app.cli.main as c;"
        f"rc = c.main(['eval', '--model', 'yolo', '--annotations', {str(annotations)!r},"
        f" '--images', {str(images_dir)!r}]);"
        "print('RC', rc, 'TORCH', 'torch' in sys.modules)"
    )
    full = {k: v for k, v in os.environ.items() if not k.startswith("OBJDET_")} | yolo_env
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=full, capture_output=True, text=True, timeout=120)
    assert "RC 0 TORCH False" in proc.stdout, proc.stderr


def test_both_models_side_by_side(both_env, yolo_dir, ssd_weights, images_dir, annotations):
    from support.serving import models_env

    proc = run(
        ["eval", "--annotations", str(annotations), "--images", str(images_dir), "--model", "all", "--json"],
        models_env(ssd_weights, yolo_dir),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    models = json.loads(proc.stdout)["models"]
    assert list(models) == ["ssd", "yolo"]
    # The seeded SSD is untrained: its numbers mean nothing, but it was run on every image and scored by name.
    assert models["ssd"]["images"] == 4 and models["ssd"]["cannot_predict"] == []
    assert {r["name"] for r in models["ssd"]["per_class"]} == {"person", "cat", "cup", "diningtable"}
    assert models["yolo"]["counts_at_iou_0.5"]["tp"] == 3
