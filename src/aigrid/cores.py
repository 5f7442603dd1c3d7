"""How many cores this process may use: the default number of gateway workers (gateway/workers.py) and of
simulator worker processes (sim/parallel.py). Outside the layers, like errors.py: any layer may ask."""

from __future__ import annotations

import os
from pathlib import Path

from aigrid import cgroup


def available_cores(root: Path = cgroup.ROOT) -> int:
    """Its CPU affinity (taskset), capped by the smallest cgroup v2 CPU quota (cpu.max: quota and period, a
    container's CPU limit, which affinity does not show) of its own group and every group above it
    (cgroup.own_groups), rounded up: 1.5 CPUs is 2 workers. `max`, an absent or unreadable file: no quota there."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    for group in cgroup.own_groups(root):
        fields = (cgroup.read(group / "cpu.max") or "max").split()
        if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit() and int(fields[1]) > 0:
            cores = min(cores, -(-int(fields[0]) // int(fields[1])))
        elif fields[:1] != ["max"]:
            cgroup.log.debug("cgroup file %s says %r, no quota and period: taken as no limit", group / "cpu.max",
                             " ".join(fields))
    return max(1, cores)
