"""A machine's memory and cgroup files written under tmp_path, for the readers of aigrid.memory and aigrid.cores:
the machine's own /proc and /sys are never read by the tests that use these."""

from __future__ import annotations

from pathlib import Path

GIB = 2**30


def cgroup(tmp_path: Path, limit: str, current: int, inactive_file: int | None = None) -> Path:
    group = tmp_path / "cgroup"
    group.mkdir(exist_ok=True)
    (group / "memory.max").write_text(limit + "\n")
    (group / "memory.current").write_text(f"{current}\n")
    if inactive_file is not None:
        (group / "memory.stat").write_text(f"anon 1000\nfile 5000\nactive_file 10\ninactive_file {inactive_file}\n")
    return group


def meminfo(tmp_path: Path, gib: int) -> Path:
    path = tmp_path / "meminfo"
    path.write_text(f"MemTotal:       99999999 kB\nMemAvailable:   {gib * 2**20} kB\n")
    return path
