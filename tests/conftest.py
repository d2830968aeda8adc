"""Shared fixtures. Real assets come from ../shared (or $OBJDET_SHARED_DIR); tests that need them
skip with a visible reason when it is absent. This file must not import torch: the OpenCV 5
environment runs the YOLO tests without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("OBJDET_SHARED_DIR", REPO.parent / "shared")).resolve()
ASSETS = SHARED / "assets"
IMAGES = ASSETS / "images"
YOLO_FASTEST = ASSETS / "weights" / "yolo-fastest-1.1"


def need(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (set OBJDET_SHARED_DIR to the shared assets folder)")
    return path


@pytest.fixture(autouse=True)
def clean_objdet_env(monkeypatch):
    """No OBJDET_* variable from the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("OBJDET_") and key != "OBJDET_SHARED_DIR":
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def images_dir() -> Path:
    return need(IMAGES, "test images")


@pytest.fixture(scope="session")
def yolo_dir() -> Path:
    return need(YOLO_FASTEST / "yolo-fastest-1.1.weights", "Yolo-Fastest-1.1 weights").parent


@pytest.fixture
def yolo_env(yolo_dir, monkeypatch):
    """Environment that points the app at the real Yolo-Fastest-1.1 files, YOLO only."""
    env = {
        "OBJDET_MODELS": "yolo",
        "OBJDET_YOLO_WEIGHTS": str(yolo_dir / "yolo-fastest-1.1.weights"),
        "OBJDET_YOLO_CONFIG": str(yolo_dir / "yolo-fastest-1.1.cfg"),
        "OBJDET_YOLO_NAMES": str(yolo_dir / "coco.names"),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture(scope="session")
def ssd_weights(tmp_path_factory):
    """Seeded SSDlite weights whose scores spread out (tests/support/ssd_weights.py; imports torch when used)."""
    from support.ssd_weights import make_state_dict

    return make_state_dict("ssdlite320_mobilenet_v3_large", tmp_path_factory.mktemp("app-ssd") / "ssdlite.pth")


@pytest.fixture
def both_env(yolo_env, ssd_weights, monkeypatch):
    """Both models enabled: the real Yolo-Fastest files and the seeded SSD weights."""
    from app.engine.config import Settings

    monkeypatch.setenv("OBJDET_SSD_WEIGHTS", str(ssd_weights))
    monkeypatch.setenv("OBJDET_MODELS", "ssd,yolo")
    return Settings.from_env()


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium through Playwright (never a downloaded browser); skips when absent."""
    from support.serving import CHROMIUM, CHROMIUM_ARGS

    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium; .ci/run does it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def clip(images_dir):
    """The shared 4 s video (a person, then a cup)."""
    return (images_dir.parent / "videos" / "astronaut-coffee.mp4").read_bytes()


@pytest.fixture(scope="module")
def detect(yolo_dir):
    """The real Yolo-Fastest-1.1's ``detect``, built once per module."""
    from app.engine.detectors.yolo import YoloDetector

    detector = YoloDetector(
        yolo_dir / "yolo-fastest-1.1.weights", yolo_dir / "yolo-fastest-1.1.cfg", names=yolo_dir / "coco.names"
    )
    return detector.detect
