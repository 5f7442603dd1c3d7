"""How much memory new allocations may take: what `aigrid up` and `aigrid node` hold the KV cache their engines
allocate at start against (gateway/server.kv_cache_over). Outside the layers, like errors.py: any layer may ask."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from aigrid import cgroup as cgroups

MEMINFO = Path("/proc/meminfo")
MACHINE = f"this machine has available (MemAvailable, {MEMINFO})"


class Memory(NamedTuple):
    """The bytes new allocations may take, and the limit that says so (the error's words: which figure refused)."""

    bytes: int
    limit: str


def _meminfo_available(meminfo: Path) -> int | None:
    try:
        text = meminfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        kib = value.split()
        if name.strip() == "MemAvailable" and kib and kib[0].isdigit():
            return int(kib[0]) * 1024
    return None


def _cgroup_room(cgroup: Path) -> Memory | None:
    """What a cgroup v2 memory limit leaves: memory.max less the group's use, None where no limit is set ("max", or
    no memory.max: cgroup v1, the root group, no /sys). The use is memory.current less memory.stat's inactive_file
    (the page cache the kernel takes back first, which kubelet's working set leaves out too), so that a group's
    cache of files read once does not make the figure stricter than what the group can really take."""
    limit = cgroups.read(cgroup / "memory.max")
    current = cgroups.read(cgroup / "memory.current")
    if limit is None or current is None or not limit.isdigit() or not current.isdigit():
        return None  # "max": no limit
    inactive = 0
    for line in (cgroups.read(cgroup / "memory.stat") or "").splitlines():
        name, _, value = line.partition(" ")
        if name == "inactive_file" and value.strip().isdigit():
            inactive = int(value)
    used = max(int(current) - inactive, 0)
    room = max(int(limit) - used, 0)
    return Memory(room, f"this container may still take (its cgroup's memory.max {int(limit) / 2**30:,.1f} GiB less "
                        f"the {used / 2**30:,.1f} GiB it uses, {cgroup})")


def available_memory(meminfo: Path = MEMINFO, cgroup: Path = cgroups.MOUNT) -> Memory | None:
    """The bytes new allocations can take without swapping, and which limit says so: MemAvailable of /proc/meminfo
    (free memory and the page cache it can take back), or, where smaller, the room a cgroup v2 memory limit leaves
    (_cgroup_room: in a container MemAvailable is the host's, and the container is killed at its own limit). None
    where neither is said (no /proc: macOS, or a kernel before 3.14, and no cgroup limit)."""
    machine = _meminfo_available(meminfo)
    room = _cgroup_room(cgroup)
    if room is not None and (machine is None or room.bytes < machine):
        return room
    return Memory(machine, MACHINE) if machine is not None else None
