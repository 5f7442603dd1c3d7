"""An engine that cannot read a request says so, and that is the client's error, not the engine's failure.

llama-server answers HTTP 500 ("server_error") when a field of the request's JSON has a type it does not
expect: a content part without `text` or with a number there, `tools` that is not a list, a `reasoning_content`
or a `reasoning_format` that is not a string, an `input_audio` part (measured against llama-server 0.3.36; the
gateway refuses the content parts itself now, as parts its firewall cannot read). The
gateway passed such a 500 on as an engine failure: it tried the next candidate, then the next, and every one
counted a failure against its circuit breaker, so four requests of one tenant opened every engine's circuit and
the whole grid answered 503 to every tenant for the breaker's cooldown (reproduced on a grid of real
llama-servers).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import orjson
import pytest

from aigrid.engines.protocol import UpstreamResponse
from aigrid.gateway.app import build_app, build_gateway
from tests.agents.scripted_engine import ScriptedEngine, _once
from tests.gateway.conftest import _no_sleep, audit_rows, spec_in

MODEL = "smollm2-135m"
PARSE_ERRORS = [
    b'{"error":{"code":500,"message":"Failed to parse messages: [json.exception.type_error.302] type must be string, '
    b'but is number","type":"server_error"}}',
    b'{"error":{"code":500,"message":"Failed to parse tools: Expected \'tools\' to be an array, got \\"x\\"; tools = '
    b'\\"x\\"","type":"server_error"}}',
    b'{"error":{"code":500,"message":"[json.exception.type_error.302] type must be string, but is number",'
    b'"type":"server_error"}}',
    b'{"error":{"code":500,"message":"audio input is not supported - hint: if this is unexpected, you may need to '
    b'provide the mmproj","type":"server_error"}}',
]


class Refusing(ScriptedEngine):
    """Answers every request with `answer` at HTTP `status`, as llama-server does one it cannot read."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__([])
        self.answer, self.code = body, status

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        self.received.append(orjson.loads(body))
        yield UpstreamResponse(self.code, {"content-type": "application/json"}, _once(self.answer))


@pytest.mark.parametrize("tools", [False, True], ids=["plain", "tool loop"])
@pytest.mark.parametrize("hedge", ["off", "on"])
@pytest.mark.parametrize("body", PARSE_ERRORS)
async def test_a_request_the_engine_cannot_read_is_the_clients_400_and_no_circuit_opens(
        tmp_path: Path, body: bytes, hedge: str, tools: bool) -> None:
    """Directly, and through the tool loop's model turn (a request that offers tools), hedged or not."""
    spec = spec_in(tmp_path)
    engine = Refusing(500, body)
    gw = build_gateway(spec, {e.id: engine for e in spec.endpoints}, rng=random.Random(3), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    await gw.guard.start()
    # a field the gateway passes on untouched (a content part with a number for its text, the first example, is
    # now refused by the gateway itself: its firewall cannot read it)
    request = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "reasoning_format": 5}
    if tools:
        request["tools"] = [{"type": "function", "function": {"name": "calculator"}}]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        answers = [await c.post("/v1/chat/completions", json=request, headers={"x-aigrid-hedge": hedge})
                   for _ in range(6)]
        for r in answers:
            err = r.json()["error"]
            assert r.status_code == 400 and err["type"] == "invalid_request_error", r.text
            assert err["code"] == "engine_could_not_read", r.text
            assert any(said in err["message"] for said in ("type must be string", "to be an array", "audio")), r.text
        assert len(engine.received) == 6  # one engine asked per request: no other candidate tried
        assert all(s.circuit.value == "closed" for s in gw.store.snapshot().states.values())
        # and the grid still serves everyone
        engine.code, engine.answer = 200, orjson.dumps({"choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": "hi"}}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
        ok = await c.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
                          headers={"x-aigrid-tenant": "eu-bank"})
        assert ok.status_code == 200, ok.text
    rows = await audit_rows(gw)
    assert [r["outcome"] for r in rows[:6]] == ["error:engine_could_not_read"] * 6
    await gw.guard.stop()


async def test_an_engine_that_fails_is_still_an_engine_failure(tmp_path: Path) -> None:
    """A 500 that does not say the request could not be read is the engine's failure, as before: the next
    candidate is tried, and the breakers count it."""
    spec = spec_in(tmp_path)
    engine = Refusing(500, b'{"error":{"code":500,"message":"out of memory","type":"server_error"}}')
    gw = build_gateway(spec, {e.id: engine for e in spec.endpoints}, rng=random.Random(3), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        r = await c.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 502 and len(engine.received) == 3, r.text



async def test_an_engine_message_that_quotes_a_long_request_is_still_read(tmp_path: Path) -> None:
    """llama-server's message quotes the request's whole `tools` ("...; tools = [...]"): as long as the client
    makes them. It is recognised from its start, and the client gets its first 500 characters."""
    quoted = "x" * 20_000
    spec = spec_in(tmp_path)
    engine = Refusing(500, orjson.dumps({"error": {"code": 500, "type": "server_error", "message":
                                                   f"Failed to parse tools: Missing tool type: \"{quoted}\""}}))
    gw = build_gateway(spec, {e.id: engine for e in spec.endpoints}, rng=random.Random(3), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        r = await c.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and len(engine.received) == 1, r.text
    assert 'Missing tool type: "xxx' in r.json()["error"]["message"] and len(r.json()["error"]["message"]) < 600
    assert all(s.circuit.value == "closed" for s in gw.store.snapshot().states.values())


class RefusingLater(ScriptedEngine):
    """Answers its script, but its `refuse_at`-th request (1-based) with a llama-server parse error: a tool loop's
    later model turn that the engine cannot read."""

    def __init__(self, replies: list[dict], refuse_at: int) -> None:
        super().__init__(replies)
        self.refuse_at, self.calls = refuse_at, 0

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        self.calls += 1
        if self.calls == self.refuse_at:
            self.received.append(orjson.loads(body))
            yield UpstreamResponse(500, {"content-type": "application/json"}, _once(PARSE_ERRORS[0]))
            return
        async with super().open(path, body) as upstream:
            yield upstream


async def test_a_later_tool_loop_turn_the_engine_cannot_read_breaks_the_answer_it_does_not_raise(
        tmp_path: Path) -> None:
    """The loop's first turn has answered (a streamed loop's 200 and first bytes are out) when the engine cannot
    read its next turn: the client gets the cut stream's `stream_interrupted` event, not an exception raised after
    the response started (review finding: engine_refusal's 400 escaped the relay mid-stream); the request is
    audited once."""
    spec = spec_in(tmp_path)
    engine = RefusingLater([{"tool_calls": [{"name": "calculator", "arguments": {"expression": "2+2"}}]},
                            {"content": "4"}], refuse_at=2)
    gw = build_gateway(spec, {e.id: engine for e in spec.endpoints}, rng=random.Random(3), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    await gw.guard.start()
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "2+2?"}],
            "tools": [{"type": "function", "function": {"name": "calculator"}}]}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        r = await c.post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    events = [orjson.loads(e[6:]) for e in r.text.split("\n\n") if e.startswith("data: {")]
    assert events[-1]["error"]["code"] == "stream_interrupted" and "could not read" in events[-1]["error"]["message"]
    assert "data: [DONE]" not in r.text
    assert [row["outcome"] for row in await audit_rows(gw)] == ["interrupted"]
    await gw.guard.stop()
