"""Hostile input through the command line as a user runs it (a subprocess of ``python -m app``):
special and oversized files, truncated JPEGs, multi-page files, unwritable ``--out``, ``bench``
misuse, a closed pipe, and the working copy that bounds the networks' memory."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from support.serving import run_app as run

from app.engine.images import WORK_SIDE, load_image
from app.engine.result import DetectParams

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def yolo_cli(yolo_env):
    return yolo_env


@pytest.fixture
def detector(yolo_dir):
    from app.engine.detectors.yolo import YoloDetector

    return YoloDetector(
        yolo_dir / "yolo-fastest-1.1.weights", yolo_dir / "yolo-fastest-1.1.cfg", names=yolo_dir / "coco.names"
    )


def detect_json(args, env, expect_rc):
    proc = run(["detect", "--model", "yolo", "--json", *args], env)
    assert proc.returncode == expect_rc, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout), proc


def labels(entry) -> list[str]:
    return [d["label"] for d in entry["results"][0]["detections"]]


def test_bad_files_refused_by_name_while_the_good_ones_run(yolo_cli, images_dir, tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # would hang a blocking read forever
    sparse = tmp_path / "sparse.png"
    with open(sparse, "wb") as fh:
        fh.truncate(3 * 2**30)
    data = (images_dir / "rocket.jpg").read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2] + b"\xff\xd9")  # Pillow alone decodes this grey-filled, exit 0
    coffee, chelsea = str(images_dir / "coffee.png"), str(images_dir / "chelsea.png")
    files = [coffee, "/dev/zero", str(fifo), str(tmp_path), str(sparse), str(cut), chelsea]
    doc, _ = detect_json(files, yolo_cli, expect_rc=1)
    assert [e["file"] for e in doc["images"]] == files
    errors = {e["file"]: e.get("error") for e in doc["images"]}
    assert errors["/dev/zero"] == "/dev/zero: is a character device, not an image file: refused without reading it"
    assert errors[str(fifo)] == f"{fifo}: is a FIFO (named pipe), not an image file: refused without reading it"
    assert errors[str(tmp_path)] == f"{tmp_path}: is a directory, not an image"
    assert errors[str(sparse)] == (
        f"{sparse}: file is 3,221,225,472 bytes, more than the limit of 136,777,216 (OBJDET_MAX_FILE_BYTES)"
    )
    assert errors[str(cut)].startswith(f"{cut}: image data is truncated or corrupt (Corrupt JPEG data")
    assert doc["failed"] == 5
    assert "cup" in labels(doc["images"][0]) and "cat" in labels(doc["images"][-1])


def test_file_byte_limit_from_the_environment(yolo_cli, images_dir):
    size = (images_dir / "coffee.png").stat().st_size
    doc, _ = detect_json(
        [str(images_dir / "coffee.png"), str(images_dir / "rocket.jpg")],
        yolo_cli | {"OBJDET_MAX_FILE_BYTES": str(size - 1)},
        expect_rc=1,
    )
    coffee, rocket = doc["images"]
    assert coffee["error"] == (
        f"{images_dir / 'coffee.png'}: file is {size:,} bytes, more than the limit of "
        f"{size - 1:,} (OBJDET_MAX_FILE_BYTES)"
    )
    assert rocket["results"][0]["model"] == "yolo"


def test_multi_page_tiff_warning_in_json_and_human_output(yolo_cli, images_dir, tmp_path):
    page1 = Image.open(images_dir / "coffee.png").convert("RGB")
    pages = tmp_path / "pages.tiff"
    page1.save(pages, "TIFF", save_all=True, append_images=[Image.new("RGB", (50, 50)), Image.new("RGB", (9, 9))])
    doc, _ = detect_json([str(pages), str(images_dir / "chelsea.png")], yolo_cli, expect_rc=0)
    tiff, cat = doc["images"]
    assert tiff["warnings"] == ["multi-page TIFF with 3 pages: only page 1 is used"]
    assert "cup" in labels(tiff)  # page 1 is the coffee picture
    assert "warnings" not in cat
    proc = run(["detect", "--model", "yolo", str(pages)], yolo_cli)
    assert proc.returncode == 0
    assert f"{pages}: warning: multi-page TIFF with 3 pages: only page 1 is used" in proc.stderr
    assert "[yolo] cup" in proc.stdout


def out_cases(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    blocked = tmp_path / "blocked"
    (blocked / "coffee.yolo.png").mkdir(parents=True)  # the target name is taken by a folder
    return {
        "out is a file": (a_file, f"cannot create the output folder {a_file} (it is a file, not a folder)"),
        "target is a folder": (blocked, f"cannot write {blocked / 'coffee.yolo.png'} (Is a directory)"),
    }


@pytest.mark.parametrize("case", ["out is a file", "target is a folder"])
def test_out_problems_reported_per_image(yolo_cli, images_dir, tmp_path, case):
    out, cause = out_cases(tmp_path)[case]
    coffee = str(images_dir / "coffee.png")
    doc, _ = detect_json(["--out", str(out), coffee], yolo_cli, expect_rc=1)
    (entry,) = doc["images"]
    assert entry["error"] == f"{coffee}: annotated image not written: {cause}"
    assert "cup" in labels(entry)  # the detections are reported all the same
    assert doc["failed"] == 1


def test_out_folder_not_writable(yolo_cli, images_dir, tmp_path):
    if os.geteuid() == 0:  # root writes through permission bits: use a folder the kernel refuses
        out = Path("/sys")
        if os.access(out, os.W_OK) and not _write_refused(out):
            pytest.skip("no unwritable folder for root here")
    else:
        out = tmp_path / "ro"
        out.mkdir()
        out.chmod(0o555)
    coffee, chelsea = str(images_dir / "coffee.png"), str(images_dir / "chelsea.png")
    doc, _ = detect_json(["--out", str(out), coffee, chelsea], yolo_cli, expect_rc=1)
    for entry, stem in zip(doc["images"], ("coffee", "chelsea"), strict=True):
        assert entry["error"] == (
            f"{entry['file']}: annotated image not written: cannot write "
            f"{out / (stem + '.yolo.png')} (Permission denied)"
        )
        assert entry["results"][0]["detections"]
    assert doc["failed"] == 2


def _write_refused(folder: Path) -> bool:
    try:
        (folder / "objdet-probe").write_bytes(b"")
    except OSError:
        return True
    (folder / "objdet-probe").unlink()
    return False


@pytest.mark.parametrize("repeat", ["0", "-3"])
def test_bench_repeat_below_one_is_a_usage_error(repeat):
    proc = run(["bench", "--model", "yolo", "--repeat", repeat], {})
    assert proc.returncode == 2
    assert f"argument --repeat: {repeat} must be at least 1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bench_on_a_bad_image_names_it(yolo_cli, images_dir, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    proc = run(["bench", "--model", "yolo", "--repeat", "1", str(images_dir / "coffee.png"), str(bad)], yolo_cli)
    assert proc.returncode == 1
    assert f"error: {bad}: " in proc.stderr and "nothing was timed" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("mode,reader", [("--json", "head -c 10"), ("", "head -n 1")])
def test_closed_pipe_exits_quietly(yolo_cli, images_dir, mode, reader):
    # 300 entries: far more than a pipe buffer holds, so the writer meets the closed pipe.
    images = " ".join([str(images_dir / "coffee.png")] * 300)
    script = f'{sys.executable} -m app detect --model yolo {mode} {images} | {reader}; echo "rc=${{PIPESTATUS[0]}}" >&2'
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBJDET_")} | yolo_cli
    proc = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip()  # head got its part
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "rc=0"


def test_normal_image_results_are_those_of_the_full_image(yolo_cli, detector, images_dir):
    """Images within WORK_SIDE go to the networks as they are: the CLI's boxes are the detector's own."""
    params = DetectParams(conf=0.3, iou=0.45, max_det=100)
    names = ["coffee.png", "astronaut.png", "chelsea.png"]
    doc, _ = detect_json([str(images_dir / n) for n in names], yolo_cli, expect_rc=0)
    for name, entry in zip(names, doc["images"], strict=True):
        image = load_image(images_dir / name)
        assert max(image.shape[:2]) <= WORK_SIDE
        direct = detector.detect(image, params).to_dict()
        assert entry["results"][0]["detections"] == direct["detections"]
        assert entry["results"][0]["image_size"] == direct["image_size"]


def test_big_image_detections_map_back_to_the_original(yolo_cli, detector, images_dir, tmp_path):
    """8x upscales (4096 px and more) run on a working copy; the boxes come back in the big image's pixels."""
    params = DetectParams(conf=0.3, iou=0.45, max_det=100)
    names = ["astronaut.png", "coffee.png", "chelsea.png"]
    paths = []
    for name in names:
        small = load_image(images_dir / name)
        big = cv2.resize(small, None, fx=8, fy=8, interpolation=cv2.INTER_NEAREST)
        path = tmp_path / f"big-{name}"
        cv2.imwrite(str(path), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
        paths.append(str(path))
    doc, _ = detect_json(paths, yolo_cli, expect_rc=0)
    for name, entry in zip(names, doc["images"], strict=True):
        small = load_image(images_dir / name)
        height, width = small.shape[:2]
        result = entry["results"][0]
        assert result["image_size"] == {"width": width * 8, "height": height * 8}
        expected = detector.detect(small, params).detections
        got = result["detections"]
        assert [d["label"] for d in got] == [d.label for d in expected], name
        for g, e in zip(got, expected, strict=True):
            assert np.allclose(np.array(g["box"]) / 8, e.box, atol=5.0), (name, g, e)  # original pixels
    # astronaut: 4096 -> a 1024 working copy (twice Yolo-Fastest's 320 input, at least 1024) that is exactly
    # the 2x upscale, so the boxes are exactly 4x its own
    two = cv2.resize(load_image(images_dir / "astronaut.png"), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    direct = detector.detect(two, params).detections
    got = doc["images"][0]["results"][0]["detections"]
    assert [d["label"] for d in got] == [d.label for d in direct]
    for g, e in zip(got, direct, strict=True):
        assert np.allclose(g["box"], np.array(e.box) * 4, atol=0.02)
        assert g["score"] == round(e.score, 5)


@pytest.mark.parametrize("size", [(1, 1), (65535, 1), (1, 65535)])
def test_extreme_shapes_through_the_cli(yolo_cli, images_dir, tmp_path, size):
    path = tmp_path / f"thin-{size[0]}x{size[1]}.png"
    Image.new("RGB", size, (128, 128, 128)).save(path)
    doc, _ = detect_json([str(path), str(images_dir / "coffee.png")], yolo_cli, expect_rc=0)
    thin, coffee = doc["images"]
    assert thin["results"][0]["image_size"] == {"width": size[0], "height": size[1]}
    assert "cup" in labels(coffee)


def test_gif_is_refused_as_unsupported(yolo_cli, images_dir, tmp_path):
    gif = tmp_path / "anim.gif"
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "GIF")
    gif.write_bytes(buf.getvalue())
    doc, _ = detect_json([str(gif), str(images_dir / "coffee.png")], yolo_cli, expect_rc=1)
    assert doc["images"][0]["error"] == (f"{gif}: unsupported image format GIF; supported: JPEG, PNG, WebP, BMP, TIFF")
    assert "cup" in labels(doc["images"][1])
