"""Peak memory of reading and scoring a COCO file of N annotations, each size in a fresh process.

    .venv/bin/python bench/coco_memory.py 10000 100000 250000 1000000

Prints, per N: the file's size, the peak RSS growth (``ru_maxrss`` of the child, less its RSS after the
imports) of ``load_annotations`` alone and of ``load_annotations`` + ``score_model`` (one detection per
annotation, so COCOeval matches every box), and what the loader answered. What docs/evaluate.md's limits
rest on.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import resource, sys, json
from pathlib import Path
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
def rss():
    with open("/proc/self/clear_refs", "w") as fh:  # the high-water mark starts again from here
        fh.write("5")
    return status("VmRSS")
def peak():
    return status("VmHWM")
from app.engine.coco import AnnotationError, load_annotations, match_categories
from app.engine.scoring import score_model
from app.engine.result import Detection, DetectionResult
import faster_coco_eval, numpy
base = rss()
try:
    gt = load_annotations(Path(sys.argv[1]))
except AnnotationError as exc:
    print(json.dumps({"peak": peak() - base, "refused": str(exc)[:160]}))
    sys.exit()
loaded = peak() - base
if sys.argv[2] == "score":
    by_image = {}
    for a in gt.annotations:
        x, y, w, h = a["bbox"]
        by_image.setdefault(a["image_id"], []).append(Detection("cup", 41, 0.9, (x, y, x + w, y + h)))
    extra = int(sys.argv[3])  # more detections per image, scored below the matches: COCOeval's usual load
    for image_id, dets in by_image.items():
        for k in range(extra):
            x, y = (k * 7) % 600, (k * 5) % 440
            dets.append(Detection("cup", 41, 0.5 - k / 1000, (x, y, x + 30, y + 30)))
    timings = {"inference": 1.0}
    results = {i["id"]: DetectionResult("yolo", (640, 480), by_image.get(i["id"], []), timings) for i in gt.images}
    del by_image
    score = score_model("yolo", gt, match_categories(gt.categories, ["cup"]), results)
    assert score.metrics["AP50"] > 0.9, score.metrics
peak = peak() - base
print(json.dumps({"peak_load": loaded, "peak": peak}))
"""


def coco_file(path: Path, annotations: int, per_image: int = 10) -> int:
    images = max(1, annotations // per_image)
    with open(path, "w") as fh:
        fh.write('{"images": [')
        fh.write(
            ",".join(
                f'{{"id": {i}, "file_name": "img{i:07d}.jpg", "width": 640, "height": 480}}'
                for i in range(1, images + 1)
            )
        )
        fh.write('], "categories": [{"id": 47, "name": "cup"}], "annotations": [')
        fh.write(
            ",".join(
                f'{{"id": {n}, "image_id": {1 + (n - 1) // per_image}, "category_id": 47, '
                f'"bbox": [{(n * 37) % 500}.5, {(n * 11) % 400}.25, 40.0, 30.0], "area": 1200.0, "iscrowd": 0}}'
                for n in range(1, annotations + 1)
            )
        )
        fh.write("]}")
    return path.stat().st_size


def main(sizes: list[int], extra: int = 90) -> None:
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = Path(tmp) / f"coco-{n}.json"
            size = coco_file(path, n)
            row = {"annotations": n, "file_bytes": size}
            for mode in ("load", "score"):
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, str(path), mode, str(extra)],
                    cwd=repo,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                row[mode] = json.loads(out.stdout)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10_000, 100_000, 250_000, 1_000_000])
