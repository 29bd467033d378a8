"""How many CPUs this process may really use: affinity, cgroup quota, physical cores.

A pod with a CPU limit of 2 on a 64-core node sees 64 CPUs in os.cpu_count();
thread pools sized from that oversubscribe. Every service sizes its threads
from here.
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def cpu_quota() -> float | None:
    """CPUs allowed by the cgroup (v2 ``cpu.max`` or v1 quota/period); None when unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def _affinity() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _capped(count: int) -> int:
    quota = cpu_quota()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def usable_cpus() -> int:
    """Logical CPUs this process may run on, capped by its cgroup CPU quota."""
    return _capped(len(_affinity()))


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on, capped by the quota."""
    cores = set()
    for cpu in _affinity():
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(),
                       (topology / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return _capped(len(cores))
