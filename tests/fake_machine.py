"""A machine's /proc and /sys written under tmp_path, for the readers of aigrid.memory and aigrid.cores (their
`root`): the machine's own /proc and /sys are never read by the tests that use these."""

from __future__ import annotations

from pathlib import Path

GIB = 2**30


def machine(tmp_path: Path, groups: dict[str, dict[str, str]] | None = None, own: str = "/",
            meminfo: str | None = None, v1: dict[str, dict[str, dict[str, str]]] | None = None,
            v1_own: dict[str, str] | None = None, mountinfo: str | None = None) -> Path:
    """A root directory: /proc/self/cgroup names `own` (cgroup v2's `0::` line, beside a v1 line), /proc/meminfo
    holds `meminfo` (none where None), and each of `groups` ("" the hierarchy's root, "system.slice/x.service")
    is a directory under /sys/fs/cgroup with those files. cgroup v1: each of `v1`'s hierarchies ("memory",
    "cpu,cpuacct") is a directory under /sys/fs/cgroup holding its groups as `groups` are, and /proc/self/cgroup
    has a line for it naming `v1_own`'s path for it ("/" where not given); /proc/self/mountinfo holds `mountinfo`
    (none where None: the usual mounts are read)."""
    root = tmp_path / "root"
    (root / "proc" / "self").mkdir(parents=True, exist_ok=True)
    lines = [f"{n}:{hierarchy}:{(v1_own or {}).get(hierarchy, '/')}" for n, hierarchy in enumerate(v1 or {}, 2)]
    (root / "proc" / "self" / "cgroup").write_text("\n".join([f"1:name=systemd:{own}", *lines, f"0::{own}"]) + "\n")
    if meminfo is not None:
        (root / "proc" / "meminfo").write_text(meminfo)
    if mountinfo is not None:
        (root / "proc" / "self" / "mountinfo").write_text(mountinfo)
    hierarchies = {"": groups or {"": {}}, **(v1 or {})}
    for hierarchy, its_groups in hierarchies.items():
        for path, files in its_groups.items():
            group = root / "sys" / "fs" / "cgroup" / hierarchy / path
            group.mkdir(parents=True, exist_ok=True)
            for name, text in files.items():
                (group / name).write_text(text + "\n")
    return root


def mount(n: int, point: str, kind: str, options: str, shows: str = "/") -> str:
    """One /proc/self/mountinfo line: mount `point` of a `kind` file system ("cgroup2", "cgroup") with super options
    `options` ("rw,memory"), showing the group `shows` there."""
    return f"{30 + n} 23 0:{28 + n} {shows} {point} rw,nosuid,relatime shared:{n} - {kind} cgroup {options}\n"


def available(gib: int) -> str:
    """A /proc/meminfo saying MemAvailable: `gib` GiB."""
    return f"MemTotal:       99999999 kB\nMemAvailable:   {gib * 2**20} kB\n"


def limited(limit: str, current: int, inactive_file: int | None = None) -> dict[str, str]:
    """A group's memory files: memory.max `limit` ("max" or bytes), memory.current, memory.stat where given."""
    files = {"memory.max": limit, "memory.current": str(current)}
    if inactive_file is not None:
        files["memory.stat"] = stat(anon=1000, file=inactive_file + 5000, shmem=5000, active_file=0,
                                    inactive_file=inactive_file, slab_reclaimable=0, slab_unreclaimable=100)
    return files


def limited_v1(limit: int, usage: int, active_file: int = 0, inactive_file: int = 0) -> dict[str, str]:
    """A cgroup v1 group's memory files: memory.limit_in_bytes, memory.usage_in_bytes and a memory.stat whose
    total_active_file and total_inactive_file (the group's and its children's) are those given, its own
    active_file and inactive_file a GiB more each (never to be counted: the usage is the children's too)."""
    return {"memory.limit_in_bytes": str(limit), "memory.usage_in_bytes": str(usage),
            "memory.stat": stat(cache=active_file + inactive_file, rss=GIB // 4, active_file=active_file + GIB,
                                inactive_file=inactive_file + GIB, hierarchical_memory_limit=limit,
                                total_active_file=active_file, total_inactive_file=inactive_file)}


def stat(**counts: int) -> str:
    """A memory.stat: one `name bytes` line each."""
    return "\n".join(f"{name} {count}" for name, count in counts.items())
