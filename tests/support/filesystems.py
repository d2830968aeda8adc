"""Real filesystem faults for the output tests: a small tmpfs that fills up, one mounted read-only.

The command runs under ``unshare --mount`` (a private mount namespace): its mounts exist only for that
process tree and vanish with it, so nothing is left mounted on the machine. Root (or a user namespace
that maps to it) is needed to mount; where neither works the tests skip, saying why.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

UNSHARE = ["unshare", "--mount", "--propagation", "private"]


def mount_namespaces_work() -> str | None:
    """None when a private mount namespace can mount a tmpfs here, else why not."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(
        [*UNSHARE, "sh", "-c", "mkdir -p /tmp/.objdet-probe && mount -t tmpfs -o size=64k tmpfs /tmp/.objdet-probe"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return None if probe.returncode == 0 else f"cannot mount a tmpfs in a mount namespace: {probe.stderr.strip()}"


@pytest.fixture(scope="session")
def mounts():
    """Skip unless tmpfs mounts in a private namespace work (root in a container usually may)."""
    reason = mount_namespaces_work()
    if reason:
        pytest.skip(reason)


def in_namespace(script: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the bash ``script`` in its own mount namespace (set -e; mounts it makes vanish with it)."""
    return subprocess.run(
        [*UNSHARE, "bash", "-c", "set -euo pipefail\n" + script],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
