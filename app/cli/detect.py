"""``python -m app detect IMAGE...``: every chosen model on each file, a line (or one JSON document) per
file, annotated PNGs on request. A file that fails is reported and the others still run (exit 1)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..engine.config import Settings
from .common import EXIT_FAILED, EXIT_OK, UsageError, detect_file, detect_params, full_image, load_detectors, say


def cmd_detect(args, settings: Settings) -> int:
    from ..engine.images import ImageError

    params = detect_params(args)
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
            _, results = detect_file(path, detectors, params, settings, warnings)
            entry["results"] = [r.to_dict() for r in results.values()]
            if args.out:
                entry["annotated"] = _write_annotated(args.out, path, settings, results, out_problem)
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
        say(f"{failed} of {len(report)} files failed")
    sys.stdout.flush()  # a closed pipe (`| head`) raises here, inside main's handler, not at exit
    return EXIT_FAILED if failed else EXIT_OK


class AnnotatedNotWritten(Exception):
    """The detections are good but the annotated PNG could not be written; str() says where and why."""


def _write_annotated(out_dir: Path, path: str, settings, results, out_problem: str | None = None) -> list[str]:
    from ..engine.annotate import annotate, to_png

    if out_problem:
        raise AnnotatedNotWritten(out_problem)
    image = full_image(path, settings)
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
        say(f"{entry['file']}: warning: {warning}")
    for res in entry.get("results", ()):
        total = sum(res["timings_ms"].values())
        found = ", ".join(f"{d['label']} {d['score']:.2f}" for d in res["detections"]) or "nothing"
        say(f"{entry['file']}  [{res['model']}] {found}  ({total:.1f} ms)", sys.stdout)
    if "error" in entry:  # the message names the file already
        say(f"error: {entry['error']}")
