"""Fixtures of the engine's video tests: the shared clip and the real Yolo-Fastest's ``detect``."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def clip(images_dir):
    return (images_dir.parent / "videos" / "astronaut-coffee.mp4").read_bytes()


@pytest.fixture(scope="module")
def detect(yolo_dir):
    from app.engine.detectors.yolo import YoloDetector

    detector = YoloDetector(
        yolo_dir / "yolo-fastest-1.1.weights", yolo_dir / "yolo-fastest-1.1.cfg", names=yolo_dir / "coco.names"
    )
    return detector.detect
