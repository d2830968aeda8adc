"""The batch command line, run as a user runs it: a subprocess of ``python -m app``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from support.serving import run_app as run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def darknet_ok(yolo_env):
    return yolo_env


def test_batch_json_with_a_bad_file_keeps_the_good_ones(darknet_ok, images_dir, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out_dir = tmp_path / "out"
    proc = run(
        [
            "detect",
            "--model",
            "yolo",
            "--json",
            "--out",
            str(out_dir),
            str(images_dir / "coffee.png"),
            str(bad),
            str(images_dir / "rocket.jpg"),
        ],
        darknet_ok,
    )
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    files = [e["file"] for e in doc["images"]]
    assert files == [str(images_dir / "coffee.png"), str(bad), str(images_dir / "rocket.jpg")]
    coffee, broken, rocket = doc["images"]
    assert "cup" in [d["label"] for d in coffee["results"][0]["detections"]]
    assert set(coffee["results"][0]["timings_ms"]) == {"preprocess", "inference", "postprocess"}
    assert "broken.png" in broken["error"] and "results" not in broken
    assert rocket["results"][0]["detections"] == []
    assert doc["failed"] == 1
    png = out_dir / "coffee.yolo.png"
    assert png.is_file() and Image.open(png).size == (600, 400)


def test_class_filter_and_limits(darknet_ok, images_dir):
    proc = run(
        [
            "detect",
            "--model",
            "yolo",
            "--json",
            "--classes",
            "dining table",
            "--conf",
            "0.2",
            str(images_dir / "coffee.png"),
        ],
        darknet_ok,
    )
    assert proc.returncode == 0, proc.stderr
    dets = json.loads(proc.stdout)["images"][0]["results"][0]["detections"]
    assert dets and {d["label"] for d in dets} == {"dining table"}


def test_yolo_only_never_imports_torch(darknet_ok, images_dir):
    code = (
        "import sys, runpy; sys.argv=['app','detect','--model','yolo',%r];"
        "import app.cli.main as c; rc=c.main(sys.argv[1:]); print('TORCH', 'torch' in sys.modules)"
    )
    full = {k: v for k, v in os.environ.items() if not k.startswith("OBJDET_")} | darknet_ok
    proc = subprocess.run(
        [sys.executable, "-c", code % str(images_dir / "coffee.png")],
        cwd=REPO,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "cup" in proc.stdout
    assert "TORCH False" in proc.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["detect", "--conf", "2", "x.png"], "score threshold 2.0 must be between 0 and 1"),
        (["detect", "--model", "rcnn", "x.png"], "invalid choice"),
        (["detect"], "required"),
        (["detect", "--model", "yolo", "--classes", "unicorn", "x.png"], "unknown class unicorn"),
        (["weights", "fetch", "nonsense.bin"], "not in the manifest: nonsense.bin"),
    ],
)
def test_usage_errors_exit_2(darknet_ok, args, needle):
    proc = run(args, darknet_ok)
    assert proc.returncode == 2
    assert needle in proc.stderr


def test_missing_model_file_exits_1_with_the_fix(tmp_path):
    proc = run(["detect", "--model", "yolo", "x.png"], {"OBJDET_WEIGHTS_DIR": str(tmp_path)})
    assert proc.returncode == 1
    assert str(tmp_path / "yolo-fastest-1.1.weights") in proc.stderr and "weights fetch" in proc.stderr


def test_weights_list_prints_manifest():
    proc = run(["weights", "list"], {})
    assert proc.returncode == 0
    assert (
        "ssdlite320_mobilenet_v3_large_coco-a79551df.pth" in proc.stdout and "yolo-fastest-1.1.weights" in proc.stdout
    )


def test_fetch_keep_going_offline_is_one_calm_line_per_model(yolo_dir, tmp_path):
    """What ``make run`` does: the YOLO files are in place, the SSD server cannot be reached (a closed port on
    loopback stands in for no network): one line saying the app starts with YOLO, no error, exit 0."""
    from support.serving import free_port

    for name in ("yolo-fastest-1.1.weights", "yolo-fastest-1.1.cfg", "coco.names"):
        (tmp_path / name).write_bytes((yolo_dir / name).read_bytes())
    closed = f"http://127.0.0.1:{free_port()}/models"
    proc = run(["weights", "fetch", "--keep-going", "--mirror", closed], {"OBJDET_WEIGHTS_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    calm = (
        "SSD weights not available offline (127.0.0.1 cannot be reached): the app starts with YOLO; "
        "to add them later see docs/models.md"
    )
    assert proc.stdout.splitlines() == [calm]
    assert "error" not in proc.stderr.lower()
    assert [line.split(":")[0] for line in proc.stderr.splitlines()] == [
        "yolo-fastest-1.1.weights",
        "yolo-fastest-1.1.cfg",
        "coco.names",
    ]  # each present file said once ("already present and verified, skipped")


def test_fetch_keep_going_keeps_real_errors_errors(tmp_path):
    """A server that answers 404 is not "offline": an error line and exit 1."""
    from support.mirror import Mirror

    with Mirror({}) as srv:
        proc = run(
            ["weights", "fetch", "--keep-going", "--mirror", srv.url, "coco.names"],
            {"OBJDET_WEIGHTS_DIR": str(tmp_path)},
        )
    assert proc.returncode == 1 and "error: coco.names: not found at" in proc.stderr and "HTTP 404" in proc.stderr
