"""How many cores this process may use (aigrid.cores.available_cores): the default gateway workers and simulator
processes. Never the machine's cgroup: cpu.max files written to tmp_path say its quota."""

from __future__ import annotations

import os
from pathlib import Path

from aigrid.cores import available_cores


def test_default_workers_follow_affinity_and_the_cgroup_quota(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("max 100000\n")
    assert available_cores(cpu_max) == len(os.sched_getaffinity(0))
    cpu_max.write_text("150000 100000\n")  # a container limited to 1.5 CPUs: two workers at most
    assert available_cores(cpu_max) == min(2, len(os.sched_getaffinity(0)))
    assert available_cores(tmp_path / "missing") == len(os.sched_getaffinity(0))
