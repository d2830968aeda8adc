"""Downloads: detections as JSON and CSV (the app's buttons and the video's per-frame table)."""

from __future__ import annotations

import csv
import io
import json

from .result import DetectionResult, detection_rows

CSV_FIELDS = ("label", "class_id", "score", "x1", "y1", "x2", "y2")


def result_json(
    result: DetectionResult,
    source: str,
    params: dict | None = None,
    warnings: list[str] | None = None,
    agreement: dict | None = None,
) -> bytes:
    """One image's result; ``warnings`` (from ``load_image``, e.g. "only page 1 is used") as in ``detect --json``;
    ``agreement`` (``Agreement.to_dict``) when two models ran on the image."""
    doc = {"file": source, **result.to_dict()}
    if warnings:
        doc["warnings"] = list(warnings)
    if params is not None:
        doc["params"] = params
    if agreement is not None:
        doc["agreement"] = agreement
    return json.dumps(doc, indent=2).encode("utf-8")


def result_csv(result: DetectionResult) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for row in detection_rows(result):
        writer.writerow({k: row[k] for k in CSV_FIELDS})
    return buf.getvalue().encode("utf-8")


def frames_csv(rows: list[dict]) -> bytes:
    """Per-frame rows: frame, time_s and the detection fields."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=("frame", "time_s", *CSV_FIELDS))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")
