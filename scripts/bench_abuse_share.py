"""What sharing abuse signals over workers costs (`--workers N`, docs/security.md): CPU per request.

    PYTHONPATH=src python scripts/bench_abuse_share.py [--requests 50000] [--batch 250] [--keys 100] [--greedy 0.33]

Prints microseconds per request for: the monitor alone (a lone gateway's request path); a worker's request
path with sharing (SharedAbuseMonitor.observe: the same plus queueing the digest and merging the hub's
verdict); per batch, split by process: the worker's part (encode the batch, decode the answer) and the
hub's (decode, count in its monitor, answer); and the whole exchange through a real hub on a Unix socket,
both ends in this one process (their sum plus the socket and the event loop). `--batch` is the digests per
exchange (250 = 1,000 requests/s per worker at the default 0.25 s interval). Every prompt is new, its first
characters too (since 4 Dec 2026; before, the number came last and 13 prefixes repeated), so every
key ends up signalled (diversity) and each request changes its key's verdict: the largest answers. `--greedy`: the
share of requests at temperature 0 (at 0.6 or more the enumeration signal looks for the most repeated greedy prefix
on every request: `--greedy 1 --keys 1` is one client running an evaluation or an agent at temperature 0).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import orjson

from aigrid.gateway.hub import Hub
from aigrid.gateway.hub_client import HubClient
from aigrid.security.firewall import abuse_shared as wire
from aigrid.security.firewall.abuse import AbuseMonitor, RequestTraits, digest
from aigrid.security.firewall.abuse_shared import HubAbuse, SharedAbuseMonitor


def traits(n: int, greedy: float) -> list[RequestTraits]:
    words = "summarise the following support ticket and list the customer's open questions".split()
    return [RequestTraits(f"#{i} " + " ".join(words[(i + j) % len(words)] for j in range(40)),
                          temperature=0.0 if i % 100 < greedy * 100 else 0.7, logprobs=i % 5 == 0, top_logprobs=5)
            for i in range(n)]


def per_request_us(observe: object, ts: list[RequestTraits], keys: int) -> float:
    start = time.perf_counter()
    for i, t in enumerate(ts):
        observe(f"key{i % keys}", t)  # type: ignore[operator]
    return (time.perf_counter() - start) / len(ts) * 1e6


def split_us(ts: list[RequestTraits], keys: int, batch: int) -> tuple[float, float]:
    """(worker's part, hub's part) of the exchange, microseconds per digest."""
    hub = HubAbuse(AbuseMonitor())
    worker = SharedAbuseMonitor(AbuseMonitor())
    ds = [(f"key{i % keys}", digest(t, 32)) for i, t in enumerate(ts)]
    worker_s = hub_s = 0.0
    for i in range(0, len(ds), batch):
        t0 = time.perf_counter()
        sent = orjson.dumps(wire.request_to_wire(worker.since, ds[i:i + batch]))
        t1 = time.perf_counter()
        answer = orjson.dumps(wire.answer_to_wire(hub.exchange(*wire.request_from_wire(orjson.loads(sent)))))
        t2 = time.perf_counter()
        worker.apply(wire.answer_from_wire(orjson.loads(answer)))
        t3 = time.perf_counter()
        worker_s += (t1 - t0) + (t3 - t2)
        hub_s += t2 - t1
    return worker_s / len(ds) * 1e6, hub_s / len(ds) * 1e6


async def exchange_us(ts: list[RequestTraits], keys: int, batch: int) -> tuple[float, int]:
    work = Path(tempfile.mkdtemp(prefix="aigrid-abuse-bench-"))
    hub = Hub(work / "hub.sock", None)
    await hub.start()
    client = HubClient(hub.path, hub.token)
    try:
        ds = [(f"key{i % keys}", digest(t, 32)) for i, t in enumerate(ts)]
        worker = SharedAbuseMonitor(AbuseMonitor())
        worker.apply(await client.abuse_exchange(0, []))  # connect
        start = time.perf_counter()
        for i in range(0, len(ds), batch):
            worker.apply(await client.abuse_exchange(worker.since, ds[i:i + batch]))
        return (time.perf_counter() - start) / len(ds) * 1e6, sum(worker.shared(f"key{k}") is not None
                                                                   for k in range(keys))
    finally:
        await client.aclose()
        await asyncio.sleep(0.05)  # the hub sees the connection end before it stops
        await hub.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--keys", type=int, default=100)
    ap.add_argument("--greedy", type=float, default=0.33, help="share of requests at temperature 0")
    args = ap.parse_args()
    ts = traits(args.requests, args.greedy)
    alone = per_request_us(AbuseMonitor().observe, ts, args.keys)
    shared = SharedAbuseMonitor(AbuseMonitor())
    with_share = per_request_us(shared.observe, ts, args.keys)
    worker_us, hub_part_us = split_us(ts, args.keys, args.batch)
    hub_us, signalled = asyncio.run(exchange_us(ts, args.keys, args.batch))
    print(f"{args.requests} requests, {args.keys} keys, {args.batch} digests per exchange")
    print(f"monitor alone (lone gateway):      {alone:6.2f} us/request")
    print(f"worker request path with sharing:  {with_share:6.2f} us/request")
    print(f"exchange, the worker's part:       {worker_us:6.2f} us/request")
    print(f"exchange, the hub's part:          {hub_part_us:6.2f} us/request")
    print(f"exchange via a Unix socket (both): {hub_us:6.2f} us/request  ({signalled} keys signalled)")


if __name__ == "__main__":
    main()
