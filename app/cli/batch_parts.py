"""The batch output format: ``part-K-of-N.jsonl`` files (a settings line, then one JSON line per image),
their summaries, and ``batch merge``.

A line is appended with one ``os.write`` on an ``O_APPEND`` descriptor after the image is fully
processed, so a killed run leaves whole lines; a torn tail (a full disk) is cut away on resume.
Every line is checked before it is used (``line_problem``): one that parses but has the wrong shape,
nests past the interpreter's limit or holds a number too long to convert is named with its file and
line, never a traceback. A settings line (``{"batch_settings": {...}}``) records what shapes the
results that follow it (models and their files, thresholds), so a rerun or a merge can refuse to mix.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

PART_RE = re.compile(r"^part-(\d+)-of-(\d+)\.jsonl$")
MERGED_JSONL, MERGED_CSV, MERGED_SUMMARY = "merged.jsonl", "merged.csv", "summary.json"
# Shards of one run: Kubernetes allows an Indexed Job at most 100,000 completions with a per-index
# backoff limit; merge lists the missing parts, so N also bounds its memory.
MAX_SHARDS = 100_000
SETTINGS_KEY = "batch_settings"
MERGED_CSV_FIELDS = ("file", "model", "label", "class_id", "score", "x1", "y1", "x2", "y2", "error")


class PartError(Exception):
    """A part file or output folder that cannot be used; str() names the file and what is wrong."""


class OutputError(PartError):
    """The output folder stopped taking writes (full, read-only, a folder where a file goes)."""


def part_name(index: int, count: int) -> str:
    return f"part-{index}-of-{count}.jsonl"


def summary_name(index: int, count: int) -> str:
    return f"part-{index}-of-{count}.summary.json"


def lock_name(index: int, count: int) -> str:
    return f".part-{index}-of-{count}.lock"


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _detection_problem(det) -> str | None:
    if not isinstance(det, dict):
        return "a detection is not an object"
    if not isinstance(det.get("label"), str) or not isinstance(det.get("class_id"), int):
        return "a detection has no label or class_id"
    if not _is_number(det.get("score")):
        return "a detection has no score"
    box = det.get("box")
    if not isinstance(box, list) or len(box) != 4 or not all(_is_number(v) for v in box):
        return f"a detection's box is not 4 numbers: {json.dumps(box)[:60]}"
    return None


def _result_problem(res) -> str | None:
    if not isinstance(res, dict):
        return "a result is not an object"
    if not isinstance(res.get("model"), str):
        return "a result has no model"
    size = res.get("image_size")
    if not isinstance(size, dict) or not all(isinstance(size.get(k), int) for k in ("width", "height")):
        return f"the {res['model']} result has no image_size {{width, height}}"
    if not isinstance(res.get("detections"), list):
        return f"the {res['model']} result has no list of detections"
    return next(filter(None, map(_detection_problem, res["detections"])), None)


def record_problem(record) -> str | None:
    """Why a parsed line is not an image record (the fields merge, resume and the CSV read), or None."""
    if not isinstance(record, dict) or not isinstance(record.get("file"), str):
        return 'no "file" field'
    if "error" in record and not isinstance(record["error"], str):
        return '"error" is not a string'
    if "error" in record and "results" not in record:
        return None
    results = record.get("results")
    if not isinstance(results, list):
        return '"results" is not a list' + ("" if "error" in record else ' (and there is no "error")')
    return next(filter(None, map(_result_problem, results)), None)


def parse_line(raw: bytes) -> dict:
    """One line as a record or a settings line; ``ValueError`` saying why it is neither."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise ValueError("nested deeper than the JSON reader goes") from None
    except ValueError as exc:  # JSONDecodeError, an integer of more than 4,300 digits, bad UTF-8
        raise ValueError(str(exc)[:120]) from None
    if isinstance(value, dict) and SETTINGS_KEY in value:
        if not isinstance(value[SETTINGS_KEY], dict):
            raise ValueError(f'"{SETTINGS_KEY}" is not an object')
        return value
    problem = record_problem(value)
    if problem:
        raise ValueError(problem)
    return value


@dataclass
class Part:
    """What one part file holds: its records in file order, the settings each was made with (None: the
    part records none, it predates settings lines), the settings a rerun continues under, and the lines
    left out (``read_part(strict=False)``)."""

    records: list[dict] = field(default_factory=list)
    settings: list[dict | None] = field(default_factory=list)
    current: dict | None = None
    left_out: list[str] = field(default_factory=list)

    @property
    def files(self) -> set[str]:
        return {r["file"] for r in self.records}


def read_part(path: Path, repair: bool = False, strict: bool = True) -> Part:
    """A part file, in file order. A last line without its newline is a torn write: with ``repair`` it is
    truncated away (its image runs again), else ignored. A line that is neither a record nor a settings line
    raises ``PartError`` naming the file and line; with ``strict=False`` it is left out and named in
    ``Part.left_out``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Part()
    except OSError as exc:
        raise PartError(f"{path}: cannot read ({exc.strerror or exc})") from None
    end = data.rfind(b"\n") + 1
    if end < len(data) and repair:
        with open(path, "r+b") as fh:
            fh.truncate(end)
    part = Part()
    for number, raw in enumerate(data[:end].splitlines(), 1):
        try:
            line = parse_line(raw)
        except ValueError as exc:
            message = f"{path}: line {number} is not a batch record ({exc})"
            if strict:
                raise PartError(f"{message}; move the file away or delete that line to continue") from None
            part.left_out.append(f"{message}; left out")
            continue
        if SETTINGS_KEY in line:
            part.current = line[SETTINGS_KEY]
        else:
            part.records.append(line)
            part.settings.append(part.current)
    return part


def settings_line(settings: dict) -> dict:
    return {SETTINGS_KEY: settings}


def describe_settings(settings: dict | None) -> str:
    """Settings as a message shows them: models, thresholds, the files' hashes."""
    if settings is None:
        return "settings not recorded (a part written before parts recorded them)"
    return ", ".join(f"{k} {json.dumps(v, sort_keys=True, separators=(',', ':'))}" for k, v in sorted(settings.items()))


def append_line(fd: int, record: dict) -> None:
    """One line, one write: a reader or a kill never sees half of it (short writes only on a full disk)."""
    view = memoryview((json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8"))
    while view:
        view = view[os.write(fd, view) :]


def write_atomic(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never a partial one; ``OutputError`` (and no temp file left)
    when it cannot be written."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):  # a read-only folder refuses even this
            tmp.unlink(missing_ok=True)
        cause = "it is a folder" if path.is_dir() else exc.strerror or str(exc)
        raise OutputError(f"cannot write {path} ({cause})") from None


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


def parse_part_name(name: str) -> tuple[int, int] | None:
    """(K, N) of a part's file name, None for any other name; ``PartError`` for a part of more shards than
    ``MAX_SHARDS`` (listing its missing parts would not end) or a K not below N."""
    match = PART_RE.match(name)
    if not match:
        return None
    if len(match[1]) > 6 or len(match[2]) > 6 or int(match[2]) > MAX_SHARDS:
        raise PartError(f"{name}: a part of more than {MAX_SHARDS:,} shards (N at most {MAX_SHARDS:,}); move it away")
    index, count = int(match[1]), int(match[2])
    if not 0 <= index < count:
        raise PartError(f"{name}: K must be below N; move it away")
    return index, count


def find_parts(out_dir: Path) -> tuple[int, dict[int, Path]]:
    """The shard count and the part file of each index present; one count per folder."""
    if not out_dir.is_dir():
        raise PartError(f"{out_dir}: not a folder")
    found: dict[int, dict[int, Path]] = {}
    for path in out_dir.iterdir():
        parsed = parse_part_name(path.name)
        if parsed:
            found.setdefault(parsed[1], {})[parsed[0]] = path
    if not found:
        raise PartError(f"{out_dir}: no part-K-of-N.jsonl files (run `python -m app batch INPUT --output {out_dir}`)")
    if len(found) > 1:
        raise PartError(
            f"{out_dir}: parts of different shard counts ({', '.join(f'N={n}' for n in sorted(found))}); "
            "a folder holds the parts of one run"
        )
    count, parts = next(iter(found.items()))
    return count, parts


def merged_csv(records: list[dict]) -> bytes:
    """One row per detection; an image with no detection from a model still has its row (label and box
    empty), and a failed image one row with its error: every recorded image is in the CSV."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MERGED_CSV_FIELDS)
    writer.writeheader()
    for record in records:
        if "error" in record:
            writer.writerow({"file": record["file"], "error": record["error"]})
        elif not record["results"]:  # no model ran on it (none chosen): the image is still listed
            writer.writerow({"file": record["file"]})
        for res in record.get("results", ()):
            if not res["detections"]:
                writer.writerow({"file": record["file"], "model": res["model"]})
            for d in res["detections"]:
                x1, y1, x2, y2 = d["box"]
                writer.writerow(
                    {"file": record["file"], "model": res["model"], "label": d["label"], "class_id": d["class_id"]}
                    | {"score": round(d["score"], 4), "x1": round(x1, 1), "y1": round(y1, 1)}
                    | {"x2": round(x2, 1), "y2": round(y2, 1)}
                )
    return buf.getvalue().encode("utf-8", "backslashreplace")  # an error may quote a name that is not UTF-8


@dataclass
class _Merged:
    records: dict[str, dict] = field(default_factory=dict)
    settings_of: dict[str, dict | None] = field(default_factory=dict)
    seen_in: dict[str, list[str]] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)
    expected_total: int = 0
    have_all_summaries: bool = True


def _collect(out_dir: Path, count: int, parts: dict[int, Path]) -> _Merged:
    merged = _Merged()
    for index in sorted(parts):
        part = read_part(parts[index], strict=False)
        merged.left_out.extend(part.left_out)
        for record, settings in zip(part.records, part.settings, strict=True):
            merged.seen_in.setdefault(record["file"], []).append(parts[index].name)
            if record["file"] not in merged.records:
                merged.records[record["file"]] = record
                merged.settings_of[record["file"]] = settings
        try:
            expected = json.loads((out_dir / summary_name(index, count)).read_text())["expected"]
            merged.expected_total += int(expected)
        except (OSError, ValueError, KeyError, TypeError):
            merged.have_all_summaries = False
    return merged


def distinct_settings(values) -> list[dict | None]:
    out: list[dict | None] = []
    for value in values:
        if value not in out:
            out.append(value)
    return out


def merge(out_dir: Path, expected_files: list[str] | None = None, allow_mixed: bool = False) -> dict:
    """Write ``merged.jsonl`` (sorted by file, first record of a duplicate kept), ``merged.csv`` (every image:
    a row per detection, or one without) and ``summary.json``; return the summary, which names missing
    parts, duplicates, the lines left out and, given ``expected_files``, the images no part records.
    Records made with different settings are refused (``PartError``) unless ``allow_mixed``: then each
    merged record says which of the summary's ``settings`` it was made with."""
    count, parts = find_parts(out_dir)
    merged = _collect(out_dir, count, parts)
    files = sorted(merged.records)
    kinds = distinct_settings(merged.settings_of[f] for f in files)
    if len(kinds) > 1 and not allow_mixed:
        raise PartError(
            f"{out_dir}: the parts were made with {len(kinds)} different settings: "
            + " | ".join(describe_settings(k) for k in kinds)
            + "; merge the parts of one setting (move the others away), or pass --allow-mixed-settings "
            "(each merged record then names its settings)"
        )
    records = [merged.records[f] for f in files]
    if len(kinds) > 1:
        records = [{**r, "settings": kinds.index(merged.settings_of[r["file"]])} for r in records]
    lines = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
    write_atomic(out_dir / MERGED_JSONL, lines.encode("utf-8"))
    write_atomic(out_dir / MERGED_CSV, merged_csv(records))
    summary = {
        "shards": count,
        "missing_parts": [part_name(k, count) for k in range(count) if k not in parts],
        **summarize(records),
        "duplicates": {f: where for f, where in sorted(merged.seen_in.items()) if len(where) > 1},
        "left_out_lines": merged.left_out,
        "settings": kinds,
    }
    if expected_files is not None:
        summary["expected"] = len(set(expected_files))
        summary["missing_images"] = sorted(set(expected_files) - set(merged.records))
    elif merged.have_all_summaries and not summary["missing_parts"]:
        summary["expected"] = merged.expected_total
    if "expected" in summary:
        summary["missing"] = max(0, summary["expected"] - len(records))
    write_atomic(out_dir / MERGED_SUMMARY, (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    return summary
