"""``python -m app batch``: run the detectors over a folder, list file or glob, one shard of N at a
time, appending one JSON line per image to ``part-K-of-N.jsonl`` so that a rerun (a retried pod of
an Indexed Job) continues where the last one stopped. See docs/batch.md.

Throughput: ``--workers`` threads each decode an image and run their own detector instances
(OpenCV's YOLO net serialises calls on one instance), with the process's CPUs
(``OBJDET_NUM_THREADS``) divided among them and the network runs bounded by
``registry.inference_slots``. Decoding, resizing and inference release the GIL.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import queue
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from ..engine.config import Settings
from .batch_parts import PartError, append_line, merge, part_name, read_part, summarize, summary_name, write_atomic
from .common import EXIT_FAILED, EXIT_OK, Progress, UsageError, chosen_models, detect_params

INDEX_ENV = "JOB_COMPLETION_INDEX"  # set by Kubernetes in each pod of an Indexed Job
COUNT_ENV = "BATCH_SHARD_COUNT"  # set in the Job's env to its completions (Kubernetes does not expose them)


@dataclass(frozen=True)
class Item:
    rel: str  # the path relative to INPUT, POSIX: the record's key and the shard hash's input
    path: Path


def shard_of(rel: str, count: int) -> int:
    """Stable across processes, machines and listing orders (unlike ``hash()``)."""
    return int.from_bytes(hashlib.sha256(rel.encode("utf-8")).digest()[:8], "big") % count


def parse_shard(text: str, source: str = "--shard") -> tuple[int, int]:
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise UsageError(f"{source} {text!r} is not K/N (e.g. 0/4)") from None
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"{source} {text!r}: need N >= 1 and 0 <= K < N")
    return index, count


def resolve_shard(arg: str | None, environ=os.environ) -> tuple[int, int]:
    """``--shard`` if given, else ``JOB_COMPLETION_INDEX`` / ``BATCH_SHARD_COUNT``, else the whole input."""
    if arg:
        return parse_shard(arg)
    index, count = environ.get(INDEX_ENV), environ.get(COUNT_ENV)
    if index is None and count is None:
        return 0, 1
    if index is None:
        raise UsageError(f"{COUNT_ENV}={count} is set but {INDEX_ENV} is not (give --shard K/N)")
    if count is None:
        raise UsageError(f"{INDEX_ENV}={index} is set but {COUNT_ENV} is not: set it to the Job's completions")
    return parse_shard(f"{index}/{count}", f"{INDEX_ENV}/{COUNT_ENV}")


def list_inputs(spec: str, skip_dir: Path | None = None) -> list[Item]:
    """INPUT's files sorted by relative path: a folder (recursive, hidden names and ``skip_dir``
    left out), a text file of paths (one a line, ``#`` comments; relative to the file's folder), or a glob."""
    root = Path(spec)
    items: dict[str, Path] = {}
    if root.is_dir():
        skip = skip_dir.resolve() if skip_dir else None
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and Path(folder, d).resolve() != skip)
            for name in files:
                if not name.startswith("."):
                    path = Path(folder, name)
                    items[path.relative_to(root).as_posix()] = path
    elif root.is_file():
        try:
            lines = root.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{spec}: cannot read the list of paths ({exc})") from None
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                path = Path(line) if Path(line).is_absolute() else root.parent / line
                items[Path(line).as_posix()] = path
    elif glob.has_magic(spec):
        parts = Path(spec).parts
        fixed = parts[: next(i for i, part in enumerate(parts) if glob.has_magic(part))]
        base = Path(*fixed) if fixed else Path(".")
        for match in glob.glob(spec, recursive=True):
            path = Path(match)
            if path.is_file() and not path.name.startswith("."):
                items[path.relative_to(base).as_posix()] = path
        if not items:
            raise UsageError(f"{spec}: the glob matches no file")
    else:
        raise UsageError(f"{spec}: no such folder, list file or glob")
    return [Item(rel, items[rel]) for rel in sorted(items)]


def worker_plan(settings: Settings, workers: int | None) -> tuple[int, Settings]:
    """Images in flight and the settings each worker's detectors get: the process's CPUs
    (``num_threads``) divided among the workers, one thread each by default."""
    workers = workers or settings.num_threads
    return workers, dataclasses.replace(settings, num_threads=max(1, settings.num_threads // workers))


def process_image(item: Item, detectors: dict, params, settings: Settings, slot, annotate_dir: Path | None) -> dict:
    """The record of one image: sizes, each model's result and timings, or the error."""
    from ..engine.detectors.base import ms_since
    from ..engine.images import ImageError
    from .common import detect_file, full_image

    record: dict = {"file": item.rel}
    warnings: list[str] = []
    start = time.perf_counter()
    try:
        record["bytes"] = item.path.stat().st_size
        (width, height), results = detect_file(item.path, detectors, params, settings, warnings, slot)
        record["image_size"] = {"width": width, "height": height}
        record["results"] = [r.to_dict() for r in results.values()]
        if annotate_dir is not None:
            record["annotated"] = write_annotated(annotate_dir, item.rel, full_image(item.path, settings), results)
    except ImageError as exc:
        record["error"] = str(exc)
    except OSError as exc:  # stat, or an annotated PNG that cannot be written
        record["error"] = f"{exc.filename or item.path}: {exc.strerror or exc}"
    except Exception as exc:  # noqa: BLE001 - one bad image must not end a shard of thousands
        record["error"] = f"{item.path}: {type(exc).__name__}: {exc}"
    if warnings:
        record["warnings"] = warnings
    record["total_ms"] = round(ms_since(start), 3)
    return record


def write_annotated(annotate_dir: Path, rel: str, image, results) -> list[str]:
    """``annotated/<relative path>.<model>.png``: the input's folders are kept, so names never collide."""
    from ..engine.annotate import annotate, to_png

    written = []
    for model, result in results.items():
        target = annotate_dir / f"{rel}.{model}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(to_png(annotate(image, result)))
        written.append(target.relative_to(annotate_dir.parent).as_posix())
    return written


def run_shard(
    input_spec: str,
    out_dir: Path,
    index: int,
    count: int,
    models: list[str],
    params,
    settings: Settings,
    workers: int | None = None,
    annotate: bool = False,
    stream=sys.stderr,
) -> dict:
    """Process the images of shard ``index`` of ``count`` not yet in its part file; return its summary."""
    from ..engine.registry import build_detector, inference_slots

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PartError(f"cannot create the output folder {out_dir} ({exc.strerror or exc})") from None
    items = [i for i in list_inputs(input_spec, skip_dir=out_dir) if shard_of(i.rel, count) == index]
    part = out_dir / part_name(index, count)
    done = {r["file"] for r in read_part(part, repair=True)}
    todo = [i for i in items if i.rel not in done]
    workers, worker_settings = worker_plan(settings, workers)
    workers = max(1, min(workers, len(todo)))
    # One detector set per worker (ModelLoadError here, before any image, is exit 1).
    free_sets: queue.SimpleQueue = queue.SimpleQueue()
    for _ in range(workers if todo else 0):
        free_sets.put({m: build_detector(m, worker_settings) for m in models})
    slot = inference_slots(worker_settings)
    annotate_dir = out_dir / "annotated" if annotate else None
    label = f"batch {index}/{count}"
    stream.write(
        f"{label}: {len(items)} images in this shard, {len(done)} already recorded, {len(todo)} to do, "
        f"{workers} worker(s) x {worker_settings.num_threads} thread(s)\n"
    )
    progress = Progress(label, len(todo), stream)

    def task(item: Item) -> dict:
        detectors = free_sets.get()
        try:
            return process_image(item, detectors, params, worker_settings, slot, annotate_dir)
        finally:
            free_sets.put(detectors)

    fd = os.open(part, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="batch") as pool:
            pending, upcoming = set(), iter(todo)
            while True:
                while len(pending) < 2 * workers and (item := next(upcoming, None)) is not None:
                    pending.add(pool.submit(task, item))
                if not pending:
                    break
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    record = future.result()
                    append_line(fd, record)
                    progress.update("error" in record)
    finally:
        os.close(fd)
    progress.finish()
    summary = {
        "shard": index,
        "shards": count,
        "expected": len(items),
        **summarize(read_part(part)),
        "processed_this_run": progress.done,
        "seconds_this_run": round(time.monotonic() - progress.start, 3),
        "images_per_s_this_run": round(progress.rate(), 3),
        "workers": workers,
        "threads_per_worker": worker_settings.num_threads,
    }
    import json

    write_atomic(out_dir / summary_name(index, count), (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    return summary


def cmd_batch(args, settings: Settings) -> int:
    from ..engine.detectors.base import ModelLoadError

    if args.input == "merge":
        return cmd_merge(args)
    if args.merge_dir is not None:
        raise UsageError(f"unexpected argument {args.merge_dir} (merge: `batch merge DIR`)")
    if args.output is None:
        raise UsageError("--output DIR is required")
    index, count = resolve_shard(args.shard)
    params = detect_params(args)
    models = chosen_models(args.model, settings)
    try:
        summary = run_shard(
            args.input,
            args.output,
            index,
            count,
            models,
            params,
            settings,
            workers=args.workers,
            annotate=args.annotate,
        )
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except PartError as exc:
        raise UsageError(str(exc)) from None
    for name, message in summary["failures"].items():
        print(f"{name}: ERROR {message}", file=sys.stderr)
    return EXIT_FAILED if summary["failed"] else EXIT_OK


def cmd_merge(args) -> int:
    if args.merge_dir is None:
        raise UsageError("batch merge needs the output folder: `python -m app batch merge DIR`")
    expected = [i.rel for i in list_inputs(args.list_input)] if args.list_input else None
    try:
        summary = merge(args.merge_dir, expected)
    except PartError as exc:
        raise UsageError(str(exc)) from None
    out = args.merge_dir
    print(
        f"{summary['images']} images ({summary['failed']} failed) from {summary['shards']} shard(s) -> "
        f"{out / 'merged.jsonl'}, {out / 'merged.csv'}, {out / 'summary.json'}"
    )
    problems = 0
    for name in summary["missing_parts"]:
        print(f"missing part: {out / name} (that shard has not run)", file=sys.stderr)
        problems += 1
    for name in summary.get("missing_images", ()):
        print(f"missing image: {name}", file=sys.stderr)
        problems += 1
    if summary.get("missing") and "missing_images" not in summary:
        print(f"{summary['missing']} image(s) of {summary['expected']} not recorded", file=sys.stderr)
        problems += 1
    for name, where in summary["duplicates"].items():
        print(f"duplicate: {name} in {', '.join(where)} (the first record is kept)", file=sys.stderr)
        problems += 1
    return EXIT_FAILED if problems or summary["failed"] else EXIT_OK
