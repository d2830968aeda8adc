"""Without ``--model``, ``detect``, ``batch`` and ``eval`` run the enabled models whose files are in place and
name the one they skip on stderr; ``--model ssd`` with no SSD file still fails (exit 1). Real subprocesses of
``python -m app`` with the real Yolo-Fastest-1.1 and no SSD file (an empty weights folder)."""

from __future__ import annotations

import json

import pytest
from support.reference import REFERENCE
from support.serving import run_app as run


@pytest.fixture
def yolo_only_present(yolo_env, tmp_path) -> dict:
    """Both models enabled (the default), YOLO's files in place, SSD's file absent from the weights folder."""
    weights = tmp_path / "weights"
    weights.mkdir()
    return yolo_env | {"OBJDET_MODELS": "ssd,yolo", "OBJDET_WEIGHTS_DIR": str(weights)}


def skip_notes(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("note: ")]


def test_detect_runs_the_models_that_load_and_names_the_skipped_one(yolo_only_present, images_dir, tmp_path):
    proc = run(["detect", "--json", str(images_dir / "coffee.png")], yolo_only_present)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["images"][0]["results"]
    assert [r["model"] for r in results] == ["yolo"] and "cup" in [d["label"] for d in results[0]["detections"]]
    (note,) = skip_notes(proc.stderr)
    missing = tmp_path / "weights" / "ssdlite320_mobilenet_v3_large_coco-a79551df.pth"
    assert note.startswith("note: ssd skipped") and str(missing) in note and "weights fetch" in note


def test_an_explicit_model_without_its_file_still_fails(yolo_only_present, images_dir):
    for args in (["detect", "--model", "ssd"], ["detect", "--model", "all"]):
        proc = run([*args, str(images_dir / "coffee.png")], yolo_only_present)
        assert proc.returncode == 1, (args, proc.stdout)
        assert "ssdlite320_mobilenet_v3_large_coco-a79551df.pth" in proc.stderr and not skip_notes(proc.stderr)


def test_eval_without_model_scores_the_models_that_load(yolo_only_present, images_dir, tmp_path):
    annotations = tmp_path / "reference.json"
    annotations.write_text(json.dumps(REFERENCE))
    proc = run(["eval", "--annotations", str(annotations), "--images", str(images_dir), "--json"], yolo_only_present)
    assert proc.returncode == 0, proc.stderr
    assert list(json.loads(proc.stdout)["models"]) == ["yolo"]
    assert skip_notes(proc.stderr)[0].startswith("note: ssd skipped")
    proc = run(
        ["eval", "--annotations", str(annotations), "--images", str(images_dir), "--model", "ssd"], yolo_only_present
    )
    assert proc.returncode == 1


def test_batch_without_model_runs_the_models_that_load(yolo_only_present, images_dir, tmp_path):
    out = tmp_path / "out"
    proc = run(["batch", str(images_dir), "--output", str(out)], yolo_only_present)
    assert proc.returncode == 0, proc.stderr
    assert skip_notes(proc.stderr)[0].startswith("note: ssd skipped")
    header, *lines = [json.loads(line) for line in (out / "part-0-of-1.jsonl").read_text().splitlines()]
    assert header["batch_settings"]["models"] == ["yolo"]  # the part's settings line: what shaped its records
    assert len(lines) == 4 and all([r["model"] for r in line["results"]] == ["yolo"] for line in lines), lines[0]
    proc = run(["batch", str(images_dir), "--output", str(tmp_path / "out2"), "--model", "ssd"], yolo_only_present)
    assert proc.returncode == 1 and "ssdlite320" in proc.stderr


def test_no_model_in_place_is_one_error_naming_each(tmp_path, images_dir):
    proc = run(["detect", str(images_dir / "coffee.png")], {"OBJDET_WEIGHTS_DIR": str(tmp_path)})
    assert proc.returncode == 1
    assert len(skip_notes(proc.stderr)) == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no model can run: ssd: ")


def test_misspelt_class_gets_a_suggestion(yolo_env, images_dir):
    proc = run(["detect", "--model", "yolo", "--classes", "cupp", str(images_dir / "coffee.png")], yolo_env)
    assert proc.returncode == 2 and "unknown class cupp (did you mean cup?)" in proc.stderr


def test_a_bad_file_is_named_once(yolo_env, tmp_path):
    proc = run(["detect", "--model", "yolo", str(tmp_path / "nonexistent.png")], yolo_env)
    assert proc.returncode == 1
    line = next(line for line in proc.stderr.splitlines() if "nonexistent.png" in line)
    assert line.count("nonexistent.png") == 1 and line.startswith("error: "), line


def test_top_level_help_lists_every_command_without_markup():
    proc = run(["--help"], {})
    assert proc.returncode == 0
    for command in ("detect", "batch", "eval", "weights", "bench", "serve"):
        assert f"\n    {command} " in proc.stdout, command
    assert "`" not in proc.stdout and "--model yolo" in proc.stdout
    batch = run(["batch", "--help"], {})
    assert "`" not in batch.stdout
    for option in ("--conf CONF", "--iou IOU", "--classes CLASSES"):
        assert option in batch.stdout and batch.stdout.split(option, 1)[1].lstrip()[:1] not in ("", "-"), option
    bare = run([], {})
    assert bare.returncode == 2 and "commands:" in bare.stderr


def test_weights_list_has_a_header_and_says_what_is_here(yolo_env, tmp_path):
    (tmp_path / "yolo-fastest-1.1.cfg").write_text("[net]\n")
    proc = run(["weights", "list"], {"OBJDET_WEIGHTS_DIR": str(tmp_path)})
    assert proc.returncode == 0
    header, *rows = proc.stdout.splitlines()
    assert header.split()[:5] == ["file", "model", "here", "used", "sha256"]
    here = {row.split()[0]: row.split()[2] for row in rows}
    assert here["yolo-fastest-1.1.cfg"] == "present" and here["yolo-fastest-1.1.weights"] == "-"
    assert str(tmp_path) in proc.stderr


def test_weights_verify_says_each_state_once(yolo_env):
    proc = run(["weights", "verify"], yolo_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for line in proc.stdout.splitlines():
        assert line.count("OK") == 1, line
        assert "sha256 " in line
