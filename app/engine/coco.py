"""COCO-style evaluation of the detectors on the user's own labelled images (``python -m app eval``, the
Evaluate tab). See docs/evaluate.md.

A COCO detection file (images, annotations with ``bbox`` [x, y, width, height], categories) is validated
here with messages that name the file and the entry at fault. Its categories are matched to each model's
labels BY NAME through ``app.labels`` (so COCO's ids, with their gaps, and Darknet's spellings do not
matter); categories a model cannot predict are reported and left out of its scores, not counted as misses.
Each model runs once per image (``forward`` once, ``decode`` at a low evaluation threshold) and is scored
by ``faster-coco-eval``'s COCOeval (the reference implementation's numbers, measured 7x faster).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import Settings
from .labels import DARKNET_TO_TORCHVISION
from .result import DetectionResult, DetectParams
from .textfile import read_bounded

MAX_ANNOTATIONS_BYTES = 64 * 2**20  # COCO's own val2017 boxes + masks file is 25 MB
EVAL_CONF = 0.001  # the usual COCO evaluation floor: AP needs the low-score tail of the PR curve
EVAL_NMS_IOU = 0.45  # the app's default NMS
MAX_DETS = 100  # COCOeval's maxDets for AP and AR@100
COUNT_CONF = 0.3  # score threshold of the per-image TP/FP/FN counts (the app's default threshold)
MATCH_IOU = 0.5  # IoU of the per-image counts and the PR curves (COCOeval's first threshold)
METRICS = {"AP": 0, "AP50": 1, "AP75": 2, "APs": 3, "APm": 4, "APl": 5, "AR100": 8}  # name -> COCOeval.stats index
MAX_PROBLEMS = 8  # problems listed in one refusal of an annotations file
IGNORED_LABELS = ("N/A", "__background__")


class AnnotationError(ValueError):
    """An annotations file that cannot be evaluated; str() names the file and every problem found."""


@dataclass(frozen=True)
class GroundTruth:
    """A validated COCO detection file: every image, annotation and category with the fields COCOeval needs
    (``area`` and ``iscrowd`` filled in, annotation ids assigned where the file has none)."""

    source: str
    images: tuple[dict, ...]
    annotations: tuple[dict, ...]
    categories: tuple[dict, ...]

    def coco_dataset(self) -> dict:
        return {
            "images": [dict(i) for i in self.images],
            "annotations": [dict(a) for a in self.annotations],
            "categories": [dict(c) for c in self.categories],
        }

    def category_names(self) -> dict[int, str]:
        return {c["id"]: c["name"] for c in self.categories}

    def boxes_of(self, image_id: int) -> list[tuple[str, tuple[float, float, float, float]]]:
        """(category name, (x1, y1, x2, y2)) of one image's annotations, for drawing."""
        names = self.category_names()
        out = []
        for ann in self.annotations:
            if ann["image_id"] == image_id:
                x, y, w, h = ann["bbox"]
                out.append((names[ann["category_id"]], (x, y, x + w, y + h)))
        return out


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def load_annotations(path: Path) -> GroundTruth:
    """A COCO detection file from disk (at most ``MAX_ANNOTATIONS_BYTES``); ``AnnotationError`` otherwise."""
    try:
        data = read_bounded(
            Path(path), MAX_ANNOTATIONS_BYTES, "COCO annotations file", "is this a COCO detection JSON file?"
        )
    except ValueError as exc:
        raise AnnotationError(str(exc)) from None
    return parse_annotations(data, str(path))


def parse_annotations(data: bytes, source: str) -> GroundTruth:
    """Validate a COCO detection file's bytes; ``AnnotationError`` naming ``source`` and what is wrong."""
    if len(data) > MAX_ANNOTATIONS_BYTES:
        raise AnnotationError(
            f"{source}: annotations file is larger than {MAX_ANNOTATIONS_BYTES:,} bytes ({len(data):,}); "
            "is this a COCO detection JSON file?"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AnnotationError(
            f"{source}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "a COCO annotations file is UTF-8 JSON"
        ) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            f"{source}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise AnnotationError(f"{source}: not valid JSON (nested too deeply)") from None
    if not isinstance(doc, dict):
        raise AnnotationError(
            f"{source}: the top level is a JSON {type(doc).__name__}, not an object with "
            "'images', 'annotations' and 'categories'"
        )
    missing = [key for key in ("images", "annotations", "categories") if key not in doc]
    if missing:
        raise AnnotationError(
            f"{source}: missing key {', '.join(repr(k) for k in missing)} (a COCO detection file has "
            "'images', 'annotations' and 'categories')"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc[key], list):
            raise AnnotationError(f"{source}: '{key}' is a JSON {type(doc[key]).__name__}, not a list")
    problems: list[str] = []
    images = _images(doc["images"], problems)
    categories = _categories(doc["categories"], problems)
    annotations = _annotations(doc["annotations"], {i["id"] for i in images}, {c["id"] for c in categories}, problems)
    if not problems and not images:
        problems.append("'images' is empty: nothing to evaluate")
    if not problems and not categories:
        problems.append("'categories' is empty: nothing to evaluate")
    if problems:
        more = f"; and more (the first {MAX_PROBLEMS} are listed)" if len(problems) > MAX_PROBLEMS else ""
        raise AnnotationError(f"{source}: " + "; ".join(problems[:MAX_PROBLEMS]) + more)
    return GroundTruth(source, tuple(images), tuple(annotations), tuple(categories))


def _images(entries: list, problems: list[str]) -> list[dict]:
    out, seen = [], set()
    for n, entry in enumerate(entries):
        if len(problems) > MAX_PROBLEMS:
            break
        where = f"images[{n}]"
        if not isinstance(entry, dict):
            problems.append(f"{where} is not an object")
            continue
        image_id, file_name = entry.get("id"), entry.get("file_name")
        if not _is_int(image_id):
            problems.append(f"{where}: 'id' must be an integer, got {image_id!r}")
            continue
        if image_id in seen:
            problems.append(f"{where}: duplicate image id {image_id}")
            continue
        seen.add(image_id)
        if not isinstance(file_name, str) or not file_name.strip():
            problems.append(f"{where} (id {image_id}): 'file_name' must be a non-empty string, got {file_name!r}")
            continue
        image = {"id": image_id, "file_name": file_name}
        for key in ("width", "height"):
            value = entry.get(key)
            if value is None:
                continue
            if not _is_number(value) or value <= 0:
                problems.append(f"{where} (id {image_id}): '{key}' must be a number above 0, got {value!r}")
            image[key] = value
        out.append(image)
    return out


def _categories(entries: list, problems: list[str]) -> list[dict]:
    out, seen_ids, seen_names = [], set(), {}
    for n, entry in enumerate(entries):
        if len(problems) > MAX_PROBLEMS:
            break
        where = f"categories[{n}]"
        if not isinstance(entry, dict):
            problems.append(f"{where} is not an object")
            continue
        cat_id, name = entry.get("id"), entry.get("name")
        if not _is_int(cat_id):
            problems.append(f"{where}: 'id' must be an integer, got {cat_id!r}")
            continue
        if cat_id in seen_ids:
            problems.append(f"{where}: duplicate category id {cat_id}")
            continue
        seen_ids.add(cat_id)
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{where} (id {cat_id}): 'name' must be a non-empty string, got {name!r}")
            continue
        key = canonical_name(name)
        if key in seen_names:
            problems.append(
                f"{where} (id {cat_id}): name {name!r} is the same class as category {seen_names[key]} "
                "(names are matched to the models' labels, so each class needs one category)"
            )
            continue
        seen_names[key] = cat_id
        out.append({"id": cat_id, "name": name.strip()})
    return out


def _annotations(entries: list, image_ids: set[int], category_ids: set[int], problems: list[str]) -> list[dict]:
    out, seen = [], set()
    given = [e.get("id") for e in entries if isinstance(e, dict) and _is_int(e.get("id"))]
    next_id = max(given, default=0) + 1  # ids for entries without one (COCO's index needs them)
    for n, entry in enumerate(entries):
        if len(problems) > MAX_PROBLEMS:
            break
        if not isinstance(entry, dict):
            problems.append(f"annotations[{n}] is not an object")
            continue
        ann_id = entry.get("id")
        where = f"annotations[{n}]" + (f" (id {ann_id})" if ann_id is not None else "")
        if ann_id is None:
            ann_id, next_id = next_id, next_id + 1
        elif not _is_int(ann_id):
            problems.append(f"{where}: 'id' must be an integer, got {ann_id!r}")
            continue
        elif ann_id in seen:
            problems.append(f"{where}: duplicate annotation id {ann_id}")
            continue
        seen.add(ann_id)
        image_id, cat_id, bbox = entry.get("image_id"), entry.get("category_id"), entry.get("bbox")
        if not _is_int(image_id) or image_id not in image_ids:
            problems.append(f"{where}: image_id {image_id!r} is not the id of any entry of 'images'")
            continue
        if not _is_int(cat_id) or cat_id not in category_ids:
            problems.append(f"{where}: category_id {cat_id!r} is not the id of any entry of 'categories'")
            continue
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            problems.append(f"{where}: bbox must be 4 numbers [x, y, width, height], got {bbox!r}")
            continue
        if bbox[2] <= 0 or bbox[3] <= 0:
            problems.append(f"{where}: bbox {bbox} has a width or height that is not above 0 (it is [x, y, w, h])")
            continue
        iscrowd = entry.get("iscrowd", 0)
        if iscrowd not in (0, 1) or isinstance(iscrowd, bool):
            problems.append(f"{where}: 'iscrowd' must be 0 or 1, got {iscrowd!r}")
            continue
        area = entry.get("area", bbox[2] * bbox[3])
        if not _is_number(area) or area < 0:
            problems.append(f"{where}: 'area' must be a number of at least 0, got {area!r}")
            continue
        out.append(
            {
                "id": ann_id,
                "image_id": image_id,
                "category_id": cat_id,
                "bbox": [float(v) for v in bbox],
                "area": float(area),
                "iscrowd": iscrowd,
            }
        )
    return out


def canonical_name(name: str) -> str:
    """The name a category and a model label are compared by: spaces collapsed, lower case, Darknet's
    spellings (motorbike, aeroplane, sofa, pottedplant, diningtable, tvmonitor) as torchvision spells them."""
    key = " ".join(name.split()).lower()
    return DARKNET_TO_TORCHVISION.get(key, key)


@dataclass(frozen=True)
class CategoryMatch:
    """How one model's labels meet the file's categories."""

    label_to_category: dict[str, int]  # model label -> category id
    scored: tuple[int, ...]  # category ids the model can predict: the ones it is scored on
    unpredictable: tuple[str, ...]  # category names it has no label for (reported, not scored as misses)


def match_categories(categories, labels) -> CategoryMatch:
    """Match by ``canonical_name``: COCO's ids (with their gaps), Darknet's contiguous ids and a custom names
    file's order never enter; only names do."""
    by_name: dict[str, str] = {}
    for label in labels:
        if label not in IGNORED_LABELS:
            by_name.setdefault(canonical_name(label), label)
    mapping, scored, unpredictable = {}, [], []
    for cat in categories:
        label = by_name.get(canonical_name(cat["name"]))
        if label is None:
            unpredictable.append(cat["name"])
        else:
            mapping[label] = cat["id"]
            scored.append(cat["id"])
    return CategoryMatch(mapping, tuple(scored), tuple(unpredictable))


def eval_params(conf: float = EVAL_CONF) -> DetectParams:
    """What each model decodes with for scoring: a low score floor, the app's NMS, COCO's 100 boxes."""
    return DetectParams(conf=conf, iou=EVAL_NMS_IOU, max_det=MAX_DETS)


@dataclass
class ModelScore:
    """One model's evaluation: COCO metrics, per-class AP, PR curves, per-image counts, speed."""

    model: str
    images: int
    metrics: dict[str, float | None]  # None where COCOeval has nothing to average (e.g. no small objects)
    per_class: list[dict] = field(default_factory=list)  # name, category_id, gt_boxes, detections, AP, AP50
    pr_curves: dict[str, list[dict]] = field(default_factory=dict)  # class -> [{recall, precision, score}]
    per_image: list[dict] = field(default_factory=list)  # image_id, file_name, tp, fp, fn
    unpredictable: list[str] = field(default_factory=list)
    unscored: dict[str, int] = field(default_factory=dict)  # label outside the file's categories -> detections
    latency_ms_median: float | None = None
    images_per_s: float | None = None
    count_conf: float = COUNT_CONF

    def totals(self) -> dict[str, int]:
        return {k: sum(row[k] for row in self.per_image) for k in ("tp", "fp", "fn")}

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "images": self.images,
            "metrics": self.metrics,
            "latency_ms_median": self.latency_ms_median,
            "images_per_s": self.images_per_s,
            "counts_at_iou_0.5": {"score_threshold": self.count_conf, **self.totals()},
            "per_class": self.per_class,
            "cannot_predict": self.unpredictable,
            "detections_outside_categories": self.unscored,
            "per_image": self.per_image,
            "pr_curves_iou_0.5": self.pr_curves,
        }


def _quiet(*_args, **_kwargs) -> None:
    """COCOeval's print function: the CLI and the app print their own tables."""


def _round(value: float) -> float | None:
    return None if value is None or value < 0 else round(float(value), 4)


def score_model(
    model: str,
    gt: GroundTruth,
    match: CategoryMatch,
    results: dict[int, DetectionResult],
    count_conf: float = COUNT_CONF,
) -> ModelScore:
    """COCOeval on the images in ``results`` (image id -> this model's result, boxes in the original's
    pixels), over the categories the model can predict."""
    from faster_coco_eval import COCO, COCOeval_faster

    image_ids = sorted(results)
    dets, unscored = [], {}
    for image_id in image_ids:
        for d in results[image_id].detections:
            cat_id = match.label_to_category.get(d.label)
            if cat_id is None:
                unscored[d.label] = unscored.get(d.label, 0) + 1
                continue
            x1, y1, x2, y2 = d.box
            dets.append(
                {"image_id": image_id, "category_id": cat_id, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": d.score}
            )
    score = ModelScore(
        model,
        len(image_ids),
        dict.fromkeys(METRICS),
        unpredictable=list(match.unpredictable),
        unscored=dict(sorted(unscored.items())),
        count_conf=count_conf,
    )
    latencies = [sum(r.timings_ms.values()) for r in results.values()]
    if latencies:
        score.latency_ms_median = round(statistics.median(latencies), 3)
        score.images_per_s = round(1000.0 * len(latencies) / max(sum(latencies), 1e-9), 2)
    if not image_ids or not match.scored:
        return score
    coco_gt = COCO()
    coco_gt.dataset = gt.coco_dataset()
    coco_gt.createIndex()
    coco_dt = coco_gt.loadRes(dets)
    cocoeval = COCOeval_faster(coco_gt, coco_dt, "bbox", extra_calc=True, print_function=_quiet)
    cocoeval.params.imgIds = image_ids
    cocoeval.params.catIds = sorted(match.scored)
    cocoeval.evaluate()
    cocoeval.accumulate()
    cocoeval.summarize()
    if not cocoeval.matched:  # extra_calc failed (the library logged why): the per-image counts would be wrong
        raise RuntimeError(f"{library_version()} did not report which detection matched which box")
    score.metrics = {name: _round(cocoeval.stats[i]) for name, i in METRICS.items()}
    _per_class(score, gt, cocoeval, image_ids, dets)
    _per_image(score, gt, coco_gt, coco_dt, set(image_ids), set(match.scored), count_conf)
    return score


def _per_class(score: ModelScore, gt: GroundTruth, cocoeval, image_ids: list[int], dets: list[dict]) -> None:
    """AP and AP50 per category, and its PR curve at IoU 0.5 (precision interpolated as COCOeval does, at its
    101 recall points up to the recall reached), from COCOeval's accumulated arrays [T, R, K, A, M]."""
    names = gt.category_names()
    in_images = set(image_ids)
    precision, scores, recall = cocoeval.eval["precision"], cocoeval.eval["scores"], cocoeval.eval["recall"]
    rec_thrs = cocoeval.params.recThrs
    for k, cat_id in enumerate(int(c) for c in cocoeval.params.catIds):
        gt_boxes = sum(
            1 for a in gt.annotations if a["category_id"] == cat_id and a["image_id"] in in_images and not a["iscrowd"]
        )
        all_iou = precision[:, :, k, 0, -1]
        at_50 = precision[0, :, k, 0, -1]
        score.per_class.append(
            {
                "name": names[cat_id],
                "category_id": cat_id,
                "gt_boxes": gt_boxes,
                "detections": sum(1 for d in dets if d["category_id"] == cat_id),
                "AP": _round(all_iou[all_iou > -1].mean()) if (all_iou > -1).any() else None,
                "AP50": _round(at_50[at_50 > -1].mean()) if (at_50 > -1).any() else None,
            }
        )
        reached = recall[0, k, 0, -1]
        if reached > 0:
            score.pr_curves[names[cat_id]] = [
                {"recall": round(float(r), 2), "precision": round(float(p), 4), "score": round(float(s), 4)}
                for r, p, s in zip(rec_thrs, at_50, scores[0, :, k, 0, -1], strict=True)
                if r <= reached + 1e-9
            ]


def _per_image(score, gt, coco_gt, coco_dt, image_ids: set[int], scored: set[int], count_conf: float) -> None:
    """TP/FP/FN per image at IoU 0.5 among detections scoring at least ``count_conf``, from COCOeval's own
    matching (greedy by score, so the matches of the detections above a threshold do not depend on those
    below it). A detection matched to a crowd region counts neither way; crowd regions are never misses."""
    counts = {i: {"tp": 0, "fp": 0, "fn": 0} for i in image_ids}
    for ann in coco_gt.anns.values():
        if ann["image_id"] in image_ids and ann["category_id"] in scored and not ann["iscrowd"]:
            counts[ann["image_id"]]["fn"] += 1
    for det in coco_dt.anns.values():
        if det["score"] < count_conf or det["image_id"] not in image_ids:
            continue
        matched = det.get("gt_id")
        if matched is None:
            counts[det["image_id"]]["fp"] += 1
        elif not coco_gt.anns[matched]["iscrowd"]:
            counts[det["image_id"]]["tp"] += 1
            counts[det["image_id"]]["fn"] -= 1
    files = {i["id"]: i["file_name"] for i in gt.images}
    score.per_image = [{"image_id": i, "file_name": files[i], **counts[i]} for i in sorted(image_ids)]


def library_version() -> str:
    from importlib.metadata import version

    return f"faster-coco-eval {version('faster-coco-eval')}"


def report(gt: GroundTruth, scores: list[ModelScore], conf: float, problems: list[str]) -> dict:
    """The metrics document (``eval --json``, ``--out``'s metrics.json, the tab's JSON download)."""
    return {
        "annotations": gt.source,
        "images_in_file": len(gt.images),
        "boxes_in_file": len(gt.annotations),
        "categories": [c["name"] for c in gt.categories],
        "params": {
            "eval_score_threshold": conf,
            "nms_iou": EVAL_NMS_IOU,
            "max_detections": MAX_DETS,
            "count_iou": MATCH_IOU,
            "count_score_threshold": scores[0].count_conf if scores else COUNT_CONF,
        },
        "library": library_version(),
        "models": {s.model: s.to_dict() for s in scores},
        "problems": problems,
    }


METRICS_CSV_FIELDS = ("model", "class", "category_id", "gt_boxes", *METRICS, "latency_ms_median", "images_per_s")


def metrics_csv(scores: list[ModelScore]) -> bytes:
    """One row per model (class ``all``: every metric and the speed), then one per class (AP, AP50)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRICS_CSV_FIELDS)
    writer.writeheader()
    for s in scores:
        writer.writerow(
            {"model": s.model, "class": "all", **s.metrics}
            | {"latency_ms_median": s.latency_ms_median, "images_per_s": s.images_per_s}
        )
        for row in s.per_class:
            writer.writerow(
                {"model": s.model, "class": row["name"], "category_id": row["category_id"]}
                | {"gt_boxes": row["gt_boxes"], "AP": row["AP"], "AP50": row["AP50"]}
            )
    return buf.getvalue().encode("utf-8")


def per_image_csv(scores: list[ModelScore]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=("model", "image_id", "file_name", "tp", "fp", "fn"))
    writer.writeheader()
    for s in scores:
        for row in s.per_image:
            writer.writerow({"model": s.model, **row})
    return buf.getvalue().encode("utf-8")


def pr_curve_png(score: ModelScore, max_legend: int = 20) -> bytes:
    """PR curves at IoU 0.5 of every class of one model, drawn with OpenCV (no plotting library to install)."""
    import cv2

    from .annotate import FONT, class_colour, to_png

    width, height, left, top, side = 900, 640, 70, 40, 540
    image = np.full((height, width, 3), 255, np.uint8)
    x_of = lambda r: int(left + r * side)  # noqa: E731
    y_of = lambda p: int(top + (1 - p) * side)  # noqa: E731
    for tick in np.linspace(0, 1, 6):
        cv2.line(image, (x_of(tick), top), (x_of(tick), top + side), (225, 225, 225), 1)
        cv2.line(image, (left, y_of(tick)), (left + side, y_of(tick)), (225, 225, 225), 1)
        cv2.putText(image, f"{tick:.1f}", (x_of(tick) - 12, top + side + 20), FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(image, f"{tick:.1f}", (left - 35, y_of(tick) + 5), FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.rectangle(image, (left, top), (left + side, top + side), (0, 0, 0), 1)
    cv2.putText(image, "recall", (left + side // 2 - 25, height - 12), FONT, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, "precision", (5, top - 12), FONT, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    title = f"{score.model}: PR curves at IoU 0.5 (AP50 {score.metrics.get('AP50')})"
    cv2.putText(image, title, (left + 60, top - 12), FONT, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    ap50 = {row["name"]: row["AP50"] for row in score.per_class}
    for n, (name, points) in enumerate(sorted(score.pr_curves.items())):
        colour = class_colour(name)
        line = np.array([(x_of(p["recall"]), y_of(p["precision"])) for p in points], np.int32)
        cv2.polylines(image, [line], False, colour, 2, cv2.LINE_AA)
        if n < max_legend:
            y = top + 14 + 24 * n
            cv2.line(image, (left + side + 15, y - 4), (left + side + 40, y - 4), colour, 3)
            cv2.putText(image, f"{name} {ap50.get(name)}", (left + side + 45, y), FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        elif n == max_legend:
            cv2.putText(image, "...", (left + side + 45, top + 14 + 24 * n), FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return to_png(image)


def image_path(images_dir: Path, file_name: str) -> Path | None:
    """The image file of an entry of 'images': ``DIR/file_name``, else ``DIR/<its base name>``; never outside
    ``DIR`` (a file_name with ``..`` that leaves it is not looked up)."""
    root = images_dir.resolve()
    for candidate in (images_dir / file_name, images_dir / Path(file_name).name):
        resolved = candidate.resolve()
        if resolved.is_relative_to(root) and resolved.is_file():
            return candidate
    return None


def cmd_eval(args, settings: Settings) -> int:
    """``python -m app eval``: exit 0, or 1 when the annotations, a model or an image failed (the rest ran)."""
    from .batch import Progress
    from .cli import EXIT_FAILED, EXIT_OK, UsageError, detect_file, load_detectors
    from .images import ImageError

    try:
        params = eval_params(args.conf)
    except ValueError as exc:
        raise UsageError(f"--conf: {exc}") from None
    if not 0.0 <= args.count_conf <= 1.0:
        raise UsageError(f"--count-conf {args.count_conf} must be between 0 and 1")
    if not args.images.is_dir():
        print(f"error: --images {args.images}: not a folder", file=sys.stderr)
        return EXIT_FAILED
    try:
        gt = load_annotations(args.annotations)
    except AnnotationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    detectors = load_detectors(args.model, settings)
    if detectors is None:
        return EXIT_FAILED
    results: dict[str, dict[int, DetectionResult]] = {m: {} for m in detectors}
    problems: list[str] = []
    progress = Progress("eval", len(gt.images))  # a bar on a terminal, else a line every 10 s
    for entry in gt.images:
        path = image_path(args.images, entry["file_name"])
        if path is None:
            problems.append(f"{entry['file_name']}: not found in {args.images} (image id {entry['id']} left out)")
            progress.update(failed=True)
            continue
        warnings: list[str] = []
        try:
            image, by_model = detect_file(str(path), detectors, params, settings, warnings)
        except ImageError as exc:
            problems.append(f"{exc} (image id {entry['id']} left out)")
            progress.update(failed=True)
            continue
        progress.update(failed=False)
        size = (image.shape[1], image.shape[0])
        if "width" in entry and "height" in entry and (entry["width"], entry["height"]) != size:
            warnings.append(
                f"the annotations give {entry['width']}x{entry['height']}, the file is {size[0]}x{size[1]}: "
                "its boxes may not line up"
            )
        for note in warnings:
            print(f"{path}: warning: {note}", file=sys.stderr)
        for model, result in by_model.items():
            results[model][entry["id"]] = result
    progress.finish()
    scores = [
        score_model(m, gt, match_categories(gt.categories, d.labels), results[m], args.count_conf)
        for m, d in detectors.items()
    ]
    doc = report(gt, scores, args.conf, problems)
    if args.out:
        problems.extend(write_outputs(args.out, doc, scores))
        doc["problems"] = problems
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_table(gt, scores))
    sys.stdout.flush()
    return EXIT_FAILED if problems else EXIT_OK


def write_outputs(out_dir: Path, doc: dict, scores: list[ModelScore]) -> list[str]:
    """metrics.json, metrics.csv, per_image.csv and pr-<model>.png into ``out_dir``; the problems, if any."""
    files = {
        "metrics.json": json.dumps(doc, indent=2).encode("utf-8"),
        "metrics.csv": metrics_csv(scores),
        "per_image.csv": per_image_csv(scores),
        **{f"pr-{s.model}.png": pr_curve_png(s) for s in scores},
    }
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        cause = "it is a file, not a folder" if out_dir.exists() else exc.strerror or str(exc)
        return [f"cannot create the output folder {out_dir} ({cause})"]
    problems = []
    for name, data in files.items():
        try:
            (out_dir / name).write_bytes(data)
        except OSError as exc:
            problems.append(f"cannot write {out_dir / name} ({exc.strerror or exc})")
    return problems


def _cell(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_table(gt: GroundTruth, scores: list[ModelScore]) -> str:
    """The human summary: one row per model (accuracy vs speed), then per-class AP and what was not scored."""
    lines = [
        f"{gt.source}: {len(gt.images)} images, {len(gt.annotations)} boxes, {len(gt.categories)} categories",
        f"{'model':6} {'images':>6} " + " ".join(f"{m:>6}" for m in METRICS) + f" {'ms/img':>7} {'img/s':>7}",
    ]
    for s in scores:
        speed = f"{s.latency_ms_median or 0:7.1f} {s.images_per_s or 0:7.1f}"
        lines.append(
            f"{s.model:6} {s.images:6d} " + " ".join(f"{_cell(s.metrics[m]):>6}" for m in METRICS) + f" {speed}"
        )
    for s in scores:
        per_class = ", ".join(f"{r['name']} {_cell(r['AP'])} (AP50 {_cell(r['AP50'])})" for r in s.per_class)
        lines.append(f"{s.model}: per class AP: {per_class or '-'}")
        t = s.totals()
        lines.append(f"{s.model}: at IoU 0.5, score >= {s.count_conf}: TP {t['tp']}, FP {t['fp']}, FN {t['fn']}")
        if s.unpredictable:
            lines.append(f"{s.model}: cannot predict (not scored): {', '.join(s.unpredictable)}")
        if s.unscored:
            outside = ", ".join(f"{k} {v}" for k, v in s.unscored.items())
            lines.append(f"{s.model}: detections of classes the file does not have (not scored): {outside}")
    return "\n".join(lines)
