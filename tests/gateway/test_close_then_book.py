"""A cancel (the client gone, a shutdown) that lands while an engine's answer is being closed, before proxy.finish
books it: the booking was skipped and the endpoint kept one request in flight for good (its load, as the router reads
it, one too high). 4b634c56 closed the gap on a spare's refused continuation; these are the other closes that booked
on the line after (proxy.forward's whole answer, relay's end of a stream and its _broke after the answer ended,
proxy._escalated's close of the larger model's answer). A close that fails otherwise (no cancel) is the read's
failure, not the client's leaving."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import orjson
import pytest

from aigrid.engines.protocol import UpstreamResponse
from aigrid.errors import EngineStreamBroken
from aigrid.gateway.relay_response import STEER, STEERED, SteerCut
from tests.agents.scripted_engine import _once
from tests.gateway import hostile_engine as H
from tests.gateway.hostile_grid import grid as two_engines
from tests.gateway.injected_cut import Injected, cut_by, raised
from tests.gateway.metered_gateway import booked, inflight, the_one_record
from tests.gateway.spare_refusal import refusing, spares_open
from tests.gateway.test_escalation import UNSURE, _ask
from tests.gateway.test_escalation import grid as escalation_grid  # noqa: F401 (a fixture)

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


def first_then_nothing(started: asyncio.Event) -> Callable[[], AsyncIterator[bytes]]:
    """A stream's body: its first token, `started` set, then nothing more (the client leaves first)."""
    async def body() -> AsyncIterator[bytes]:
        yield b"data: " + orjson.dumps(H.token("Hi")) + b"\n\n"
        started.set()
        await asyncio.Event().wait()  # the rest never comes: the client leaves first
        yield b"data: [DONE]\n\n"
    return body


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


def failing_while_closing(body: Callable[[], AsyncIterator[bytes]], content_type: str):  # type: ignore[no-untyped-def]
    """An engine.open whose answer is `body` and whose close fails with an unexpected error (no cancel)."""
    @asynccontextmanager
    async def opening(path: str, payload: bytes) -> AsyncIterator[UpstreamResponse]:
        yield UpstreamResponse(200, {"content-type": content_type}, body())
        raise RuntimeError("the engine's close failed")
    return opening


async def test_a_close_that_fails_is_the_engines_failure_not_the_clients_leaving(tmp_path: Path) -> None:
    """proxy.forward's close of a whole answer caught BaseException and booked any error as the client's 499
    (client_closed): an engine whose close fails is the read's failure (logged, abandoned: broke_mid_stream), once."""
    async for g in two_engines(tmp_path, lambda p, r: H.whole(b"{}")):
        for engine in g.gw.proxy._engines.values():
            engine.open = failing_while_closing(whole, "application/json")  # type: ignore[method-assign]
        r = await g.post("chat", False)
        assert r.status_code == 502, r.text
        assert inflight(g.gw) == 0
        outcomes = booked(g.gw)
        assert [o for (_, o) in outcomes] == ["broke_mid_stream"] and sum(outcomes.values()) == 1, outcomes


def larger_closing_with(error: BaseException):  # type: ignore[no-untyped-def]
    """The larger model's engine.open: a whole answer, then a close that raises `error`."""
    @asynccontextmanager
    async def opening(path: str, payload: bytes) -> AsyncIterator[UpstreamResponse]:
        yield UpstreamResponse(200, {"content-type": "application/json"}, _once(orjson.dumps(H.answer_of("Larger"))))
        raise error
    return opening


async def test_an_escalated_close_cut_short_by_a_cancel_is_booked_once(  # type: ignore[no-untyped-def]
        escalation_grid) -> None:  # noqa: F811
    """_escalated's close of the larger model's answer cut short by a cancel: booked 499 once, nothing in flight."""
    client, fakes, gw = escalation_grid
    fakes["fra-small"].logprob = UNSURE
    fakes["iad-large"].open = larger_closing_with(asyncio.CancelledError("cut while closing"))
    try:
        await _ask(client)
    except (asyncio.CancelledError, httpx.HTTPError):
        pass  # the cancel reached the client's side: what it got is not the point
    assert inflight(gw) == 0
    larger = {o: n for (e, o), n in booked(gw).items() if e == "iad-large"}
    assert larger == {"client_closed": 1}, booked(gw)


async def test_an_escalated_close_that_fails_leaves_the_first_answer_and_is_the_engines_failure(  # type: ignore[no-untyped-def]
        escalation_grid) -> None:  # noqa: F811
    """_escalated's close failing with an unexpected error was booked as the client's 499: now the read's rule (the
    larger engine abandoned: broke_mid_stream, charged a failure) and the first answer stands."""
    client, fakes, gw = escalation_grid
    fakes["fra-small"].logprob = UNSURE
    fakes["iad-large"].open = larger_closing_with(RuntimeError("the engine's close failed"))
    r = await _ask(client)
    assert r.headers["x-aigrid-model"] == "small-1b"
    assert inflight(gw) == 0
    larger = {o: n for (e, o), n in booked(gw).items() if e == "iad-large"}
    assert larger == {"broke_mid_stream": 1}, booked(gw)


async def test_a_streams_close_cut_short_by_a_cancel_when_its_client_is_gone_is_booked_once(tmp_path: Path) -> None:
    """StreamRelay.aclose's close of a stream whose client went away mid-answer, cut short by a cancel: booked 499 once,
    nothing in flight."""
    started = asyncio.Event()
    async for g in two_engines(tmp_path, lambda p, r: H.whole(b"{}")):
        for engine in g.gw.proxy._engines.values():
            engine.open = cut_while_closing(first_then_nothing(started), "text/event-stream")  # type: ignore[method-assign]
        asking = asyncio.create_task(g.post("chat", True))
        await asyncio.wait_for(started.wait(), 30)  # the test's own guard: the stream has begun
        asking.cancel()  # the client goes away
        try:
            await asking
        except (asyncio.CancelledError, httpx.HTTPError):
            pass
        assert inflight(g.gw) == 0
        assert {o for (_, o) in booked(g.gw)} == {"client_closed"} and sum(booked(g.gw).values()) == 1, booked(g.gw)


async def test_a_steered_streams_close_cut_short_by_a_cancel_is_booked_steered_once(tmp_path: Path) -> None:
    """StreamRelay.aclose's steered close (a socket's response stopped for a steer: relay_response.SteerCut), cut short
    by a cancel: booked once, `steered` (not the client's `client_closed`), charged the steer's usage, nothing in
    flight."""
    started = asyncio.Event()

    async def first_then_nothing() -> AsyncIterator[bytes]:
        yield b"data: " + orjson.dumps(H.token("Hi there")) + b"\n\n"
        started.set()
        await asyncio.Event().wait()  # the rest never comes: the steer stops it first
        yield b"data: [DONE]\n\n"

    async for g in two_engines(tmp_path, lambda p, r: H.whole(b"{}")):
        for engine in g.gw.proxy._engines.values():
            engine.open = cut_while_closing(first_then_nothing, "text/event-stream")  # type: ignore[method-assign]
        steer = SteerCut()
        token = STEER.set(steer)  # as the socket sets it for its response's task (copied into the asking task)
        try:
            asking = asyncio.create_task(g.post("chat", True))
        finally:
            STEER.reset(token)
        await asyncio.wait_for(started.wait(), 30)  # the test's own guard: the stream has begun
        usage = steer.stop()  # the steer: nothing more is read; the relay's close books it steered
        assert usage is not None and usage["completion_tokens"] >= 1, usage
        asking.cancel()  # the response stops (the socket's front door ends its stream), closing the relay
        try:
            await asking
        except (asyncio.CancelledError, httpx.HTTPError):
            pass
        assert inflight(g.gw) == 0
        assert {o for (_, o) in booked(g.gw)} == {STEERED} and sum(booked(g.gw).values()) == 1, booked(g.gw)


def closing_with(body: Callable[[], AsyncIterator[bytes]], content_type: str, error: BaseException):  # type: ignore[no-untyped-def]
    """An engine.open whose answer is `body` and whose close raises `error`."""
    @asynccontextmanager
    async def opening(path: str, payload: bytes) -> AsyncIterator[UpstreamResponse]:
        yield UpstreamResponse(200, {"content-type": content_type}, body())
        raise error
    return opening


async def test_a_close_cut_by_another_base_exception_is_settled_and_raised_not_booked_as_the_clients_leaving(
        tmp_path: Path) -> None:
    """proxy.forward's close raising a BaseException that is not a cancel (KeyboardInterrupt, SystemExit; here an
    injected one) was booked 499, client_closed, as if the client had left: now released and booked error:internal
    once, audited so, nothing in flight, and the exception goes on."""
    error = Injected("interrupted while closing")
    async for g in two_engines(tmp_path, lambda p, r: H.whole(b"{}")):
        for engine in g.gw.proxy._engines.values():
            engine.open = closing_with(whole, "application/json", error)  # type: ignore[method-assign]
        await cut_by(error, g.post("chat", False))
        assert inflight(g.gw) == 0
        assert booked(g.gw) == {("nrt-smollm2", "error:internal"): 1}, booked(g.gw)
        assert (await the_one_record(g.gw))["outcome"] == "error:internal"


async def test_an_escalated_close_cut_by_another_base_exception_is_not_the_clients_leaving(  # type: ignore[no-untyped-def]
        escalation_grid) -> None:  # noqa: F811
    client, fakes, gw = escalation_grid
    fakes["fra-small"].logprob = UNSURE
    error = Injected("interrupted while closing")
    fakes["iad-large"].open = larger_closing_with(error)
    await cut_by(error, _ask(client))
    assert inflight(gw) == 0
    larger = {o: n for (e, o), n in booked(gw).items() if e == "iad-large"}
    assert larger == {"error:internal": 1}, booked(gw)


async def test_a_streams_close_cut_by_another_base_exception_when_its_client_is_gone_is_not_a_499(
        tmp_path: Path) -> None:
    """StreamRelay.aclose's close (the client gone mid-answer) raising a BaseException that is not a cancel: booked
    error:internal once (it was client_closed), nothing in flight."""
    started = asyncio.Event()
    error = Injected("interrupted while closing")
    async for g in two_engines(tmp_path, lambda p, r: H.whole(b"{}")):
        for engine in g.gw.proxy._engines.values():
            engine.open = closing_with(first_then_nothing(started), "text/event-stream", error)  # type: ignore[method-assign]
        asking = asyncio.create_task(g.post("chat", True))
        await asyncio.wait_for(started.wait(), 30)  # the test's own guard: the stream has begun
        asking.cancel()  # the client goes away
        try:
            await asking
        except BaseException:  # noqa: BLE001,S110 -- the cancel or the injected error: the booking is the point
            pass
        assert inflight(g.gw) == 0
        assert {o for (_, o) in booked(g.gw)} == {"error:internal"} and sum(booked(g.gw).values()) == 1, booked(g.gw)


async def test_a_spares_refusal_read_cut_by_another_base_exception_is_not_the_clients_leaving(tmp_path: Path) -> None:
    """proxy.continue_stream's read of a spare's refused continuation cut by a BaseException that is not a cancel: the
    spare released, booked error:internal (it was client_closed), nothing in flight."""
    broken = H.stream(H.chunk(b"data: " + orjson.dumps(H.token("Hi")) + b"\n\n"), H.CLOSE)
    error = Injected("interrupted while reading the refusal")

    async def body() -> AsyncIterator[bytes]:
        yield b'{"error": '
        raise error

    async for g in two_engines(tmp_path, lambda p, r: broken):
        spares_open(g.gw, refusing(body))
        await cut_by(error, g.post("chat", True))
        assert inflight(g.gw) == 0
        spares = {o: n for (e, o), n in booked(g.gw).items() if e != "nrt-smollm2"}
        assert spares == {"error:internal": 1}, booked(g.gw)



def _cut_by(error: BaseException) -> Callable[[logging.LogRecord], bool]:
    """Whether a log record carries `error`'s traceback."""
    return lambda r: r.exc_info is not None and r.exc_info[1] is not None and raised(error)(r.exc_info[1])


async def test_an_answer_cut_by_another_base_exception_logs_its_traceback_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An answer whose engine's close is cut by a BaseException that is no cancel (KeyboardInterrupt, SystemExit)
    was logged with its traceback twice: by Proxy.book_cut and by routes.Audited. Now once (Audited's); book_cut's
    line names the endpoint, without the traceback."""
    error = Injected("interrupted while closing")
    caplog.set_level(logging.ERROR)
    async for g in two_engines(tmp_path, lambda p, r: H.whole(b"{}")):
        for engine in g.gw.proxy._engines.values():
            engine.open = closing_with(whole, "application/json", error)  # type: ignore[method-assign]
        with pytest.raises(BaseException) as got:  # noqa: PT011 -- the injected error, checked below
            await g.post("chat", False)
        assert raised(error)(got.value), got.value
        assert inflight(g.gw) == 0
        assert [r.getMessage() for r in caplog.records if _cut_by(error)(r)] == ["/v1/chat/completions was cut "
                                                                                 "by Injected"], caplog.records
        assert any(r.getMessage() == "endpoint nrt-smollm2: the answer was cut by Injected: its engine released, "
                   "booked error:internal" for r in caplog.records), caplog.records
