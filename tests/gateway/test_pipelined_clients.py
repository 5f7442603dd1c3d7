"""A client that pipelines its requests (sends the next before reading the answers): gateway/slow_clients.HeadDeadline
bounds what waits, keeps the head's bounds to the head itself, and never cuts an owed answer with its deadline.
uvicorn runs in this process on a socket bound here (port 0), with the head deadline shortened."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from aigrid.gateway.slow_clients import MAX_HEAD_BYTES, MAX_PIPELINED, NOT_HTTP, HeadDeadline, timed_out
from tests.serving import serving


class QuickDeadline(HeadDeadline):
    head_timeout_s = 0.4


TIMED_OUT = timed_out(QuickDeadline.head_timeout_s)


class App:
    """`/` answers ok once it read the body; `/slow` after 1 s; `/held` once `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.app = Starlette(routes=[Route("/", self.ok, methods=["GET", "POST"]), Route("/slow", self.slow),
                                     Route("/held", self.held)])

    async def ok(self, request: Request) -> PlainTextResponse:
        await request.body()
        return PlainTextResponse("ok")

    async def slow(self, request: Request) -> PlainTextResponse:
        await asyncio.sleep(1.0)
        return PlainTextResponse("slow")

    async def held(self, request: Request) -> PlainTextResponse:
        await self.release.wait()
        return PlainTextResponse("held")


@pytest.fixture
async def served() -> AsyncIterator[tuple[int, App, uvicorn.Server]]:
    app = App()
    async with serving(app.app, http=QuickDeadline, lifespan="off", log_level="error") as s:
        yield s.port, app, s.server
        app.release.set()


def waiting(server: uvicorn.Server) -> int:
    """The requests parsed and waiting on the server's connections."""
    return sum(len(getattr(c, "pipeline", ())) for c in server.server_state.connections)


GET = b"GET / HTTP/1.1\r\nhost: gw\r\n\r\n"


async def test_pipelined_requests_wait_within_a_bound_and_the_rest_are_not_served(
        served: tuple[int, App, uvicorn.Server], caplog: pytest.LogCaptureFixture) -> None:
    """Before: every request of each read was parsed into a request cycle and queued (all 4,000 here, ~2.4 KB
    each for 28 bytes sent), and reading went on after every answer: a client that pipelined GETs and read nothing
    had the gateway grow 481 MB for 200,000 of them."""
    port, app, server = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /held HTTP/1.1\r\nhost: gw\r\n\r\n" + GET * 4000)
    for _ in range(3000):  # until the request past the bound was refused (at once; 30 s for a loaded machine)
        if "pipelined more than" in caplog.text:
            break
        await asyncio.sleep(0.01)
    assert waiting(server) == MAX_PIPELINED  # /held being answered, the bound's worth waiting, nothing more read
    app.release.set()
    got = await asyncio.wait_for(reader.read(), 30)  # the connection is closed after the waiting ones' answers
    assert got.count(b"HTTP/1.1 200 ") == 1 + MAX_PIPELINED and got.endswith(b"ok")
    assert got.rsplit(b"HTTP/1.1 200 ", 1)[1].count(b"connection: close") == 1  # the last answer says so
    assert "pipelined more than" in caplog.text
    writer.close()


async def test_a_client_that_pipelines_and_reads_nothing_holds_a_bounded_queue(
        served: tuple[int, App, uvicorn.Server]) -> None:
    port, _, server = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    most = 0
    for _ in range(40):  # each answered request let uvicorn read on, ~9,000 more requests per 256 KiB read
        writer.write(GET * 500)
        await asyncio.sleep(0.02)
        most = max(most, waiting(server))
    assert most <= MAX_PIPELINED
    writer.close()


async def test_pipelined_requests_within_the_bound_are_all_answered(served: tuple[int, App, uvicorn.Server]) -> None:
    port, _, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(GET * MAX_PIPELINED + b"GET / HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n")
    got = await asyncio.wait_for(reader.read(), 30)
    assert got.count(b"HTTP/1.1 200 ") == MAX_PIPELINED + 1
    writer.close()


async def test_a_piece_holding_a_whole_body_is_not_counted_against_the_next_head() -> None:
    """Before: a read that finished a head, held its body and began the next head was counted whole against that
    next head: a 100 KB body pipelined with the next request's head was refused 431. Served with the default head
    deadline (10 s): each head here is finished 0.1 s after it began, which QuickDeadline's 0.4 s left a loaded
    machine only 0.3 s of."""
    async with serving(App().app, http=HeadDeadline, lifespan="off", log_level="error") as s:
        await _a_body_then_the_next_head(s.port)


async def _a_body_then_the_next_head(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b"x" * (MAX_HEAD_BYTES + 40_000)
    writer.write(b"POST / HTTP/1.1\r\nhost: gw\r\ncontent-length: %d\r\n" % len(body))  # its head unfinished
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.write(b"\r\n" + body + b"GET / HTTP/1.1\r\nhost: gw\r\n")  # the next head begun in the same piece
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.write(b"connection: close\r\n\r\n")
    got = await asyncio.wait_for(reader.read(), 30)
    assert got.count(b"HTTP/1.1 200 ") == 2, got[:200]
    writer.close()


async def test_the_head_deadline_never_cuts_an_answer_owed_on_the_connection(
        served: tuple[int, App, uvicorn.Server]) -> None:
    """Before: a head begun behind a request still being answered (1 s here) was not read (uvicorn stops reading
    behind a pipelined request) and its deadline (0.4 s) fired: 408 written ahead of the owed answer and the
    connection closed, the answer lost."""
    port, _, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /slow HTTP/1.1\r\nhost: gw\r\n\r\nGET / HTTP/1.1\r\nhost:")  # the next head never ends
    got = await asyncio.wait_for(reader.read(), 30)
    assert got.startswith(b"HTTP/1.1 200 ") and b"slow" in got and got.endswith(TIMED_OUT)
    writer.close()


async def test_a_request_http_refuses_is_answered_in_the_apis_envelope(served: tuple[int, App, uvicorn.Server]) -> None:
    """Before: uvicorn's `Invalid HTTP request received.` in plain text."""
    port, _, _ = served
    for sent in (b"NOT\x1b HTTP\r\n\r\n", b"GET / HTTP/1.1\r\nhost: gw\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(sent)
        assert await asyncio.wait_for(reader.read(), 30) == NOT_HTTP
        writer.close()


async def test_a_request_http_refuses_behind_an_owed_answer_does_not_cut_it(
        served: tuple[int, App, uvicorn.Server]) -> None:
    """Before: uvicorn wrote its 400 at once, ahead of the answer still owed (1 s here), and closed the connection:
    that answer was lost."""
    port, _, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /slow HTTP/1.1\r\nhost: gw\r\n\r\nNOT\x1b HTTP\r\n\r\n")
    got = await asyncio.wait_for(reader.read(), 30)
    assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(b"slow") and b"connection: close" in got
    writer.close()
