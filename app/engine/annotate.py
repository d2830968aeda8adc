"""Boxes and labels drawn on a copy of the image: a stable colour per class, text sized to the image; and the
agreement overlay of two models (found by both, only by one, only by the other) with its legend."""

from __future__ import annotations

import colorsys
import zlib

import cv2
import numpy as np

from .agreement import Agreement
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


# The agreement overlay's three groups: colour (RGB) and line style, distinct in colour and in shape (for
# readers who do not tell the colours apart): solid for both, long dashes for the first model, dots for the second.
AGREEMENT_STYLES = {
    "both": ((0, 160, 60), "solid"),
    "first": ((235, 120, 0), "dashed"),
    "second": ((30, 90, 230), "dotted"),
}


def styled_rectangle(image: np.ndarray, box, colour, thickness: int, style: str) -> None:
    """A rectangle drawn solid, dashed (dashes about 3x the gaps) or dotted (round dots), in place."""
    x1, y1, x2, y2 = (round(v) for v in box)
    if style == "solid":
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_8)
        return
    dash, gap = (6 * thickness + 6, 2 * thickness + 4) if style == "dashed" else (1, 3 * thickness + 3)
    for (ax, ay), (bx, by) in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = max(abs(bx - ax), abs(by - ay))
        for start in range(0, max(length, 1), dash + gap):
            end = min(start + dash, length)
            t0, t1 = start / max(length, 1), end / max(length, 1)
            p0 = (round(ax + (bx - ax) * t0), round(ay + (by - ay) * t0))
            p1 = (round(ax + (bx - ax) * t1), round(ay + (by - ay) * t1))
            cv2.line(image, p0, p1, colour, thickness, cv2.LINE_8)


def _tag(image: np.ndarray, text: str, x: int, y: int, colour, font: float, thick: int) -> None:
    """``text`` on a filled tag of ``colour`` whose top-left is near (x, y), kept inside the image."""
    height, width = image.shape[:2]
    (tw, th), base = cv2.getTextSize(text, FONT, font, thick)
    pad = max(2, th // 4)
    top = min(max(0, y), max(0, height - th - base - 2 * pad))
    left = min(max(0, x), max(0, width - tw - 2 * pad))
    cv2.rectangle(image, (left, top), (left + tw + 2 * pad, top + th + base + 2 * pad), colour, cv2.FILLED)
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    cv2.putText(image, text, (left + pad, top + pad + th), FONT, font, ink, thick, cv2.LINE_AA)


def annotate_agreement(image: np.ndarray, agreement: Agreement, scale: float, titles: tuple[str, str]) -> np.ndarray:
    """A copy of the RGB ``image`` with the agreement's three groups in their styles and a legend strip below.

    ``scale`` maps the agreement's boxes (original pixels) to ``image``'s; a matched pair is drawn once, as
    the mean of its two boxes, tagged with its IoU; ``titles`` names the two models in the legend."""
    height, width = image.shape[:2]
    font, text_thick, box_thick = text_scale(width, height)
    box_thick = max(2, box_thick)
    (_, th), base = cv2.getTextSize("Ag", FONT, font, text_thick)
    row = th + base + 2 * max(2, th // 4) + 6
    out = np.full((height + 3 * row + 8, width, 3), 255, np.uint8)
    out[:height] = np.asarray(image, dtype=np.uint8)
    drawn = out[:height]  # a view: boxes stay above the legend strip

    def scaled(box):
        return tuple(v * scale for v in box)

    groups = (
        ("second", [(d.box, d.label) for d in agreement.only_second]),
        ("first", [(d.box, d.label) for d in agreement.only_first]),
        (
            "both",
            [
                (
                    tuple((a + b) / 2 for a, b in zip(p.first.box, p.second.box, strict=True)),
                    f"{p.first.label} {p.iou:.2f}",
                )
                for p in agreement.both
            ],
        ),
    )
    for group, boxes in groups:
        colour, style = AGREEMENT_STYLES[group]
        for box, text in boxes:
            x1, y1, x2, y2 = scaled(box)
            styled_rectangle(drawn, (x1, y1, x2, y2), colour, box_thick, style)
            _tag(drawn, text, round(x1), round(y1) - row, colour, font, text_thick)
    legend = (
        ("both", f"found by both ({len(agreement.both)}), tag: IoU"),
        ("first", f"only {titles[0]} ({len(agreement.only_first)})"),
        ("second", f"only {titles[1]} ({len(agreement.only_second)})"),
    )
    sample = max(30, 3 * row)
    for k, (group, text) in enumerate(legend):
        colour, style = AGREEMENT_STYLES[group]
        mid = height + 4 + k * row + row // 2
        styled_rectangle(out, (6, mid - row // 3, 6 + sample, mid + row // 3), colour, box_thick, style)
        cv2.putText(out, text, (14 + sample, mid + th // 2), FONT, font, (0, 0, 0), text_thick, cv2.LINE_AA)
    return out


def to_png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()
