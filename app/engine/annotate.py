"""Boxes and labels drawn on a copy of the image: a stable colour per class, text sized to the image; and the
agreement overlay of two models (found by both, only by one, only by the other) with its legend."""

from __future__ import annotations

import colorsys
import math
import zlib

import cv2
import numpy as np

from .agreement import Agreement
from .result import DetectionResult

FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_colour(label: str) -> tuple[int, int, int]:
    """The same RGB colour for a label in every image, run, model and chart (hue from a CRC of the name)."""
    hue = (zlib.crc32(label.encode("utf-8")) % 360) / 360.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def class_hex(label: str) -> str:
    """``class_colour`` as ``#rrggbb``: the charts draw each class in its boxes' colour."""
    return "#{:02x}{:02x}{:02x}".format(*class_colour(label))


# On screen, a box is at least MIN_STROKE_PX wide and one pixel per STROKE_EVERY_PX of the picture's longer side
# as shown; a label's font scale (OpenCV Hershey simplex, ~22 px capitals at 1.0) at least MIN_FONT_SCALE.
MIN_STROKE_PX = 2
STROKE_EVERY_PX = 250
MIN_FONT_SCALE = 0.55
FONT_EVERY_PX = 1000


def text_scale(width: int, height: int, shown_width: float | None = None) -> tuple[float, int, int]:
    """Font scale, text thickness and box thickness, in the image's pixels, for the picture shown ``shown_width``
    pixels wide on screen (default: at its own size). A 500 px picture gets a 2 px box, a 2000 px one 8 px; a
    1280 px picture shown 440 px wide gets boxes that are still 2 px on screen (6 in the image)."""
    per_screen_px = width / max(1.0, shown_width) if shown_width else 1.0  # image pixels under one screen pixel
    shown_side = max(width, height, 1) / per_screen_px
    stroke = max(MIN_STROKE_PX, round(shown_side / STROKE_EVERY_PX)) * per_screen_px
    font = max(MIN_FONT_SCALE, shown_side / FONT_EVERY_PX) * per_screen_px
    return font, max(1, round(font * 1.6)), max(MIN_STROKE_PX, math.ceil(stroke - 1e-9))


def _ink(colour) -> tuple[int, int, int]:
    """Black on light colours, white on dark ones: text on a tag, and the edge that keeps a box visible."""
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def tag_rect(box, text_size: tuple[int, int], base: int, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Where a box's label tag goes (x1, y1, x2, y2): above the box, else inside its top; always inside the
    picture (a tag wider than the picture starts at its left edge)."""
    (tw, th), (width, height) = text_size, image_size
    pad = max(2, th // 4)
    tag_w, tag_h = tw + 2 * pad, th + base + 2 * pad
    x1, y1 = round(box[0]), round(box[1])
    top = y1 - tag_h if y1 - tag_h >= 0 else y1  # no room above the box: inside it
    top = min(max(0, top), max(0, height - tag_h))
    left = min(max(0, x1), max(0, width - tag_w))
    return left, top, left + tag_w, top + tag_h


def annotate(image: np.ndarray, result: DetectionResult, shown_width: float | None = None) -> np.ndarray:
    """A copy of the RGB ``image`` with the result's boxes and ``label score`` tags, sized for the picture as
    shown (``shown_width``: its width on screen in pixels; default its own size). Each box has a thin edge
    in the contrasting ink, so a dark box stays visible on a dark background and a light one on white."""
    out = np.array(image, dtype=np.uint8, copy=True)
    height, width = out.shape[:2]
    font, text_thick, box_thick = text_scale(width, height, shown_width)
    edge = max(1, box_thick // 3)
    for det in result.detections:
        colour = class_colour(det.label)
        x1, y1, x2, y2 = (round(v) for v in det.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), _ink(colour), box_thick + 2 * edge, cv2.LINE_8)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, box_thick, cv2.LINE_8)
        text = f"{det.label} {det.score:.2f}"
        (tw, th), base = cv2.getTextSize(text, FONT, font, text_thick)
        left, top, right, bottom = tag_rect(det.box, (tw, th), base, (width, height))
        pad = max(2, th // 4)
        cv2.rectangle(out, (left, top), (right, bottom), colour, cv2.FILLED)
        cv2.putText(out, text, (left + pad, top + pad + th), FONT, font, _ink(colour), text_thick, cv2.LINE_AA)
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
    cv2.putText(image, text, (left + pad, top + pad + th), FONT, font, _ink(colour), thick, cv2.LINE_AA)


def annotate_agreement(
    image: np.ndarray, agreement: Agreement, scale: float, titles: tuple[str, str], shown_width: float | None = None
) -> np.ndarray:
    """A copy of the RGB ``image`` with the agreement's three groups in their styles and a legend strip below.

    ``scale`` maps the agreement's boxes (original pixels) to ``image``'s; a matched pair is drawn once, as
    the mean of its two boxes, tagged with its IoU; ``titles`` names the two models in the legend; ``shown_width``
    as in ``annotate``."""
    height, width = image.shape[:2]
    font, text_thick, box_thick = text_scale(width, height, shown_width)
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
