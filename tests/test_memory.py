"""How much memory new allocations may take (aigrid.memory.available_memory): the figure `aigrid up` and `aigrid
node` hold the KV cache their engines allocate at start against. Never the machine's: a root directory of /proc and
/sys files written to tmp_path (tests/fake_machine.py) says what it has."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from aigrid.memory import MACHINE, Memory, available_memory
from tests.fake_machine import GIB, available, limited, limited_v1, machine, mount, stat


def test_the_available_memory_is_meminfo_s_memavailable(tmp_path: Path) -> None:
    root = machine(tmp_path, meminfo="MemTotal:       24576000 kB\nMemFree:         1000000 kB\n"
                                     "MemAvailable:   20971520 kB\nBuffers:          100000 kB\n")
    assert available_memory(root) == Memory(20 * GIB, MACHINE)  # no memory.max: the root group, cgroup v1, no /sys
    (root / "proc" / "meminfo").write_text("MemTotal:       24576000 kB\nMemFree:         1000000 kB\n")  # < 3.14
    assert available_memory(root) is None
    (root / "proc" / "meminfo").unlink()
    assert available_memory(root) is None


@pytest.mark.parametrize(("limit", "current", "inactive", "host", "expected"), [
    ("max", 2 * GIB, None, 20, Memory(20 * GIB, MACHINE)),  # no limit set: the host's figure
    (str(64 * GIB), GIB, None, 20, Memory(20 * GIB, MACHINE)),  # a limit above the host's: never stricter
    (str(4 * GIB), 2 * GIB, None, 20, None),  # no memory.stat: memory.current whole, 2 GiB left (checked below)
    (str(4 * GIB), 5 * GIB, 0, 20, None),  # over its limit already (reclaim pending): 0 left, not negative
])
def test_the_smaller_of_the_cgroup_s_room_and_memavailable_is_held(
        tmp_path: Path, limit: str, current: int, inactive: int | None, host: int, expected: Memory | None) -> None:
    have = available_memory(machine(tmp_path, {"": limited(limit, current, inactive)}, meminfo=available(host)))
    if expected is not None:
        assert have == expected, have
    else:
        assert have is not None and have.bytes == max(int(limit) - current, 0) and "memory.max" in have.limit, have


def test_a_cgroup_limit_is_held_where_meminfo_is_not_said(tmp_path: Path) -> None:
    have = available_memory(machine(tmp_path, {"": limited(str(4 * GIB), GIB)}))
    assert have is not None and have.bytes == 3 * GIB and "memory.max 4.0 GiB" in have.limit, have


SERVICE = "system.slice/aigrid.service"


def test_a_limit_on_a_group_above_this_process_s_is_held(tmp_path: Path) -> None:
    """N6: only /sys/fs/cgroup was read, which outside a cgroup namespace is the hierarchy's root (no memory.max):
    a systemd slice's MemoryMax= of 2 GiB above aigrid's service was unseen and the host's 20 GiB held. Now the
    group /proc/self/cgroup names and every group above it are read, and the least room is held, naming its group."""
    root = machine(tmp_path, {"": {}, "system.slice": limited(str(2 * GIB), GIB // 2),
                              SERVICE: limited(str(8 * GIB), GIB // 2)}, own=f"/{SERVICE}", meminfo=available(20))
    have = available_memory(root)
    slice_ = root / "sys" / "fs" / "cgroup" / "system.slice"
    assert have == Memory(3 * GIB // 2, "a cgroup above this process's may still take (memory.max 2.0 GiB less the "
                                        f"0.5 GiB it uses, {slice_})"), have


def test_the_own_group_s_limit_is_held_where_it_is_the_least(tmp_path: Path) -> None:
    """A container run with --cgroupns=host: its group is a path under the host's hierarchy, not /sys/fs/cgroup."""
    root = machine(tmp_path, {"system.slice": limited("max", 9 * GIB), "system.slice/docker-1.scope":
                              limited(str(4 * GIB), GIB)}, own="/system.slice/docker-1.scope", meminfo=available(20))
    have = available_memory(root)
    assert have is not None and have.bytes == 3 * GIB, have
    assert have.limit.startswith("this process's cgroup may still take (memory.max 4.0 GiB less the 1.0 GiB it "
                                 "uses, ") and have.limit.endswith("docker-1.scope)"), have


def test_max_everywhere_is_no_limit(tmp_path: Path) -> None:
    groups = {"": {}, "user.slice": limited("max", GIB), "user.slice/a": limited("max", GIB)}
    assert available_memory(machine(tmp_path, groups, own="/user.slice/a", meminfo=available(20))) == \
        Memory(20 * GIB, MACHINE)
    assert available_memory(machine(tmp_path / "no-meminfo", groups, own="/user.slice/a")) is None


def test_a_namespaced_container_s_own_group_is_sys_fs_cgroup(tmp_path: Path) -> None:
    """/proc/self/cgroup names `/` in a container with its own cgroup namespace: /sys/fs/cgroup is its group."""
    have = available_memory(machine(tmp_path, {"": limited(str(4 * GIB), GIB)}, own="/", meminfo=available(20)))
    assert have is not None and have.bytes == 3 * GIB and have.limit.startswith("this process's cgroup"), have


@pytest.mark.parametrize("own", ["/not/under/the/mount", "/../../elsewhere"])
def test_a_group_not_under_the_mount_reads_the_mount_only(tmp_path: Path, own: str,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    root = machine(tmp_path, {"": limited(str(4 * GIB), GIB)}, own=own, meminfo=available(20))
    with caplog.at_level(logging.DEBUG, logger="aigrid.cgroup"):
        have = available_memory(root)
    assert have is not None and have.bytes == 3 * GIB, have
    assert [r.levelno for r in caplog.records] == [logging.DEBUG] and own in caplog.messages[0], caplog.messages


@pytest.mark.parametrize(("v1", "limit", "usage"), [(False, "memory.max", "memory.current"),
                                                   (True, "memory.limit_in_bytes", "memory.usage_in_bytes")])
def test_an_unreadable_file_is_no_limit_there_with_one_debug_line(tmp_path: Path, v1: bool, limit: str, usage: str,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A limit file that cannot be read (here a directory: root reads what chmod forbids) is no limit at that
    group, said once at DEBUG, never a traceback; the groups above it are still read. cgroup v2's and v1's alike."""
    if v1:
        root = machine(tmp_path, v1={"memory": {"": {}, "a": limited_v1(6 * GIB, GIB), "a/b": {usage: str(GIB)}}},
                       v1_own={"memory": "/a/b"}, meminfo=available(20))
    else:
        root = machine(tmp_path, {"": {}, "a": limited(str(6 * GIB), GIB), "a/b": {usage: str(GIB)}},
                       own="/a/b", meminfo=available(20))
    mount = root / "sys" / "fs" / "cgroup" / ("memory" if v1 else "")
    (mount / "a" / "b" / limit).mkdir()
    with caplog.at_level(logging.DEBUG, logger="aigrid.cgroup"):
        have = available_memory(root)
    assert have is not None and have.bytes == 5 * GIB and have.limit.startswith("a cgroup above"), have
    assert len(caplog.records) == 1 and limit in caplog.messages[0], caplog.messages
    assert caplog.records[0].levelno == logging.DEBUG and caplog.records[0].exc_info is None
    caplog.clear()
    (mount / "a" / usage).write_text("lots\n")  # unreadable as a number
    with caplog.at_level(logging.DEBUG, logger="aigrid.cgroup"):
        assert available_memory(root) == Memory(20 * GIB, MACHINE)
    assert len(caplog.records) == 2 and f"{usage} 'lots'" in caplog.messages[1], caplog.messages  # a/b's, a's


def test_the_page_cache_and_slab_the_kernel_takes_back_are_room_as_memavailable_counts_them(tmp_path: Path) -> None:
    """N6: a group's use was memory.current less inactive_file alone, where the kernel's MemAvailable (the machine's
    figure, held beside it) counts the whole file LRU, active_file too, and reclaimable slab: a group that had read
    its model twice (2 GiB active_file) was held 3 GiB stricter than a machine of its size. Now memory.current less
    active_file, inactive_file and slab_reclaimable (LXCFS's container MemAvailable). Shared memory (shmem, in
    `file` but on the anon lists), anon and unreclaimable slab stay used."""
    own = stat(anon=GIB, file=4 * GIB, shmem=GIB, active_file=2 * GIB, inactive_file=GIB,
               slab_reclaimable=GIB, slab_unreclaimable=GIB // 2)
    root = machine(tmp_path, {"": {"memory.max": str(8 * GIB), "memory.current": str(7 * GIB), "memory.stat": own}},
                   meminfo=available(20))
    have = available_memory(root)  # 7 GiB less 4 GiB the kernel takes back: 3 GiB used, 5 GiB left
    assert have is not None and have.bytes == 5 * GIB and "less the 3.0 GiB it uses" in have.limit, have
    (root / "sys" / "fs" / "cgroup" / "memory.stat").write_text(stat(active_file=6 * GIB, inactive_file=4 * GIB))
    have = available_memory(root)  # more cache than memory.current (read apart, not at once): none used, not less
    assert have is not None and have.bytes == 8 * GIB, have


NO_LIMIT = "9223372036854771712"  # what cgroup v1 says where no limit is set (2**63 less a 4 KiB page)
HYBRID = "".join([mount(1, "/sys/fs/cgroup", "tmpfs", "rw,mode=755").replace(" - tmpfs cgroup", " - tmpfs tmpfs"),
                  mount(2, "/sys/fs/cgroup/cpu", "cgroup", "rw,cpu"),
                  mount(3, "/sys/fs/cgroup/memory", "cgroup", "rw,memory"),
                  mount(4, "/sys/fs/cgroup/systemd", "cgroup", "rw,name=systemd"),
                  mount(5, "/sys/fs/cgroup/unified", "cgroup2", "rw")])
"""/proc/self/mountinfo's cgroup lines of this machine (6 Dec 2026): a v1/v2 hybrid, v2 at /sys/fs/cgroup/unified."""


def test_a_cgroup_v1_memory_limit_is_held(tmp_path: Path) -> None:
    """N2: only cgroup v2's memory.max was read: a host that runs cgroup v1 (or a hybrid, as this machine, whose
    memory controller is v1's) held MemAvailable alone, its group's memory.limit_in_bytes unseen. Now the group
    /proc/self/cgroup's `N:memory:/PATH` names, under /sys/fs/cgroup/memory, is read as v2's: memory.limit_in_bytes
    less memory.usage_in_bytes less total_active_file and total_inactive_file (its own and its children's, as the
    usage is)."""
    root = machine(tmp_path, v1={"memory": {"": {}, "a": limited_v1(4 * GIB, 2 * GIB, GIB // 2, GIB // 2)}},
                   v1_own={"memory": "/a"}, meminfo=available(20))
    group = root / "sys" / "fs" / "cgroup" / "memory" / "a"
    assert available_memory(root) == Memory(3 * GIB, "this process's cgroup may still take (memory.limit_in_bytes "
                                                     f"4.0 GiB less the 1.0 GiB it uses, {group})")


def test_a_cgroup_v1_parent_s_smaller_limit_is_held(tmp_path: Path) -> None:
    root = machine(tmp_path, v1={"memory": {"": {}, "kubepods": limited_v1(2 * GIB, GIB),
                                            "kubepods/pod1": limited_v1(8 * GIB, GIB)}},
                   v1_own={"memory": "/kubepods/pod1"}, meminfo=available(20))
    have = available_memory(root)
    assert have is not None and have.bytes == GIB and have.limit.startswith("a cgroup above this process's may "
                                                                           "still take (memory.limit_in_bytes 2.0 GiB")
    assert have.limit.endswith(f"{root / 'sys' / 'fs' / 'cgroup' / 'memory' / 'kubepods'})"), have


@pytest.mark.parametrize("no_limit", [NO_LIMIT, "9223372036854710272"])  # 4 KiB pages; 64 KiB (arm64, ppc64le)
def test_cgroup_v1_s_largest_limit_is_no_limit(tmp_path: Path, no_limit: str) -> None:
    files = {"memory.limit_in_bytes": no_limit, "memory.usage_in_bytes": str(GIB)}
    v1 = {"memory": {"": files, "a": files, "a/b": files}}
    assert available_memory(machine(tmp_path, v1=v1, v1_own={"memory": "/a/b"}, meminfo=available(20))) == \
        Memory(20 * GIB, MACHINE)
    assert available_memory(machine(tmp_path / "no-meminfo", v1=v1, v1_own={"memory": "/a/b"})) is None


def test_a_hybrid_whose_v2_group_is_the_root_holds_the_v1_limit(tmp_path: Path) -> None:
    """As this machine: /proc/self/cgroup's `0::/` is v2's root, at /sys/fs/cgroup/unified as /proc/self/mountinfo
    says (/sys/fs/cgroup is a tmpfs, its memory.max here never read), and `N:memory:/PATH` a v1 group with the
    limit."""
    root = machine(tmp_path, {"": {"memory.max": str(GIB), "memory.current": "0"}, "unified": {}},
                   v1={"memory": {"": {}, "process_api": {}, "process_api/0e4d": limited_v1(4 * GIB, GIB)}},
                   v1_own={"memory": "/process_api/0e4d"}, meminfo=available(20), mountinfo=HYBRID)
    have = available_memory(root)
    assert have is not None and have.bytes == 3 * GIB and "memory.limit_in_bytes 4.0 GiB" in have.limit, have
    assert have.limit.endswith("process_api/0e4d)"), have  # /sys/fs/cgroup's memory.max unread: v2 is elsewhere
    (root / "sys" / "fs" / "cgroup" / "unified" / "memory.max").write_text(str(2 * GIB))
    (root / "sys" / "fs" / "cgroup" / "unified" / "memory.current").write_text("0")
    have = available_memory(root)  # both read: the least held
    assert have is not None and have.bytes == 2 * GIB and have.limit.endswith("unified)"), have


@pytest.mark.parametrize("own", ["/", "/docker/abc"])
def test_a_v1_container_reads_its_own_group_at_the_mount(tmp_path: Path, own: str) -> None:
    """A container's memory hierarchy shows its own group at the mount point: with its own cgroup namespace
    /proc/self/cgroup names `/`; without one it names the host's path, which mountinfo says the mount shows."""
    mounts = mount(3, "/sys/fs/cgroup/memory", "cgroup", "rw,memory", shows=own)
    root = machine(tmp_path, v1={"memory": {"": limited_v1(4 * GIB, GIB)}}, v1_own={"memory": own},
                   meminfo=available(20), mountinfo=mounts)
    have = available_memory(root)
    assert have is not None and have.bytes == 3 * GIB and have.limit.startswith("this process's cgroup"), have
