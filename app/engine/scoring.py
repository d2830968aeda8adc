"""Scoring detections against a COCO file: each model's results through ``faster-coco-eval``'s COCOeval
(the reference implementation's numbers, measured 7x faster), per-class AP, PR curves, per-image TP/FP/FN,
speed, and their CSV and PNG renderings. Categories a model cannot predict are reported and left out of
its scores, not counted as misses. See docs/evaluate.md.
"""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass, field

import numpy as np

from .coco import CategoryMatch, GroundTruth
from .result import DetectionResult, DetectParams

EVAL_CONF = 0.001  # the usual COCO evaluation floor: AP needs the low-score tail of the PR curve
EVAL_NMS_IOU = 0.45  # the app's default NMS
MAX_DETS = 100  # COCOeval's maxDets for AP and AR@100
COUNT_CONF = 0.3  # score threshold of the per-image TP/FP/FN counts (the app's default threshold)
MATCH_IOU = 0.5  # IoU of the per-image counts and the PR curves (COCOeval's first threshold)
METRICS = {"AP": 0, "AP50": 1, "AP75": 2, "APs": 3, "APm": 4, "APl": 5, "AR100": 8}  # name -> COCOeval.stats index


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
