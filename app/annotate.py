"""Boxes and labels drawn on a copy of the image: a stable colour per class, text sized to the image."""

from __future__ import annotations

import colorsys
import zlib

import cv2
import numpy as np

from .result import DetectionResult

FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_colour(label: str) -> tuple[int, int, int]:
    """The same RGB colour for a label in every image, run and model (hue from a CRC of the name)."""
    hue = (zlib.crc32(label.encode("utf-8")) % 360) / 360.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def text_scale(width: int, height: int) -> tuple[float, int, int]:
    """Font scale, text thickness and box thickness readable from 200 px to 8000 px images."""
    side = max(width, height)
    font = max(0.4, side / 1100.0)
    return font, max(1, round(font * 1.6)), max(1, round(side / 450.0))


def annotate(image: np.ndarray, result: DetectionResult) -> np.ndarray:
    """A copy of the RGB ``image`` with the result's boxes and ``label score`` tags."""
    out = np.array(image, dtype=np.uint8, copy=True)
    height, width = out.shape[:2]
    font, text_thick, box_thick = text_scale(width, height)
    for det in result.detections:
        colour = class_colour(det.label)
        x1, y1, x2, y2 = (round(v) for v in det.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, box_thick, cv2.LINE_8)
        text = f"{det.label} {det.score:.2f}"
        (tw, th), base = cv2.getTextSize(text, FONT, font, text_thick)
        pad = max(2, th // 4)
        top = y1 - th - base - 2 * pad
        if top < 0:  # no room above the box: put the tag inside it
            top = min(y1, height - th - base - 2 * pad)
        left = min(max(0, x1), max(0, width - tw - 2 * pad))
        cv2.rectangle(out, (left, top), (left + tw + 2 * pad, top + th + base + 2 * pad), colour, cv2.FILLED)
        luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
        cv2.putText(out, text, (left + pad, top + pad + th), FONT, font, ink, text_thick, cv2.LINE_AA)
    return out


def to_png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()
