"""Names from files reach the terminal as text in every command (real subprocesses of ``python -m app``): an
image file name, a label of a names file, a path in the settings and a file that fails in a batch, each
holding ``ESC]0;...BEL`` (sets the window title) and ``ESC[2J`` (clears the screen)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOSTILE = "\x1b]0;pwned\x07\x1b[2J"
ESCAPED = "\\x1b]0;pwned\\x07\\x1b[2J"


def run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("OBJDET_")} | env
    return subprocess.run(
        [sys.executable, "-m", "app", *args], cwd=REPO, env=full, capture_output=True, text=True, timeout=180
    )


def assert_inert(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    for stream in (proc.stdout, proc.stderr):
        assert "\x1b" not in stream and "\x07" not in stream


def test_detect_prints_hostile_file_names_and_labels_as_text(yolo_env, yolo_dir, images_dir, tmp_path):
    image = tmp_path / f"coffee{HOSTILE}.png"
    shutil.copyfile(images_dir / "coffee.png", image)
    names = (yolo_dir / "coco.names").read_text().splitlines()
    names[41] = f"cup{HOSTILE}"  # the label Yolo-Fastest gives the cup in coffee.png
    names_file = tmp_path / "hostile.names"
    names_file.write_text("\n".join(names) + "\n")
    not_an_image = tmp_path / f"notes{HOSTILE}.txt"
    not_an_image.write_text("text\n")
    proc = run(["detect", str(image), str(not_an_image)], yolo_env | {"OBJDET_YOLO_NAMES": str(names_file)})
    assert_inert(proc)
    assert proc.returncode == 1
    assert f"coffee{ESCAPED}.png  [yolo] " in proc.stdout and f"cup{ESCAPED} 0." in proc.stdout
    assert f"notes{ESCAPED}.txt: not an image" in proc.stderr


def test_batch_and_weights_print_hostile_names_as_text(yolo_env, yolo_dir, images_dir, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copyfile(images_dir / "coffee.png", src / "coffee.png")
    (src / f"bad{HOSTILE}.jpg").write_bytes(b"not a jpeg")
    batch = run(["batch", str(src), "--output", str(tmp_path / "out")], yolo_env)
    assert_inert(batch)
    assert batch.returncode == 1 and f"bad{ESCAPED}.jpg: ERROR " in batch.stderr
    merged = run(["batch", "merge", str(tmp_path / "out"), "--input", str(src)], yolo_env)
    assert_inert(merged)
    weights = tmp_path / f"w{HOSTILE}"
    weights.mkdir()
    verify = run(["weights", "verify"], yolo_env | {"OBJDET_YOLO_WEIGHTS": str(weights / "missing.weights")})
    assert_inert(verify)
    assert verify.returncode == 1 and f"w{ESCAPED}/missing.weights" in verify.stdout
