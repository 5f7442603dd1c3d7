"""What the front doors and tracing cost the gateway: milliseconds of CPU time per request through the
whole in-process pipeline (ASGI, auth, quota, firewall, routing, proxy, audit) against FAKE engines that
answer at once (tests/gateway/fake_engine.py), for Chat Completions, Anthropic Messages and OpenAI
Responses, streamed and not, with OpenTelemetry off and on (on: every span goes to the SDK's in-memory
exporter through a batch processor, as a real OTLP setup would batch them).

    PYTHONPATH=src:. .venv/bin/python scripts/bench_front_doors.py [--requests 400]

Prints figures (no pass/fail); docs/observability.md quotes them with the machine they came from.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aigrid.gateway.app import build_app, build_gateway
from aigrid.gateway.tracing import Tracing
from aigrid.spec.load import load_spec
from tests.gateway.conftest import DEMO, spec_in
from tests.gateway.fake_engine import FakeEngine

PROMPT = "What is my name?"
BODIES = {
    "chat": ("/v1/chat/completions", lambda s: {"model": "smollm2-135m", "stream": s, "max_tokens": 16,
                                                "messages": [{"role": "user", "content": PROMPT}]}),
    "messages": ("/v1/messages", lambda s: {"model": "smollm2-135m", "stream": s, "max_tokens": 16,
                                            "messages": [{"role": "user", "content": PROMPT}]}),
    "responses": ("/v1/responses", lambda s: {"model": "smollm2-135m", "stream": s, "max_output_tokens": 16,
                                              "store": False, "input": PROMPT}),
}


async def _no_sleep(_: float) -> None:
    return None


async def run(requests: int, traced: bool) -> dict[tuple[str, bool], float]:
    tracing = Tracing(None)
    if traced:
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
        tracing = Tracing(provider)
    fakes = {e.id: FakeEngine(e.id) for e in load_spec(DEMO).endpoints}
    gw = build_gateway(spec_in(Path(tempfile.mkdtemp(prefix="aigrid-bench-"))), fakes, rng=random.Random(0),
                       sleep=_no_sleep, tracing=tracing)
    await gw.scraper.scrape_once()
    out = {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        for name, (path, body) in BODIES.items():
            for stream in (False, True):
                for _ in range(20):  # warm up
                    (await c.post(path, json=body(stream))).raise_for_status()
                runs = []
                for _ in range(3):
                    t0 = time.process_time()  # CPU time of this process: robust to other load on the machine
                    for _ in range(requests):
                        await c.post(path, json=body(stream))
                    runs.append((time.process_time() - t0) / requests * 1000)
                out[(name, stream)] = statistics.median(runs)
    tracing.shutdown()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400)
    n = ap.parse_args().requests
    off, on = asyncio.run(run(n, False)), asyncio.run(run(n, True))
    print(f"ms of CPU per request (median of 3 x {n}; client, gateway and FAKE engines in one process)")
    print(f"{'route':<12}{'stream':<8}{'tracing off':>12}{'tracing on':>12}{'on - off':>10}")
    for (name, stream), ms in off.items():
        print(f"{name:<12}{str(stream):<8}{ms:>12.2f}{on[(name, stream)]:>12.2f}{on[(name, stream)] - ms:>10.2f}")


if __name__ == "__main__":
    main()
