"""A cancel (the client gone, a shutdown) that lands while an engine's answer is being closed, before proxy.finish
books it: the booking was skipped and the endpoint kept one request in flight for good (its load, as the router reads
it, one too high). 4b634c56 closed the gap on a spare's refused continuation; these are the other closes that booked
on the line after (proxy.forward's whole answer, relay's end of a stream and its _broke after the answer ended)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import orjson
import pytest

from aigrid.engines.protocol import UpstreamResponse
from aigrid.errors import EngineStreamBroken
from tests.gateway import hostile_engine as H
from tests.gateway.test_engine_context_exceeded import booked
from tests.gateway.test_exit_paths import inflight
from tests.gateway.test_hostile_engines import grid as two_engines

SSE = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in (H.token("Hi"), H.token("", finish="stop"))) \
    + b"data: [DONE]\n\n"


def cut_while_closing(body: Callable[[], AsyncIterator[bytes]], content_type: str):  # type: ignore[no-untyped-def]
    """An engine.open whose answer is `body` and whose close is cut by a cancel."""
    @asynccontextmanager
    async def opening(path: str, payload: bytes) -> AsyncIterator[UpstreamResponse]:
        yield UpstreamResponse(200, {"content-type": content_type}, body())
        raise asyncio.CancelledError("cut while closing")
    return opening


async def whole() -> AsyncIterator[bytes]:
    yield orjson.dumps(H.answer_of("Hello"))


async def ends() -> AsyncIterator[bytes]:
    yield SSE


async def breaks_after_the_end() -> AsyncIterator[bytes]:
    yield SSE
    raise EngineStreamBroken("the connection failed after [DONE]")


@pytest.mark.parametrize(("body", "stream", "content_type"), [
    (whole, False, "application/json"),  # proxy.forward: the whole answer read, then closed
    (ends, True, "text/event-stream"),  # relay: the stream ended cleanly, then closed
    (breaks_after_the_end, True, "text/event-stream"),  # relay._broke: the answer had ended when it broke
], ids=["forward", "relay-end", "relay-broke"])
async def test_a_close_cut_short_by_a_cancel_leaves_no_request_in_flight(
        tmp_path: Path, body: Callable[[], AsyncIterator[bytes]], stream: bool, content_type: str) -> None:
    async for g in two_engines(tmp_path, lambda p, r: H.whole(b"{}")):
        for engine in g.gw.proxy._engines.values():
            engine.open = cut_while_closing(body, content_type)  # type: ignore[method-assign]
        try:
            await g.post("chat", stream)
        except (asyncio.CancelledError, httpx.HTTPError):
            pass  # the cancel reached the client's side: what it got is not the point
        assert inflight(g.gw) == 0
        # booked once: the in-flight count stops at 0, so a second booking would show only as a second outcome (and
        # take another request's place in flight)
        assert sum(booked(g.gw).values()) == 1, booked(g.gw)
