"""``python -m app weights list|fetch|verify|prepare|convert``: the model files, from the manifest to the
volume the server reads."""

from __future__ import annotations

import sys
from pathlib import Path

from ..engine.config import Settings
from .common import EXIT_FAILED, EXIT_OK, UsageError, say


def cmd_weights(args, settings: Settings) -> int:
    actions = {"convert": _convert, "list": _list, "verify": _verify, "prepare": _prepare, "fetch": _fetch}
    return actions[args.weights_command](args, settings)


def _convert(args, settings: Settings) -> int:
    from ..engine.detectors.darknet_onnx import cmd_convert

    return cmd_convert(args.cfg, args.weights, args.out)


def _list(args, settings: Settings) -> int:
    from ..engine.weights import MANIFEST

    for e in MANIFEST.values():
        say(f"{e.name:52} {e.model:5} {e.sha256[:16]:16} {e.url}", sys.stdout)
    return EXIT_OK


def _verify(args, settings: Settings) -> int:
    from ..engine.weights import check_file, model_problems, weights_dir_problem

    bad = 0
    problem = weights_dir_problem(settings.weights_dir)
    if problem:
        say(f"weights folder: {problem}")
    for model in settings.models:
        files = settings.model_files(model)
        checks = {role: check_file(path, role) for role, path in files.items()}
        for role, path in files.items():
            check = checks[role]
            say(
                f"{model:5} {role:8} {check.state.upper() if check.state == 'OK' else check.state:10} {path}  "
                f"{check.describe()}",
                sys.stdout,
            )
        for role, problem in model_problems(settings, model, checks):  # the one test `weights prepare` uses too
            bad += 1
            if role not in checks:
                say(f"{model:5} {role:8} {'mismatch':10} {problem}", sys.stdout)
            elif problem != checks[role].describe():  # missing or corrupt is on the file's line already
                say(f"{model:5} {role:8} {'link':10} {problem}", sys.stdout)
    if bad:
        say(f"{bad} file(s) missing or corrupt: run `python -m app weights fetch` or fix the OBJDET_* paths")
    return EXIT_FAILED if bad else EXIT_OK


def _prepare(args, settings: Settings) -> int:
    from .weights_prepare import prepare

    return prepare(
        settings,
        mode=args.mode or settings.weights_mode,
        dest=args.dest or settings.weights_dir,
        wait_s=settings.weights_wait_s if args.wait is None else args.wait,
        url_base=args.mirror,
    )


def _fetch(args, settings: Settings) -> int:
    from ..engine.weights import MANIFEST, FetchError, default_names, fetch

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
            say(f"{name}: {what} -> {Path(dest) / name}", sys.stdout)
    except FetchError as exc:
        say(f"error: {exc}")
        return EXIT_FAILED
    return EXIT_OK
