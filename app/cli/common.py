"""Command line: ``python -m app detect|weights|bench|serve``.

Exit status: 0 success, 1 a file or model failed (the others still ran), 2 usage error.
Only the modules a command needs are imported: ``detect --model yolo`` never imports torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .catalog import FAMILIES
from .config import ConfigError, Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
MODEL_CHOICES = (*FAMILIES, "all")


class UsageError(Exception):
    pass


def _positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (``bench --repeat 0`` has no median to report)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _parser() -> argparse.ArgumentParser:
    from .weights import DEFAULT_DEADLINE_S, DEFAULT_MIN_RATE, RATE_WINDOW_S

    p = argparse.ArgumentParser(prog="python -m app", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("detect", help="detect objects in image files")
    d.add_argument("images", nargs="+", metavar="IMAGE")
    d.add_argument(
        "--model", choices=MODEL_CHOICES, default="all", help="which detector (default: all enabled by OBJDET_MODELS)"
    )
    d.add_argument("--conf", type=float, default=0.3, help="score threshold (default 0.3)")
    d.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold (default 0.45)")
    d.add_argument("--classes", default="", help="comma list of labels to keep, e.g. person,cup")
    d.add_argument("--max-det", type=int, default=100, help="maximum detections per image (default 100)")
    d.add_argument("--out", type=Path, help="write annotated PNGs into this directory")
    d.add_argument("--json", action="store_true", help="print one JSON document")

    w = sub.add_parser("weights", help="fetch or verify model files")
    wsub = w.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    f = wsub.add_parser("fetch", help="download and verify manifest files (default: the configured ones)")
    f.add_argument("names", nargs="*", metavar="NAME")
    f.add_argument("--dest", type=Path, help="directory (default OBJDET_WEIGHTS_DIR)")
    f.add_argument("--all", action="store_true", help="every file in the manifest")
    f.add_argument("--mirror", help="fetch from this base URL instead of the upstream addresses")
    f.add_argument(
        "--deadline",
        type=float,
        default=DEFAULT_DEADLINE_S,
        metavar="SECONDS",
        help=f"give up after this long in all (default {DEFAULT_DEADLINE_S:.0f})",
    )
    f.add_argument(
        "--min-rate",
        type=int,
        default=DEFAULT_MIN_RATE,
        metavar="BYTES_PER_S",
        help=f"give up when fewer bytes a second than this arrive over {RATE_WINDOW_S:.0f} s "
        f"(default {DEFAULT_MIN_RATE})",
    )
    wsub.add_parser("verify", help="check the configured files against the manifest")
    pr = wsub.add_parser(
        "prepare",
        help="make the weights volume ready before the server starts (init "
        "container): OBJDET_WEIGHTS_MODE=fetch downloads what is missing, "
        "verify waits until every file is present and verified",
    )
    pr.add_argument("--mode", choices=("fetch", "verify"), help="default: OBJDET_WEIGHTS_MODE")
    pr.add_argument("--dest", type=Path, help="directory (default OBJDET_WEIGHTS_DIR)")
    pr.add_argument("--wait", type=int, metavar="SECONDS", help="deadline (default OBJDET_WEIGHTS_WAIT_S)")
    pr.add_argument("--mirror", help="fetch mode: download from this base URL instead of the upstream addresses")
    wsub.add_parser("list", help="print the manifest")
    cv = wsub.add_parser("convert", help="convert a Darknet .cfg + .weights to ONNX (how OpenCV 5 runs Darknet models)")
    cv.add_argument("cfg", type=Path, metavar="CFG")
    cv.add_argument("weights", type=Path, metavar="WEIGHTS")
    cv.add_argument("--out", type=Path, metavar="FILE.onnx", help="default: WEIGHTS with the suffix .onnx")

    b = sub.add_parser("bench", help="time raw framework calls against the full pipeline")
    b.add_argument("images", nargs="*", metavar="IMAGE")
    b.add_argument("--model", choices=MODEL_CHOICES, default="all")
    b.add_argument("--repeat", type=_positive_int, default=30, help="timed runs per image and variant (default 30)")
    b.add_argument("--json", action="store_true")
    b.add_argument(
        "--compare",
        action="store_true",
        help="compare engines, each variant in its own process, blocks rotated (README: Benchmarks)",
    )
    b.add_argument("--blocks", type=_positive_int, default=6, help="--compare: blocks per variant (default 6)")
    b.add_argument("--variants", help="--compare: comma list (default all: see app/bench_worker.py)")

    bt = sub.add_parser(
        "batch",
        help="detect over a folder, list or glob, sharded and resumable; "
        "`batch merge DIR` combines the parts (docs/batch.md)",
    )
    bt.add_argument(
        "input", metavar="INPUT", help="folder (walked recursively), text file of paths, or glob; or `merge`, then DIR"
    )
    bt.add_argument("merge_dir", nargs="?", type=Path, metavar="DIR", help="with `merge`: the output folder")
    bt.add_argument("--output", type=Path, help="folder for part-K-of-N.jsonl, its summary and annotated/")
    bt.add_argument("--model", choices=MODEL_CHOICES, default="all")
    bt.add_argument(
        "--shard",
        metavar="K/N",
        help="this shard of N, K from 0 (default: JOB_COMPLETION_INDEX and BATCH_SHARD_COUNT, else 0/1)",
    )
    bt.add_argument("--conf", type=float, default=0.3)
    bt.add_argument("--iou", type=float, default=0.45)
    bt.add_argument("--classes", default="")
    bt.add_argument("--max-det", type=int, default=100)
    bt.add_argument("--annotate", action="store_true", help="write annotated PNGs under OUTPUT/annotated/")
    bt.add_argument("--workers", type=_positive_int, help="images in flight (default: OBJDET_NUM_THREADS)")
    bt.add_argument(
        "--input",
        dest="list_input",
        metavar="INPUT",
        help="with `merge`: list INPUT again to name the images no part records",
    )

    ev = sub.add_parser(
        "eval",
        help="COCO metrics (AP, AP50, AR, per class) and speed of each model on labelled images (docs/evaluate.md)",
    )
    ev.add_argument("--annotations", type=Path, required=True, metavar="ANN.json", help="COCO detection file")
    ev.add_argument("--images", type=Path, required=True, metavar="DIR", help="folder of the files it names")
    ev.add_argument("--model", choices=MODEL_CHOICES, default="all")
    ev.add_argument("--conf", type=float, default=0.001, help="score floor the AP is computed from (default 0.001)")
    ev.add_argument(
        "--count-conf",
        type=float,
        default=0.3,
        help="score threshold of the per-image TP/FP/FN counts at IoU 0.5 (default 0.3)",
    )
    ev.add_argument("--json", action="store_true", help="print the metrics as one JSON document")
    ev.add_argument("--out", type=Path, help="write metrics.json, metrics.csv, per_image.csv and pr-MODEL.png here")

    sub.add_parser("serve", help="load models, then run the Streamlit app (health 200 = models ready)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print(f"python -m app {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`... --json | head`): stop quietly, and keep Python's shutdown flush
        # of stdout from printing a second BrokenPipeError.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


def _run(args) -> int:
    try:
        settings = Settings.from_env()
        if args.command == "detect":
            return cmd_detect(args, settings)
        if args.command == "weights":
            return cmd_weights(args, settings)
        if args.command == "bench":
            from .bench import run_bench, run_compare

            return run_compare(args, settings) if args.compare else run_bench(args, settings)
        if args.command == "batch":
            from .batch import cmd_batch

            return cmd_batch(args, settings)
        if args.command == "eval":
            from .evaluate import cmd_eval

            return cmd_eval(args, settings)
        if args.command == "serve":
            from .server import serve

            return serve(settings)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"python -m app {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    raise AssertionError(args.command)


def _params(args):
    from .result import DetectParams

    classes = frozenset(c.strip() for c in args.classes.split(",") if c.strip()) or None
    try:
        return DetectParams(conf=args.conf, iou=args.iou, classes=classes, max_det=args.max_det)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _models(choice: str, settings: Settings) -> list[str]:
    return list(settings.models) if choice == "all" else [choice]


def load_detectors(choice: str, settings: Settings) -> dict | None:
    """The chosen models' detectors (``--model``), or None after printing the one that cannot load (exit 1)."""
    from .detectors.base import ModelLoadError
    from .registry import get_detector

    detectors = {}
    for model in _models(choice, settings):
        try:
            detectors[model] = get_detector(model, settings)
        except ModelLoadError as exc:
            print(f"error: {model}: {exc}", file=sys.stderr)
            return None
    return detectors


def cmd_detect(args, settings: Settings) -> int:
    from .images import ImageError

    params = _params(args)
    detectors = load_detectors(args.model, settings)
    if detectors is None:
        return EXIT_FAILED
    for detector in detectors.values() if params.classes else ():
        try:
            detector.check_classes(params)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    out_problem = None
    if args.out:
        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # reported with each image: detection still runs
            cause = "it is a file, not a folder" if args.out.exists() else exc.strerror or str(exc)
            out_problem = f"cannot create the output folder {args.out} ({cause})"
    report, failed = [], 0
    for path in args.images:
        entry: dict = {"file": path}
        warnings: list[str] = []
        try:
            image, results = detect_file(path, detectors, params, settings, warnings)
            entry["results"] = [r.to_dict() for r in results.values()]
            if args.out:
                entry["annotated"] = _write_annotated(args.out, path, image, results, out_problem)
        except ImageError as exc:
            entry["error"], entry["error_kind"] = str(exc), "bad_image"  # serve's objdet_failures_total kind
        except AnnotatedNotWritten as exc:
            entry["error"] = f"{path}: annotated image not written: {exc}"
        if warnings:
            entry["warnings"] = warnings
        failed += "error" in entry
        report.append(entry)
        if not args.json:
            _print_human(entry)
    if args.json:
        json.dump({"images": report, "failed": failed, "params": params.to_dict()}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif failed:
        print(f"{failed} of {len(report)} files failed", file=sys.stderr)
    sys.stdout.flush()  # a closed pipe (`| head`) raises here, inside main's handler, not at exit
    return EXIT_FAILED if failed else EXIT_OK


def detect_file(path, detectors: dict, params, settings: Settings, warnings: list[str] | None = None, slot=None):
    """Load one image file and run every detector on it: ``(image, {model: result})``, boxes in the
    original's pixels. ``detect`` and ``batch`` share it; ``slot`` (a context manager, e.g.
    ``registry.inference_slots``) is held around the network runs only. Raises ``ImageError``."""
    from contextlib import nullcontext

    from .images import load_image, work_side, working_copy

    image = load_image(path, max_pixels=settings.max_image_pixels, max_bytes=settings.max_file_bytes, warnings=warnings)
    # The networks run on a copy of at most work_side pixels a side: memory follows that, not the input.
    small, factor = working_copy(image, work_side(d.input_size for d in detectors.values()))
    size = (image.shape[1], image.shape[0])
    with slot if slot is not None else nullcontext():
        results = {m: detector.detect(small, params).rescaled(factor, size) for m, detector in detectors.items()}
    return image, results


class AnnotatedNotWritten(Exception):
    """The detections are good but the annotated PNG could not be written; str() says where and why."""


def _write_annotated(out_dir: Path, path: str, image, results, out_problem: str | None = None) -> list[str]:
    from .annotate import annotate, to_png

    if out_problem:
        raise AnnotatedNotWritten(out_problem)
    written = []
    for model, result in results.items():
        target = out_dir / f"{Path(path).stem}.{model}.png"
        try:
            target.write_bytes(to_png(annotate(image, result)))
        except OSError as exc:
            raise AnnotatedNotWritten(f"cannot write {target} ({exc.strerror or exc})") from None
        written.append(str(target))
    return written


def _print_human(entry: dict) -> None:
    for warning in entry.get("warnings", ()):
        print(f"{entry['file']}: warning: {warning}", file=sys.stderr)
    for res in entry.get("results", ()):
        total = sum(res["timings_ms"].values())
        found = ", ".join(f"{d['label']} {d['score']:.2f}" for d in res["detections"]) or "nothing"
        print(f"{entry['file']}  [{res['model']}] {found}  ({total:.1f} ms)")
    if "error" in entry:
        print(f"{entry['file']}: ERROR {entry['error']}", file=sys.stderr)


def cmd_weights(args, settings: Settings) -> int:
    from .weights import (
        CORRUPT,
        MANIFEST,
        MISSING,
        FetchError,
        check_file,
        configured_files,
        default_names,
        fetch,
        weights_dir_problem,
    )

    if args.weights_command == "convert":
        from .darknet_onnx import cmd_convert

        return cmd_convert(args.cfg, args.weights, args.out)
    if args.weights_command == "list":
        for e in MANIFEST.values():
            print(f"{e.name:52} {e.model:5} {e.sha256[:16]:16} {e.url}")
        return EXIT_OK
    if args.weights_command == "verify":
        bad = 0
        problem = weights_dir_problem(settings.weights_dir)
        if problem:
            print(f"weights folder: {problem}", file=sys.stderr)
        for model, role, path in configured_files(settings):
            check = check_file(path, role)
            bad += check.state in (MISSING, CORRUPT)
            print(
                f"{model:5} {role:8} {check.state.upper() if check.state == 'OK' else check.state:10} {path}  "
                f"{check.describe()}"
            )
        for model in settings.models:  # the hash says "published file"; these say "the files belong together"
            for role, problem in FAMILIES[model].file_problems(settings):
                bad += 1
                print(f"{model:5} {role:8} {'mismatch':10} {problem}")
        if bad:
            print(
                f"{bad} file(s) missing or corrupt: run `python -m app weights fetch` or fix the OBJDET_* paths",
                file=sys.stderr,
            )
        return EXIT_FAILED if bad else EXIT_OK
    if args.weights_command == "prepare":
        from .prepare import prepare

        return prepare(
            settings,
            mode=args.mode or settings.weights_mode,
            dest=args.dest or settings.weights_dir,
            wait_s=settings.weights_wait_s if args.wait is None else args.wait,
            url_base=args.mirror,
        )
    names = list(MANIFEST) if args.all else (args.names or default_names(settings))
    unknown = [n for n in names if n not in MANIFEST]
    if unknown:
        raise UsageError(f"not in the manifest: {', '.join(unknown)}; known: {', '.join(MANIFEST)}")
    if not names:
        print("nothing to fetch: no configured file is in the manifest (custom files are yours to place)")
        return EXIT_OK
    dest = args.dest or settings.weights_dir
    try:
        if args.deadline <= 0 or args.min_rate < 0:
            raise UsageError("--deadline must be above 0 and --min-rate at least 0")
        for name, what in fetch(names, dest, url_base=args.mirror, deadline_s=args.deadline, min_rate=args.min_rate):
            print(f"{name}: {what} -> {Path(dest) / name}")
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
