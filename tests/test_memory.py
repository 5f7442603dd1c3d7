"""How much memory new allocations may take (aigrid.memory.available_memory): the figure `aigrid up` and `aigrid
node` hold the KV cache their engines allocate at start against. Never the machine's: meminfo and cgroup files written
to tmp_path (tests/fake_machine.py) say what it has."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigrid.memory import MACHINE, Memory, available_memory
from tests.fake_machine import GIB, cgroup, meminfo


def test_the_available_memory_is_meminfo_s_memavailable(tmp_path: Path) -> None:
    info = tmp_path / "meminfo"
    info.write_text("MemTotal:       24576000 kB\nMemFree:         1000000 kB\nMemAvailable:   20971520 kB\n"
                       "Buffers:          100000 kB\n")
    none = tmp_path / "no-cgroup"  # no memory.max: the root group, cgroup v1, no /sys
    assert available_memory(info, none) == Memory(20 * GIB, MACHINE)
    info.write_text("MemTotal:       24576000 kB\nMemFree:         1000000 kB\n")  # before Linux 3.14
    assert available_memory(info, none) is None
    assert available_memory(tmp_path / "absent", none) is None


@pytest.mark.parametrize(("limit", "current", "inactive", "host", "expected"), [
    ("max", 2 * GIB, None, 20, Memory(20 * GIB, MACHINE)),  # no limit set: the host's figure
    (str(64 * GIB), GIB, None, 20, Memory(20 * GIB, MACHINE)),  # a limit above the host's: never stricter
    (str(4 * GIB), 2 * GIB, None, 20, None),  # no memory.stat: memory.current whole, 2 GiB left (checked below)
    (str(4 * GIB), 5 * GIB, 0, 20, None),  # over its limit already (reclaim pending): 0 left, not negative
])
def test_the_smaller_of_the_cgroup_s_room_and_memavailable_is_held(
        tmp_path: Path, limit: str, current: int, inactive: int | None, host: int, expected: Memory | None) -> None:
    have = available_memory(meminfo(tmp_path, host), cgroup(tmp_path, limit, current, inactive))
    if expected is not None:
        assert have == expected, have
    else:
        assert have is not None and have.bytes == max(int(limit) - current, 0) and "memory.max" in have.limit, have


def test_a_cgroup_limit_is_held_where_meminfo_is_not_said(tmp_path: Path) -> None:
    have = available_memory(tmp_path / "absent", cgroup(tmp_path, str(4 * GIB), GIB))
    assert have is not None and have.bytes == 3 * GIB and "memory.max 4.0 GiB" in have.limit, have
