"""``python -m app eval`` (a real subprocess, the real Yolo-Fastest) on hostile COCO files: numbers too long
for a float or for the metric library's 64-bit ids, file_names no file can have (NUL, a link loop, a
300-byte component, a 4,096+ byte path), escape sequences in category names, and a file whose size is
under the byte cap but whose annotations would take the pod's memory. Each gives one line naming the file
and the cause (exit 1), the other images still run, and nothing reaches the terminal raw."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.reference import REFERENCE

REPO = Path(__file__).resolve().parents[2]


def run_eval(annotations: Path, images: Path, env: dict, *extra: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("OBJDET_")} | env
    return subprocess.run(
        [sys.executable, "-m", "app", "eval", "--annotations", str(annotations), "--images", str(images), *extra],
        cwd=REPO,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
    )


def reference() -> dict:
    return json.loads(json.dumps(REFERENCE))


def errors(proc: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in proc.stderr, proc.stderr
    return [line for line in proc.stderr.splitlines() if line.startswith("error: ")]


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda t: t.replace('"bbox": [', '"bbox": [1' + "0" * 400 + ", ", 1), "holds an integer of 401 digits"),
        (lambda t: t.replace('"id": 1,', '"id": 1' + "0" * 5000 + ",", 1), "holds an integer of 5,001 digits"),
        (lambda t: t.replace('"bbox": [', '"bbox": [1e400, ', 1), "holds the number 1e400, too large for a float"),
        (
            lambda t: t.replace('"id": 1,', f'"id": {2**70},', 1),
            f"'id' must be an integer from 0 to 2**63-1, got {2**70}",
        ),
    ],
    ids=["int-400-digits", "int-5001-digits", "float-1e400", "image-id-2**70"],
)
def test_numbers_no_float_or_64_bit_id_holds_are_one_line(yolo_env, images_dir, tmp_path, edit, words):
    text = edit(json.dumps(REFERENCE))
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    proc = run_eval(bad, images_dir, yolo_env)
    lines = errors(proc)
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"error: {bad}: "), proc.stderr
    assert words in lines[0]


def test_an_annotation_id_past_64_bits_is_refused_not_scored_zero(yolo_env, images_dir, tmp_path):
    doc = reference()
    doc["annotations"][0]["id"] = 2**64  # COCOeval scored such a box as missed: AP 0 with exit 0
    bad = tmp_path / "ids.json"
    bad.write_text(json.dumps(doc))
    proc = run_eval(bad, images_dir, yolo_env)
    lines = errors(proc)
    assert (
        proc.returncode == 1 and f"annotations[0] (id {2**64}): 'id' must be an integer from 1 to 2**63-1" in lines[0]
    )


def test_file_names_no_file_can_have_are_named_and_the_other_images_run(yolo_env, images_dir, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for path in images_dir.iterdir():
        shutil.copyfile(path, images / path.name)
    (images / "loop-a").symlink_to(images / "loop-b")
    (images / "loop-b").symlink_to(images / "loop-a")
    doc = reference()
    next_id = max(i["id"] for i in doc["images"]) + 1
    odd = {
        "nul": "coffee\u0000.png",
        "loop": "loop-a",
        "component": "a" * 300 + ".png",
        "path": "/".join(["folder"] * 700) + "/x.png",
    }
    for n, name in enumerate(odd.values()):
        doc["images"].append({"id": next_id + n, "file_name": name})
    annotations = tmp_path / "odd.json"
    annotations.write_text(json.dumps(doc))
    proc = run_eval(annotations, images, yolo_env, "--json")
    lines = errors(proc)
    assert proc.returncode == 1 and len(lines) == 4, proc.stderr
    by_case = dict(zip(odd, lines, strict=True))
    assert by_case["nul"] == f"error: coffee\\x00.png: its file_name contains a NUL byte (image id {next_id} left out)"
    assert (
        by_case["loop"]
        == f"error: loop-a: {images / 'loop-a'} is a symbolic link loop (image id {next_id + 1} left out)"
    )
    assert "has a component of 304 bytes, more than a file name may be (255)" in by_case["component"]
    assert "is 4,905 bytes long, more than a path may be (4,095)" in by_case["path"]
    assert all(len(line) < 400 for line in lines)  # a 4,905-byte name is shortened in the message
    doc = json.loads(proc.stdout)
    assert doc["models"]["yolo"]["images"] == 4 and doc["models"]["yolo"]["metrics"]["AP50"] >= 0.99  # the rest ran


def test_escape_sequences_in_names_reach_the_terminal_as_text(yolo_env, images_dir, tmp_path):
    doc = reference()
    doc["categories"].append({"id": 999, "name": "cup\u001b]0;pwned\u0007\u001b[2J\u202eevil"})
    doc["images"].append({"id": 999, "file_name": "gone\u001b[31m.png"})
    annotations = tmp_path / "escapes.json"
    annotations.write_text(json.dumps(doc))
    proc = run_eval(annotations, images_dir, yolo_env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    for stream in (proc.stdout, proc.stderr):
        assert "\x1b" not in stream and "\x07" not in stream and "\u202e" not in stream
    assert "cup\\x1b]0;pwned\\x07\\x1b[2J\\u202eevil" in proc.stdout  # the per-class and cannot-predict lines
    assert "error: gone\\x1b[31m.png: not found in" in proc.stderr


def peak_rss_of(command: list[str], env: dict) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``command`` from a small Python parent and return its result and the child's peak RSS (bytes)."""
    parent = (
        "import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "sys.stdout.write(p.stdout); sys.stderr.write(p.stderr); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, file=sys.stderr); sys.exit(p.returncode)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", parent, *command], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    *rest, peak = proc.stderr.rstrip("\n").split("\n")
    proc.stderr = "\n".join(rest) + "\n"
    return proc, int(peak)


def test_a_file_under_the_byte_cap_with_a_million_annotations_is_refused_in_bounded_memory(
    yolo_env, images_dir, tmp_path
):
    """63 MB, 10^6 annotations: read as a whole it took 1.3 GB (the server went from 1.0 to 1.98 GiB, beside
    its 2 GiB limit); the count of JSON items refuses it before parsing."""
    big = tmp_path / "million.json"
    with big.open("w") as fh:
        fh.write('{"images": [{"id": 1, "file_name": "coffee.png"}], "categories": [{"id": 1, "name": "cup"}], ')
        fh.write('"annotations": [')
        fh.write(",".join(f'{{"id":{n},"image_id":1,"category_id":1,"bbox":[1,2,3,4]}}' for n in range(1, 10**6 + 1)))
        fh.write("]}")
    assert 50e6 < big.stat().st_size < 64 * 2**20
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBJDET_")} | yolo_env
    command = [sys.executable, "-m", "app", "eval", "--annotations", str(big), "--images", str(images_dir)]
    proc, peak = peak_rss_of(command, env)
    lines = errors(proc)
    assert proc.returncode == 1 and len(lines) == 1 and f"{big}: has 9,000,009 JSON items" in lines[0], proc.stderr
    assert "at most 100,000 annotations" in lines[0]
    assert peak < 400 * 2**20, f"peak RSS {peak / 2**20:.0f} MiB"
    # Under the item bound but past the annotation bound: refused after parsing, the bound in the message.
    over = reference()
    over["annotations"] = [{"id": n, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]} for n in range(1, 100_002)]
    many = tmp_path / "many.json"
    many.write_text(json.dumps(over))
    lines = errors(run_eval(many, images_dir, yolo_env))
    assert "'annotations' has 100,001 entries, more than the 100,000 the app evaluates in one file" in lines[0]
