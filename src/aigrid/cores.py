"""How many cores this process may use: the default number of gateway workers (gateway/workers.py) and of
simulator worker processes (sim/parallel.py). Outside the layers, like errors.py: any layer may ask."""

from __future__ import annotations

import os
from pathlib import Path

from aigrid import cgroup


def available_cores(cpu_max: Path = cgroup.MOUNT / "cpu.max") -> int:
    """Its CPU affinity (taskset), capped by a cgroup v2 CPU quota (a container's CPU limit, which affinity
    does not show)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = (cgroup.read(cpu_max) or "").split()[:2]
    except ValueError:
        return cores
    if quota == "max" or not quota.isdigit() or not period.isdigit() or int(period) == 0:
        return cores
    return max(1, min(cores, -(-int(quota) // int(period))))
