"""How many cores this process may use (aigrid.cores.available_cores): the default gateway workers and simulator
processes. Never the machine's cgroup: a root directory of /proc and /sys files written to tmp_path
(tests/fake_machine.py) says its quotas."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from aigrid.cores import available_cores
from tests.fake_machine import machine, mount

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


CPU = "cpu,cpuacct"  # the v1 hierarchy systemd mounts cpu and cpuacct on together


def test_a_cgroup_v1_cpu_quota_is_held(tmp_path: Path) -> None:
    """N2: only cgroup v2's cpu.max was read: on cgroup v1 a container's CPU limit (cpu.cfs_quota_us of
    cpu.cfs_period_us) was unseen and the gateway started a worker a core of its affinity. Now the group
    /proc/self/cgroup's `N:cpu,cpuacct:/PATH` names, and each group above it, is read as v2's."""
    root = machine(tmp_path, v1={CPU: {"": {"cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"},
                                      "a": {"cpu.cfs_quota_us": "50000", "cpu.cfs_period_us": "100000"}}},
                   v1_own={CPU: "/a"})
    assert available_cores(root) == 1  # half a CPU: one worker
    (root / "sys" / "fs" / "cgroup" / CPU / "a" / "cpu.cfs_quota_us").write_text("-1\n")  # none
    assert available_cores(root) == AFFINITY


def test_a_cgroup_v1_parent_s_quota_is_held(tmp_path: Path) -> None:
    root = machine(tmp_path, v1={CPU: {"": {}, "a": {"cpu.cfs_quota_us": "100000", "cpu.cfs_period_us": "100000"},
                                      "a/b": {"cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"}}},
                   v1_own={CPU: "/a/b"})
    assert available_cores(root) == 1


def test_a_hybrid_with_cpu_mounted_alone_holds_its_v1_quota(tmp_path: Path) -> None:
    """As this machine: cpu and cpuacct each a hierarchy of its own (/proc/self/cgroup's `1:cpu:/PATH`), v2 at
    /sys/fs/cgroup/unified with `0::/`; /proc/self/mountinfo says where each is, so neither the cpuacct hierarchy
    nor a directory at the usual /sys/fs/cgroup/cpu,cpuacct that is no mount is read."""
    mounts = "".join([mount(2, "/sys/fs/cgroup/cpu", "cgroup", "rw,cpu"),
                      mount(3, "/sys/fs/cgroup/cpuacct", "cgroup", "rw,cpuacct"),
                      mount(5, "/sys/fs/cgroup/unified", "cgroup2", "rw")])
    one = {"cpu.cfs_quota_us": "100000", "cpu.cfs_period_us": "100000"}
    root = machine(tmp_path, {"unified": {}}, v1={"cpuacct": {"": {}, "g": one}, CPU: {"": one, "g": one},
                                                  "cpu": {"": {}, "g": {}}},
                   v1_own={"cpuacct": "/g", CPU: "/g", "cpu": "/g"}, mountinfo=mounts)
    assert available_cores(root) == AFFINITY
    (root / "sys" / "fs" / "cgroup" / "cpu" / "g" / "cpu.cfs_quota_us").write_text("100000\n")
    (root / "sys" / "fs" / "cgroup" / "cpu" / "g" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cores(root) == 1


def test_an_unreadable_cgroup_v1_quota_is_none_with_one_debug_line(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    root = machine(tmp_path, v1={CPU: {"": {}, "a": {"cpu.cfs_quota_us": "100000", "cpu.cfs_period_us": "100000"},
                                      "a/b": {"cpu.cfs_period_us": "100000"}}}, v1_own={CPU: "/a/b"})
    (root / "sys" / "fs" / "cgroup" / CPU / "a" / "b" / "cpu.cfs_quota_us").mkdir()
    with caplog.at_level(logging.DEBUG, logger="aigrid.cgroup"):
        assert available_cores(root) == 1  # the parent's one CPU still held
    assert len(caplog.records) == 1 and "cpu.cfs_quota_us" in caplog.messages[0], caplog.messages
    assert caplog.records[0].levelno == logging.DEBUG and caplog.records[0].exc_info is None
    caplog.clear()
    (root / "sys" / "fs" / "cgroup" / CPU / "a" / "cpu.cfs_period_us").write_text("lots\n")
    with caplog.at_level(logging.DEBUG, logger="aigrid.cgroup"):
        assert available_cores(root) == AFFINITY
    assert len(caplog.records) == 2 and "'100000 lots'" in caplog.messages[1], caplog.messages
