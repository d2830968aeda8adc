"""``batch`` and ``batch merge`` under hostile input, faults and concurrency, through real subprocesses of
``python -m app`` running the real Yolo-Fastest model: names that are not UTF-8, absurd shard counts and
worker counts, a second writer on the same part (the first one stopped with SIGSTOP, as a pod Kubernetes
thinks dead), a rerun under other settings, part lines of the wrong shape, and an output folder on a real
tmpfs that fills up or is mounted read-only."""

from __future__ import annotations

import csv
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.filesystems import in_namespace, mounts  # noqa: F401 - fixture

from tests.cli.test_batch import make_images, records, run_app
from tests.conftest import REPO


@pytest.fixture
def env(yolo_env):
    return {**os.environ, **yolo_env}


def part_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr


def test_a_name_that_is_not_utf8_is_recorded_escaped_and_the_shard_runs(images_dir, env, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    names = make_images(images_dir, src, 3)
    odd = os.fsencode(src) + b"/caf\xe9 \x1b[2J.jpg"  # Latin-1 bytes, and an escape sequence in the name
    shutil.copyfile(src / names[0], odd)
    result = run_app(["batch", src, "--output", out], env)
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    got = records(out / "part-0-of-1.jsonl")
    key = "caf\\xe9 \x1b[2J.jpg"  # the undecodable byte escaped; the key stays text (JSON escapes the ESC)
    assert sorted(got) == sorted([*names, key])
    assert got[key]["results"][0]["detections"] == got[names[0]]["results"][0]["detections"]  # the same pixels
    assert got[key]["warnings"] == [f"its name is not valid UTF-8: recorded as {key}"]
    merged = run_app(["batch", "merge", out], env)
    no_traceback(merged)
    assert merged.returncode == 0, merged.stderr
    assert key in {row["file"] for row in csv.DictReader(io.StringIO((out / "merged.csv").read_text()))}


def _limited_memory(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def test_shard_counts_and_workers_are_bounded_with_the_bound_in_the_message(env, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for args, words in [
        (["--shard", "0/99999999999999999999999"], "at most 100,000 shards"),
        (["--shard", "0/" + "9" * 5000], "is not K/N"),
        (["--workers", "64"], "--workers 64: at most "),
    ]:
        bad = run_app(["batch", src, "--output", tmp_path / "out", *args], env, timeout=60)
        no_traceback(bad)
        assert bad.returncode == 2 and words in bad.stderr, (args, bad.stderr)
    assert "per CPU this process may use" in bad.stderr
    # A part named for 50,000,000 shards: merge refuses at once, inside 1 GiB of address space (it used to
    # list every missing part: 2.7 GB in 30 s).
    out = tmp_path / "out"
    out.mkdir()
    line = {"file": "x.jpg", "error": "x.jpg: not an image"}
    (out / "part-0-of-50000000.jsonl").write_text(json.dumps(line) + "\n")
    start = time.monotonic()
    merged = subprocess.run(
        [sys.executable, "-m", "app", "batch", "merge", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limited_memory(1 << 30),
    )
    no_traceback(merged)
    assert merged.returncode == 2 and "part-0-of-50000000.jsonl: a part of more than 100,000 shards" in merged.stderr
    assert time.monotonic() - start < 30


def test_a_second_writer_on_the_same_part_is_refused_while_the_first_lives(images_dir, env, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    names = make_images(images_dir, src, 40)
    part = out / "part-0-of-1.jsonl"
    first = subprocess.Popen(
        [sys.executable, "-m", "app", "batch", str(src), "--output", str(out), "--workers", "1"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not part.exists() or part.read_bytes().count(b"\n") < 3):
            time.sleep(0.01)
        first.send_signal(signal.SIGSTOP)  # alive but silent: a pod Kubernetes gave up on, still holding its part
        second = run_app(["batch", src, "--output", out, "--workers", "1"], env, timeout=120)
        no_traceback(second)
        assert second.returncode == 1, second.stderr
        assert f"{part} is being written by another batch process (pid {first.pid} on " in second.stderr
        assert "one writer per part" in second.stderr
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert sorted(records(part)) == names  # every image once (records() fails on a duplicate line)
    again = run_app(["batch", src, "--output", out], env)  # the lock went with the first process
    assert again.returncode == 0 and f"{len(names)} already recorded, 0 to do" in again.stderr


def test_a_rerun_or_merge_under_other_settings_is_refused_unless_allowed(images_dir, env, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    names = make_images(images_dir, src, 8)
    first = run_app(["batch", src, "--output", out, "--model", "yolo"], env)
    assert first.returncode == 0, first.stderr
    more = [n for n in make_images(images_dir, tmp_path / "more", 10) if n not in names]
    assert len(more) == 2  # two images more to do in the same folder
    for name in more:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "more" / name, src / name)
    part = out / "part-0-of-1.jsonl"
    before = part.read_bytes()
    other = run_app(["batch", src, "--output", out, "--model", "yolo", "--conf", "0.9"], env)
    no_traceback(other)
    assert other.returncode == 2, other.stderr
    assert f"{part} was made with " in other.stderr and '"conf":0.3' not in other.stderr
    assert "conf 0.3" in other.stderr and "conf 0.9" in other.stderr and "--allow-mixed-settings" in other.stderr
    assert part.read_bytes() == before  # nothing appended, nothing repaired
    mixed = run_app(["batch", src, "--output", out, "--conf", "0.9", "--allow-mixed-settings"], env)
    assert mixed.returncode == 0, mixed.stderr
    lines = part_lines(part)
    settings_at = [n for n, line in enumerate(lines) if "batch_settings" in line]
    assert settings_at == [0, 1 + len(names)]  # a second settings line where this run's records start
    assert [lines[n]["batch_settings"]["conf"] for n in settings_at] == [0.3, 0.9]
    refused = run_app(["batch", "merge", out], env)
    no_traceback(refused)
    assert refused.returncode == 2 and "made with 2 different settings" in refused.stderr
    allowed = run_app(["batch", "merge", out, "--allow-mixed-settings"], env)
    assert allowed.returncode == 0, allowed.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [s["conf"] for s in summary["settings"]] == [0.3, 0.9]
    merged = {r["file"]: r for r in part_lines(out / "merged.jsonl")}
    assert {f for f, r in merged.items() if r["settings"] == 1} == set(more)
    # Two shards of one run made with different thresholds: merge refuses to mix them too.
    sharded = tmp_path / "sharded"
    for k, conf in ((0, "0.3"), (1, "0.5")):
        run = run_app(["batch", src, "--output", sharded, "--shard", f"{k}/2", "--conf", conf], env)
        assert run.returncode == 0, run.stderr
    split = run_app(["batch", "merge", sharded], env)
    assert split.returncode == 2 and "made with 2 different settings" in split.stderr


def test_merge_names_and_leaves_out_lines_of_the_wrong_shape_and_resume_refuses_them(images_dir, env, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    good = {
        "file": "x.jpg",
        "bytes": 1,
        "image_size": {"width": 10, "height": 10},
        "results": [
            {
                "model": "yolo",
                "image_size": {"width": 10, "height": 10},
                "detections": [{"label": "cup", "class_id": 41, "score": 0.5, "box": [1, 2, 3, 4]}],
            }
        ],
    }
    result = good["results"][0]
    bad_lines = [
        json.dumps({**good, "file": "a.jpg", "results": {"model": "yolo"}}),  # results not a list
        json.dumps({**good, "file": "b.jpg", "results": [1]}),  # a result that is not a mapping
        json.dumps({**good, "file": "c.jpg", "results": [{k: v for k, v in result.items() if k != "image_size"}]}),
        json.dumps(
            {
                **good,
                "file": "d.jpg",
                "results": [{**result, "detections": [{"label": "cup", "class_id": 1, "score": 0.5, "box": [1, 2]}]}],
            }
        ),
        "[" * 100_000 + "]" * 100_000,  # nested 100,000 deep
        '{"file": "e.jpg", "bytes": ' + "7" * 5000 + "}",  # an integer past int()'s 4,300 digits
    ]
    (out / "part-0-of-1.jsonl").write_text("\n".join([json.dumps(good), *bad_lines]) + "\n")
    merged = run_app(["batch", "merge", out], env)
    no_traceback(merged)
    assert merged.returncode == 1, merged.stderr
    for number, words in [
        (2, '"results" is not a list'),
        (3, "a result is not an object"),
        (4, "the yolo result has no image_size"),
        (5, "a detection's box is not 4 numbers: [1, 2]"),
        (6, "nested deeper than the JSON reader goes"),
        (7, "Exceeds the limit (4300 digits)"),
    ]:
        line = next(x for x in merged.stderr.splitlines() if f"line {number} is" in x)
        assert f"part-0-of-1.jsonl: line {number} is not a batch record (" in line and words in line, line
        assert line.endswith("; left out")
    assert [r["file"] for r in part_lines(out / "merged.jsonl")] == ["x.jpg"]
    assert [r["file"] for r in csv.DictReader(io.StringIO((out / "merged.csv").read_text()))] == ["x.jpg"]
    # Resuming over such a part stops before any image, naming the first bad line (exit 2).
    (tmp_path / "in").mkdir()
    resumed = run_app(["batch", tmp_path / "in", "--output", out], env)
    no_traceback(resumed)
    assert resumed.returncode == 2 and "part-0-of-1.jsonl: line 2 is not a batch record" in resumed.stderr


def test_merge_into_an_output_that_is_a_folder_names_it_and_leaves_no_temp_file(env, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-0-of-1.jsonl").write_text(json.dumps({"file": "x.jpg", "error": "x.jpg: empty"}) + "\n")
    (out / "merged.csv").mkdir()
    merged = run_app(["batch", "merge", out], env)
    no_traceback(merged)
    assert merged.returncode == 1 and f"cannot write {out / 'merged.csv'} (it is a folder)" in merged.stderr
    assert sorted(p.name for p in out.iterdir() if ".tmp-" in p.name) == []


def test_a_full_then_read_only_output_folder_stops_cleanly_and_resumes(mounts, images_dir, env, tmp_path):  # noqa: F811
    src, keep = tmp_path / "in", tmp_path / "keep"
    names = make_images(images_dir, src, 12)
    keep.mkdir()
    out = tmp_path / "mnt"
    later = tmp_path / "later"
    make_images(images_dir, later, 2)
    app = f"cd {REPO} && {sys.executable} -m app"
    script = f"""
mkdir -p {out}
mount -t tmpfs -o size=160k tmpfs {out}
rc=0; {app} batch {src} --output {out} --annotate --workers 1 2>{keep}/full.err || rc=$?; echo $rc >{keep}/full.rc
cp {out}/part-0-of-1.jsonl {keep}/full.jsonl
mount -o remount,size=64m {out}
rc=0; {app} batch {src} --output {out} --annotate --workers 1 2>{keep}/resumed.err || rc=$?; echo $rc >{keep}/resumed.rc
cp {out}/part-0-of-1.jsonl {keep}/resumed.jsonl
mount -o remount,ro {out}
rc=0; {app} batch {later} --output {out} 2>{keep}/ro.err || rc=$?; echo $rc >{keep}/ro.rc
rc=0; {app} batch merge {out} 2>{keep}/ro-merge.err || rc=$?; echo $rc >{keep}/ro-merge.rc
"""
    ran = in_namespace(script, env)
    assert ran.returncode == 0, ran.stderr

    def outcome(name: str) -> tuple[int, str]:
        return int((keep / f"{name}.rc").read_text()), (keep / f"{name}.err").read_text()

    rc, err = outcome("full")
    assert "Traceback" not in err and rc == 1, err
    assert "batch 0/1: stopped: cannot write " in err and "(No space left on device), after recording " in err
    assert f"of the {len(names)} images this run had to do; they stay in {out}/part-0-of-1.jsonl" in err
    assert "run the same command again to resume" in err
    recorded = [r for r in part_lines_tolerant(keep / "full.jsonl") if "file" in r]
    assert 0 < len(recorded) < len(names) and not [r for r in recorded if "error" in r]  # no image blamed
    rc, err = outcome("resumed")
    assert rc == 0, err
    assert f"{len(recorded)} already recorded, {len(names) - len(recorded)} to do" in err
    assert sorted(records(keep / "resumed.jsonl")) == names
    rc, err = outcome("ro")
    assert "Traceback" not in err and rc == 2, err
    assert "(Read-only file system)" in err and str(out) in err
    rc, err = outcome("ro-merge")
    assert "Traceback" not in err and rc == 1, err
    assert f"cannot write {out}/merged.jsonl (Read-only file system)" in err


def part_lines_tolerant(path: Path) -> list[dict]:
    """The whole lines of a part a full disk stopped (its last line may be torn: the resume cuts it)."""
    data = path.read_bytes()
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].decode().splitlines()]
