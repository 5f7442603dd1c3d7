"""A process holds a bounded number of client connections (gateway/slow_clients.HeadDeadline.max_connections): one past
it is answered 503 and closed as it is accepted, so idle connections cannot take the file descriptors the gateway needs
for its engines. uvicorn runs in this process on a socket bound here (port 0), with the bound lowered."""

from __future__ import annotations

import asyncio
import resource
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from aigrid.gateway import slow_clients
from aigrid.gateway.slow_clients import BUSY, HeadDeadline
from tests.serving import serving

BOUND = 8


class Bounded(HeadDeadline):
    max_connections = staticmethod(lambda: BOUND)


async def _ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


@pytest.fixture
async def port() -> AsyncIterator[int]:
    async with serving(Starlette(routes=[Route("/", _ok)]), http=Bounded, lifespan="off", log_level="error") as s:
        yield s.port


async def served(connection: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> bool:
    reader, writer = connection
    writer.write(b"GET / HTTP/1.1\r\nhost: gw\r\n\r\n")
    return (await asyncio.wait_for(reader.readuntil(b"ok"), 30)).startswith(b"HTTP/1.1 200 ")


async def admitted(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection the server kept and served: one it accepted before it saw the closes that made room (a loaded
    machine may take a while) is answered BUSY and closed, and the next is tried."""
    async with asyncio.timeout(30):
        while True:
            connection = await asyncio.open_connection("127.0.0.1", port)
            try:
                if await served(connection):
                    return connection
            except asyncio.IncompleteReadError as e:  # closed: refused, the room not seen yet
                assert e.partial == BUSY
            connection[1].close()
            await asyncio.sleep(0.05)


async def test_a_connection_past_the_bound_is_answered_503_and_closed(
        port: int, caplog: pytest.LogCaptureFixture) -> None:
    """Before: every connection was accepted until the process ran out of file descriptors (then no engine could be
    reached: each attempt an engine failure)."""
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(BOUND)]  # idle, within the bound
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(reader.read(), 30) == BUSY  # answered before it sent anything, then closed
    writer.close()
    assert all([await served(c) for c in held])  # the ones held are served as before
    for _, w in held[:2]:
        w.close()
        await w.wait_closed()
    again = await admitted(port)  # room again once some closed (served)
    assert "refused 1 connection(s)" in caplog.text
    for _, w in [*held[2:], again]:
        w.close()


def test_the_bound_is_half_the_file_descriptor_limit() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert slow_clients.max_connections() == max(64, soft // 2)
    assert b'"code":"too_many_connections"' in BUSY and b"retry-after: 1" in BUSY  # test_slow_clients_bounds.py
