"""Video jobs: how many run at once in one server process, where their temporary files go, and how large
those files may grow.

A video job writes the upload, the full-size MP4 and the WebM to disk while it runs. In Kubernetes that
disk is an emptyDir with a ``sizeLimit``, and a pod whose emptyDir outgrows its limit is evicted, which
ends every session on it. So the Deployment gives video its own volume (``OBJDET_VIDEO_SCRATCH_DIR``)
sized for ``OBJDET_VIDEO_JOBS`` x ``OBJDET_VIDEO_SCRATCH_MB``, and this module keeps the app inside it:
a job beyond the cap is refused at once with a "busy, try again" message (:class:`VideoBusy`), and
:func:`app.engine.video.process_video` stops a job whose files reach its share (with a note).

Standard library only: ``app.engine.config`` declares these variables (``ENV_VARS``) and validates them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .catalog import EnvVar

DEFAULT_JOBS = 2
DEFAULT_SCRATCH_MB = 320
ENV_VARS = (
    EnvVar(
        "OBJDET_VIDEO_JOBS",
        str(DEFAULT_JOBS),
        "integer 1-64",
        "Videos one server process works on at once; one more is refused with a message to try again "
        "(its temporary files would not fit the scratch volume).",
    ),
    EnvVar(
        "OBJDET_VIDEO_SCRATCH_DIR",
        "(the system temp folder)",
        "directory",
        "Where a video job writes its temporary files (the upload, the full-size MP4, the WebM); the "
        "Deployment mounts a bounded emptyDir of its own there, apart from `/tmp` and the model cache.",
    ),
    EnvVar(
        "OBJDET_VIDEO_SCRATCH_MB",
        str(DEFAULT_SCRATCH_MB),
        "integer 16-65536",
        "MiB of temporary files one video job may write: an upload over half of it is refused, and processing "
        "stops (with a note) before the files grow past it. The scratch volume holds jobs x this.",
    ),
)


class VideoBusy(RuntimeError):
    """Every video slot of this process is taken; str() is the message for the user."""


@dataclass(frozen=True)
class VideoLimits:
    jobs: int = DEFAULT_JOBS
    scratch_dir: Path | None = None  # None: the system temp folder
    scratch_mb: int = DEFAULT_SCRATCH_MB

    @property
    def scratch_bytes(self) -> int:
        return self.scratch_mb * 2**20

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> VideoLimits:
        """The limits from the environment; ``ValueError`` names the variable and what is allowed."""
        raw = (env.get("OBJDET_VIDEO_SCRATCH_DIR") or "").strip()
        return cls(
            jobs=_int(env, "OBJDET_VIDEO_JOBS", 1, 64, DEFAULT_JOBS),
            scratch_dir=Path(raw).expanduser() if raw else None,
            scratch_mb=_int(env, "OBJDET_VIDEO_SCRATCH_MB", 16, 65536, DEFAULT_SCRATCH_MB),
        )


def _int(env: Mapping[str, str], name: str, low: int, high: int, default: int) -> int:
    raw = (env.get(name) or "").strip().strip("'\"")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer; allowed: {low}-{high}") from None
    if not low <= value <= high:
        raise ValueError(f"{name}={raw!r} is out of range; allowed: {low}-{high}")
    return value


class JobGate:
    """At most ``jobs`` video jobs at once; one more is refused, not queued (a queued job would hold its
    upload in memory and its user's page for minutes without saying why)."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self._lock = threading.Lock()
        self._running = 0

    @property
    def running(self) -> int:
        return self._running

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._lock:
            if self._running >= self.jobs:
                raise VideoBusy(busy_message(self.jobs))
            self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1


def busy_message(jobs: int) -> str:
    return (
        f"The server is busy: it is already processing {jobs} video{'s' if jobs != 1 else ''}, as many as one "
        f"server process takes at once (OBJDET_VIDEO_JOBS={jobs}). Try again in a minute; your upload is kept."
    )


_GATES: dict[int, JobGate] = {}
_GATES_LOCK = threading.Lock()


def gate(limits: VideoLimits) -> JobGate:
    """The process-wide gate for ``limits.jobs`` (every session of the process shares it)."""
    with _GATES_LOCK:
        return _GATES.setdefault(limits.jobs, JobGate(limits.jobs))
