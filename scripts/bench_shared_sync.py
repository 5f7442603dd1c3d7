"""CPU of one gateway's shared-state exchange with Redis (telemetry/redis_shared.py), the work a gateway does
every `gateway.shared_sync_interval_s`: `python scripts/bench_shared_sync.py --gateways 16 --endpoints 10`
starts a redis-server on a free loopback port (it must be on PATH), lets N gateways publish ledgers of E
endpoints, then times one gateway's exchanges (process CPU and wall per exchange) with a new ledger and a few
affinity and calibration entries each time, as under load. Prints the CPU share of one core the exchange
takes at a few intervals. `--hub`: the same through the hub of `--workers N` (gateway/hub.py, in this
process, so the CPU counted is the worker's and the hub's together) instead of Redis."""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

from aigrid.gateway.hub import Hub
from aigrid.gateway.hub_client import HubClient, HubSharedState
from aigrid.telemetry.redis_shared import RedisSharedState
from aigrid.telemetry.shared import LocalReport, SharedState


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def report(gateway: str, endpoints: int, step: int) -> LocalReport:
    inflight = {f"site-{e}/m": (step % 7 + e % 3, (step % 7) * 900 + e, 20 + e) for e in range(endpoints)}
    return LocalReport(gateway, inflight, {}, ((f"prefix-{step}", "site-1/m"),), {"default": 12 + step % 5},
                       (("site-1/m", 40.0 + step % 9, 35.0, 80.0 + step % 11),))


async def run(gateways: int, endpoints: int, exchanges: int, port: int) -> tuple[float, float]:
    states: list[SharedState] = [RedisSharedState(aioredis.Redis(host="127.0.0.1", port=port), "bench")
                                 for _ in range(gateways)]
    return await timed(states, endpoints, exchanges)


async def run_hub(gateways: int, endpoints: int, exchanges: int, folder: str) -> tuple[float, float]:
    hub = Hub(Path(folder) / "hub.sock", None)
    await hub.start()
    try:
        return await timed([HubSharedState(HubClient(hub.path, hub.token)) for _ in range(gateways)], endpoints, exchanges)
    finally:
        await hub.stop()


async def timed(states: list[SharedState], endpoints: int, exchanges: int) -> tuple[float, float]:
    gateways = len(states)
    for i, st in enumerate(states):
        await st.exchange(report(f"gw-{i}", endpoints, 0))
    me = states[0]
    for step in range(50):  # warm-up
        await me.exchange(report("gw-0", endpoints, step))
    cpu = wall = 0.0
    for step in range(exchanges):
        if step % 200 == 0:  # the others keep exchanging (untimed), so none leaves the live set
            for i, st in enumerate(states[1:], 1):
                await st.exchange(report(f"gw-{i}", endpoints, step))
        c, w = time.process_time(), time.perf_counter()
        view = await me.exchange(report("gw-0", endpoints, step))
        cpu, wall = cpu + time.process_time() - c, wall + time.perf_counter() - w
    assert view.peers == gateways - 1, view.peers
    assert len(view.inflight) == endpoints
    for st in states:
        await st.aclose()
    return cpu / exchanges, wall / exchanges


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gateways", type=int, default=16)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--exchanges", type=int, default=2000)
    ap.add_argument("--hub", action="store_true", help="through the workers' hub instead of Redis")
    a = ap.parse_args()
    if a.hub:
        with tempfile.TemporaryDirectory() as d:
            cpu, wall = asyncio.run(run_hub(a.gateways, a.endpoints, a.exchanges, d))
        report_figures(a, cpu, wall, "the hub")
        return 0
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", d], stdout=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            cpu, wall = asyncio.run(run(a.gateways, a.endpoints, a.exchanges, port))
        finally:
            server.terminate()
            server.wait()
    report_figures(a, cpu, wall, "Redis")
    return 0


def report_figures(a: argparse.Namespace, cpu: float, wall: float, through: str) -> None:
    print(f"{a.gateways} gateways x {a.endpoints} endpoints through {through}: {cpu * 1e3:.3f} ms CPU and "
          f"{wall * 1e3:.3f} ms wall per exchange (mean of {a.exchanges})")
    for interval in (0.1, 0.05, 0.02, 0.01):
        print(f"  every {interval * 1e3:g} ms: {cpu / interval:.1%} of one core")


if __name__ == "__main__":
    raise SystemExit(main())
