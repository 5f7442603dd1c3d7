"""The listening socket of `--workers N` (the demo's default on two cores or more) stays with the gateway's own
processes: found with `ss -ltnp 'sport = :8080'` on `make run` after the quickstart's failure drill, which listed
the two llama-server engines restarted after `kill -9` among the holders of the gateway's port (the parent made the
socket inheritable for its workers, and uvloop's subprocesses keep every inheritable fd, close_fds or not)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import uvloop

from aigrid.bench.procs import tree
from aigrid.gateway.workers import listen
from tests.gateway.test_workers import both_workers, gateway_with_workers

O_CLOEXEC = 0o2000000

HOLDS = """
import os, socket, sys
port, held = int(sys.argv[1]), []
for fd in map(int, os.listdir("/proc/self/fd")):
    try:
        s = socket.socket(fileno=os.dup(fd))
    except OSError:
        continue
    try:
        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) and s.getsockname()[1] == port:
            held.append(fd)
    except OSError:
        pass
    finally:
        s.close()
print(held)
"""


def test_a_process_started_after_the_socket_does_not_get_it() -> None:
    """As the gateway's parent restarts an engine (llama_server._spawn): a child started on uvloop once the
    workers' socket listens holds no socket listening on the gateway's port."""
    async def child_holds(port: int) -> str:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", HOLDS, str(port), stdout=asyncio.subprocess.PIPE,
                                                    start_new_session=True)
        out, _ = await proc.communicate()
        return out.decode().strip()

    sock = listen("127.0.0.1", 0)
    try:
        assert uvloop.run(child_holds(sock.getsockname()[1])) == "[]"
    finally:
        sock.close()


def _listening_fds(pid: int, port: int) -> list[int]:
    """The fds of `pid` that are a socket listening on 127.0.0.1:`port` (its /proc net table and fd links)."""
    inodes = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            inodes.add(f"socket:[{inode}]")
    fds = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                fds.append(int(fd))
        except OSError:
            continue  # closed meanwhile
    return fds


def _flags(pid: int, fd: int) -> int:
    for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("flags:"):
            return int(line.split()[1], 8)
    raise AssertionError(f"no flags for fd {fd} of {pid}")


def test_the_gateway_and_its_workers_keep_the_socket_from_their_children(tmp_path: Path) -> None:
    """`aigrid gateway --workers 2` as real processes: the parent and each worker hold the listening socket
    close-on-exec, so an engine the parent restarts, or a program a worker starts (an MCP server's relay), does
    not get it."""
    def doc(port: int) -> dict:
        return {"name": "sockets", "gateway": {"host": "127.0.0.1", "port": port, "network": "none"},
                "models": {"m": {"family": "m", "params_b": 1.0}},
                "sites": {"s": {"name": "S", "lat": 50.0, "lon": 8.0, "jurisdiction": "EU"}},
                "endpoints": [{"id": "e", "site": "s", "model": "m", "engine": "vllm", "url": "http://127.0.0.1:9"}],
                "security": {"audit": {"path": str(tmp_path / "audit.db"), "signing_key": str(tmp_path / "a.pem")}}}

    gw, port = gateway_with_workers(tmp_path, doc)
    try:
        workers = both_workers(gw.pid)
        seen = 0
        for pid in [gw.pid, *workers]:
            for fd in _listening_fds(pid, port):
                seen += 1
                assert _flags(pid, fd) & O_CLOEXEC, f"pid {pid} ({'parent' if pid == gw.pid else 'worker'}) fd {fd}"
        assert seen >= 3  # the parent's and each worker's
        assert all(p in (gw.pid, *workers) or not _listening_fds(p, port) for p in tree(gw.pid))
    finally:
        gw.stop()
