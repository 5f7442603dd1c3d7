"""How much memory new allocations may take: what `aigrid up` and `aigrid node` hold the KV cache their engines
allocate at start against (gateway/server.kv_cache_over). Outside the layers, like errors.py: any layer may ask."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from aigrid import cgroup as cgroups

MEMINFO = Path("/proc/meminfo")
MACHINE = f"this machine has available (MemAvailable, {MEMINFO})"
RECLAIMABLE = ("active_file", "inactive_file", "slab_reclaimable")
"""memory.stat's bytes of a cgroup v2 group the kernel takes back before its limit kills (memory._group_room)."""
RECLAIMABLE_V1 = ("total_active_file", "total_inactive_file")
"""The same of a cgroup v1 group, its own and its children's (memory.usage_in_bytes counts theirs too): v1's
memory.stat says no slab, so reclaimable slab, in the usage where the kernel charges slab to the group, stays used."""
NO_LIMIT_V1 = 2**62
"""From here up memory.limit_in_bytes is no limit: the kernel writes its largest count of pages (2**63 less a page,
9223372036854771712 with 4 KiB pages), never "max"."""


class Files(NamedTuple):
    """A cgroup version's memory files: the limit, the use, memory.stat's reclaimable counts."""

    limit: str
    usage: str
    reclaimable: tuple[str, ...]


CGROUP_V2 = Files("memory.max", "memory.current", RECLAIMABLE)
CGROUP_V1 = Files("memory.limit_in_bytes", "memory.usage_in_bytes", RECLAIMABLE_V1)


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


def _group_room(group: Path, own: bool, files: Files) -> Memory | None:
    """What one group's memory limit leaves: the limit less the group's use, None where it sets none ("max", or from
    NO_LIMIT_V1 up, or no such file: the root group, no /sys, the other cgroup version's group) or its files cannot
    be read. cgroup v2's (CGROUP_V2) is memory.max less memory.current, v1's (CGROUP_V1) memory.limit_in_bytes less
    memory.usage_in_bytes. The use is less what the kernel takes back before it kills (RECLAIMABLE of memory.stat:
    the file LRU lists, active_file and inactive_file, and reclaimable slab; v1's total_active_file and
    total_inactive_file, RECLAIMABLE_V1): the terms of the kernel's own MemAvailable (si_mem_available: MemFree +
    Active(file) + Inactive(file) + SReclaimable, less a reserve of at most the low watermarks, which a group has
    not), so that a group's limit is read as /proc/meminfo is read for a machine of that size; LXCFS writes a
    container's MemAvailable the same way. kubelet's working set (the use less inactive_file alone) is stricter: an
    eviction signal, where this check refuses only a cache over all the group can take. Shared memory (tmpfs, shmem)
    is in memory.stat's file but on the anon lists, so never counted here."""
    limit = cgroups.read(group / files.limit)
    if limit is None or limit == "max":
        return None
    current = cgroups.read(group / files.usage)
    if not limit.isdigit() or current is None or not current.isdigit():
        cgroups.log.debug("cgroup %s: %s %r, %s %r: taken as no limit", group, files.limit, limit, files.usage,
                          current)
        return None
    if int(limit) >= NO_LIMIT_V1:
        return None
    reclaimable = 0
    for line in (cgroups.read(group / "memory.stat") or "").splitlines():
        name, _, value = line.partition(" ")
        if name in files.reclaimable and value.strip().isdigit():
            reclaimable += int(value)
    used = max(int(current) - reclaimable, 0)
    room = max(int(limit) - used, 0)
    whose = "this process's cgroup" if own else "a cgroup above this process's"
    return Memory(room, f"{whose} may still take ({files.limit} {int(limit) / 2**30:,.1f} GiB less the "
                        f"{used / 2**30:,.1f} GiB it uses, {group})")


def available_memory(root: Path = cgroups.ROOT) -> Memory | None:
    """The bytes new allocations can take without swapping, and which limit says so: MemAvailable of /proc/meminfo
    (free memory and the page cache it can take back), or, where smaller, the least room a memory limit leaves
    (_group_room) in this process's own group or any group above it (cgroup.own_groups: a systemd slice's
    MemoryMax=, a container run with --cgroupns=host), cgroup v2's memory.max and cgroup v1's memory controller's
    memory.limit_in_bytes alike (a v1/v2 hybrid: both are read, and the least held): in a container MemAvailable is
    the host's, and the group is killed at its own limit. None where neither is said (no /proc: macOS, or a kernel
    before 3.14, and no cgroup limit). `root`: where the machine's /proc and /sys are ("/"; the tests' own
    directory)."""
    machine = _meminfo_available(root / MEMINFO.relative_to("/"))
    rooms: list[Memory] = []
    for files, controller in ((CGROUP_V2, cgroups.V2), (CGROUP_V1, "memory")):
        groups = cgroups.own_groups(root, controller)
        rooms += [r for r in (_group_room(g, g == groups[0], files) for g in groups) if r is not None]
    room = min(rooms, key=lambda r: r.bytes, default=None)
    if room is not None and (machine is None or room.bytes < machine):
        return room
    return Memory(machine, MACHINE) if machine is not None else None
