"""An engine's refusal (a 4xx) is read within proxy.REFUSAL_MAX_BYTES and the attempt's first-byte deadline: it was
read with a whole answer's bound (at least 1 MiB) and no time limit of its own, so an engine (or a spare refusing a
stream's continuation) that drips its 400 held the client's request up to 1 MiB x the read timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest

from aigrid.engines.protocol import UpstreamResponse
from aigrid.gateway.proxy import REFUSAL_MAX_BYTES, FirstByteDeadline
from tests.gateway import hostile_engine as H
from tests.gateway.hostile_grid import grid as two_engines
from tests.gateway.metered_gateway import booked, inflight
from tests.gateway.short_deadline import ShortDeadline

GUARD_S = 30.0  # the test's own bound: a read with no limit of its own never ends, the fixed one within DEADLINE
DEADLINE = FirstByteDeadline(min_s=0.5, max_s=0.5)


async def drips() -> AsyncIterator[bytes]:
    yield b'{"error": {"message": "bad request", '
    await asyncio.Event().wait()  # the rest never comes
    yield b"}}"


ECHOED = 4 * REFUSAL_MAX_BYTES
"""The length of the request an engine's 400 echoes (a FastAPI validation error's `input`: the whole body)."""


async def too_large() -> AsyncIterator[bytes]:
    """A context 400 (vLLM's words) echoing a long request: longer than REFUSAL_MAX_BYTES, and still the client's."""
    yield b'{"error": {"message": "This model\'s maximum context length is 4096 tokens. However, you requested 9000 ' \
          b'tokens.", "type": "BadRequestError", "code": 400}, "input": "'
    for _ in range(ECHOED // 1024):
        yield b"x" * 1024
    yield b'"}'


async def at_once() -> AsyncIterator[bytes]:
    yield orjson.dumps({"error": {"message": "unsupported parameter", "type": "invalid_request_error"}})


def refusing(body: Callable[[], AsyncIterator[bytes]]):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def opening(path: str, payload: bytes) -> AsyncIterator[UpstreamResponse]:
        yield UpstreamResponse(400, {"content-type": "application/json"}, body())
    return opening


async def test_an_engines_refusal_is_read_within_a_bound_of_time(tmp_path: Path) -> None:
    async for g in two_engines(tmp_path, lambda p, r: H.whole(b"{}")):
        g.gw.proxy._deadline = DEADLINE
        for engine in g.gw.proxy._engines.values():
            engine.open = refusing(drips)  # type: ignore[method-assign]
        r = await asyncio.wait_for(g.post("chat", False), GUARD_S)
        assert r.status_code == 502 and "failed while answering" in r.text, r.text
        assert inflight(g.gw) == 0
        failed = {e for (e, outcome) in booked(g.gw) if outcome == "broke_mid_stream"}
        assert len(failed) == 1, booked(g.gw)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_refusal_longer_than_the_bound_is_the_clients_refusal_its_rest_unread(
        tmp_path: Path, stream: bool) -> None:
    """Review RV11 of de18b2c5: a refusal past REFUSAL_MAX_BYTES was the engine's failure (a 502, broke_mid_stream,
    its breaker charged), so a client sending long bad requests to an engine that echoes them in its 400 opened a
    healthy engine's circuit. Its first REFUSAL_MAX_BYTES are read (the message is in them), the rest left unread."""
    read: list[int] = []

    def counting(body: Callable[[], AsyncIterator[bytes]]) -> Callable[[], AsyncIterator[bytes]]:
        async def counted() -> AsyncIterator[bytes]:
            async for chunk in body():
                read.append(len(chunk))
                yield chunk
        return counted

    async for g in two_engines(tmp_path, lambda p, r: H.whole(b"{}")):
        for engine in g.gw.proxy._engines.values():
            engine.open = refusing(counting(too_large))  # type: ignore[method-assign]
        r = await asyncio.wait_for(g.post("chat", stream), GUARD_S)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "context_length_exceeded", r.text
        assert inflight(g.gw) == 0
        assert {outcome for (_, outcome) in booked(g.gw)} == {"error:context_length_exceeded"}, booked(g.gw)
        assert all(live.breaker.failures == 0 for live in g.gw.store._live.values())
        assert sum(read) <= REFUSAL_MAX_BYTES + 1024 < ECHOED


async def test_a_refusal_pins_no_cache_affinity(tmp_path: Path) -> None:
    """Review RV11: forward remembered the refusing endpoint as the prompt's and the session's (cache affinity), so
    a refusal (a hosted engine's 429, a context 400) drew the next request of the session to the endpoint that
    refused it and holds none of its cache, and took the key from the endpoint that does."""
    async for g in two_engines(tmp_path, lambda p, r: H.whole(b"{}")):
        for engine in g.gw.proxy._engines.values():
            engine.open = refusing(at_once)  # type: ignore[method-assign]
        r = await g.post("chat", False)
        assert r.status_code == 400, r.text
        assert len(booked(g.gw)) == 1, booked(g.gw)
        assert not g.gw.store._affinity


async def test_a_spares_refusal_of_a_continuation_that_drips_ends_the_stream_within_the_deadline(
        tmp_path: Path) -> None:
    broken = H.stream(H.chunk(b"data: " + orjson.dumps(H.token("Hi")) + b"\n\n"), H.CLOSE)
    async for g in two_engines(tmp_path, lambda p, r: broken):
        # the spares' deadline alone is DEADLINE's: nrt's too left its first byte 0.5 s on a loaded machine
        g.gw.proxy._deadline = ShortDeadline(min_s=0.5, max_s=0.5, short=tuple(
            e for e in g.gw.proxy._engines if e != "nrt-smollm2"))
        for endpoint, engine in g.gw.proxy._engines.items():
            if endpoint != "nrt-smollm2":
                engine.open = refusing(drips)  # type: ignore[method-assign]
        r = await asyncio.wait_for(g.post("chat", True), GUARD_S)
        assert r.status_code == 200 and b"the continuation was refused (" in r.content, r.content
        assert inflight(g.gw) == 0
        spares = {outcome for (endpoint, outcome) in booked(g.gw) if endpoint != "nrt-smollm2"}
    assert spares == {"http_400"}


async def test_an_engines_refusal_of_a_stream_is_no_success_of_serving(tmp_path: Path) -> None:
    """forward recorded an engine's 4xx as a served answer (store.record_success): a streamed request's refusal, sent
    at once, fed its first byte's time into the endpoint's TTFT average and calibration as a time to first token, and
    cleared its breaker's failures. A refusal is the client's request's, neither the engine's failure nor a success
    of serving: nothing of either is recorded."""
    async for g in two_engines(tmp_path, lambda p, r: H.whole(b"{}")):
        for engine in g.gw.proxy._engines.values():
            engine.open = refusing(at_once)  # type: ignore[method-assign]
        for live in g.gw.store._live.values():
            live.breaker.failures = 2
        r = await g.post("chat", True)
        assert r.status_code == 400, r.text
        served = {e for (e, outcome) in booked(g.gw) if outcome == "http_400"}
        assert len(served) == 1, booked(g.gw)
        live = g.gw.store._live[served.pop()]
        assert live.ttft_ewma_s is None and live.breaker.failures == 2



REFUSED = "unsupported parameter: 'frobnicate' (an \"extra\" field: not permitted) \u00e9"


async def echoing() -> AsyncIterator[bytes]:
    """A 400 that is not the context's, echoing a 256 KiB request after its message (vLLM's fields, an `input`)."""
    yield orjson.dumps({"error": {"message": REFUSED, "type": "BadRequestError", "param": None, "code": 400}})[:-2] \
        + b', "input": "'
    for _ in range(ECHOED // 1024):
        yield b"x" * 1024
    yield b'"}}'


@pytest.mark.parametrize("stream", [False, True])
async def test_the_message_of_a_refusal_cut_at_the_bound_is_passed_on_not_its_raw_head(
        tmp_path: Path, stream: bool) -> None:
    """A refusal cut at REFUSAL_MAX_BYTES is not valid JSON: engine_errors passed its raw first 2,000 characters
    (`{"error": {"message": ...`) on as the client's message. The message string is pulled out of the cut body."""
    async for g in two_engines(tmp_path, lambda p, r: H.whole(b"{}")):
        for engine in g.gw.proxy._engines.values():
            engine.open = refusing(echoing)  # type: ignore[method-assign]
        r = await asyncio.wait_for(g.post("chat", stream), GUARD_S)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["message"] == REFUSED, r.text[:300]
        assert inflight(g.gw) == 0
