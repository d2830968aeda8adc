"""What ``make run`` installs and starts, read from make's own dry run (``make -n -B``: every command it would
run, nothing run): serving's extras only, no torch for YOLO alone, the torch index passed to pip, the weights
step that stays calm offline, and the server told the URL to print."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def dry_run(*args: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    proc = subprocess.run(["make", "-n", "-B", *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def installed_extras(commands: str) -> list[str]:
    return re.findall(r"pip install .* -e '\.\[([^\]]*)\]'", commands)


def test_run_installs_what_serving_needs_and_not_the_test_tools():
    commands = dry_run("run")
    assert installed_extras(commands) == ["ssd,app"]
    assert "weights fetch --keep-going" in commands
    serve = commands.strip().splitlines()[-4:]
    assert serve[-1].strip() == ".venv/bin/python -m app serve", serve
    assert 'STREAMLIT_BROWSER_SERVER_ADDRESS="${STREAMLIT_BROWSER_SERVER_ADDRESS-localhost}"' in commands


def test_yolo_only_start_installs_no_torch():
    commands = dry_run("run", "MODELS=yolo")
    assert installed_extras(commands) == ["app"]
    assert 'OBJDET_MODELS="yolo"' in commands


def test_torch_index_is_passed_to_pip():
    commands = dry_run("run", "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu")
    install = next(line for line in commands.splitlines() if "pip install" in line)
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in install


def test_make_test_installs_the_test_tools():
    assert installed_extras(dry_run("install")) == ["ssd,app,test"]
