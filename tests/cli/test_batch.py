"""``python -m app batch``: sharding, resume after a real SIGKILL, bad files, the Job's environment,
and ``batch merge``, all through real subprocesses running the real Yolo-Fastest model."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from tests.conftest import REPO


def run_app(args, env, timeout=300, **kw):
    return subprocess.run(
        [sys.executable, "-m", "app", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


@pytest.fixture
def env(yolo_env):
    return {**os.environ, **yolo_env}


def make_images(images_dir: Path, dest: Path, count: int) -> list[str]:
    """``count`` small variants of the shared images (resized copies, JPEG re-encodes) in two folders."""
    sources = [cv2.imread(str(p)) for p in sorted(images_dir.iterdir()) if p.suffix in (".png", ".jpg")]
    names = []
    for n in range(count):
        image = sources[n % len(sources)]
        side = 160 + 8 * (n % 11)
        small = cv2.resize(image, (side, side * image.shape[0] // image.shape[1]), interpolation=cv2.INTER_AREA)
        rel = f"{'a' if n % 2 else 'b/c'}/img{n:03d}.{'jpg' if n % 3 else 'png'}"
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(dest / rel), small)
        names.append(rel)
    return sorted(names)


def records(path: Path) -> dict[str, dict]:
    """The part's records by file, timings dropped; asserts whole lines and no duplicate."""
    data = path.read_bytes()
    assert data.endswith(b"\n"), f"{path} ends in a torn line"
    out = {}
    for line in data.decode().splitlines():
        record = json.loads(line)
        if "batch_settings" in record:
            continue
        assert record["file"] not in out, f"duplicate line for {record['file']}"
        record.pop("total_ms")
        for result in record.get("results", ()):
            result.pop("timings_ms")
        out[record["file"]] = record
    return out


def expected_shard(rel: str, count: int) -> int:
    return int.from_bytes(hashlib.sha256(rel.encode()).digest()[:8], "big") % count


def test_three_shard_processes_merge_to_the_unsharded_run(images_dir, env, tmp_path):
    names = make_images(images_dir, tmp_path / "in", 24)
    whole = run_app(["batch", tmp_path / "in", "--output", tmp_path / "whole", "--workers", "2"], env)
    assert whole.returncode == 0, whole.stderr
    shards = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app",
                "batch",
                str(tmp_path / "in"),
                "--output",
                str(tmp_path / "sharded"),
                "--shard",
                f"{k}/3",
                "--workers",
                "1",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(3)
    ]
    for proc in shards:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    parts = [records(tmp_path / "sharded" / f"part-{k}-of-3.jsonl") for k in range(3)]
    for k, part in enumerate(parts):  # each holds exactly its hash's files: none in two shards
        assert sorted(part) == [n for n in names if expected_shard(n, 3) == k]
        assert part, "24 images should reach every one of 3 shards"
    merged = run_app(["batch", "merge", tmp_path / "sharded"], env)
    assert merged.returncode == 0, merged.stderr
    merged_records = records(tmp_path / "sharded" / "merged.jsonl")
    assert merged_records == records(tmp_path / "whole" / "part-0-of-1.jsonl")
    assert sorted(merged_records) == names
    summary = json.loads((tmp_path / "sharded" / "summary.json").read_text())
    assert summary["images"] == 24 and summary["expected"] == 24 and summary["missing"] == 0
    assert summary["duplicates"] == {} and summary["missing_parts"] == []

    # The detections are those of `detect` on the same file, and the CSV has a row per detection.
    some = [n for n in names if merged_records[n]["results"][0]["detections"]][:3]
    single = run_app(["detect", "--json", *[tmp_path / "in" / n for n in some]], env)
    for name, entry in zip(some, json.loads(single.stdout)["images"], strict=True):
        assert merged_records[name]["results"][0]["detections"] == entry["results"][0]["detections"]
    csv_rows = list(csv.DictReader(io.StringIO((tmp_path / "sharded" / "merged.csv").read_text())))
    # A row per detection, and one (label empty) for an image the model found nothing in: every image is there.
    assert len(csv_rows) == sum(max(1, len(r["results"][0]["detections"])) for r in merged_records.values())
    assert {row["file"] for row in csv_rows} == set(names)
    empty = [n for n in names if not merged_records[n]["results"][0]["detections"]]
    for name in empty:
        assert [(r["model"], r["label"], r["x1"]) for r in csv_rows if r["file"] == name] == [("yolo", "", "")]


def test_killed_shard_resumes_to_the_uninterrupted_result(images_dir, env, tmp_path):
    names = make_images(images_dir, tmp_path / "in", 60)
    reference = run_app(["batch", tmp_path / "in", "--output", tmp_path / "ref"], env)
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "out"
    part = out / "part-0-of-1.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app",
            "batch",
            str(tmp_path / "in"),
            "--output",
            str(out),
            "--workers",
            "1",
            "--annotate",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not part.exists() or part.read_bytes().count(b"\n") < 6):  # settings + 5
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    done_before = records(part)  # whole lines only, even after a kill
    assert 5 <= len(done_before) < len(names), "the kill should land mid-way"
    # A torn tail (what a full disk leaves) is cut away and that image runs again.
    with open(part, "ab") as fh:
        fh.write(b'{"file":"a/img001.jpg","bytes":')
    rerun = run_app(["batch", tmp_path / "in", "--output", out, "--workers", "1", "--annotate"], env)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(done_before)} already recorded, {len(names) - len(done_before)} to do" in rerun.stderr
    after = records(part)
    for name, record in after.items():  # one PNG per model, under the input's folders, decodable
        assert record.pop("annotated") == [f"annotated/{name}.yolo.png"]
        png = cv2.imread(str(out / "annotated" / f"{name}.yolo.png"))
        assert png is not None and png.shape[:2] == (record["image_size"]["height"], record["image_size"]["width"])
    assert after == records(tmp_path / "ref" / "part-0-of-1.jsonl")
    assert sorted(after) == names
    again = run_app(["batch", tmp_path / "in", "--output", out], env)  # nothing left: nothing appended
    assert again.returncode == 0 and f"{len(names)} already recorded, 0 to do" in again.stderr
    assert part.read_bytes().count(b"\n") == 1 + len(names)  # the settings line, then one line per image


def test_bad_files_are_error_lines_and_the_exit_status_says_so(images_dir, env, tmp_path):
    src = tmp_path / "in"
    names = make_images(images_dir, src, 4)
    (src / "empty.jpg").write_bytes(b"")
    (src / "notes.txt").write_text("not an image\n")
    jpeg = (src / next(n for n in names if n.endswith(".jpg"))).read_bytes()
    (src / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    os.mkfifo(src / "pipe.jpg")
    result = run_app(["batch", src, "--output", tmp_path / "out"], env, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "batch 0/1: 8 processed in" in result.stderr and "4 failed" in result.stderr  # the log's last line
    got = records(tmp_path / "out" / "part-0-of-1.jsonl")
    assert sorted(got) == sorted([*names, "empty.jpg", "notes.txt", "cut.jpg", "pipe.jpg"])
    assert all("results" in got[n] and "error" not in got[n] for n in names)
    for bad, words in {
        "empty.jpg": "empty",
        "notes.txt": "not an image",
        "cut.jpg": "truncated",
        "pipe.jpg": "FIFO",
    }.items():
        assert str(src / bad) in got[bad]["error"] and words in got[bad]["error"], got[bad]
        assert f"{bad}: ERROR" in result.stderr
    summary = json.loads((tmp_path / "out" / "part-0-of-1.summary.json").read_text())
    assert summary["failed"] == 4 and sorted(summary["failures"]) == ["cut.jpg", "empty.jpg", "notes.txt", "pipe.jpg"]

    for bad in ("empty.jpg", "notes.txt", "cut.jpg", "pipe.jpg"):
        (src / bad).unlink()
    clean = run_app(["batch", src, "--output", tmp_path / "clean"], env)
    assert clean.returncode == 0, clean.stderr


def test_job_completion_index_and_shard_count_from_the_environment(images_dir, env, tmp_path):
    names = make_images(images_dir, tmp_path / "in", 12)
    job_env = {**env, "JOB_COMPLETION_INDEX": "1", "BATCH_SHARD_COUNT": "3"}
    result = run_app(["batch", tmp_path / "in", "--output", tmp_path / "out"], job_env)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (tmp_path / "out").glob("*.jsonl")] == ["part-1-of-3.jsonl"]
    assert sorted(records(tmp_path / "out" / "part-1-of-3.jsonl")) == [n for n in names if expected_shard(n, 3) == 1]

    for bad_env, args, words in [
        ({"JOB_COMPLETION_INDEX": "3", "BATCH_SHARD_COUNT": "3"}, [], "0 <= K < N"),
        ({"JOB_COMPLETION_INDEX": "0"}, [], "BATCH_SHARD_COUNT is not"),
        ({"BATCH_SHARD_COUNT": "2"}, [], "JOB_COMPLETION_INDEX is not"),
        ({"JOB_COMPLETION_INDEX": "x", "BATCH_SHARD_COUNT": "2"}, [], "is not K/N"),
        ({}, ["--shard", "2/2"], "0 <= K < N"),
        ({}, ["--shard", "1/0"], "N >= 1"),
    ]:
        bad = run_app(["batch", tmp_path / "in", "--output", tmp_path / "bad", *args], {**env, **bad_env})
        assert bad.returncode == 2 and words in bad.stderr, (bad_env, args, bad.stderr)
        assert not (tmp_path / "bad").exists()


def test_list_file_and_glob_inputs_key_by_relative_path(images_dir, env, tmp_path):
    names = make_images(images_dir, tmp_path / "in", 6)
    listing = tmp_path / "in" / "list.txt"
    listing.write_text("# chosen images\n" + "\n".join(names[:3]) + "\n\n")
    by_list = run_app(["batch", listing, "--output", tmp_path / "l"], env)
    assert by_list.returncode == 0, by_list.stderr
    assert sorted(records(tmp_path / "l" / "part-0-of-1.jsonl")) == names[:3]
    by_glob = run_app(["batch", f"{tmp_path}/in/**/*.jpg", "--output", tmp_path / "g"], env)
    assert by_glob.returncode == 0, by_glob.stderr
    assert sorted(records(tmp_path / "g" / "part-0-of-1.jsonl")) == [n for n in names if n.endswith(".jpg")]
    none = run_app(["batch", f"{tmp_path}/in/*.gif", "--output", tmp_path / "n"], env)
    assert none.returncode == 2 and "matches no file" in none.stderr


def test_merge_reports_missing_parts_images_and_duplicates(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    line = {
        "file": "x.jpg",
        "bytes": 1,
        "results": [{"model": "yolo", "image_size": {"width": 10, "height": 10}, "detections": [], "timings_ms": {}}],
    }
    (out / "part-0-of-3.jsonl").write_text(json.dumps(line) + "\n" + json.dumps({**line, "file": "y.jpg"}) + "\n")
    (out / "part-2-of-3.jsonl").write_text(json.dumps(line) + "\n")
    (tmp_path / "in").mkdir()
    for name in ("x.jpg", "y.jpg", "z.jpg"):
        (tmp_path / "in" / name).write_bytes(b"")
    env = {**os.environ}
    merged = run_app(["batch", "merge", out, "--input", tmp_path / "in"], env)
    assert merged.returncode == 1
    assert "missing part: " in merged.stderr and "part-1-of-3.jsonl" in merged.stderr
    assert "missing image: z.jpg" in merged.stderr
    assert "duplicate: x.jpg in part-0-of-3.jsonl, part-2-of-3.jsonl" in merged.stderr
    assert [json.loads(line)["file"] for line in (out / "merged.jsonl").read_text().splitlines()] == ["x.jpg", "y.jpg"]

    (out / "part-0-of-2.jsonl").write_text("")
    mixed = run_app(["batch", "merge", out], env)
    assert mixed.returncode == 2 and "different shard counts" in mixed.stderr
    empty = run_app(["batch", "merge", tmp_path / "in"], env)
    assert empty.returncode == 2 and "no part-K-of-N.jsonl" in empty.stderr


def test_a_malformed_middle_line_is_a_usage_error_naming_the_line(images_dir, env, tmp_path):
    make_images(images_dir, tmp_path / "in", 2)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "part-0-of-1.jsonl").write_text('{"file": "a/img001.jpg", "error": "x"}\nnot json\n')
    result = run_app(["batch", tmp_path / "in", "--output", tmp_path / "out"], env)
    assert result.returncode == 2 and "part-0-of-1.jsonl: line 2 is not a batch record" in result.stderr
