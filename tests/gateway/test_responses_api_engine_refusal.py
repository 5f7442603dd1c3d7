"""An engine's own refusal (a hosted engine's 429 with its Retry-After) answered by the Responses door: its
Retry-After and the gateway's `x-should-retry` reach the client as on /v1/chat/completions (proxy.py) and on
/v1/messages (e015aed6), whole, asked streamed, on POST /v1/responses/compact, on automatic compaction's pass
and in the WebSocket's `error` event. Until the twenty-eighth session this door dropped both: the SDKs retried an
engine's `retry-after: 3600` within seconds, after their own backoff."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from aigrid.engines.protocol import UpstreamResponse
from aigrid.gateway.app import build_app, build_gateway
from aigrid.spec.load import load_spec
from tests.gateway.conftest import DEMO, _no_sleep, spec_in
from tests.gateway.fake_engine import FakeEngine

REFUSAL = {"error": {"message": "rate limited", "type": "rate_limit_error", "param": None,
                     "code": "rate_limit_exceeded"}}
WAITS = [("7", "7", None), ("3600", "3600", "false"),
         ("in a while (jo@example.com)", None, None)]  # not a time: proxy._a_time keeps it from every door
"""(the engine's retry-after, the client's retry-after, the client's x-should-retry)."""


class LimitedEngine(FakeEngine):
    """A hosted engine that refuses every request: 429 with its `retry-after`."""

    wait = "7"

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        async def refusal() -> AsyncIterator[bytes]:
            yield json.dumps(REFUSAL).encode()

        yield UpstreamResponse(429, {"content-type": "application/json", "retry-after": self.wait}, refusal())


async def _post(tmp_path: Path, wait: str, path: str, body: dict[str, Any]) -> httpx.Response:
    fakes: dict[str, FakeEngine] = {}
    for e in load_spec(DEMO).endpoints:
        fakes[e.id] = engine = LimitedEngine(e.id)
        engine.wait = wait
    gw = build_gateway(spec_in(tmp_path), fakes, rng=random.Random(7), sleep=_no_sleep)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        return await c.post(path, json={"model": "smollm2-135m", **body})


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/responses", {"input": "hi"}), ("/v1/responses", {"input": "hi", "stream": True}),
    ("/v1/responses/compact", {"input": "hi"}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})],  # what the door does as
    ids=["whole", "streamed", "compact", "chat"])
@pytest.mark.parametrize(("wait", "after", "should_retry"), WAITS, ids=["7", "3600", "not-a-time"])
async def test_an_engines_rate_limit_keeps_its_retry_after(tmp_path: Path, path: str, body: dict[str, Any],
                                                           wait: str, after: str | None,
                                                           should_retry: str | None) -> None:
    """The engine's envelope as it sent it (OpenAI's errors carry no request id in the body: it is the
    `x-request-id` header, which the SDKs read as `request_id`), with its Retry-After and `x-should-retry`."""
    r = await _post(tmp_path, wait, path, body)
    assert r.status_code == 429, r.text
    assert r.json() == REFUSAL
    assert r.headers.get("retry-after") == after and r.headers.get("x-should-retry") == should_retry, r.headers
    assert r.headers["x-request-id"].startswith("dec-") and r.headers["x-request-id"] == r.headers["x-aigrid-decision"]


@pytest.mark.parametrize(("wait", "should_retry"), [("7", "true"), ("3600", "false")])
async def test_automatic_compactions_refused_pass_keeps_the_engines_retry_after(tmp_path: Path, wait: str,
                                                                                should_retry: str) -> None:
    """The pass's refusal fails the create (502 upstream_failed, the engine's status named); the engine's wait
    comes with it, and past RETRY_WAIT_MAX_S the SDKs are told not to retry by themselves."""
    r = await _post(tmp_path, wait, "/v1/responses",
                    {"input": "hi " * 50, "context_management": [{"type": "compaction", "compact_threshold": 10}]})
    assert r.status_code == 502, r.text
    assert "the engine answered 429" in r.json()["error"]["message"]
    assert r.headers.get("retry-after") == wait and r.headers.get("x-should-retry") == should_retry, r.headers


@pytest.mark.parametrize(("wait", "should_retry"), [("7", None), ("3600", "false")])
def test_the_sockets_error_event_carries_the_engines_retry_after(tmp_path: Path, wait: str,
                                                                  should_retry: str | None) -> None:
    """The WebSocket's `error` event (the SDKs' ResponseWsError) carries 'the response headers that were emitted
    with the error' (openai's type): the same Retry-After and `x-should-retry` as the POST's."""
    from tests.gateway.socket_grid import MODEL, served

    def limited(name: str, words: tuple[str, ...]) -> FakeEngine:
        engine = LimitedEngine(name, words)
        engine.wait = wait
        return engine

    with served(tmp_path, engine=limited) as grid:
        with grid.sync_client().responses.connect() as conn:
            conn.send_raw(json.dumps({"type": "response.create", "model": MODEL, "input": "hi"}))
            error = json.loads(conn.recv_bytes())
    assert error["type"] == "error" and error["status"] == 429, error
    headers = error["error"]["headers"]
    assert headers.get("retry-after") == wait and headers.get("x-should-retry") == should_retry, headers
    assert error["error"]["code"] == "rate_limit_exceeded" and headers["x-request-id"].startswith("dec-")
