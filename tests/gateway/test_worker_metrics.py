"""`aigrid gateway --workers 2`: /metrics reports the requests in flight of the whole gateway, whichever
worker serves the scrape (docs/reliability.md). Before, the gauge was each worker's own count, written only
when that worker served /metrics and read as the highest live worker's: 9 of 16 open streams."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import httpx
import orjson

from aigrid.bench.procs import Proc, tree
from aigrid.engines.llama_server import free_port, free_ports

STREAMS = 20


def spec(tmp: Path, emu_port: int, gw_port: int) -> dict:
    return {"name": "inflight", "gateway": {"host": "127.0.0.1", "port": gw_port, "network": "none",
                                            "scrape_interval_s": 0.5},
            "models": {"emulated": {"family": "emulated", "params_b": 1.0}},
            "sites": {f"s{i}": {"name": f"S{i}", "lat": 50.0, "lon": 8.0 + i, "jurisdiction": "EU"} for i in range(2)},
            "endpoints": [{"id": f"emu{i}", "site": f"s{i}", "model": "emulated", "engine": "vllm",
                           "url": f"http://127.0.0.1:{emu_port + i}", "slots": 64} for i in range(2)],
            "security": {"audit": None}}


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
        fds = Path(f"/proc/{pid}/fd")
        links = [os.readlink(fd) for fd in fds.iterdir() if fd.is_symlink()]
        out[pid] = sum(1 for link in links if link.startswith("socket:[") and link[8:-1] in inodes)
    return out


def inflight(metrics: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("aigrid_endpoint_inflight{"))


def test_metrics_sum_the_requests_in_flight_over_the_workers(tmp_path: Path) -> None:
    emu_port = free_ports(2)
    emu = Proc("emulator", [sys.executable, "-m", "aigrid.engines.emulator_cli", "--port", str(emu_port),
                            "--engines", "2", "--decode-base-ms", "25", "--prefill-base-ms", "1"], tmp_path).start()
    gw: Proc | None = None
    clients: list[httpx.Client] = []
    try:
        emu.wait_ready(f"http://127.0.0.1:{emu_port + 1}/health")
        gw_port = free_port()
        spec_path = tmp_path / "spec.yaml"
        spec_path.write_bytes(orjson.dumps(spec(tmp_path, emu_port, gw_port)))
        gw = Proc("gateway", [sys.executable, "-m", "aigrid.cli", "gateway", str(spec_path), "--workers", "2"],
                  tmp_path, cwd=tmp_path).start()
        base = f"http://127.0.0.1:{gw_port}"
        gw.wait_ready(f"{base}/livez", timeout_s=120)
        workers = [p for p in tree(gw.pid) if p != gw.pid]
        assert len(workers) == 2, workers
        streams = []
        for i in range(STREAMS):  # a client each: a new connection, which the kernel hands to either worker
            clients.append(httpx.Client(timeout=30))
            request = clients[-1].build_request("POST", f"{base}/v1/chat/completions", json={
                "model": "emulated", "stream": True, "max_tokens": 2000,
                "messages": [{"role": "user", "content": f"question {i}"}]})
            streams.append(clients[-1].send(request, stream=True))
        assert all(s.status_code == 200 for s in streams)
        held = established(workers, gw_port)
        assert all(n > 0 for n in held.values()), held  # both workers serve some of them
        deadline = time.monotonic() + 10
        while inflight(httpx.get(f"{base}/metrics").text) != STREAMS and time.monotonic() < deadline:
            time.sleep(0.2)
        for _ in range(6):  # whichever worker answers the scrape
            with httpx.Client() as c:
                assert inflight(c.get(f"{base}/metrics").text) == STREAMS, held
        for s in streams:
            s.close()
        deadline = time.monotonic() + 10
        while inflight(httpx.get(f"{base}/metrics").text) != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        for _ in range(4):
            with httpx.Client() as c:
                assert inflight(c.get(f"{base}/metrics").text) == 0
    finally:
        for c in clients:
            c.close()
        if gw is not None:
            gw.stop()
        emu.stop()
