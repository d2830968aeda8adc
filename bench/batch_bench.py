"""Batch throughput: ``python -m app batch``'s worker pool against a plain sequential loop
over ``detect`` (load -> working copy -> detect, what ``python -m app detect`` does), on the same images.

    .venv/bin/python bench/batch_bench.py [--images 200] [--rounds 3] [--model yolo,ssd] [--explain]
        [--large MP] [--decode reduced|full|both]

The images are made from the shared test images: copies, resized variants and JPEG re-encodes. Each
block (one mode, one model, all images) runs in a fresh process so that neither mode inherits the
other's process-wide thread settings; blocks alternate (seq, batch, then batch, seq, ...) so that
load from other processes hits both alike. Models are built before the clock starts in both modes.
Reported: images/s per block, the median per mode and the ratio of medians; with ``--explain`` first the
decode and detect times per image at 1 and N threads and the best ratio they allow (``explain``: N workers
of one thread cannot beat N x (d + iN) / (d + i1)). Settings come from the
environment as for the app (OBJDET_NUM_THREADS: the sequential loop's threads, the batch's CPU budget).
Without official SSD weights, seeded random SSDlite weights stand in (same architecture and cost).

``--large 12`` makes the images large phone-sized JPEGs instead (the four shared images scaled up to 12 MP
and encoded at quality 90, tests/support/large_images.py, copied up to ``--images``). ``--decode full`` runs
every block (the sequential loop, the batch and ``--explain``'s parts) with the decode every entry point had
before ``images.load_working`` learned libjpeg-turbo's scaled decode: the whole file, then an area resize
(``load_image`` + ``working_copy``), patched in for the bench only; ``--decode both`` measures both, blocks of
the two alternated, so the bound ``--explain`` gives can be compared before and after.
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("OBJDET_SHARED_DIR", REPO.parent / "shared")).resolve()
YOLO_DIR = SHARED / "assets" / "weights" / "yolo-fastest-1.1"


def make_images(dest: Path, count: int) -> None:
    import cv2

    sources = sorted((SHARED / "assets" / "images").glob("*.*"))
    variants = [
        (1.0, ".png", None),
        (1.0, ".jpg", 90),
        (0.5, ".jpg", 80),
        (0.75, ".png", None),
        (1.5, ".jpg", 85),
        (1.25, ".jpg", 70),
        (0.6, ".jpg", 95),
    ]
    for n in range(count):
        image = cv2.imread(str(sources[n % len(sources)]))
        scale, ext, quality = variants[(n // len(sources)) % len(variants)]
        if scale != 1.0:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        opts = [cv2.IMWRITE_JPEG_QUALITY, quality] if quality else []
        cv2.imwrite(str(dest / f"img{n:04d}{ext}"), image, opts)


def make_large_images(dest: Path, count: int, megapixels: float) -> None:
    """``count`` JPEGs of ``megapixels``: the shared images scaled up, each made once and copied."""
    import shutil

    spec = importlib.util.spec_from_file_location("_bench_large", REPO / "tests" / "support" / "large_images.py")
    large = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(large)
    made = [large.large_jpeg(SHARED / "assets" / "images" / n, megapixels, dest) for n in large.SHARED_NAMES]
    for n in range(count):
        shutil.copyfile(made[n % len(made)], dest / f"img{n:04d}.jpg")
    for path in made:
        path.unlink()


def use_full_decode() -> None:
    """The decode before libjpeg-turbo's scaled decode, for this process: the whole file, then an area resize to
    the working side (for JPEG what ``load_working`` did; Pillow's box reduce of large PNGs is kept)."""
    from app.engine import images

    reduced = images.load_working

    def full(source, name=None, *, max_side, max_pixels=images.DEFAULT_MAX_IMAGE_PIXELS, max_bytes=None, warnings=None):
        data = Path(source).read_bytes() if not isinstance(source, bytes) else source
        if data[:2] != b"\xff\xd8":  # not a JPEG: unchanged
            return reduced(
                source, name, max_side=max_side, max_pixels=max_pixels, max_bytes=max_bytes, warnings=warnings
            )
        image = images.load_image(data, name or str(source), max_pixels, max_bytes, warnings)
        small, factor = images.working_copy(image, max_side)
        return small, factor, (image.shape[1], image.shape[0])

    images.load_working = full


def block(mode: str, model: str, images: Path, decode: str = "reduced") -> float:
    """Images/s of one mode over every image, models built before the clock starts."""
    if decode == "full":
        use_full_decode()
    from app.cli.batch import ShardJob, run_shard
    from app.cli.common import detect_file
    from app.engine.config import Settings
    from app.engine.registry import get_detector
    from app.engine.result import DetectParams

    settings, params = Settings.from_env(), DetectParams()
    if mode == "parts":
        return parts(model, images, settings, params)
    if mode == "seq":
        detectors = {model: get_detector(model, settings)}
        paths = sorted(images.iterdir())
        start = time.perf_counter()
        for path in paths:
            detect_file(path, detectors, params, settings)
        return len(paths) / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as out, open(os.devnull, "w") as quiet:
        summary = run_shard(ShardJob(str(images), Path(out), 0, 1, [model], params), settings, stream=quiet)
    assert summary["failed"] == 0, summary["failures"]
    return summary["images_per_s_this_run"]


def parts(model: str, images: Path, settings, params) -> dict:
    """Median ms per image of the two stages, in this process's thread setting: decoding the file into its
    working copy (always one thread) and ``detect`` on it (``OBJDET_NUM_THREADS`` threads)."""
    from app.engine import images as image_io
    from app.engine.images import work_side
    from app.engine.registry import get_detector

    detector = get_detector(model, settings)
    side = work_side([detector.input_size])
    decode_ms, detect_ms = [], []
    for path in sorted(images.iterdir()):
        t0 = time.perf_counter()
        small, _, _ = image_io.load_working(path, max_side=side, max_pixels=settings.max_image_pixels)
        t1 = time.perf_counter()
        detector.detect(small, params)
        t2 = time.perf_counter()
        decode_ms.append((t1 - t0) * 1e3)
        detect_ms.append((t2 - t1) * 1e3)
    return {"decode_ms": statistics.median(decode_ms), "detect_ms": statistics.median(detect_ms)}


def explain(model: str, images: Path, env: dict, threads: int, decode: str = "reduced") -> float:
    """What the ratio can be at best: with d the decode, i1 and iN the detect at 1 and N threads, the
    sequential loop takes d + iN per image and N one-thread workers (N images at once, perfectly parallel)
    (d + i1) / N, so batch / sequential <= N (d + iN) / (d + i1)."""
    measured = {}
    for count in (1, threads):
        proc = subprocess.run(
            [sys.executable, __file__, "--block", "parts", "--model", model, "--dir", str(images), "--decode", decode],
            env={**env, "OBJDET_MODELS": model, "OBJDET_NUM_THREADS": str(count)},
            capture_output=True,
            text=True,
        )
        if proc.returncode:
            sys.exit(f"{model} parts block failed:\n{proc.stderr}")
        measured[count] = json.loads(proc.stdout.splitlines()[-1])["images_per_s"]
    d, i1, i_n = measured[1]["decode_ms"], measured[1]["detect_ms"], measured[threads]["detect_ms"]
    bound = threads * (d + i_n) / (d + i1)
    print(
        f"{model} ({decode} decode): decode {d:.2f} ms, detect {i1:.2f} ms on 1 thread and {i_n:.2f} ms on "
        f"{threads} ({i1 / i_n:.2f}x); ideal batch / sequential = {threads} x (d + i{threads}) / (d + i1) "
        f"= {bound:.2f}",
        flush=True,
    )
    return bound


def run_block(mode: str, model: str, images: Path, env: dict, decode: str) -> float:
    """One block in a fresh process: its images/s."""
    proc = subprocess.run(
        [sys.executable, __file__, "--block", mode, "--model", model, "--dir", str(images), "--decode", decode],
        env={**env, "OBJDET_MODELS": model},
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        sys.exit(f"{model} {mode} ({decode} decode) block failed:\n{proc.stderr}")
    return json.loads(proc.stdout.splitlines()[-1])["images_per_s"]


def run_processes(model: str, images: Path, env: dict, decode: str) -> float:
    """Two sequential one-thread blocks in two processes at once, their images/s summed: what two workers reach
    when nothing of one process (the GIL, its allocator) is shared, the measured ceiling of ``batch``'s two
    one-thread workers."""
    one = {**env, "OBJDET_MODELS": model, "OBJDET_NUM_THREADS": "1"}
    args = [sys.executable, __file__, "--block", "seq", "--model", model, "--dir", str(images), "--decode", decode]
    procs = [subprocess.Popen(args, env=one, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    total = 0.0
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode:
            sys.exit(f"{model} two-process ({decode} decode) block failed:\n{err}")
        total += json.loads(out.splitlines()[-1])["images_per_s"]
    return total


def measure(model: str, images: Path, env: dict, decodes: list[str], rounds: int, processes: bool = False) -> dict:
    """Sequential and batch images/s per decode (and two one-thread processes at once with ``processes``),
    blocks alternated (mode order and decode order flip)."""
    modes = ("seq", "batch", "procs") if processes else ("seq", "batch")
    rates = {(d, m): [] for d in decodes for m in modes}
    for round_no in range(rounds):
        order = [(d, m) for d in decodes for m in modes]
        for decode, mode in order if round_no % 2 == 0 else order[::-1]:
            if mode == "procs":
                rates[decode, mode].append(run_processes(model, images, env, decode))
            else:
                rates[decode, mode].append(run_block(mode, model, images, env, decode))
            print(
                f"  {model:4} round {round_no} {decode:7} {mode:5} {rates[decode, mode][-1]:7.1f} images/s", flush=True
            )
    report = {}
    for decode in decodes:
        seq, batch = statistics.median(rates[decode, "seq"]), statistics.median(rates[decode, "batch"])
        report[decode] = {
            "seq_images_per_s": round(seq, 1),
            "batch_images_per_s": round(batch, 1),
            "ratio": round(batch / seq, 2),
            "rounds": {m: rates[decode, m] for m in modes},
        }
        if processes:
            procs = statistics.median(rates[decode, "procs"])
            report[decode]["two_processes_images_per_s"] = round(procs, 1)
            report[decode]["share_of_processes"] = round(batch / procs, 2)
    return report


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--model", default="yolo,ssd")
    p.add_argument("--explain", action="store_true", help="also measure decode and detect at 1 and N threads")
    p.add_argument(
        "--processes", action="store_true", help="also two one-thread processes at once (batch's measured ceiling)"
    )
    p.add_argument("--large", type=float, metavar="MP", help="JPEGs of MP megapixels instead of the small mix")
    p.add_argument("--decode", choices=("reduced", "full", "both"), default="reduced")
    p.add_argument("--block", choices=("seq", "batch", "parts"), help=argparse.SUPPRESS)
    p.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.block:
        print(json.dumps({"images_per_s": block(args.block, args.model, args.dir, args.decode)}))
        return 0
    env = {
        **os.environ,
        "OBJDET_YOLO_WEIGHTS": str(YOLO_DIR / "yolo-fastest-1.1.weights"),
        "OBJDET_YOLO_CONFIG": str(YOLO_DIR / "yolo-fastest-1.1.cfg"),
        "OBJDET_YOLO_NAMES": str(YOLO_DIR / "coco.names"),
        "OBJDET_DEVICE": os.environ.get("OBJDET_DEVICE", "cpu"),
    }  # a CPU benchmark, also on a GPU machine
    decodes = ["reduced", "full"] if args.decode == "both" else [args.decode]
    threads = int(os.environ.get("OBJDET_NUM_THREADS") or len(os.sched_getaffinity(0)))
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp, "images")
        images.mkdir()
        if args.large:
            make_large_images(images, args.images, args.large)
        else:
            make_images(images, args.images)
        if "ssd" in args.model:
            # tests/support/ssd_weights.py (seeded weights whose scores spread out), loaded by file path
            helper = REPO / "tests" / "support" / "ssd_weights.py"
            spec = importlib.util.spec_from_file_location("_bench_ssd_weights", helper)
            ssd_weights = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(ssd_weights)
            env["OBJDET_SSD_WEIGHTS"] = str(
                ssd_weights.make_state_dict("ssdlite320_mobilenet_v3_large", Path(tmp, "ssd.pth"))
            )
            env["OBJDET_SSD_ARCH"] = "ssdlite320_mobilenet_v3_large"
        what = f"{args.large:g} MP JPEGs" if args.large else "images"
        print(
            f"{args.images} {what}, {len(os.sched_getaffinity(0))} CPUs usable, OBJDET_NUM_THREADS="
            f"{os.environ.get('OBJDET_NUM_THREADS', '(unset)')}, {args.rounds} rounds, blocks alternated"
        )
        report = {}
        for model in args.model.split(","):
            bounds = {d: explain(model, images, env, threads, d) for d in decodes} if args.explain else {}
            report[model] = measure(model, images, env, decodes, args.rounds, args.processes)
            for decode, r in report[model].items():
                line = (
                    f"{model} ({decode} decode): sequential {r['seq_images_per_s']:.1f} images/s, batch "
                    f"{r['batch_images_per_s']:.1f} images/s, ratio {r['ratio']:.2f}x"
                )
                if decode in bounds:
                    r["bound"] = round(bounds[decode], 2)
                    r["share_of_bound"] = round(r["ratio"] / bounds[decode], 2)
                    line += f" of a {bounds[decode]:.2f}x bound ({r['share_of_bound']:.0%})"
                if args.processes:
                    line += (
                        f"; two one-thread processes {r['two_processes_images_per_s']:.1f} images/s, batch "
                        f"{r['share_of_processes']:.0%} of them"
                    )
                print(line, flush=True)
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
