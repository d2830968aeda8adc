"""Weights you can trust: a manifest of known model files, a verifying fetch and a verify report.

``fetch`` downloads into ``NAME.part`` beside the destination while hashing, resumes a partial
download with an HTTP Range request, and renames into place only after the hash matches. An
exclusive lock on ``NAME.lock`` serialises processes fetching into one shared volume, so none of
them ever sees a half-written file; a file already verified is skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, TextIO

from .config import Settings

_YOLO_FASTEST = "https://raw.githubusercontent.com/dog-qiuqiu/Yolo-Fastest/master/ModelZoo/yolo-fastest-1.1_coco/"


@dataclass(frozen=True)
class ManifestEntry:
    """A known model file. ``sha256`` is the full digest, or torchvision's published prefix."""

    name: str  # the file name, as written into the weights directory
    url: str
    sha256: str
    model: str  # which model family uses it
    group: str  # files fetched together (a Darknet model needs cfg + weights + names)
    size: int | None = None

    @property
    def prefix_only(self) -> bool:
        return len(self.sha256) < 64


MANIFEST: dict[str, ManifestEntry] = {
    e.name: e
    for e in (
        ManifestEntry("ssdlite320_mobilenet_v3_large_coco-a79551df.pth",
                      "https://download.pytorch.org/models/ssdlite320_mobilenet_v3_large_coco-a79551df.pth",
                      "a79551df", "ssd", "ssdlite320_mobilenet_v3_large"),
        ManifestEntry("ssd300_vgg16_coco-b556d3b4.pth",
                      "https://download.pytorch.org/models/ssd300_vgg16_coco-b556d3b4.pth",
                      "b556d3b4", "ssd", "ssd300_vgg16"),
        ManifestEntry("yolo-fastest-1.1.cfg", _YOLO_FASTEST + "yolo-fastest-1.1.cfg",
                      "f6df5775c1e862998cf69046eba9265be3ae84dfe8b2caab7529823f0795bf70", "yolo", "yolo-fastest-1.1", 9685),
        ManifestEntry("yolo-fastest-1.1.weights", _YOLO_FASTEST + "yolo-fastest-1.1.weights",
                      "1c445c42bbd6df63edea2cc69f99667b5650d663ca11e34b116240740cd42890", "yolo", "yolo-fastest-1.1",
                      1384268),
        ManifestEntry("yolo-fastest-1.1-xl.cfg", _YOLO_FASTEST + "yolo-fastest-1.1-xl.cfg",
                      "c458427acc4fbeabceff4528ef7b65b066c0308ce599460f8ba299eba63abad3", "yolo", "yolo-fastest-1.1-xl",
                      9696),
        ManifestEntry("yolo-fastest-1.1-xl.weights", _YOLO_FASTEST + "yolo-fastest-1.1-xl.weights",
                      "fac5fb41786c1f38f04972a658443b189f48720d7d117f9a044100e98a35b0c5", "yolo", "yolo-fastest-1.1-xl",
                      3693964),
        ManifestEntry("coco.names", _YOLO_FASTEST + "coco.names",
                      "634a1132eb33f8091d60f2c346ababe8b905ae08387037aed883953b7329af84", "yolo", "coco.names", 625),
    )
}

OK, MISSING, CORRUPT, UNVERIFIED = "OK", "missing", "corrupt", "unverified"


class FetchError(RuntimeError):
    """A download failed or did not match its manifest hash; nothing was left in place."""


@dataclass(frozen=True)
class FileCheck:
    """The state of one configured file, as ``weights verify`` and the app's status panel show it."""

    role: str
    path: Path
    state: str  # OK / missing / corrupt / unverified
    expected: str | None = None
    actual: str | None = None

    def describe(self) -> str:
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
        return FileCheck(role, path, MISSING, expected)
    actual = sha256_file(path)
    if entry is None:
        return FileCheck(role, path, UNVERIFIED, None, actual)
    return FileCheck(role, path, OK if matches(entry, actual) else CORRUPT, expected, actual)


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


def fetch(names: Iterable[str], dest: Path, progress: TextIO | None = sys.stderr, timeout: float = 60.0,
          url_base: str | None = None) -> list[tuple[str, str]]:
    """Download and verify manifest files into ``dest``; returns (name, "fetched"|"skipped") pairs.

    ``url_base`` replaces the directory part of each URL (a mirror); it is how tests point the real
    download code at a server on loopback.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    done = []
    for name in names:
        entry = MANIFEST.get(name)
        if entry is None:
            raise FetchError(f"{name}: not in the weights manifest; known: {', '.join(MANIFEST)}")
        url = entry.url if url_base is None else url_base.rstrip("/") + "/" + name
        done.append((name, _fetch_one(entry, url, dest, progress, timeout)))
    return done


def _fetch_one(entry: ManifestEntry, url: str, dest: Path, progress: TextIO | None, timeout: float) -> str:
    target = dest / entry.name
    with _locked(dest / f".{entry.name}.lock"):
        if target.is_file() and matches(entry, sha256_file(target)):
            _say(progress, f"{entry.name}: already present and verified, skipped\n")
            return "skipped"
        part = dest / f".{entry.name}.part"
        digest = hashlib.sha256()
        offset = part.stat().st_size if part.is_file() else 0
        if offset:
            with open(part, "rb") as fh:  # resume: the hash must cover the bytes already there
                while block := fh.read(1 << 20):
                    digest.update(block)
        if offset and matches(entry, digest.hexdigest()):  # complete, but not yet renamed
            os.replace(part, target)
            return "fetched"
        request = urllib.request.Request(url, headers={"User-Agent": "objdet-weights/1"})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if offset and response.status != 206:  # server ignored Range: start again
                    offset, digest = 0, hashlib.sha256()
                length = response.headers.get("Content-Length")
                total = offset + int(length) if length and length.isdigit() else entry.size
                with open(part, "ab" if offset else "wb") as out:
                    received = offset
                    bar = _Progress(entry.name, total, progress, resumed=offset)
                    while block := response.read(1 << 16):
                        out.write(block)
                        digest.update(block)
                        received += len(block)
                        bar.update(received)
                    out.flush()
                    os.fsync(out.fileno())
                    bar.close()
            if length and length.isdigit() and received < total:
                raise FetchError(f"{entry.name}: download from {url} ended after {received:,} of {total:,} bytes; "
                                 "run the command again to resume")
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            # the partial file stays for the next attempt to resume from; the target is untouched
            raise FetchError(f"{entry.name}: download from {url} failed ({getattr(exc, 'reason', exc)}); "
                             "run the command again to resume") from None
        actual = digest.hexdigest()
        if not matches(entry, actual):
            part.unlink(missing_ok=True)
            raise FetchError(f"{entry.name}: downloaded file is corrupt: expected sha256 {entry.sha256}, "
                             f"got {actual}; removed it, nothing was installed")
        os.replace(part, target)
        _fsync_dir(dest)
        return "fetched"


@contextlib.contextmanager
def _locked(lock_path: Path):
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


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
                _say(self.stream, f"\r{self.name}: [{'#' * filled}{'.' * (30 - filled)}] {frac:6.1%} "
                                  f"{received / 1e6:8.1f} MB")
            elif int(frac * 4) > self.last_quarter:
                self.last_quarter = int(frac * 4)
                _say(self.stream, f"{self.name}: {frac:.0%} of {self.total / 1e6:.1f} MB\n")
        elif self.tty:
            _say(self.stream, f"\r{self.name}: {received / 1e6:8.1f} MB")

    def close(self) -> None:
        if self.tty:
            _say(self.stream, "\n")
