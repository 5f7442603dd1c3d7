"""`aigrid gateway --workers 2`: /metrics reports the requests in flight of the whole gateway, whichever
worker serves the scrape (docs/reliability.md). Before, the gauge was each worker's own count, written only
when that worker served /metrics and read as the highest live worker's: 9 of 16 open streams."""

from __future__ import annotations

import contextlib
import http.client
import os
import time
from pathlib import Path

import httpx

from tests.gateway.workers_helpers import one_connection_per_worker, two_workers

STREAMS = 20


def established(pids: list[int], port: int) -> dict[int, int]:
    """Connections to the gateway's port each process holds (from /proc: no psutil)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.read().splitlines()[1:]:
                cols = line.split()
                if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "01":  # local port, ESTABLISHED
                    inodes.add(cols[9])
    out = {}
    for pid in pids:
        links = []
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):  # closed since it was listed (a worker's own connections come and go)
                links.append(os.readlink(fd))
        out[pid] = sum(1 for link in links if link.startswith("socket:[") and link[8:-1] in inodes)
    return out


def inflight(metrics: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("aigrid_endpoint_inflight{"))


def scraped_by_each_worker(gw_port: int, workers: list[int]) -> dict[int, float]:
    """The in-flight total in /metrics as each worker serves it: a new connection until each holds one."""
    conns: list[http.client.HTTPConnection] = []
    try:
        by_worker = one_connection_per_worker(gw_port, workers, conns)
        out = {}
        for pid, conn in by_worker.items():
            local = conn.sock.getsockname()[1]
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            text = resp.read().decode()
            assert resp.status == 200 and conn.sock.getsockname()[1] == local  # the same connection: that worker
            out[pid] = inflight(text)
        return out
    finally:
        for c in conns:
            c.close()


def test_metrics_sum_the_requests_in_flight_over_the_workers(tmp_path: Path) -> None:
    clients: list[httpx.Client] = []
    # 100 ms a token: the 2000-token streams stay open 200 s, far past the test even on a loaded machine (at 25 ms
    # they ended 50 s after they started, and the count checked below with them)
    with two_workers(tmp_path, decode_ms=100, security={"audit": None}) as grid:
        base, workers, gw_port = grid.base, grid.workers, grid.port
        try:
            streams: list[httpx.Response] = []
            held: dict[int, int] = {}
            # a client each: a new connection, which the kernel hands to either worker (whichever wakes first:
            # on a loaded machine one may take a long run of them). STREAMS of them, and more until both workers
            # serve some, at most three times as many (both serve: two_workers waits for that)
            while len(streams) < STREAMS or not all(n > 0 for n in held.values()):
                assert len(streams) < 3 * STREAMS, held  # both workers serve some of them
                clients.append(httpx.Client(timeout=30))
                request = clients[-1].build_request("POST", f"{base}/v1/chat/completions", json={
                    "model": "emulated", "stream": True, "max_tokens": 2000,
                    "messages": [{"role": "user", "content": f"question {len(streams)}"}]})
                streams.append(clients[-1].send(request, stream=True))
                if len(streams) >= STREAMS:
                    held = established(workers, gw_port)
            assert all(s.status_code == 200 for s in streams)
            assert all(n > 0 for n in held.values()), held  # both workers serve some of them
            opened = len(streams)
            deadline = time.monotonic() + 30
            while inflight(httpx.get(f"{base}/metrics", timeout=10).text) != opened and time.monotonic() < deadline:
                time.sleep(0.2)
            for _ in range(3):  # whichever worker serves the scrape: each of them, three times
                assert scraped_by_each_worker(gw_port, workers) == {pid: opened for pid in workers}, held
            for s in streams:
                s.close()
            deadline = time.monotonic() + 30
            while inflight(httpx.get(f"{base}/metrics", timeout=10).text) != 0 and time.monotonic() < deadline:
                time.sleep(0.2)
            for _ in range(2):
                assert scraped_by_each_worker(gw_port, workers) == {pid: 0 for pid in workers}
        finally:
            for c in clients:
                c.close()
