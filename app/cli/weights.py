"""``python -m app weights list|fetch|verify|prepare|convert``: the model files, from the manifest to the
volume the server reads."""

from __future__ import annotations

import sys
from pathlib import Path

from ..engine.catalog import FAMILIES
from ..engine.config import Settings
from .common import EXIT_FAILED, EXIT_OK, UsageError, say


def cmd_weights(args, settings: Settings) -> int:
    actions = {"convert": _convert, "list": _list, "verify": _verify, "prepare": _prepare, "fetch": _fetch}
    return actions[args.weights_command](args, settings)


def _convert(args, settings: Settings) -> int:
    from ..engine.detectors.darknet_onnx import cmd_convert

    return cmd_convert(args.cfg, args.weights, args.out)


def _list(args, settings: Settings) -> int:
    """The manifest as a table, with whether each file is in the weights folder and which ones the configured
    models read (``weights verify`` checks their hashes)."""
    from ..engine.weights import MANIFEST

    configured = {path.name for model in settings.models for path in settings.model_files(model).values()}
    folder = settings.weights_dir
    print(f"{'file':52} {'model':5} {'here':7} {'used':4} {'sha256':16} url")
    for e in MANIFEST.values():
        here = "present" if (folder / e.name).is_file() else "-"
        used = "yes" if e.name in configured else "-"
        say(f"{e.name:52} {e.model:5} {here:7} {used:4} {e.sha256[:16]:16} {e.url}", sys.stdout)
    print(
        f"here: in {folder} (OBJDET_WEIGHTS_DIR); used: read by the configured models (OBJDET_MODELS and the "
        "OBJDET_* paths). `python -m app weights fetch` gets the used ones, `weights verify` checks them.",
        file=sys.stderr,
    )
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
                f"{model:5} {role:8} {check.state:10} {path}  {check.evidence()}",
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
    if args.deadline <= 0 or args.min_rate < 0:
        raise UsageError("--deadline must be above 0 and --min-rate at least 0")
    dest = args.dest or settings.weights_dir
    if args.keep_going:
        return _fetch_each(names, dest, args, settings)
    try:  # "already present and verified, skipped" is said by fetch itself
        for name, what in fetch(names, dest, url_base=args.mirror, deadline_s=args.deadline, min_rate=args.min_rate):
            if what == "fetched":
                say(f"{name}: fetched and verified -> {Path(dest) / name}", sys.stdout)
    except FetchError as exc:
        say(f"error: {exc}")
        return EXIT_FAILED
    return EXIT_OK


def _fetch_each(names: list[str], dest: Path, args, settings: Settings) -> int:
    """``--keep-going`` (``make run``): every file that can be fetched is; a model whose server cannot be reached
    (offline) gets one calm line saying the app starts without it. Any other failure is an error (exit 1)."""
    from urllib.parse import urlsplit

    from ..engine.weights import MANIFEST, FetchError, fetch

    offline: dict[str, str] = {}  # model -> the host it could not reach
    failed = 0
    for name in names:
        model = MANIFEST[name].model
        if model in offline:
            continue  # one line per model, not per file
        try:
            for _, what in fetch([name], dest, url_base=args.mirror, deadline_s=args.deadline, min_rate=args.min_rate):
                if what == "fetched":
                    say(f"{name}: fetched and verified -> {Path(dest) / name}", sys.stdout)
        except FetchError as exc:
            if exc.unreachable:
                offline[model] = urlsplit(args.mirror or MANIFEST[name].url).hostname or "its server"
            else:
                say(f"error: {exc}")
                failed += 1
    for model, host in offline.items():
        others = [FAMILIES[m].label for m in settings.models if m not in offline]
        starts = f"the app starts with {' and '.join(others)}" if others else "the app starts without a model"
        print(
            f"{FAMILIES[model].label} weights not available offline ({host} cannot be reached): {starts}; "
            "to add them later see docs/models.md"
        )
    return EXIT_FAILED if failed else EXIT_OK
