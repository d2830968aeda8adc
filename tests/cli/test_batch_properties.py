"""Property: any part file, made of generated lines (records, settings lines, JSON of the wrong shape, deep
nesting, long integers, bytes that are not JSON, a torn tail), through ``batch merge`` and a resume's read
gives a result or one ``PartError`` line naming the file, never another exception; memory stays bounded.
What merge writes holds exactly the well-formed records, each file once, and every one of them in the CSV."""

from __future__ import annotations

import csv
import io
import json
import tempfile
import tracemalloc
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app.cli.batch_parts import PartError, merge, parse_line, read_part, record_problem

FILES = st.sampled_from(["a.jpg", "b/c.png", "d.jpg", "caf\\xe9.jpg"])
NUMBER = st.integers(-5, 500) | st.floats(allow_nan=False, allow_infinity=False, width=32)
DETECTION = st.fixed_dictionaries(
    {
        "label": st.sampled_from(["cup", "person"]),
        "class_id": st.integers(0, 90),
        "score": st.floats(0, 1),
        "box": st.lists(NUMBER, min_size=4, max_size=4),
    }
)
RESULT = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["yolo", "ssd"]),
        "image_size": st.fixed_dictionaries({"width": st.integers(1, 900), "height": st.integers(1, 900)}),
        "detections": st.lists(DETECTION, max_size=3),
    }
)
RECORD = st.one_of(
    st.fixed_dictionaries({"file": FILES, "results": st.lists(RESULT, max_size=2)}),
    st.fixed_dictionaries({"file": FILES, "error": st.text(max_size=20)}),
)
JSON = st.recursive(
    st.none() | st.booleans() | NUMBER | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["file", "results", "error", "x"]), inner, max_size=3)
    ),
    max_leaves=8,
)
SETTINGS = st.fixed_dictionaries({"batch_settings": st.fixed_dictionaries({"conf": st.sampled_from([0.3, 0.5])})})


def lines() -> st.SearchStrategy[bytes]:
    encoded = lambda s: s.map(lambda v: json.dumps(v).encode())  # noqa: E731
    return st.one_of(
        encoded(RECORD),
        encoded(RECORD),
        encoded(SETTINGS),
        encoded(JSON),
        encoded(
            RECORD.map(
                lambda r: {**r, "results": [{**x, "detections": [{"box": [1, 2]}]} for x in r.get("results", [])] or 1}
            )
        ),
        st.just(b"[" * 100_000 + b"]" * 100_000),
        st.just(b'{"file": "x.jpg", "bytes": ' + b"9" * 5000 + b"}"),
        st.binary(max_size=30).filter(lambda b: b"\n" not in b),
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(lines(), max_size=8), st.booleans())
def test_any_part_merges_or_is_refused_in_one_line(part_lines, torn):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        data = b"".join(line + b"\n" for line in part_lines) + (b'{"file": "torn' if torn else b"")
        (out / "part-0-of-1.jsonl").write_bytes(data)
        good = []
        for line in part_lines:
            try:
                parsed = parse_line(line)
            except ValueError:
                continue
            if "batch_settings" not in parsed and record_problem(parsed) is None:
                good.append(parsed["file"])
        tracemalloc.start()
        try:
            try:
                summary = merge(out)
            except PartError as exc:
                assert "\n" not in str(exc) and str(out) in str(exc)
                event("merge refused (mixed settings)")
            else:
                event("merged")
                merged = [json.loads(x) for x in (out / "merged.jsonl").read_text().splitlines()]
                assert [r["file"] for r in merged] == sorted(set(good))
                assert all(record_problem(r) is None for r in merged)
                rows = csv.DictReader(io.StringIO((out / "merged.csv").read_text()))
                assert {row["file"] for row in rows} == set(good)
                assert summary["images"] == len(set(good))
                assert all("\n" not in line for line in summary["left_out_lines"])
            try:
                part = read_part(out / "part-0-of-1.jsonl", repair=True)  # what a resume reads first
            except PartError as exc:
                assert "\n" not in str(exc) and "line " in str(exc)
            else:
                assert [r["file"] for r in part.records] == good
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert peak < 32 * 2**20
        assert not (out / "part-0-of-1.jsonl").read_bytes().endswith(b"torn")  # the torn tail was cut
