"""The batch output format: ``part-K-of-N.jsonl`` files (one JSON line per image), their summaries,
and ``batch merge``.

A line is appended with one ``os.write`` on an ``O_APPEND`` descriptor after the image is fully
processed, so a killed run leaves whole lines; a torn tail (a full disk) is cut away on resume.
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

PART_RE = re.compile(r"^part-(\d+)-of-(\d+)\.jsonl$")
MERGED_JSONL, MERGED_CSV, MERGED_SUMMARY = "merged.jsonl", "merged.csv", "summary.json"


class PartError(Exception):
    """A part file or output folder that cannot be used; str() names the file and what is wrong."""


def part_name(index: int, count: int) -> str:
    return f"part-{index}-of-{count}.jsonl"


def summary_name(index: int, count: int) -> str:
    return f"part-{index}-of-{count}.summary.json"


def read_part(path: Path, repair: bool = False) -> list[dict]:
    """The records of a part file, in file order. A last line without its newline is a torn write:
    with ``repair`` it is truncated away (its image runs again), else ignored."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise PartError(f"{path}: cannot read ({exc.strerror or exc})") from None
    end = data.rfind(b"\n") + 1
    if end < len(data) and repair:
        with open(path, "r+b") as fh:
            fh.truncate(end)
    records = []
    for number, raw in enumerate(data[:end].splitlines(), 1):
        try:
            record = json.loads(raw)
            if not isinstance(record, dict) or not isinstance(record.get("file"), str):
                raise ValueError('no "file" field')
        except ValueError as exc:
            raise PartError(
                f"{path}: line {number} is not a batch record ({exc}); move the file away or "
                "delete that line to continue"
            ) from None
        records.append(record)
    return records


def append_line(fd: int, record: dict) -> None:
    """One line, one write: a reader or a kill never sees half of it (short writes only on a full disk)."""
    view = memoryview((json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8"))
    while view:
        view = view[os.write(fd, view) :]


def write_atomic(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never a partial one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def summarize(records: list[dict]) -> dict:
    """Counts per model and class, and the failed files (their messages)."""
    classes: dict[str, dict[str, int]] = {}
    failures = {}
    for record in records:
        if "error" in record:
            failures[record["file"]] = record["error"]
        for result in record.get("results", ()):
            per_model = classes.setdefault(result["model"], {})
            for det in result["detections"]:
                per_model[det["label"]] = per_model.get(det["label"], 0) + 1
    return {
        "images": len(records),
        "failed": len(failures),
        "classes": {m: dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))) for m, c in sorted(classes.items())},
        "failures": dict(sorted(failures.items())),
    }


def find_parts(out_dir: Path) -> tuple[int, dict[int, Path]]:
    """The shard count and the part file of each index present; one count per folder."""
    if not out_dir.is_dir():
        raise PartError(f"{out_dir}: not a folder")
    found: dict[int, dict[int, Path]] = {}
    for path in out_dir.iterdir():
        match = PART_RE.match(path.name)
        if match:
            found.setdefault(int(match[2]), {})[int(match[1])] = path
    if not found:
        raise PartError(f"{out_dir}: no part-K-of-N.jsonl files (run `python -m app batch INPUT --output {out_dir}`)")
    if len(found) > 1:
        raise PartError(
            f"{out_dir}: parts of different shard counts ({', '.join(f'N={n}' for n in sorted(found))}); "
            "a folder holds the parts of one run"
        )
    count, parts = next(iter(found.items()))
    return count, parts


def merge(out_dir: Path, expected_files: list[str] | None = None) -> dict:
    """Write ``merged.jsonl`` (sorted by file, first record of a duplicate kept), ``merged.csv`` (one row
    per detection) and ``summary.json``; return the summary, which names missing parts, duplicates and,
    given ``expected_files``, the images no part records."""
    from ..engine.exports import CSV_FIELDS
    from ..engine.result import Detection, DetectionResult, detection_rows

    count, parts = find_parts(out_dir)
    merged: dict[str, dict] = {}
    seen_in: dict[str, list[str]] = {}
    expected_total, have_all_summaries = 0, True
    for index in sorted(parts):
        for record in read_part(parts[index]):
            seen_in.setdefault(record["file"], []).append(parts[index].name)
            merged.setdefault(record["file"], record)
        try:
            expected_total += json.loads((out_dir / summary_name(index, count)).read_text())["expected"]
        except (OSError, ValueError, KeyError):
            have_all_summaries = False
    records = [merged[f] for f in sorted(merged)]
    lines = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
    write_atomic(out_dir / MERGED_JSONL, lines.encode("utf-8"))

    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=("file", "model", *CSV_FIELDS))
    writer.writeheader()
    for record in records:
        for res in record.get("results", ()):
            size = (res["image_size"]["width"], res["image_size"]["height"])
            result = DetectionResult(
                res["model"],
                size,
                [Detection(d["label"], d["class_id"], d["score"], tuple(d["box"])) for d in res["detections"]],
            )
            for row in detection_rows(result):
                writer.writerow({"file": record["file"], "model": res["model"], **{k: row[k] for k in CSV_FIELDS}})
    write_atomic(out_dir / MERGED_CSV, buf.getvalue().encode("utf-8"))

    summary = {
        "shards": count,
        "missing_parts": [part_name(k, count) for k in range(count) if k not in parts],
        **summarize(records),
        "duplicates": {f: where for f, where in sorted(seen_in.items()) if len(where) > 1},
    }
    if expected_files is not None:
        missing = sorted(set(expected_files) - set(merged))
        summary["expected"] = len(set(expected_files))
        summary["missing_images"] = missing
    elif have_all_summaries and not summary["missing_parts"]:
        summary["expected"] = expected_total
    if "expected" in summary:
        summary["missing"] = max(0, summary["expected"] - len(records))
    write_atomic(out_dir / MERGED_SUMMARY, (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    return summary
