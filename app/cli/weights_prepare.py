"""`python -m app weights prepare`: make the weights volume ready before the server starts.

It runs as the pod's init container, so the server container never starts (and never crash-loops)
on a volume that is not ready:

- ``fetch`` downloads what is missing with :func:`app.engine.weights.fetch` (locked, verified, idempotent:
  verified files are skipped; a partial download resumes), retrying failed downloads at each poll
  until the deadline, and waits like ``verify`` for what it cannot download (custom files, which
  are not in the manifest). The deadline bounds each download too (see MIN_ATTEMPT_S).
- ``verify`` downloads nothing: it polls every few seconds, logging each missing, corrupt or
  unverified file, until every file of every REQUIRED model is present and verified.

Required vs optional: the files of ``Settings.required_models`` gate the exit status. Files of
enabled-but-optional models are reported (and fetched in fetch mode) but never waited for: the
server starts without an optional model and shows it as unavailable, so holding the pod back for it
would turn a degraded service into no service. Unverified files (not in the manifest: your own
models) count as present; their content is yours to vouch for.

``dest`` is where the weights volume is mounted in this container. Configured paths under
``OBJDET_WEIGHTS_DIR`` are looked for at the same relative path under ``dest``, so the init container
may mount the volume elsewhere than the server; paths outside ``OBJDET_WEIGHTS_DIR`` are checked as
they are.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..engine.config import Settings
from ..engine.weights import (
    CORRUPT,
    MANIFEST,
    MISSING,
    OK,
    UNVERIFIED,
    FetchError,
    FileCheck,
    check_file,
    configured_files,
    fetch,
    model_problems,
    settings_on,
)
from ..ops.terminal import printable

EXIT_READY, EXIT_NOT_READY = 0, 1
POLL_S = 5.0
# A download attempt gets the time left to the deadline, but at least this much (a deadline of 0 still
# means one real attempt), so fetch mode may overrun OBJDET_WEIGHTS_WAIT_S by up to this.
MIN_ATTEMPT_S = 60.0


@dataclass(frozen=True)
class Wanted:
    """One configured file, where this container sees it."""

    model: str
    role: str
    path: Path  # the path in this container (under dest)
    required: bool

    @property
    def fetchable(self) -> bool:
        return self.path.name in MANIFEST


def wanted_files(settings: Settings, dest: Path) -> list[Wanted]:
    """Every configured file of every enabled model, mapped from OBJDET_WEIGHTS_DIR onto ``dest``."""
    return [
        Wanted(model, role, path, model in settings.required_models)
        for model, role, path in configured_files(settings_on(settings, dest))
    ]


def _problems(on_dest: Settings, files: list[Wanted], checks: dict) -> dict[Wanted, list[str]]:
    """Each file's problems by ``model_problems`` (what ``weights verify`` reports too); a problem of the
    model's files together (e.g. a ``.weights`` shorter than its ``.cfg`` needs) goes to its weights file."""
    out: dict[Wanted, list[str]] = {w: [] for w in files}
    for model in on_dest.models:
        mine = {w.role: w for w in files if w.model == model}
        for role, problem in model_problems(on_dest, model, {r: checks[w] for r, w in mine.items()}):
            w = mine.get(role) or mine.get("weights") or next(iter(mine.values()))
            out[w].append(problem)
    return out


def prepare(
    settings: Settings,
    *,
    mode: str,
    dest: Path,
    wait_s: int,
    poll_s: float = POLL_S,
    out: TextIO | None = None,
    url_base: str | None = None,
) -> int:
    """Make the files ready (see the module docstring); 0 when every required file is ready, else 1.

    ``url_base`` is passed to :func:`app.engine.weights.fetch` (a mirror; tests point it at loopback).
    """
    out = out if out is not None else sys.stderr
    if mode not in ("fetch", "verify"):
        raise ValueError(f"mode must be fetch or verify, not {mode!r}")
    dest = Path(dest)
    on_dest = settings_on(settings, dest)
    files = wanted_files(settings, dest)
    deadline = time.monotonic() + max(0, wait_s)
    required = ", ".join(settings.required_models) or "none"
    _say(out, f"weights prepare: mode {mode}, volume {dest}, deadline {wait_s} s, required models: {required}")
    checker = _Checker()
    poll = 0
    while True:
        poll += 1
        if mode == "fetch":
            attempt_s = max(deadline - time.monotonic(), MIN_ATTEMPT_S)
            fatal = _fetch_missing(files, checker, url_base, attempt_s, out)
            if fatal:
                _say(out, fatal)
                return EXIT_NOT_READY
        checks = {w: checker(w) for w in files}
        problems = _problems(on_dest, files, checks)
        blocking = [w for w in files if w.required and problems[w]]
        if not blocking:
            _report_final(files, checks, problems, out)
            _say(out, "weights prepare: ready")
            return EXIT_READY
        remaining = deadline - time.monotonic()
        others = [w for w in files if w not in blocking and (problems[w] or checks[w].state != OK)]
        _say(
            out,
            f"poll {poll}: waiting for "
            + "; ".join(_describe(w, checks[w], problems[w]) for w in blocking)
            + (
                " | not waited for: " + "; ".join(_describe(w, checks[w], problems[w]) for w in others)
                if others
                else ""
            )
            + f" ({max(0, remaining):.0f} s left)",
        )
        if remaining <= 0:
            _say(out, _failure_paragraph(mode, dest, blocking, checks, problems))
            return EXIT_NOT_READY
        time.sleep(min(poll_s, max(remaining, 0.01)))


class _Checker:
    """check_file with memory: a file is hashed again only when its size or mtime changed (polling
    every few seconds must not re-read a 136 MB file each time)."""

    def __init__(self) -> None:
        self._seen: dict[Path, tuple[tuple[int, int], FileCheck]] = {}

    def __call__(self, w: Wanted) -> FileCheck:
        try:
            st = w.path.stat()
            stamp = (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = None
        known = self._seen.get(w.path)
        if stamp is not None and known and known[0] == stamp:
            return known[1]
        check = check_file(w.path, role=w.role)
        if stamp is not None:
            self._seen[w.path] = (stamp, check)
        return check


def _fetch_missing(
    files: list[Wanted], checker: _Checker, url_base: str | None, attempt_s: float, out: TextIO
) -> str | None:
    """One download attempt for every manifest file not yet verified; a fatal message or None.

    A failed download (network, HTTP error, bad hash) is logged and retried at the next poll (a
    partial file resumes). A volume that cannot be written is fatal: waiting would not fix it.
    """
    todo = [w for w in files if w.fetchable and checker(w).state != OK]
    for w in todo:
        problem = _unwritable(w.path.parent)
        if problem:
            return (
                f"error: cannot write {w.path.parent} ({problem}): in fetch mode the init container must "
                "mount the weights volume read-write (components/weights-fetch does), and the volume must "
                "be writable for uid 10001 (the pod's fsGroup)."
            )
        try:
            for name, what in fetch(
                [w.path.name], w.path.parent, progress=out, url_base=url_base, deadline_s=attempt_s
            ):
                _say(out, f"{name}: {what} -> {w.path}")
        except (FetchError, OSError) as exc:
            _say(out, f"{'error' if w.required else 'warning (optional model)'}: {exc}")
    return None


def _unwritable(folder: Path) -> str | None:
    """Why files cannot be written into ``folder`` (or its nearest existing parent), or None."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return "read-only or permission denied"
    return None


def _describe(w: Wanted, check: FileCheck, problems: list[str] = ()) -> str:
    what = {MISSING: "missing", CORRUPT: f"corrupt (sha256 {check.actual}, expected {check.expected})"}.get(
        check.state, check.describe()
    )
    others = [p for p in problems if p != check.describe()]  # a missing or corrupt file says so once
    return f"{w.path} ({w.model} {w.role}): {what}" + "".join(f"; {p}" for p in others)


def _report_final(files: list[Wanted], checks: dict, problems: dict, out: TextIO) -> None:
    for w in files:
        check = checks[w]
        if not w.required and (problems[w] or check.state != OK):
            _say(
                out,
                f"warning: {_describe(w, check, problems[w])}; {w.model} is optional, the server starts without it",
            )
        elif check.state == UNVERIFIED:
            _say(out, f"{w.path} ({w.model} {w.role}): present, not in the manifest (custom file, not verified)")


def _failure_paragraph(mode: str, dest: Path, blocking: list[Wanted], checks: dict, problems: dict) -> str:
    named = "; ".join(_describe(w, checks[w], problems[w]) for w in blocking)
    custom = [w for w in blocking if not w.fetchable]
    fetchable = [w for w in blocking if w.fetchable]
    fixes = []
    if fetchable and mode == "verify":
        fixes.append(
            "seed the volume: apply the weights-loader Job (components/weights-loader; Argo CD runs it "
            "as a sync hook, Flux with force) or set OBJDET_WEIGHTS_MODE=fetch where the pod may "
            "download (components/weights-fetch)"
        )
    if fetchable and mode == "fetch":
        fixes.append(
            "the downloads did not finish in time: check the errors above and the pod's egress "
            "(DNS and HTTPS), or raise OBJDET_WEIGHTS_WAIT_S; partial files resume on the next start"
        )
    if custom:
        fixes.append(
            "copy the custom files (" + ", ".join(w.path.name for w in custom) + ", not in the manifest, "
            "so nothing can download them) onto the volume with kubectl cp (docs/kubernetes.md)"
        )
    if any(checks[w].state == CORRUPT for w in blocking):
        fixes.append("a corrupt file must be replaced: delete it and seed again")
    if any(checks[w].state in (OK, UNVERIFIED) for w in blocking):
        fixes.append("a file that is present but not usable (see above) must be replaced or copied in whole")
    return (
        f"error: weights not ready after the deadline (OBJDET_WEIGHTS_WAIT_S) in {mode} mode on {dest}: "
        f"{named}. Fix: {'; '.join(fixes)}. The server container starts only when this succeeds."
    )


def _say(out: TextIO, line: str) -> None:
    out.write(printable(line) + "\n")
    out.flush()
