"""Weights you can trust: a manifest of known model files, a verifying fetch and a verify report.

``fetch`` downloads into ``NAME.part`` beside the destination while hashing, resumes a partial
download with an HTTP Range request, and renames into place only after the hash matches. An
exclusive lock on ``NAME.lock`` serialises processes fetching into one shared volume, so none of
them ever sees a half-written file; a file already verified is skipped.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import http.client
import os
import socket
import stat
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .catalog import FAMILIES, published_files
from .config import Settings


@dataclass(frozen=True)
class ManifestEntry:
    """A known model file. ``sha256`` is the full digest, or torchvision's published prefix."""

    name: str  # the file name, as written into the weights directory
    url: str
    sha256: str
    model: str  # which model family uses it
    size: int | None = None

    @property
    def prefix_only(self) -> bool:
        return len(self.sha256) < 64


# Every family's published files (app/engine/catalog.py), by file name.
MANIFEST: dict[str, ManifestEntry] = {
    name: ManifestEntry(f.name, f.url, f.sha256, model, f.size) for name, (model, f) in published_files().items()
}

OK, MISSING, CORRUPT, UNVERIFIED = "OK", "missing", "corrupt", "unverified"


class FetchError(RuntimeError):
    """A download failed or did not match its manifest hash; nothing was left in place. ``unreachable``: the
    server could not be reached at all (no network, no DNS, refused): expected offline, not a fault of the file."""

    def __init__(self, message: str, unreachable: bool = False):
        super().__init__(message)
        self.unreachable = unreachable


@dataclass(frozen=True)
class FileCheck:
    """The state of one configured file, as ``weights verify`` and the app's status panel show it."""

    role: str
    path: Path
    state: str  # OK / missing / corrupt / unverified
    expected: str | None = None
    actual: str | None = None
    detail: str = ""  # why it is missing ("is a directory", ...), or that it is a symbolic link

    def describe(self) -> str:
        return self._describe() + (f"; {self.detail}" if self.detail else "")

    def evidence(self) -> str:
        """What backs the state, without repeating it (beside a state column): the hash that matched or did not,
        why the file is missing, the link it is."""
        if self.state == CORRUPT:
            said = f"expected sha256 {self.expected}, actual {self.actual}"
        elif self.state == UNVERIFIED:
            said = f"not in the manifest; sha256 {self.actual}"
        elif self.state == MISSING:
            return self.detail or "not found"
        else:
            said = f"{'prefix' if self.expected and len(self.expected) < 64 else 'sha256'} {self.expected}"
        return said + (f"; {self.detail}" if self.detail else "")

    def _describe(self) -> str:
        if self.state == CORRUPT:
            return f"corrupt: expected sha256 {self.expected}, actual {self.actual}"
        if self.state == UNVERIFIED:
            return f"unverified: not in the manifest (sha256 {self.actual})"
        if self.state == MISSING:
            return "missing"
        kind = "prefix" if self.expected and len(self.expected) < 64 else "sha256"
        return f"OK ({kind} {self.expected})"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def matches(entry: ManifestEntry, digest: str) -> bool:
    return digest.startswith(entry.sha256) if entry.prefix_only else digest == entry.sha256


def check_file(path: Path, role: str = "weights") -> FileCheck:
    """Compare a file with the manifest entry of the same file name."""
    path = Path(path)
    entry = MANIFEST.get(path.name)
    expected = entry.sha256 if entry else None
    if not path.is_file():
        return FileCheck(role, path, MISSING, expected, detail=missing_reason(path))
    try:
        actual = sha256_file(path)
    except OSError as exc:
        return FileCheck(role, path, MISSING, expected, detail=f"cannot be read ({exc.strerror or exc})")
    link = link_note(path)
    if entry is None:
        return FileCheck(role, path, UNVERIFIED, None, actual, detail=link)
    return FileCheck(role, path, OK if matches(entry, actual) else CORRUPT, expected, actual, detail=link)


def missing_reason(path: Path) -> str:
    """Why ``path`` is not a readable file, in words a user can act on."""
    path = Path(path)
    if path.is_dir():
        return "is a directory, not a file"
    if path.exists():
        return "is not a regular file (a FIFO, socket or device)"
    if path.is_symlink():
        return f"is a broken symbolic link to {os.readlink(path)}"
    child = path
    for folder in path.parents:
        if folder.exists():
            if not folder.is_dir():
                return f"{folder} is a file, not a folder"
            return "file not found" if child == path else f"folder {child} does not exist"
        child = folder
    return "file not found"


def link_note(path: Path) -> str:
    """Symbolic-link policy: a link is followed when reading, and reported (with a warning when it
    leads outside the folder it sits in, e.g. a weights volume pointing at a host path)."""
    path = Path(path)
    if not path.is_symlink():
        return ""
    real = Path(os.path.realpath(path))
    inside = real.is_relative_to(Path(os.path.realpath(path.parent)))
    return f"symbolic link to {real}" + ("" if inside else ", outside its folder")


def link_problem(path: Path, weights_dir: Path) -> str | None:
    """A file inside the weights folder that is a symbolic link leading out of it: the volume holds only the
    link, so another container mounting the volume (the server, after the init container) may not have
    its target. Files configured outside the weights folder are the operator's choice, not checked here."""
    path, root = Path(path), Path(os.path.realpath(weights_dir))
    if not path.is_symlink() or not Path(os.path.realpath(path.parent)).is_relative_to(root):
        return None
    real = Path(os.path.realpath(path))
    if real.is_relative_to(root):
        return None
    return (
        f"{path} is a symbolic link to {real}, outside the weights folder {weights_dir}: another container "
        "mounting the volume does not have it; copy the file onto the volume"
    )


def settings_on(settings: Settings, dest: Path) -> Settings:
    """``settings`` as a container that mounts the weights volume at ``dest`` sees them: every configured
    path under ``OBJDET_WEIGHTS_DIR`` moved under ``dest`` (the init container's mount), the others kept."""
    import dataclasses

    moved = {"weights_dir": Path(dest)}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if f.name != "weights_dir" and isinstance(value, Path) and value.is_relative_to(settings.weights_dir):
            moved[f.name] = Path(dest) / value.relative_to(settings.weights_dir)
    return dataclasses.replace(settings, **moved)


def model_problems(settings: Settings, model: str, checks: dict[str, FileCheck]) -> list[tuple[str, str]]:
    """(role, problem) for every reason ``model``'s files cannot serve, given ``checks`` (role -> its
    ``check_file``): missing or corrupt, a link out of the weights folder, files that do not belong together
    (the family's own check, e.g. a Darknet ``.weights`` cut short of what its ``.cfg`` needs, custom files
    too). ``weights verify`` and ``weights prepare`` both decide with this, so they cannot disagree."""
    problems = []
    for role, path in settings.model_files(model).items():
        check = checks[role]
        if check.state in (MISSING, CORRUPT):
            problems.append((role, check.describe()))
        link = link_problem(path, settings.weights_dir)
        if link:
            problems.append((role, link))
    problems.extend(FAMILIES[model].file_problems(settings))
    return problems


def weights_dir_problem(folder: Path) -> str | None:
    """What is wrong with the weights folder (OBJDET_WEIGHTS_DIR), or None. ``fetch`` creates a missing one."""
    folder = Path(folder)
    if folder.is_dir():
        return None
    if folder.exists():
        return f"OBJDET_WEIGHTS_DIR={folder} is a file, not a folder"
    return f"OBJDET_WEIGHTS_DIR={folder} does not exist (`python -m app weights fetch` creates it)"


def configured_files(settings: Settings, models: Iterable[str] | None = None) -> list[tuple[str, str, Path]]:
    """(model, role, path) of every file the enabled models read."""
    out = []
    for model in models or settings.models:
        for role, path in settings.model_files(model).items():
            out.append((model, role, path))
    return out


def default_names(settings: Settings) -> list[str]:
    """Manifest names of the configured files (what a bare ``weights fetch`` downloads)."""
    return [path.name for _, _, path in configured_files(settings) if path.name in MANIFEST]


DEFAULT_DEADLINE_S = 3600.0  # a whole `weights fetch` call; the largest file is 136 MB
DEFAULT_MIN_RATE = 10_000  # bytes/s over RATE_WINDOW_S: slower than this is a stuck mirror, not a slow link
RATE_WINDOW_S = 30.0


def check_mirror(url_base: str) -> str:
    """A mirror must be an http(s) URL with a host; raises ``FetchError`` naming the value."""
    parts = urllib.parse.urlsplit(url_base.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(
            f"--mirror {url_base!r} is not a URL: it needs http:// or https:// and a host, "
            "e.g. https://mirror.example.com/models"
        )
    return url_base.strip()


def check_dest(dest: Path) -> Path:
    """Create ``dest`` if needed; refuse a file, a folder that cannot be created or written."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise FetchError(
            f"destination {dest} is a file, not a folder; pass --dest a folder (or point OBJDET_WEIGHTS_DIR at one)"
        )
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetchError(f"destination {dest}: cannot create the folder ({exc.strerror or exc})") from None
    if not os.access(dest, os.W_OK | os.X_OK):
        raise FetchError(f"destination {dest}: the folder is not writable (permission denied)")
    return dest


def fetch(
    names: Iterable[str],
    dest: Path,
    progress: TextIO | None = sys.stderr,
    timeout: float = 60.0,
    url_base: str | None = None,
    *,
    deadline_s: float | None = DEFAULT_DEADLINE_S,
    min_rate: int = DEFAULT_MIN_RATE,
    rate_window_s: float = RATE_WINDOW_S,
) -> list[tuple[str, str]]:
    """Download and verify manifest files into ``dest``; returns (name, "fetched"|"skipped") pairs.

    ``url_base`` replaces the directory part of each URL (a mirror); it is how tests point the real
    download code at a server on loopback. A download fails (keeping its ``.part`` to resume) when
    fewer than ``min_rate * rate_window_s`` bytes arrive in any ``rate_window_s`` window, when no
    byte arrives for ``timeout`` seconds, or when the whole call runs past ``deadline_s``.
    """
    if url_base is not None:
        url_base = check_mirror(url_base)
    dest = check_dest(dest)
    limits = _Limits(timeout, None if deadline_s is None else time.monotonic() + deadline_s, min_rate, rate_window_s)
    done = []
    for name in names:
        entry = MANIFEST.get(name)
        if entry is None:
            raise FetchError(f"{name}: not in the weights manifest; known: {', '.join(MANIFEST)}")
        url = entry.url if url_base is None else url_base.rstrip("/") + "/" + name
        done.append((name, _fetch_one(entry, url, dest, progress, limits)))
    return done


@dataclass(frozen=True)
class _Limits:
    timeout: float  # seconds without a byte
    deadline: float | None  # time.monotonic() by which everything must be done
    min_rate: int
    window: float

    def socket_timeout(self) -> float:
        if self.deadline is None:
            return self.timeout
        return max(0.1, min(self.timeout, self.deadline - time.monotonic()))


class _Watchdog:
    """Holds the deadline and the minimum rate from the connection's first byte. ``http.client`` reads the
    status line and headers in a loop of its own, one ``recv`` after another, where ``_Pacer`` never gets
    control: a server that trickles them a byte at a time never trips the per-``recv`` timeout. This thread
    shuts the socket down (the blocked read then ends) when the deadline passes, or when the status line and
    headers are not complete within one rate window (a few hundred bytes in ``window`` seconds is far below
    any minimum rate; with ``min_rate`` 0 only the deadline holds)."""

    POLL_S = 0.1

    def __init__(self, limits: _Limits):
        self.limits = limits
        self.started = time.monotonic()
        self.sock: socket.socket | None = None
        self.headers_done = False
        self.reason: str | None = None  # why it cut the connection: "deadline" or "headers"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="objdet-fetch-watchdog", daemon=True)

    def __enter__(self) -> _Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _expired(self) -> str | None:
        now, limits = time.monotonic(), self.limits
        if limits.deadline is not None and now > limits.deadline:
            return "deadline"
        if not self.headers_done and limits.min_rate > 0 and now - self.started > limits.window:
            return "headers"
        return None

    def _watch(self) -> None:
        while not self._stop.wait(self.POLL_S):
            reason = self._expired()
            if reason and self.sock is not None:
                self.reason = reason
                with contextlib.suppress(OSError):  # the raw socket under TLS too: its blocked read ends
                    socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
                return

    def opener(self) -> urllib.request.OpenerDirector:
        """An opener whose connections report their socket here."""
        watchdog = self

        def watched(base):
            class Connection(base):
                def connect(self):
                    super().connect()
                    watchdog.sock = self.sock

            return Connection

        class HTTP(urllib.request.HTTPHandler):
            def http_open(self, req):
                return self.do_open(watched(http.client.HTTPConnection), req)

        class HTTPS(urllib.request.HTTPSHandler):
            def https_open(self, req):
                return self.do_open(watched(http.client.HTTPSConnection), req, context=self._context)

        return urllib.request.build_opener(HTTP, HTTPS)

    def failure(self, entry: ManifestEntry, url: str, part: Path, received: int) -> FetchError:
        if self.reason == "headers":
            return FetchError(
                f"{entry.name}: {url} sent its status line and headers too slowly (not complete after "
                f"{self.limits.window:.0f} s, below the minimum of {self.limits.min_rate:,} bytes/s); "
                "nothing was installed: try again or use --mirror"
            )
        return FetchError(
            f"{entry.name}: download from {url} ran past its deadline with {received:,} bytes "
            f"received; kept them in {part}: run the command again to resume"
        )


class _RangeRefused(Exception):
    """HTTP 416 on a resume: the .part is already as long as the file (or longer), yet wrong."""


def _fetch_one(entry: ManifestEntry, url: str, dest: Path, progress: TextIO | None, limits: _Limits) -> str:
    target = dest / entry.name
    part = dest / f".{entry.name}.part"
    with _locked(dest / f".{entry.name}.lock"):
        if target.is_file() and matches(entry, sha256_file(target)):
            _say(progress, f"{entry.name}: already present and verified, skipped\n")
            return "skipped"
        if target.is_symlink():
            raise FetchError(
                f"{entry.name}: {target} is a symbolic link to {os.path.realpath(target)} that does "
                "not hold the published file; fetch does not replace links: remove the link or "
                "fetch into another folder"
            )
        for _attempt in (1, 2):
            try:
                return _download(entry, url, dest, target, part, progress, limits)
            except _RangeRefused:
                # A full-length (or longer) .part that failed the hash: resuming can never work.
                part.unlink(missing_ok=True)
                _say(
                    progress,
                    f"{entry.name}: the server has no bytes past the {part.name} left from an earlier "
                    "attempt (HTTP 416), so that file is complete but wrong: deleted it, starting over\n",
                )
        raise FetchError(
            f"{entry.name}: {url} answered HTTP 416 (Range Not Satisfiable) to a fresh download; "
            "the server is misbehaving, nothing was installed"
        )


@dataclass
class _Transfer:
    """One download's state: where it resumes, what has arrived, the running hash of the part file."""

    offset: int = 0
    received: int = 0
    digest: Any = field(default_factory=hashlib.sha256)


def _download(
    entry: ManifestEntry, url: str, dest: Path, target: Path, part: Path, progress: TextIO | None, limits: _Limits
) -> str:
    state = _resume(entry, part)
    if state.offset and matches(entry, state.digest.hexdigest()):  # complete, but not yet renamed
        return _install(part, target, dest)
    # S310 (URL schemes): the URL is a manifest https address or a --mirror that check_mirror limits to http(s).
    request = urllib.request.Request(url, headers={"User-Agent": "objdet-weights/1"})  # noqa: S310
    if state.offset:
        request.add_header("Range", f"bytes={state.offset}-")
    with _Watchdog(limits) as watchdog:
        try:
            with watchdog.opener().open(request, timeout=limits.socket_timeout()) as response:
                watchdog.headers_done = True
                total = _receive(response, entry, url, part, state, progress, limits)
            if total is not None and state.received < total:
                raise FetchError(
                    f"{entry.name}: download from {url} ended after {state.received:,} of {total:,} bytes "
                    f"(the connection closed early); kept them in {part}: run the command again to resume"
                )
        except (OSError, http.client.HTTPException) as exc:  # urllib's errors, timeouts and writes are OSErrors
            if watchdog.reason:
                raise watchdog.failure(entry, url, part, state.received) from None
            raise _failure(exc, entry, url, part, state) from None
        except FetchError:
            if watchdog.reason:
                raise watchdog.failure(entry, url, part, state.received) from None
            raise
    actual = state.digest.hexdigest()
    if not matches(entry, actual):
        part.unlink(missing_ok=True)
        raise FetchError(
            f"{entry.name}: downloaded file is corrupt: expected sha256 {entry.sha256}, "
            f"got {actual}; removed it, nothing was installed"
        )
    return _install(part, target, dest)


def _resume(entry: ManifestEntry, part: Path) -> _Transfer:
    """Where a download starts: after the bytes a part file already holds (hashed), else at 0."""
    state = _Transfer(offset=_part_size(part))
    if entry.size is not None and state.offset > entry.size:  # longer than the file can be: never resumable
        part.unlink()
        state.offset = 0
    if state.offset:
        with open(part, "rb") as fh:  # resume: the hash must cover the bytes already there
            while block := fh.read(1 << 20):
                state.digest.update(block)
    state.received = state.offset
    return state


def _receive(response, entry, url: str, part: Path, state: _Transfer, progress, limits: _Limits) -> int | None:
    """Append the response's body to the part file (hashed, paced, bounded by the published size); returns
    the total size the file should reach (None: unknown)."""
    if state.offset and response.status != 206:  # server ignored Range: start again
        state.offset = state.received = 0
        state.digest = hashlib.sha256()
    length = response.headers.get("Content-Length")
    total = state.offset + int(length) if length and length.isdigit() else entry.size
    if entry.size is not None and total is not None and total > entry.size:
        part.unlink(missing_ok=True)
        raise FetchError(
            f"{entry.name}: {url} offers {total:,} bytes but the published file has "
            f"{entry.size:,}; not downloading it (wrong file or a misconfigured mirror)"
        )
    with _open_part(part, append=bool(state.offset)) as out:
        bar = _Progress(entry.name, total, progress, resumed=state.offset)
        pacer = _Pacer(limits, state.received)
        while True:
            pacer.before_read(response)
            block = response.read1(1 << 16)
            if not block:
                break
            state.received += len(block)
            if entry.size is not None and state.received > entry.size:
                out.close()
                part.unlink(missing_ok=True)
                raise FetchError(
                    f"{entry.name}: {url} sent more than the {entry.size:,} bytes of the "
                    "published file; deleted what arrived, nothing was installed"
                )
            out.write(block)
            state.digest.update(block)
            bar.update(state.received)
            pacer.after_read(state.received, entry, url, part)
        out.flush()
        os.fsync(out.fileno())
        bar.close()
    return total


def _failure(exc: Exception, entry: ManifestEntry, url: str, part: Path, state: _Transfer) -> Exception:
    """What a failed transfer means for the user: one message naming the file, the URL and what was kept."""
    resume = f"kept {state.received:,} bytes in {part}: run the command again to resume"
    if isinstance(exc, urllib.error.HTTPError):
        if exc.code == 416 and state.offset:
            return _RangeRefused()
        if exc.code == 404:
            return FetchError(f"{entry.name}: not found at {url} (HTTP 404): check the URL or --mirror")
        return FetchError(
            f"{entry.name}: {url} answered HTTP {exc.code} {exc.reason}; nothing was installed"
            + ("; try again later" if exc.code >= 500 or exc.code == 429 else "")
        )
    if isinstance(exc, TimeoutError):
        return FetchError(f"{entry.name}: download from {url} stalled (no data within the time limit); {resume}")
    if isinstance(exc, urllib.error.URLError | http.client.HTTPException | ConnectionError):
        # the partial file stays for the next attempt to resume from; the target is untouched
        reason = getattr(exc, "reason", exc)
        unreachable = not state.received and isinstance(reason, OSError)  # DNS, no route, refused: nothing arrived
        return FetchError(f"{entry.name}: download from {url} failed ({reason}); {resume}", unreachable)
    if exc.errno == errno.ELOOP:
        return FetchError(f"{entry.name}: {part} is a symbolic link; fetch never writes through links: remove it")
    return FetchError(f"{entry.name}: writing {part} failed ({exc.strerror or exc})")


def _install(part: Path, target: Path, dest: Path) -> str:
    os.replace(part, target)
    _fsync_dir(dest)
    return "fetched"


class _Pacer:
    """Enforces the deadline and the minimum throughput between reads of one download."""

    def __init__(self, limits: _Limits, received: int):
        self.limits = limits
        self.window_start, self.window_bytes = time.monotonic(), received

    def before_read(self, response) -> None:
        with contextlib.suppress(AttributeError, OSError):  # a read never blocks past the deadline
            response.fp.raw._sock.settimeout(self.limits.socket_timeout())

    def after_read(self, received: int, entry: ManifestEntry, url: str, part: Path) -> None:
        now, limits = time.monotonic(), self.limits
        if limits.deadline is not None and now > limits.deadline:
            raise FetchError(
                f"{entry.name}: download from {url} ran past its deadline with {received:,} bytes "
                f"received; kept them in {part}: run the command again to resume"
            )
        if now - self.window_start >= limits.window:
            got = received - self.window_bytes
            if got < limits.min_rate * limits.window:
                raise FetchError(
                    f"{entry.name}: download from {url} is too slow: {got:,} bytes in "
                    f"{now - self.window_start:.0f} s, below the minimum of {limits.min_rate:,} "
                    f"bytes/s; kept {received:,} bytes in {part}: run the command again to resume "
                    "(or use --mirror)"
                )
            self.window_start, self.window_bytes = now, received


def _part_size(part: Path) -> int:
    try:
        st = os.lstat(part)
    except FileNotFoundError:
        return 0
    if not stat.S_ISREG(st.st_mode):
        raise FetchError(f"{part} is not a regular file (a link or folder); fetch never writes through it: remove it")
    return st.st_size


def _open_part(part: Path, append: bool):
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if append else os.O_TRUNC)
    return os.fdopen(os.open(part, flags, 0o644), "ab" if append else "wb")


@contextlib.contextmanager
def _locked(lock_path: Path):
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        why = "it is a symbolic link" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
        raise FetchError(f"cannot open the lock file {lock_path} ({why})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _say(stream: TextIO | None, text: str) -> None:
    if stream is not None:
        stream.write(text)
        stream.flush()


class _Progress:
    """A one-line progress bar on a terminal; a line per 25 % in logs (no carriage-return spam)."""

    def __init__(self, name: str, total: int | None, stream: TextIO | None, resumed: int = 0):
        self.name, self.total, self.stream = name, total, stream
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self.last_quarter = -1
        if resumed:
            _say(stream, f"{name}: resuming at {resumed:,} bytes\n")

    def update(self, received: int) -> None:
        if self.stream is None:
            return
        if self.total:
            frac = min(1.0, received / self.total)
            if self.tty:
                filled = int(frac * 30)
                _say(
                    self.stream,
                    f"\r{self.name}: [{'#' * filled}{'.' * (30 - filled)}] {frac:6.1%} {received / 1e6:8.1f} MB",
                )
            elif int(frac * 4) > self.last_quarter:
                self.last_quarter = int(frac * 4)
                _say(self.stream, f"{self.name}: {frac:.0%} of {self.total / 1e6:.1f} MB\n")
        elif self.tty:
            _say(self.stream, f"\r{self.name}: {received / 1e6:8.1f} MB")

    def close(self) -> None:
        if self.tty:
            _say(self.stream, "\n")
