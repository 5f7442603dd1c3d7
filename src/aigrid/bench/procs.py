"""Child processes for the side-by-side benchmark: start, wait until a URL answers, measure CPU and RSS of
the whole process tree (/proc, Linux), stop."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2:].split()  # fields from 3 (state) on; the name may hold spaces


def tree(pid: int) -> list[int]:
    """pid and every descendant."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                children.setdefault(int(st[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def cpu_seconds(pid: int) -> float:
    """user + system CPU of the process tree rooted at pid."""
    total = 0
    for p in tree(pid):
        st = _stat(p)
        if st is not None:
            total += int(st[11]) + int(st[12])
    return total / _TICK


def rss_kib(pid: int) -> int | None:
    """VmRSS of the one process `pid`, in KiB; None when it is gone (or a kernel thread, without VmRSS)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), None)


def rss_mb(pid: int) -> float:
    """RSS of the process tree rooted at pid, in MiB (VmRSS's kB / 1024)."""
    return sum(size for p in tree(pid) if (size := rss_kib(p)) is not None) / 1024


class Proc:
    """A child in its own session (so that stop() reaches its children), output to a log file."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, *, cpus: str | None = None,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.argv = (["taskset", "-c", cpus] if cpus else []) + argv
        self.log_path = log_dir / f"{name}.log"
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def start(self) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.popen = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                      cwd=self.cwd, start_new_session=True)
        log.close()
        return self

    def wait_ready(self, url: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.popen is not None and self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}; see {self.log_path}:\n"
                                   + self.log_tail())
            try:
                if httpx.get(url, timeout=1.0, trust_env=False).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} did not answer {url} within {timeout_s:g}s; see {self.log_path}:\n"
                           + self.log_tail())

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=5)
        except ProcessLookupError:
            pass
