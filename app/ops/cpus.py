"""CPUs this process may use: the smallest of the cgroup CPU quota, the affinity and the CPU count.

A Kubernetes CPU limit is a CFS quota, not an affinity, so ``os.cpu_count()`` alone would start one
thread per host core in a pod limited to two. ``OBJDET_NUM_THREADS`` defaults to this figure.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")  # which cgroup (v2) this process is in


def cpu_budget(cgroup_root: Path | None = None, self_cgroup: Path | None = None) -> tuple[int, str]:
    """(CPUs this process may use, where the figure comes from): the smallest of the cgroup CPU
    quota (a Kubernetes CPU limit is a CFS quota, not an affinity), the affinity and the CPU count.
    A fractional quota rounds up; the result is at least 1."""
    count = os.cpu_count() or 1
    best = (max(1, count), "CPU count")
    try:
        affinity = len(os.sched_getaffinity(0))
        if 1 <= affinity <= best[0]:
            best = (affinity, "CPU affinity")
    except (AttributeError, OSError):  # not Linux
        pass
    for quota, period in _cgroup_quotas(Path(cgroup_root or CGROUP_ROOT), Path(self_cgroup or SELF_CGROUP)):
        cpus = max(1, -(-quota // period))
        if cpus < best[0]:
            best = (cpus, f"cgroup quota {quota}/{period}")
    return best


def available_cpus(cgroup_root: Path | None = None) -> int:
    """CPUs this process may use, at least 1 (see ``cpu_budget``)."""
    return cpu_budget(cgroup_root)[0]


def _cgroup_quotas(root: Path, self_cgroup: Path) -> list[tuple[int, int]]:
    """(quota, period) of every CPU limit found: cgroup v2 ``cpu.max`` ("max 100000" = none, or
    "200000 100000") at the root and at this process's own cgroup; cgroup v1 ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us`` (quota -1 = none). Unreadable or malformed files count as no limit."""
    dirs = [root]
    with contextlib.suppress(OSError, ValueError):
        for line in self_cgroup.read_text().splitlines():
            hierarchy, controllers, rel = [*line.split(":", 2), "", ""][:3]
            rel = rel.strip().lstrip("/")
            if rel and hierarchy == "0" and not controllers:
                dirs.append(root / rel)  # v2 unified hierarchy
    found = []
    for folder in dirs:
        with contextlib.suppress(OSError, ValueError):
            fields = (folder / "cpu.max").read_text().split()
            if len(fields) == 2 and fields[0] != "max":
                found.append((int(fields[0]), int(fields[1])))
    for folder in (root / "cpu", root / "cpu,cpuacct", root):
        with contextlib.suppress(OSError, ValueError):
            quota = int((folder / "cpu.cfs_quota_us").read_text().strip())
            period = int((folder / "cpu.cfs_period_us").read_text().strip())
            if quota > 0:
                found.append((quota, period))
    return [(q, p) for q, p in found if q > 0 and p > 0]
