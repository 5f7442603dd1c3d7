"""How many cores this process may use: the default number of gateway workers (gateway/workers.py) and of
simulator worker processes (sim/parallel.py). Outside the layers, like errors.py: any layer may ask."""

from __future__ import annotations

import os
from pathlib import Path

from aigrid import cgroup


def _quotas(root: Path) -> list[tuple[Path, str, str]]:
    """Each group's CPU quota as (the file it is read from, quota, period): cgroup v2's cpu.max (`QUOTA PERIOD`,
    `max` for none) of this process's group and every group above it, and cgroup v1's cpu.cfs_quota_us (-1 for
    none) and cpu.cfs_period_us of its group and those above it in the cpu controller's hierarchy
    (cgroup.own_groups). An absent file is no quota there."""
    quotas = []
    for group in cgroup.own_groups(root):
        fields = (cgroup.read(group / "cpu.max") or "max").split()
        quotas.append((group / "cpu.max", fields[0] if fields else "", " ".join(fields[1:])))
    for group in cgroup.own_groups(root, "cpu"):
        quota = cgroup.read(group / "cpu.cfs_quota_us")
        if quota is not None:
            quotas.append((group / "cpu.cfs_quota_us", quota, cgroup.read(group / "cpu.cfs_period_us") or ""))
    return quotas


def available_cores(root: Path = cgroup.ROOT) -> int:
    """Its CPU affinity (taskset), capped by the smallest CPU quota (a container's CPU limit, which affinity does not
    show) of its own group and every group above it, cgroup v2's and v1's alike (_quotas), rounded up: 1.5 CPUs is
    2 workers. `max`, -1, an absent or unreadable file: no quota there (a file that says no quota and period, one
    DEBUG line)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    for path, quota, period in _quotas(root):
        if quota.isdigit() and period.isdigit() and int(period) > 0:
            cores = min(cores, -(-int(quota) // int(period)))
        elif quota not in ("max", "-1"):
            cgroup.log.debug("cgroup file %s says %r, no quota and period: taken as no limit", path,
                             f"{quota} {period}".strip())
    return max(1, cores)
