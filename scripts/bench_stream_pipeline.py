"""CPU time of one streamed answer of N one-character events through the whole in-process gateway (ASGI, auth,
quota, firewall, routing, relay, the door's translation) against a FAKE engine (tests/gateway/fake_engine.py), for
the chat, Messages and Responses doors: linear if the seconds per 100k events stay flat as N grows. Brief QUAD
(thirty-sixth session): through a live gateway 300,000 such events took 8.2 s on the Messages door and 600,000 took
22.0 s; this leaves out the server (uvicorn), the sockets and the client's reading.

    PYTHONPATH=src:. .venv/bin/python scripts/bench_stream_pipeline.py [N ...]   # default 50000 100000 200000

Prints figures (no pass/fail). The relay cuts an engine's stream past 32 MiB (the fake's events are about 150 bytes:
some 220,000 of them), so N above 200,000 measures a cut answer: "MB out" stops growing there.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from aigrid.gateway.app import build_app, build_gateway
from aigrid.spec.load import load_spec
from tests.gateway.conftest import DEMO, spec_in
from tests.gateway.fake_engine import FakeEngine

ASK = [{"role": "user", "content": "hi"}]
DOORS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"model": "smollm2-135m", "stream": True, "max_tokens": 1000, "messages": ASK}),
    "messages": ("/v1/messages", {"model": "smollm2-135m", "stream": True, "max_tokens": 1000, "messages": ASK}),
    "responses": ("/v1/responses", {"model": "smollm2-135m", "stream": True, "max_output_tokens": 1000,
                                    "store": False, "input": "hi"}),
}


async def _no_sleep(_: float) -> None:
    return None


async def one(n: int, door: str) -> tuple[float, int]:
    fakes = {e.id: FakeEngine(e.id, words=("a",) * n) for e in load_spec(DEMO).endpoints}
    gw = build_gateway(spec_in(Path(tempfile.mkdtemp(prefix="aigrid-bench-"))), fakes, rng=random.Random(0),
                       sleep=_no_sleep)
    await gw.scraper.scrape_once()
    path, body = DOORS[door]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw",
                                 timeout=600) as c:
        t = time.process_time()
        r = await c.post(path, json=body)
        cpu = time.process_time() - t
    r.raise_for_status()
    return cpu, len(r.content)


def main() -> None:
    logging.disable(logging.WARNING)
    for n in [int(a) for a in sys.argv[1:]] or [50_000, 100_000, 200_000]:
        for door in DOORS:
            cpu, size = asyncio.run(one(n, door))
            print(f"{door:9s} {n:>9,} events: {cpu:6.2f} s CPU, {cpu / n * 1e5:5.2f} s per 100k, "
                  f"{size / 1e6:6.1f} MB out", flush=True)


if __name__ == "__main__":
    main()
