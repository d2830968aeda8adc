"""Golden detections from OpenCV 4's own Darknet importer, for the OpenCV 5 tests (which cannot load Darknet).

Run by the OpenCV 4 environment's Python as a subprocess; imports only cv2 and numpy, nothing of app/:
``python tests/support/opencv4_darknet.py CFG WEIGHTS CONF IOU IMAGE...`` prints one JSON object
{image: [[class_id, score, x1, y1, x2, y2], ...]}: the textbook recipe (BGR file, swapRB, stretch to the
cfg's size, 1/255), rows above CONF, per-class NMS, best first, boxes clipped to the image.
"""

from __future__ import annotations

import json
import sys

import cv2
import numpy as np


def detections(net, path: str, size: int, conf: float, iou: float) -> list[list[float]]:
    image = cv2.imread(path)
    height, width = image.shape[:2]
    net.setInput(cv2.dnn.blobFromImage(image, 1 / 255.0, (size, size), swapRB=True, crop=False))
    rows = np.concatenate([o.reshape(-1, o.shape[-1]) for o in net.forward(net.getUnconnectedOutLayersNames())])
    class_ids = rows[:, 5:].argmax(axis=1)
    scores = rows[np.arange(len(rows)), 5 + class_ids]
    keep = scores >= conf
    rows, scores, class_ids = rows[keep], scores[keep], class_ids[keep]
    boxes = [[(r[0] - r[2] / 2) * width, (r[1] - r[3] / 2) * height, r[2] * width, r[3] * height] for r in rows]
    kept = cv2.dnn.NMSBoxesBatched(boxes, scores.tolist(), class_ids.tolist(), 0.0, iou) if boxes else []
    out = []
    for i in sorted(np.asarray(kept, dtype=np.int64).reshape(-1), key=lambda i: -scores[i]):
        x, y, w, h = boxes[i]
        box = [min(max(x, 0), width), min(max(y, 0), height), min(max(x + w, 0), width), min(max(y + h, 0), height)]
        out.append([int(class_ids[i]), float(scores[i]), *(float(v) for v in box)])
    return out


def main(argv: list[str]) -> None:
    cfg, weights, conf, iou, *images = argv
    assert int(cv2.__version__.split(".")[0]) == 4, f"needs OpenCV 4, this is {cv2.__version__}"
    net = cv2.dnn.readNetFromDarknet(cfg, weights)
    with open(cfg) as fh:
        size = int(next(line for line in fh if line.replace(" ", "").startswith("width=")).split("=")[1])
    print(json.dumps({path: detections(net, path, size, float(conf), float(iou)) for path in images}))


if __name__ == "__main__":
    main(sys.argv[1:])
