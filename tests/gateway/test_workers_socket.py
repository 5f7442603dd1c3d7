"""The listening socket of `--workers N` (the demo's default on two cores or more) stays with the gateway's own
processes: found with `ss -ltnp 'sport = :8080'` on `make run` after the quickstart's failure drill, which listed
the two llama-server engines restarted after `kill -9` among the holders of the gateway's port (the parent made the
socket inheritable for its workers, and uvloop's subprocesses keep every inheritable fd, close_fds or not)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import uvloop

from aigrid.bench.procs import tree
from aigrid.gateway.workers import listen
from tests.gateway.workers_helpers import gateway_with_workers, serving_workers, worker_processes

O_CLOEXEC = 0o2000000
MCP_SERVER = Path(__file__).resolve().parents[1] / "agents" / "mcp_server.py"

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
        # the check itself finds the socket where a child does get it
        given = subprocess.run([sys.executable, "-c", HOLDS, str(sock.getsockname()[1])], pass_fds=(sock.fileno(),),
                               capture_output=True, text=True, timeout=60)
        assert given.stdout.strip() == f"[{sock.fileno()}]", given
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


def _holders(gw_pid: int, port: int, gateway: list[int]) -> list[int]:
    """Check the gateway's own processes (`gateway`: the parent and its workers) hold the listening socket, each
    close-on-exec, and no other process under the parent holds it; the other processes (the MCP relays and
    servers) returned."""
    for pid in gateway:
        fds = _listening_fds(pid, port)
        assert fds, f"pid {pid} ({'parent' if pid == gw_pid else 'worker'}) does not hold the socket"
        for fd in fds:
            assert _flags(pid, fd) & O_CLOEXEC, f"pid {pid} ({'parent' if pid == gw_pid else 'worker'}) fd {fd}"
    others = [p for p in tree(gw_pid) if p not in gateway]
    assert {p: _held(p, port) for p in others} == dict.fromkeys(others, [])
    return others


def _held(pid: int, port: int) -> list[int]:
    """`_listening_fds`, none for a process gone meanwhile."""
    try:
        return _listening_fds(pid, port)
    except OSError:
        return []


@pytest.mark.parametrize("workers", [1, 2])
def test_the_gateway_and_its_workers_keep_the_socket_from_their_children(tmp_path: Path, workers: int) -> None:
    """`aigrid gateway --workers 2` as real processes, an MCP server started by each worker: the parent and each
    worker hold the listening socket close-on-exec (each serves), and no MCP relay (a uvloop child of a worker)
    holds it, nor after a worker is killed and started again (the socket handed on by pass_fds once more). With
    one process the socket is uvicorn's own, made after its MCP server started: only its flag is checked."""
    def doc(port: int) -> dict:
        return {"name": "sockets", "gateway": {"host": "127.0.0.1", "port": port, "network": "none"},
                "models": {"m": {"family": "m", "params_b": 1.0}},
                "sites": {"s": {"name": "S", "lat": 50.0, "lon": 8.0, "jurisdiction": "EU"}},
                "endpoints": [{"id": "e", "site": "s", "model": "m", "engine": "vllm", "url": "http://127.0.0.1:9"}],
                "agents": {"mcp_servers": {"m": {"command": [sys.executable, str(MCP_SERVER)]}}},
                "security": {"audit": {"path": str(tmp_path / "audit.db"), "signing_key": str(tmp_path / "a.pem")}}}

    gw, port = gateway_with_workers(tmp_path, doc, workers=workers)
    try:
        if workers == 1:  # no workers: uvicorn's own socket, close-on-exec (an engine restarted later gets none)
            _holders(gw.pid, port, [gw.pid])
            return
        first = serving_workers(gw.pid, port)  # each serves: each got the socket, and made it close-on-exec
        assert len(_holders(gw.pid, port, [gw.pid, *first])) >= 2  # each worker's MCP relay (and its server)
        os.kill(first[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while (first[0] in worker_processes(gw.pid) or len(worker_processes(gw.pid)) != 2) and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        again = serving_workers(gw.pid, port)
        (new,) = set(again) - set(first)
        _holders(gw.pid, port, [gw.pid, *again])
        assert len(tree(new)) > 1  # the new worker's MCP relay among those checked
    finally:
        gw.stop()
