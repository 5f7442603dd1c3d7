"""A machine's /proc and /sys written under tmp_path, for the readers of aigrid.memory and aigrid.cores (their
`root`): the machine's own /proc and /sys are never read by the tests that use these."""

from __future__ import annotations

from pathlib import Path

GIB = 2**30


def machine(tmp_path: Path, groups: dict[str, dict[str, str]] | None = None, own: str = "/",
            meminfo: str | None = None) -> Path:
    """A root directory: /proc/self/cgroup names `own` (cgroup v2's `0::` line, beside a v1 line), /proc/meminfo
    holds `meminfo` (none where None), and each of `groups` ("" the hierarchy's root, "system.slice/x.service")
    is a directory under /sys/fs/cgroup with those files."""
    root = tmp_path / "root"
    (root / "proc" / "self").mkdir(parents=True, exist_ok=True)
    (root / "proc" / "self" / "cgroup").write_text(f"1:name=systemd:{own}\n0::{own}\n")
    if meminfo is not None:
        (root / "proc" / "meminfo").write_text(meminfo)
    for path, files in (groups or {"": {}}).items():
        group = root / "sys" / "fs" / "cgroup" / path
        group.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (group / name).write_text(text + "\n")
    return root


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


def stat(**counts: int) -> str:
    """A memory.stat: one `name bytes` line each."""
    return "\n".join(f"{name} {count}" for name, count in counts.items())
