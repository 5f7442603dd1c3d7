"""The helpers of the tests that run `aigrid gateway --workers N` as real processes (test_workers and the other
tests of workers, shutdown, metrics and the launch of `aigrid bench`): an emulator with two engines, a gateway with
workers in front of it, its worker processes and a kept-alive connection to each. A module of its own, not a test
file, so that no test file imports another (until the twenty-ninth session they lived in test_workers.py)."""

from __future__ import annotations

import contextlib
import http.client
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from aigrid.bench.procs import Proc, tree
from aigrid.engines.llama_server import free_ports
from tests.ports import on_a_free_port

LIMIT = 15


def spec(tmp: Path, emu_port: int, gw_port: int, security: dict | None = None) -> dict:
    """Two emulated engines behind a gateway on `gw_port`; `security` replaces the audit log and quota below."""
    return {"name": "workers", "gateway": {"host": "127.0.0.1", "port": gw_port, "network": "none",
                                           "scrape_interval_s": 0.5},
            "models": {"emulated": {"family": "emulated", "params_b": 1.0}},
            "sites": {f"s{i}": {"name": f"S{i}", "lat": 50.0, "lon": 8.0 + i, "jurisdiction": "EU"} for i in range(2)},
            "endpoints": [{"id": f"emu{i}", "site": f"s{i}", "model": "emulated", "engine": "vllm",
                           "url": f"http://127.0.0.1:{emu_port + i}", "slots": 64} for i in range(2)],
            "security": security if security is not None else {
                "audit": {"path": str(tmp / "audit.db"), "signing_key": str(tmp / "audit.pem")},
                "default_quotas": {"requests_per_min": LIMIT}}}


@dataclass
class TwoWorkers:
    gateway: Proc
    base: str
    port: int
    workers: list[int]


def emulator(tmp_path: Path, decode_ms: int) -> tuple[Proc, int]:
    """The emulator with two engines on two consecutive free ports, ready; tried again on new ports when another
    process took one between the pick and the bind (seen on a busy machine: free_ports' small race)."""
    def start(emu_port: int) -> tuple[Proc, int]:  # the emulator's two engines: emu_port and emu_port + 1
        emu = Proc("emulator", [sys.executable, "-m", "aigrid.engines.emulator_cli", "--port", str(emu_port),
                                "--engines", "2", "--decode-base-ms", str(decode_ms), "--prefill-base-ms", "1"],
                   tmp_path).start()
        try:
            emu.wait_ready(f"http://127.0.0.1:{emu_port + 1}/health")
        except BaseException:
            emu.stop()
            raise
        return emu, emu_port

    return on_a_free_port(start, pick=lambda: free_ports(2))


def gateway_with_workers(tmp_path: Path, doc: Callable[[int], dict], workers: int = 2) -> tuple[Proc, int]:
    """`aigrid gateway --workers 2` (or `workers`) with the spec `doc(port)`, once /livez answers."""
    return gateway_process(tmp_path, doc, lambda spec_path, _port: [
        "-m", "aigrid.cli", "gateway", str(spec_path), "--workers", str(workers)])


def gateway_process(tmp_path: Path, doc: Callable[[int], dict],
                    args: Callable[[Path, int], list[str]]) -> tuple[Proc, int]:
    """`python args(spec_path, port)` serving the spec `doc(port)` (written to tmp_path/spec.yaml), once /livez
    answers (stopped if it does not); on a new port when another process took the picked one before the gateway
    bound it (tests/ports.py)."""
    def start(gw_port: int) -> tuple[Proc, int]:
        spec_path = tmp_path / "spec.yaml"
        spec_path.write_bytes(orjson.dumps(doc(gw_port)))  # JSON is YAML
        gw = Proc("gateway", [sys.executable, *args(spec_path, gw_port)], tmp_path, cwd=tmp_path).start()
        try:
            gw.wait_ready(f"http://127.0.0.1:{gw_port}/livez", timeout_s=120)
        except BaseException:
            gw.stop()
            raise
        return gw, gw_port

    return on_a_free_port(start)


def worker_processes(parent: int) -> list[int]:
    """The `aigrid worker` processes of `parent`: its own children only. A worker's child forked to run a helper
    program (a library at start) carries the worker's command line until it execs: one was taken for a worker and
    had gone by the time it was read (CI: "/proc/813/fd" missing; "no worker holds the connection")."""
    found = []
    for pid in tree(parent):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        ppid = int(stat[stat.rfind(")") + 2:].split()[1])
        if ppid == parent and b"worker" in argv and b"aigrid.cli" in argv:
            found.append(pid)
    return found


def both_workers(parent: int) -> list[int]:
    """The two worker processes under `parent`, once both exist: /livez answers from the first worker up; the
    second may still be starting (serving_workers waits until it serves)."""
    deadline = time.monotonic() + 30
    while len(workers := worker_processes(parent)) != 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(workers) == 2, workers
    return workers


@contextlib.contextmanager
def two_workers(tmp_path: Path, decode_ms: int, security: dict | None = None) -> Iterator[TwoWorkers]:
    """An emulator with two engines (EMULATED) and `aigrid gateway --workers 2` in front of them, as real
    processes, both workers serving; both stopped on the way out."""
    emu, emu_port = emulator(tmp_path, decode_ms)
    gw: Proc | None = None
    try:
        # the port picked only now: the emulator's second port is taken
        gw, gw_port = gateway_with_workers(tmp_path, lambda port: spec(tmp_path, emu_port, port, security))
        yield TwoWorkers(gw, f"http://127.0.0.1:{gw_port}", gw_port, serving_workers(gw.pid, gw_port))
    finally:
        if gw is not None:
            gw.stop()
        emu.stop()


def _worker_of(conn: http.client.HTTPConnection, workers: list[int], gw_port: int) -> int:
    """The worker process that accepted this connection: the one holding the socket whose peer is our port."""
    port = conn.sock.getsockname()[1]
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if int(f[1].rsplit(":", 1)[1], 16) == gw_port and int(f[2].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{f[9]}]")
    for pid in workers:
        with contextlib.suppress(OSError):  # a worker gone meanwhile holds nothing
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return pid
    raise AssertionError(f"no worker holds the connection from port {port}")


def serving_workers(parent: int, gw_port: int) -> list[int]:
    """The two worker processes under `parent`, once both serve: /livez answered from the first one up, and the
    second can start seconds later on a loaded machine (held back 20 s, it took no connection of the first 20+
    ones; the connections to the first, idle meanwhile, were closed by its keep-alive timeout)."""
    workers = both_workers(parent)
    serving: list[http.client.HTTPConnection] = []
    try:
        one_connection_per_worker(gw_port, workers, serving)
    finally:
        for conn in serving:
            conn.close()
    return workers


def one_connection_per_worker(gw_port: int, workers: list[int], conns: list[http.client.HTTPConnection],
                              timeout_s: float = 120) -> dict[int, http.client.HTTPConnection]:
    """New connections until each worker holds one (kept in `conns`, for the caller to close; the others closed
    at once): worker pid -> a connection it accepted. Until `timeout_s`: a worker accepts only once it serves
    (serving_workers), and the kernel may hand a long run of them to one worker (200 tries took about 1 s)."""
    by_worker: dict[int, http.client.HTTPConnection] = {}
    deadline = time.monotonic() + timeout_s
    while len(by_worker) < len(workers) and time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", gw_port, timeout=30)
        conn.request("GET", "/livez")
        conn.getresponse().read()
        worker = _worker_of(conn, workers, gw_port)
        if worker in by_worker:
            conn.close()
            time.sleep(0.01)
        else:
            by_worker[worker] = conn
            conns.append(conn)
    assert len(by_worker) == len(workers), f"the kernel never handed a connection to every worker in {timeout_s} s"
    return by_worker
