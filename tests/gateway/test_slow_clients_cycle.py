"""slow_clients.RefusableCycle driven directly (no socket, no timing): a request refused in its chunked body
(HeadDeadline.send_400_response) while the app's answer head waits in uvicorn's send for a client that reads nothing
(flow.drain: uvicorn sets response_started only after that wait)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

from starlette.responses import PlainTextResponse
from uvicorn.protocols.http.flow_control import FlowControl

from aigrid.gateway.relay_response import RelayResponse
from aigrid.gateway.slow_clients import HeadDeadline, RefusableCycle

SCOPE: dict[str, Any] = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                         "scheme": "http", "path": "/", "raw_path": b"/", "query_string": b"", "root_path": "",
                         "headers": [(b"transfer-encoding", b"chunked")], "client": ("127.0.0.1", 1),
                         "server": ("127.0.0.1", 2)}


class Wire:
    """The client's transport: what was written on it, and whether it was closed."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def paused_cycle() -> tuple[RefusableCycle, FlowControl, Wire]:
    """A cycle as HeadDeadline makes it (RefusableCycle), its body still coming (more_body), on a connection whose
    client reads nothing: its socket's buffer past the high-water mark (an earlier answer on it unread)."""
    wire = Wire()
    flow = FlowControl(wire)  # type: ignore[arg-type]
    log = logging.getLogger("tests.slow_clients_cycle")
    cycle = RefusableCycle(scope=SCOPE, transport=wire, flow=flow, logger=log, access_logger=log,  # type: ignore[arg-type]
                           access_log=False, default_headers=[], message_event=asyncio.Event(),
                           expect_100_continue=False, keep_alive=True, on_response=lambda: None)
    flow.pause_writing()
    return cycle, flow, wire


def refuse_body(cycle: RefusableCycle, flow: FlowControl) -> None:
    """A bad chunk arrives: what llhttp's error calls, HeadDeadline.send_400_response, on this cycle's connection."""
    connection = SimpleNamespace(cycle=cycle, flow=flow, _overflow=False, _log_refused=lambda why: None)
    HeadDeadline.send_400_response(connection, "Invalid character in chunk size")  # type: ignore[arg-type]
    assert cycle.refused and not cycle.keep_alive


async def settle() -> None:
    """Every task runs until it waits on something only this test sets (no clock: each wait is an event)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_body_refused_while_a_streamed_answers_head_waits_for_the_client_cuts_it_as_a_client_gone() -> None:
    """The stream's disconnect watch (relay_response._disconnected) reads while its head waits in uvicorn's send.
    Before (RefusableCycle.receive asked response_started), the watch raised InvalidRequest there: once the client
    read, the 200's head went out, then RelayResponse's cleanup re-raised it (`await gone`) before closing the body:
    uvicorn's 'Exception in ASGI application', the route's record `error:internal`, the body's cleanup (an engine's
    release, a follower count) left to the garbage collector. Now it is a client gone: nothing of the answer is
    written, the connection closed, the body closed at once."""
    cycle, flow, wire = paused_cycle()
    closed = asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        try:
            yield b"first"
        finally:
            closed.set()

    answer = asyncio.ensure_future(RelayResponse(chunks(), 200, {"content-type": "text/plain"})(
        SCOPE, cycle.receive, cycle.send))
    await settle()
    assert not answer.done() and not cycle.response_started and not wire.written  # the head waits in flow.drain
    refuse_body(cycle, flow)
    await settle()
    flow.resume_writing()  # the client read what it held (the closed connection then ends: uvicorn's connection_lost)
    cycle.message_event.set()
    await settle()
    assert answer.done() and answer.exception() is None
    assert closed.is_set()  # the body's cleanup ran, not left to the garbage collector
    assert cycle.disconnected and wire.closing and bytes(wire.written) == b""  # neither a 200's head nor a 400


async def test_a_body_refused_while_a_whole_answers_head_waits_is_that_one_answer_then_closed() -> None:
    """An answer sent whole without reading the body (no read in flight: nothing raises): the refusal is not a
    second answer; the one the app sent goes out once the client reads, says `connection: close` and is the last.
    Under uvicorn 0.45-0.52 (pyproject allows 0.45) its head said nothing of the close: RefusableCycle.send read
    keep_alive before uvicorn's send waited (flow.drain), and the refusal came in that wait."""
    cycle, flow, wire = paused_cycle()
    answer = asyncio.ensure_future(PlainTextResponse("no")(SCOPE, cycle.receive, cycle.send))
    await settle()
    assert not answer.done() and not wire.written
    refuse_body(cycle, flow)
    await settle()
    flow.resume_writing()
    await settle()
    assert answer.done() and answer.exception() is None
    head, _, body = bytes(wire.written).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and head.count(b"HTTP/1.1") == 1 and body == b"no"
    assert b"connection: close" in head.lower() and wire.closing and cycle.response_complete
