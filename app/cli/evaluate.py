"""``python -m app eval``: every chosen model on the images a COCO file names, scored (``app.engine.scoring``),
printed as a table or JSON, and written as metrics.json/csv, per_image.csv and PR curves on request.
A missing or undecodable image is named and left out (exit 1); the others still run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..engine.coco import AnnotationError, GroundTruth, ImageNotFound, image_path, load_annotations, match_categories
from ..engine.config import Settings
from ..engine.result import DetectionResult
from ..engine.scoring import (
    METRICS,
    ModelScore,
    eval_params,
    metrics_csv,
    per_image_csv,
    pr_curve_png,
    report,
    score_model,
)
from ..ops.terminal import printable
from .common import EXIT_FAILED, EXIT_OK, Progress, UsageError, detect_file, load_detectors, say


def cmd_eval(args, settings: Settings) -> int:
    """``python -m app eval``: exit 0, or 1 when the annotations, a model or an image failed (the rest ran)."""
    from ..engine.images import ImageError

    try:
        params = eval_params(args.conf)
    except ValueError as exc:
        raise UsageError(f"--conf: {exc}") from None
    if not 0.0 <= args.count_conf <= 1.0:
        raise UsageError(f"--count-conf {args.count_conf} must be between 0 and 1")
    if not args.images.is_dir():
        say(f"error: --images {args.images}: not a folder")
        return EXIT_FAILED
    try:
        gt = load_annotations(args.annotations)
    except AnnotationError as exc:
        say(f"error: {exc}")
        return EXIT_FAILED
    detectors = load_detectors(args.model, settings)
    if detectors is None:
        return EXIT_FAILED
    results: dict[str, dict[int, DetectionResult]] = {m: {} for m in detectors}
    problems: list[str] = []
    progress = Progress("eval", len(gt.images))  # a bar on a terminal, else a line every 10 s
    for entry in gt.images:
        try:
            path = image_path(args.images, entry["file_name"])
        except ImageNotFound as exc:
            problems.append(f"{_shorten(entry['file_name'])}: {exc} (image id {entry['id']} left out)")
            progress.update(failed=True)
            continue
        warnings: list[str] = []
        try:
            size, by_model = detect_file(str(path), detectors, params, settings, warnings)
        except ImageError as exc:
            problems.append(f"{exc} (image id {entry['id']} left out)")
            progress.update(failed=True)
            continue
        progress.update(failed=False)
        if "width" in entry and "height" in entry and (entry["width"], entry["height"]) != size:
            warnings.append(
                f"the annotations give {entry['width']}x{entry['height']}, the file is {size[0]}x{size[1]}: "
                "its boxes may not line up"
            )
        for note in warnings:
            say(f"{path}: warning: {note}")
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
        say(f"error: {problem}")
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


def _shorten(name: str, limit: int = 160) -> str:
    """A file_name from the annotations as a message shows it: at most ``limit`` characters."""
    return name if len(name) <= limit else f"{name[: limit // 2]}...{name[-limit // 2 :]} ({len(name):,} characters)"


def _cell(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_table(gt: GroundTruth, scores: list[ModelScore]) -> str:
    """The human summary: one row per model (accuracy vs speed), then per-class AP and what was not scored."""
    counts = f"{len(gt.images)} images, {len(gt.annotations)} boxes, {len(gt.categories)} categories"
    lines = [
        f"{printable(gt.source)}: {counts}",
        f"{'model':6} {'images':>6} " + " ".join(f"{m:>6}" for m in METRICS) + f" {'ms/img':>7} {'img/s':>7}",
    ]
    for s in scores:
        speed = f"{s.latency_ms_median or 0:7.1f} {s.images_per_s or 0:7.1f}"
        lines.append(
            f"{s.model:6} {s.images:6d} " + " ".join(f"{_cell(s.metrics[m]):>6}" for m in METRICS) + f" {speed}"
        )
    for s in scores:
        per_class = ", ".join(f"{printable(r['name'])} {_cell(r['AP'])} (AP50 {_cell(r['AP50'])})" for r in s.per_class)
        lines.append(f"{s.model}: per class AP: {per_class or '-'}")
        t = s.totals()
        lines.append(f"{s.model}: at IoU 0.5, score >= {s.count_conf}: TP {t['tp']}, FP {t['fp']}, FN {t['fn']}")
        if s.unpredictable:
            lines.append(f"{s.model}: cannot predict (not scored): {', '.join(map(printable, s.unpredictable))}")
        if s.unscored:
            outside = ", ".join(f"{printable(k)} {v}" for k, v in s.unscored.items())
            lines.append(f"{s.model}: detections of classes the file does not have (not scored): {outside}")
    return "\n".join(lines)
