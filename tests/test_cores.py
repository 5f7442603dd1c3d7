"""How many cores this process may use (aigrid.cores.available_cores): the default gateway workers and simulator
processes. Never the machine's cgroup: a root directory of /proc and /sys files written to tmp_path
(tests/fake_machine.py) says its quotas."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from aigrid.cores import available_cores
from tests.fake_machine import machine

AFFINITY = len(os.sched_getaffinity(0))


def test_default_workers_follow_affinity_and_the_cgroup_quota(tmp_path: Path) -> None:
    root = machine(tmp_path, {"": {"cpu.max": "max 100000"}})
    assert available_cores(root) == AFFINITY
    (root / "sys" / "fs" / "cgroup" / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs: two workers at most
    assert available_cores(root) == min(2, AFFINITY)
    (root / "sys" / "fs" / "cgroup" / "cpu.max").unlink()
    assert available_cores(root) == AFFINITY


def test_a_quota_on_a_group_above_this_process_s_is_held(tmp_path: Path) -> None:
    """N6: only /sys/fs/cgroup/cpu.max was read: a systemd slice's CPUQuota=100% above the service (or a container
    run with --cgroupns=host) was unseen. The least quota of its own group and every group above it is held."""
    root = machine(tmp_path, {"": {}, "system.slice": {"cpu.max": "100000 100000"},
                              "system.slice/aigrid.service": {"cpu.max": "max 100000"}},
                   own="/system.slice/aigrid.service")
    assert available_cores(root) == 1
    (root / "sys" / "fs" / "cgroup" / "system.slice" / "cpu.max").write_text("400000 100000\n")
    (root / "sys" / "fs" / "cgroup" / "system.slice" / "aigrid.service" / "cpu.max").write_text("50000 100000\n")
    assert available_cores(root) == 1  # the own group's half a CPU, below its parent's four: one worker


def test_max_everywhere_is_the_affinity(tmp_path: Path) -> None:
    root = machine(tmp_path, {"": {}, "a": {"cpu.max": "max 100000"}, "a/b": {"cpu.max": "max 100000"}}, own="/a/b")
    assert available_cores(root) == AFFINITY


@pytest.mark.parametrize("bad", ["cpu.max", "proc"])
def test_an_unreadable_file_is_no_quota_with_one_debug_line(tmp_path: Path, bad: str,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """A cpu.max (or /proc/self/cgroup) that cannot be read (here a directory) is no quota there, said once at
    DEBUG, never a traceback; a cpu.max that says no quota and period likewise."""
    root = machine(tmp_path, {"": {}, "a": {"cpu.max": "100000 100000"}, "a/b": {}}, own="/a/b")
    if bad == "proc":
        (root / "proc" / "self" / "cgroup").unlink()
        (root / "proc" / "self" / "cgroup").mkdir()  # the mount alone is read: no quota there
    else:
        (root / "sys" / "fs" / "cgroup" / "a" / "b" / "cpu.max").mkdir()
    with caplog.at_level(logging.DEBUG, logger="aigrid.cgroup"):
        cores = available_cores(root)
    assert cores == (AFFINITY if bad == "proc" else 1), cores
    assert len(caplog.records) == 1 and caplog.records[0].levelno == logging.DEBUG, caplog.messages
    assert caplog.records[0].exc_info is None and ("cpu.max" if bad == "cpu.max" else "cgroup") in caplog.messages[0]
    caplog.clear()
    (root / "sys" / "fs" / "cgroup" / "a" / "cpu.max").write_text("lots\n")
    with caplog.at_level(logging.DEBUG, logger="aigrid.cgroup"):
        assert available_cores(root) == AFFINITY
