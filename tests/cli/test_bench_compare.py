"""``python -m app bench --compare``: real worker processes (app/cli/bench_worker.py), real models, JSON report.

No timing is asserted: only that every variant ran in its own process with the versions it claims, that
the blocks and runs add up, and that the ratios are computed from the medians it printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from app.cli.bench import COMPARISONS


def bench(args, env):
    proc = subprocess.run(
        [sys.executable, "-m", "app", "bench", "--compare", "--json", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_compare_runs_each_variant_in_its_own_process(yolo_env, ssd_weights, images_dir, tmp_path):
    env = {**yolo_env, "OBJDET_SSD_WEIGHTS": str(ssd_weights), "XDG_CACHE_HOME": str(tmp_path)}
    variants = (
        "ssd-contiguous",
        "ssd-torch",
        "ssd-onnxruntime",
        "yolo-after-ssd",
        "yolo-cv4",
        "yolo-only",
        "yolo-twin",
    )
    image = str(images_dir / "chelsea.png")
    report = bench(["--variants", ",".join(variants), "--blocks", "2", "--repeat", "2", image], env)
    rows = report["variants"]
    assert list(rows) == list(variants) and report["images"] == [image]
    for name in ("ssd-contiguous", "ssd-torch", "ssd-onnxruntime", "yolo-after-ssd"):
        row = rows[name]
        assert row["available"], row
        assert row["runs"] == 2 * 2 and len(row["pipeline_block_medians_ms"]) == len(row["reference_ms"]) == 2
        assert row["versions"]["torch"] and row["weights"]["ssd"] == str(ssd_weights)
    assert "onnxruntime" in rows["ssd-onnxruntime"]["versions"]
    assert "onnxruntime" not in rows["ssd-torch"]["versions"], "the torch variant must not load onnxruntime"
    if rows["yolo-cv4"]["available"]:  # an environment with OpenCV 4 exists beside this one
        assert rows["yolo-cv4"]["versions"]["cv2"].startswith("4.")
    else:
        assert "OpenCV 4" in rows["yolo-cv4"]["why"]
    ratios = {r["what"]: r for r in report["ratios"]}
    assert len(ratios) == len(COMPARISONS) + 1  # + YOLO after SSD vs a YOLO-only process
    torch_vs_fast = ratios["SSD pipeline: torch contiguous / onnxruntime"]["ratio"]
    expected = rows["ssd-contiguous"]["pipeline_median_ms"] / rows["ssd-onnxruntime"]["pipeline_median_ms"]
    assert torch_vs_fast == pytest.approx(expected, rel=1e-2)
    assert ratios["YOLO pipeline: OpenCV 4 / OpenCV 5 (converted ONNX)"]["ratio"] is None  # yolo-cv5 not asked for
    # the noise floor: two identical YOLO-only processes, in this environment
    assert (
        rows["yolo-only"]["versions"] == rows["yolo-twin"]["versions"] and "torch" not in rows["yolo-twin"]["versions"]
    )
    floor = rows["yolo-twin"]["pipeline_median_ms"] / rows["yolo-only"]["pipeline_median_ms"]
    assert ratios["Noise floor: YOLO pipeline, twin process / YOLO-only"]["ratio"] == pytest.approx(floor, rel=1e-2)
    after = ratios["YOLO detect after SSD / YOLO-only process (same OpenCV)"]["ratio"]
    assert after == pytest.approx(
        rows["yolo-after-ssd"]["pipeline_median_ms"] / rows["yolo-only"]["pipeline_median_ms"], rel=1e-2
    )


def test_unknown_variant_is_refused():
    proc = subprocess.run(
        [sys.executable, "-m", "app", "bench", "--compare", "--variants", "ssd-tensorrt"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "unknown variant ssd-tensorrt; allowed: yolo-cv4" in proc.stderr


def test_sweep_reads_and_writes_every_byte_of_twice_the_largest_cache():
    """The cache sweep must bring every line of a buffer larger than the caches through them: each call reads
    and rewrites every byte from its own value (a strided touch misses bytes; a fill, which may bypass the caches,
    writes one value over varied bytes), and the buffer is twice the largest cache."""
    import numpy as np

    from app.cli.bench_worker import Sweep, largest_cache_bytes

    sweep = Sweep()
    assert sweep.buffer.nbytes == 2 * largest_cache_bytes() >= 2 << 20
    sweep.buffer[:] = np.arange(sweep.buffer.size) % 251
    before = sweep.buffer.copy()
    sweep()
    assert (sweep.buffer == (before + 1).astype(before.dtype)).all()
    sweep()
    assert (sweep.buffer == (before + 2).astype(before.dtype)).all()
