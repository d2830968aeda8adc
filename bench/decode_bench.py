"""Large JPEGs to the working copy: a full decode + area resize (``load_image`` + ``working_copy``, what
``detect``, ``batch`` and ``eval`` did) against ``load_working`` (libjpeg-turbo's 1/2, 1/4, 1/8 scaled decode,
what every entry point does now): time and peak memory.

    .venv/bin/python bench/decode_bench.py [--megapixels 12,24] [--repeat 15] [--rounds 3]

The JPEGs are the shared images scaled up (bicubic) to each size and encoded at quality 90
(tests/support/large_images.py). Each (mode, size) block runs in a fresh process, blocks alternated. Peak
memory: the process's peak RSS growth over the decodes (VmHWM after, less VmRSS before, the peak reset
through /proc/self/clear_refs once the libraries are loaded and the files' bytes read), and numpy's own
peak as tracemalloc sees it in a separate call. Reported per size and mode: median ms per file (all four
images, every round), the largest RSS growth, and the ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("OBJDET_SHARED_DIR", REPO.parent / "shared")).resolve()
SIDE = 1024  # images.work_side of the default models (SSDlite 320, SSD300, Yolo-Fastest 320)
MODES = ("full", "reduced")


def _large_images():
    spec = importlib.util.spec_from_file_location("_bench_large", REPO / "tests" / "support" / "large_images.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def decoder(mode: str):
    from app.engine.images import load_image, load_working, working_copy

    if mode == "full":
        return lambda data: working_copy(load_image(data, "x.jpg"), SIDE)
    return lambda data: load_working(data, "x.jpg", max_side=SIDE)


def status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def reset_peak_kib() -> int:
    """Reset the kernel's peak RSS of this process (VmHWM) to its current RSS, which it returns."""
    Path("/proc/self/clear_refs").write_text("5")
    return status_kib("VmRSS")


def block(mode: str, paths: list[Path], repeat: int) -> dict:
    """One process: every file ``repeat`` times; then one traced call of the largest file."""
    import cv2  # noqa: F401 - every library a decode uses is loaded before the baseline
    import simplejpeg  # noqa: F401

    decode = decoder(mode)
    files = [p.read_bytes() for p in paths]
    before = reset_peak_kib()
    decode(files[0])  # first-call allocations: not timed, but in the peak
    times = []
    for _ in range(repeat):
        for data in files:
            t0 = time.perf_counter()
            decode(data)
            times.append((time.perf_counter() - t0) * 1e3)
    grown = status_kib("VmHWM") - before
    tracemalloc.start()
    decode(max(files, key=len))
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"ms": times, "rss_growth_mib": grown / 1024, "traced_peak_mib": traced / 2**20}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", default="12,24")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--block", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.block:
        print(json.dumps(block(args.block, args.files, args.repeat)))
        return 0
    large = _large_images()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mp in (float(x) for x in args.megapixels.split(",")):
            paths = [large.large_jpeg(SHARED / "assets" / "images" / n, mp, Path(tmp)) for n in large.SHARED_NAMES]
            found: dict[str, list[dict]] = {m: [] for m in MODES}
            for round_no in range(args.rounds):
                for mode in MODES if round_no % 2 == 0 else MODES[::-1]:
                    proc = subprocess.run(
                        [sys.executable, __file__, "--block", mode, "--repeat", str(args.repeat), *map(str, paths)],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    found[mode].append(json.loads(proc.stdout.splitlines()[-1]))
            summary = {
                m: {
                    "ms": statistics.median(t for b in blocks for t in b["ms"]),
                    "rss": max(b["rss_growth_mib"] for b in blocks),
                    "traced": max(b["traced_peak_mib"] for b in blocks),
                }
                for m, blocks in found.items()
            }
            sizes = sorted({p.stat().st_size for p in paths})
            rows.append((mp, summary, sizes))
    print(f"{args.rounds} rounds x {args.repeat} runs x 4 images per block, each block its own process")
    print("| JPEG | decode to the working copy | median ms | peak RSS growth MiB | numpy peak MiB |")
    print("|---|---|---|---|---|")
    for mp, summary, sizes in rows:
        for mode, label in (("full", "full decode + area resize"), ("reduced", "load_working (scaled decode)")):
            s = summary[mode]
            print(
                f"| {mp:g} MP ({sizes[0] / 2**20:.1f}-{sizes[-1] / 2**20:.1f} MiB) | {label} | {s['ms']:.1f} | "
                f"{s['rss']:.0f} | {s['traced']:.1f} |"
            )
        full, reduced = summary["full"], summary["reduced"]
        print(
            f"| {mp:g} MP | ratio full / reduced | {full['ms'] / reduced['ms']:.2f}x | "
            f"{full['rss'] / max(reduced['rss'], 1):.1f}x | {full['traced'] / reduced['traced']:.1f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
