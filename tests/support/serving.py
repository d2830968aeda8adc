"""Start ``python -m app serve`` on a free loopback port and wait for health (server and browser tests)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Headless Chromium for the browser tests and bench/app_bench.py: no sandbox (containers), no GPU, no
# background traffic (the machines reach only loopback).
CHROMIUM = "/usr/bin/chromium"  # Debian's package; a browser is never downloaded
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_app(args: list[str], env: dict, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python -m app ARGS`` in a subprocess from the repository, with ``env`` as its only OBJDET_* variables."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("OBJDET_")} | env
    return subprocess.run(
        [sys.executable, "-m", "app", *args], cwd=REPO, env=full, capture_output=True, text=True, timeout=timeout
    )


def models_env(ssd_weights, yolo_dir, models: str = "ssd,yolo") -> dict:
    """The OBJDET_* environment of a serve process with the given SSD state dict and the Yolo-Fastest-1.1
    files of ``yolo_dir`` (the shared assets)."""
    return {
        "OBJDET_MODELS": models,
        "OBJDET_SSD_WEIGHTS": str(ssd_weights),
        "OBJDET_YOLO_WEIGHTS": str(Path(yolo_dir) / "yolo-fastest-1.1.weights"),
        "OBJDET_YOLO_CONFIG": str(Path(yolo_dir) / "yolo-fastest-1.1.cfg"),
        "OBJDET_YOLO_NAMES": str(Path(yolo_dir) / "coco.names"),
    }


def health(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


class Server:
    def __init__(self, env: dict, base_path: str = ""):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}" + (f"/{base_path.strip('/')}" if base_path else "")
        full = {k: v for k, v in os.environ.items() if not k.startswith(("OBJDET_", "STREAMLIT_"))}
        full.update(env)
        full.update(STREAMLIT_SERVER_PORT=str(self.port), STREAMLIT_SERVER_ADDRESS="127.0.0.1")
        if base_path:
            full["STREAMLIT_SERVER_BASE_URL_PATH"] = base_path
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve"], cwd=REPO, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.output: list[str] = []  # complete lines read so far
        self._partial = b""
        self.polls: list[tuple[float, int | None, int]] = []  # (time, status, log lines so far)

    @property
    def health_url(self) -> str:
        return self.base + "/_stcore/health"

    def _drain(self):
        """Read everything the server has written so far (non-blocking, raw: a buffered readline after
        select would leave lines in Python's buffer unseen until the next write)."""
        while True:
            try:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._partial += chunk
        *lines, self._partial = self._partial.split(b"\n")
        self.output.extend(line.decode("utf-8", "replace") + "\n" for line in lines)

    def wait_healthy(self, timeout: float = 240) -> None:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            status = health(self.health_url)
            time.sleep(0.05)
            self._drain()  # whatever the server logged before answering is in the pipe by now
            self.polls.append((time.monotonic() - start, status, len(self.output)))
            if status == 200:
                return
            if self.proc.poll() is not None:
                self._drain()
                raise RuntimeError(f"server exited {self.proc.returncode}: {''.join(self.output)}")
            time.sleep(0.1)
        raise TimeoutError(f"no health 200 in {timeout} s: {''.join(self.output)}")

    def text(self) -> str:
        self._drain()
        return "".join(self.output)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def serving(env: dict):
    """A ``Server`` for a pytest fixture to yield from: healthy before the tests, stopped after."""
    srv = Server(env)
    try:
        srv.wait_healthy()
        yield srv
    finally:
        srv.stop()
