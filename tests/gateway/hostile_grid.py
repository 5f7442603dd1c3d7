"""The demo grid on two hostile engines (hostile_engine.py on real sockets, read by the gateway's real adapter), a
tenant `metered`'s gateway in front: the doors a test posts to, a sane engine's answer, and the grid itself
(test_hostile_engines.py and the tests of what a hostile engine's answer does share these)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from aigrid.engines.openai_compat import OpenAICompatEngine
from aigrid.gateway.app import Gateway, build_app
from aigrid.gateway.wiring import Upstream, upstream
from aigrid.spec.models import QuotaSpec
from tests.gateway import hostile_engine as H
from tests.gateway.conftest import spec_in
from tests.gateway.metered_gateway import TENANT, metered_gateway

M = "smollm2-135m"
DOORS = {
    "chat": ("/v1/chat/completions", {"model": M, "messages": [{"role": "user", "content": "Say hello"}],
                                      "max_tokens": 8}),
    "completions": ("/v1/completions", {"model": M, "prompt": "Say hello", "max_tokens": 8}),
    "messages": ("/v1/messages", {"model": M, "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 8}),
    "responses": ("/v1/responses", {"model": M, "input": "Say hello", "max_output_tokens": 8, "store": False}),
}
SANE = H.answer_of()


def sane(path: str, req: dict) -> H.Script:
    if req.get("stream"):
        return H.stream(*H.sse(H.token("Hi"), H.token("", "stop")))
    return H.whole(orjson.dumps(SANE))


class Grid:
    """The demo grid, every endpoint on one of two hostile engines: Tokyo's (`bad`, tried first for a Tokyo
    client) and the others' (`good`)."""

    def __init__(self, gw: Gateway, up: Upstream, bad: H.HostileEngine, good: H.HostileEngine) -> None:
        self.gw, self.up, self.bad, self.good = gw, up, bad, good

    def failures(self, endpoint: str) -> int:
        return self.gw.store._live[endpoint].breaker.failures

    async def post(self, door: str, stream: bool, **extra: Any) -> httpx.Response:
        path, body = DOORS[door]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(self.gw)), base_url="http://gw",
                                     timeout=30) as c:
            return await c.post(path, json={**body, "stream": stream, **extra}, headers=TENANT)


async def grid(tmp_path: Path, bad: Callable[[str, dict], H.Script], good: Callable[[str, dict], H.Script] = sane,
               context: int | None = None, requests_per_min: int = 1000, kind: str = "vllm") -> AsyncIterator[Grid]:
    engines = [await H.HostileEngine(bad).start(), await H.HostileEngine(good).start()]
    up = upstream()
    adapters = {e.id: OpenAICompatEngine(kind, engines[e.site != "nrt"].url, up.client, transport=up.http1)
                for e in spec_in(tmp_path).endpoints}
    gw = await metered_gateway(tmp_path, adapters, QuotaSpec(requests_per_min=requests_per_min,
                                                                        tokens_per_min=1_000_000_000))
    if context is not None:
        gw.proxy._contexts = {e: context for e in gw.proxy._contexts}
    try:
        yield Grid(gw, up, *engines)
    finally:
        await gw.guard.stop()
        await up.aclose()
        for e in engines:
            await e.stop()


CALCULATOR = [{"type": "function", "function": {"name": "calculator"}}]


ENDS = {"messages": b"event: error", "responses": b"event: response.failed"}
