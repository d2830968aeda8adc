"""``python -m app batch``: run the detectors over a folder, list file or glob, one shard of N at a
time, appending one JSON line per image to ``part-K-of-N.jsonl`` so that a rerun (a retried pod of
an Indexed Job) continues where the last one stopped. See docs/batch.md.

Throughput: ``--workers`` threads each decode an image and run their own detector instances
(OpenCV's YOLO net serialises calls on one instance), with the process's CPUs
(``OBJDET_NUM_THREADS``) divided among them and the network runs bounded by
``registry.inference_slots``. Decoding, resizing and inference release the GIL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import glob
import hashlib
import json
import os
import queue
import socket
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from ..engine.config import Settings
from ..ops.cpus import cpu_budget
from .batch_parts import (
    MAX_SHARDS,
    OutputError,
    PartError,
    append_line,
    describe_settings,
    lock_name,
    merge,
    part_name,
    read_part,
    settings_line,
    summarize,
    summary_name,
    write_atomic,
)
from .common import EXIT_FAILED, EXIT_OK, Progress, UsageError, chosen_models, detect_params, say

INDEX_ENV = "JOB_COMPLETION_INDEX"  # set by Kubernetes in each pod of an Indexed Job
COUNT_ENV = "BATCH_SHARD_COUNT"  # set in the Job's env to its completions (Kubernetes does not expose them)
# Workers per CPU this process may use: each holds its own models (SSDlite ~100 MB resident), and past the
# CPUs they only queue (32 workers on 2 CPUs: 2.4 GB, no faster than 2).
MAX_WORKERS_PER_CPU = 2
# Errors of the output folder itself: the run stops (resumable) instead of recording an image as failed.
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO})


class PartBusy(PartError):
    """Another process holds the part's lock: one writer per part."""


@dataclass(frozen=True)
class Item:
    rel: str  # the path relative to INPUT, POSIX: the record's key and the shard hash's input
    path: Path
    note: str | None = None  # a warning recorded with the image (a name that is not UTF-8)


def item(rel: str, path: Path) -> Item:
    """An input file; a name that is not valid UTF-8 (bytes ``os.fsdecode`` kept as surrogates) is keyed by its
    escaped form (``\\xff``), so its record, the shard hash and the merged files stay text."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        key = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        return Item(key, path, f"its name is not valid UTF-8: recorded as {key}")
    return Item(rel, path)


def shard_of(rel: str, count: int) -> int:
    """Stable across processes, machines and listing orders (unlike ``hash()``)."""
    return int.from_bytes(hashlib.sha256(rel.encode("utf-8")).digest()[:8], "big") % count


def parse_shard(text: str, source: str = "--shard") -> tuple[int, int]:
    try:
        index_text, count_text = text.split("/")
        if max(len(index_text.strip()), len(count_text.strip())) > 40:
            raise ValueError("too long")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise UsageError(f"{source} {text[:40]!r} is not K/N (e.g. 0/4)") from None
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"{source} {text!r}: need N >= 1 and 0 <= K < N")
    if count > MAX_SHARDS:
        raise UsageError(
            f"{source} {text!r}: at most {MAX_SHARDS:,} shards (an Indexed Job's limit; merge lists every missing part)"
        )
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
    return [item(rel, items[rel]) for rel in sorted(items)]


def worker_plan(settings: Settings, workers: int | None) -> tuple[int, Settings]:
    """Images in flight and the settings each worker's detectors get: the process's CPUs
    (``num_threads``) divided among the workers, one thread each by default. ``--workers`` past
    ``MAX_WORKERS_PER_CPU`` per CPU is refused; the default is capped there."""
    cpus, source = cpu_budget()
    most = MAX_WORKERS_PER_CPU * cpus
    if workers is not None and workers > most:
        raise UsageError(
            f"--workers {workers}: at most {most} ({MAX_WORKERS_PER_CPU} per CPU this process may use: {cpus}, "
            f"from the {source}); each worker holds its own models, and workers past the CPUs only wait"
        )
    workers = workers or min(settings.num_threads, most)
    return workers, dataclasses.replace(settings, num_threads=max(1, settings.num_threads // workers))


def process_image(item: Item, detectors: dict, params, settings: Settings, slot, annotate_dir: Path | None) -> dict:
    """The record of one image: sizes, each model's result and timings, or the error."""
    from ..engine.detectors.base import ms_since
    from ..engine.images import ImageError
    from .common import detect_file, full_image

    record: dict = {"file": item.rel}
    warnings: list[str] = [item.note] if item.note else []
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
    except OutputError:
        raise  # the output folder's fault, not the image's: the run stops (resumable)
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
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(to_png(annotate(image, result)))
        except OSError as exc:
            if exc.errno in OUTPUT_ERRNOS:  # a full or read-only folder: stop, do not blame the image
                raise OutputError(f"cannot write {target} ({exc.strerror})") from None
            raise
        written.append(target.relative_to(annotate_dir.parent).as_posix())
    return written


def result_settings(models: list[str], params, settings: Settings) -> dict:
    """What shapes a record's results, as a part's settings line holds it: the models, the detection
    parameters, each model file's sha256 prefix (the same weights under another path are the same model)
    and the family options that change a network's input."""
    from ..engine.weights import sha256_file

    files = {}
    for model in sorted(models):
        for role, path in settings.model_files(model).items():
            try:
                files[f"{model} {role}"] = sha256_file(path)[:16]
            except OSError:
                files[f"{model} {role}"] = None  # the model cannot load either: that error comes first
    out = {"models": sorted(models), **params.to_dict(), "files": files}
    if "ssd" in models:
        out["ssd_arch"] = settings.ssd_arch
    if "yolo" in models:
        out["yolo_input_size"] = settings.yolo_input_size
    return out


@contextlib.contextmanager
def part_lock(out_dir: Path, index: int, count: int):
    """One writer per part: an exclusive ``flock`` on ``.part-K-of-N.lock`` for the whole run (released by
    the kernel when the process dies, however it dies), with the holder written into it for the message
    the second writer gets (``PartBusy``)."""
    path = out_dir / lock_name(index, count)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise PartError(f"cannot open the lock file {path} ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "a process that did not say"
            raise PartBusy(
                f"{out_dir / part_name(index, count)} is being written by another batch process ({holder}); "
                "one writer per part: wait for it to end (or stop it), then run the command again"
            ) from None
        with contextlib.suppress(OSError):  # the note is for people; a full disk must not stop the lock
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.ctime()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def _resumable(part_path: Path, part, wanted: dict, allow_mixed: bool) -> bool:
    """Whether this run appends a settings line: the part is new, or continues under other settings
    (refused unless ``allow_mixed``)."""
    if not part.records and part.current is None:
        return True
    if part.current == wanted:
        return False
    if not allow_mixed:
        raise PartError(
            f"{part_path} was made with {describe_settings(part.current)}; this run has "
            f"{describe_settings(wanted)}. Run with the part's settings, write to another --output, "
            "or pass --allow-mixed-settings (a settings line then marks where this run's records start)"
        )
    return True


def _record_all(todo: list[Item], task, fd: int, part_path: Path, progress: Progress, workers: int) -> None:
    """Run ``task`` over ``todo`` on ``workers`` threads, appending each record as it completes;
    ``OutputError`` when the part cannot be written (what ran stays recorded)."""
    with ThreadPoolExecutor(workers, thread_name_prefix="batch") as pool:
        pending, upcoming = set(), iter(todo)
        try:
            while True:
                while len(pending) < 2 * workers and (next_item := next(upcoming, None)) is not None:
                    pending.add(pool.submit(task, next_item))
                if not pending:
                    break
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    record = future.result()
                    try:
                        append_line(fd, record)
                    except OSError as exc:
                        raise OutputError(f"cannot write {part_path} ({exc.strerror or exc})") from None
                    progress.update("error" in record)
        except OutputError:
            for future in pending:
                future.cancel()
            raise


@dataclass(frozen=True)
class ShardJob:
    """What one ``batch`` run does: the input, where it writes, which shard, and how."""

    input_spec: str
    out_dir: Path
    index: int
    count: int
    models: list[str]
    params: object
    workers: int | None = None
    annotate: bool = False
    allow_mixed: bool = False


def run_shard(job: ShardJob, settings: Settings, stream=sys.stderr) -> dict:
    """Process the images of the shard not yet in its part file; return its summary. ``PartBusy`` when
    another process writes the part, ``PartError`` for a part or folder that cannot be used, ``OutputError``
    (naming what was recorded) when the folder stops taking writes mid-way."""
    try:
        job.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PartError(f"cannot create the output folder {job.out_dir} ({exc.strerror or exc})") from None
    items = [i for i in list_inputs(job.input_spec, skip_dir=job.out_dir) if shard_of(i.rel, job.count) == job.index]
    part_path = job.out_dir / part_name(job.index, job.count)
    wanted = result_settings(job.models, job.params, settings)
    with part_lock(job.out_dir, job.index, job.count):
        part = read_part(part_path, repair=True)
        new_settings = _resumable(part_path, part, wanted, job.allow_mixed)
        done = part.files
        todo = [i for i in items if i.rel not in done]
        try:
            fd = os.open(part_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise PartError(f"cannot write {part_path} ({exc.strerror or exc})") from None
        try:
            progress, workers, threads = _run_todo(
                job, settings, todo, (len(items), len(done)), fd, part_path, wanted if new_settings else None, stream
            )
        finally:
            os.close(fd)
        summary = {
            "shard": job.index,
            "shards": job.count,
            "expected": len(items),
            **summarize(read_part(part_path).records),
            "processed_this_run": progress.done,
            "seconds_this_run": round(time.monotonic() - progress.start, 3),
            "images_per_s_this_run": round(progress.rate(), 3),
            "workers": workers,
            "threads_per_worker": threads,
        }
        summary_path = job.out_dir / summary_name(job.index, job.count)
        write_atomic(summary_path, (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    return summary


def _run_todo(job: ShardJob, settings, todo, counts, fd, part_path, header, stream) -> tuple[Progress, int, int]:
    """Build one detector set per worker (``ModelLoadError`` here, before any image, is exit 1), append the
    settings line ``header`` (unless None), then record every image of ``todo``; the progress, the workers
    and the threads each worker's detectors run on."""
    total, done = counts
    from ..engine.registry import build_detector, inference_slots

    workers, worker_settings = worker_plan(settings, job.workers)
    workers = max(1, min(workers, len(todo)))
    free_sets: queue.SimpleQueue = queue.SimpleQueue()
    for _ in range(workers if todo else 0):
        free_sets.put({m: build_detector(m, worker_settings) for m in job.models})
    slot = inference_slots(worker_settings)
    annotate_dir = job.out_dir / "annotated" if job.annotate else None
    label = f"batch {job.index}/{job.count}"
    stream.write(
        f"{label}: {total} images in this shard, {done} already recorded, {len(todo)} to do, "
        f"{workers} worker(s) x {worker_settings.num_threads} thread(s)\n"
    )
    progress = Progress(label, len(todo), stream)

    def task(one: Item) -> dict:
        detectors = free_sets.get()
        try:
            return process_image(one, detectors, job.params, worker_settings, slot, annotate_dir)
        finally:
            free_sets.put(detectors)

    try:
        if header is not None:
            try:
                append_line(fd, settings_line(header))
            except OSError as exc:
                raise OutputError(f"cannot write {part_path} ({exc.strerror or exc})") from None
        _record_all(todo, task, fd, part_path, progress, workers)
    except OutputError as exc:
        progress.finish()
        raise OutputError(
            f"{label}: stopped: {exc}, after recording {progress.done} of the {len(todo)} images this run had "
            f"to do; they stay in {part_path}: free space (or make the folder writable), then run the same "
            "command again to resume"
        ) from None
    progress.finish()
    return progress, workers, worker_settings.num_threads


def cmd_batch(args, settings: Settings) -> int:
    """``batch``: exit 0 all recorded without error, 1 an image or model failed, the part is another
    process's or the output folder stopped taking writes, 2 a usage or configuration error."""
    from ..engine.detectors.base import ModelLoadError

    if args.input == "merge":
        return cmd_merge(args)
    if args.merge_dir is not None:
        raise UsageError(f"unexpected argument {args.merge_dir} (merge: `batch merge DIR`)")
    if args.output is None:
        raise UsageError("--output DIR is required")
    index, count = resolve_shard(args.shard)
    models = chosen_models(args.model, settings)
    job = ShardJob(
        args.input,
        args.output,
        index,
        count,
        models,
        detect_params(args),
        workers=args.workers,
        annotate=args.annotate,
        allow_mixed=args.allow_mixed_settings,
    )
    worker_plan(settings, args.workers)  # a --workers past the bound is a usage error before anything runs
    try:
        summary = run_shard(job, settings)
    except ModelLoadError as exc:
        say(f"error: {exc}")
        return EXIT_FAILED
    except (PartBusy, OutputError) as exc:
        say(f"error: {exc}")
        return EXIT_FAILED
    except PartError as exc:
        raise UsageError(str(exc)) from None
    for name, message in summary["failures"].items():
        say(f"{name}: ERROR {message}")
    return EXIT_FAILED if summary["failed"] else EXIT_OK


def cmd_merge(args) -> int:
    if args.merge_dir is None:
        raise UsageError("batch merge needs the output folder: `python -m app batch merge DIR`")
    expected = [i.rel for i in list_inputs(args.list_input)] if args.list_input else None
    try:
        summary = merge(args.merge_dir, expected, allow_mixed=args.allow_mixed_settings)
    except OutputError as exc:
        say(f"error: {exc}")
        return EXIT_FAILED
    except PartError as exc:
        raise UsageError(str(exc)) from None
    out = args.merge_dir
    say(
        f"{summary['images']} images ({summary['failed']} failed) from {summary['shards']} shard(s) -> "
        f"{out / 'merged.jsonl'}, {out / 'merged.csv'}, {out / 'summary.json'}",
        sys.stdout,
    )
    problems = 0
    for line in summary["left_out_lines"]:
        say(line)
        problems += 1
    for name in summary["missing_parts"]:
        say(f"missing part: {out / name} (that shard has not run)")
        problems += 1
    for name in summary.get("missing_images", ()):
        say(f"missing image: {name}")
        problems += 1
    if summary.get("missing") and "missing_images" not in summary:
        say(f"{summary['missing']} image(s) of {summary['expected']} not recorded")
        problems += 1
    for name, where in summary["duplicates"].items():
        say(f"duplicate: {name} in {', '.join(where)} (the first record is kept)")
        problems += 1
    if len(summary["settings"]) > 1:
        say(f"mixed settings (--allow-mixed-settings): {len(summary['settings'])}, listed in summary.json")
    return EXIT_FAILED if problems or summary["failed"] else EXIT_OK
