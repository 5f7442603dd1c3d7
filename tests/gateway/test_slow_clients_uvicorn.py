"""gateway/slow_clients.py and relay_response.ClientWire rely on uvicorn's internals (pyproject allows any uvicorn from
0.45 on): the class swap of each request's cycle to RefusableCycle, and ClientWire finding the client's socket under
uvicorn's cycle. uvicorn_fit.uvicorn_fits checks them once per process; where uvicorn is not what they were written
against (here: its protocol made to build another class, or a name the swap uses missing), one warning each and
uvicorn's own behaviour, every request still served. uvicorn runs in this process on 127.0.0.1 (port 0)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from uvicorn.protocols.http import httptools_impl

from aigrid.gateway import uvicorn_fit
from aigrid.gateway.relay_response import ClientWire, RelayResponse
from aigrid.gateway.slow_clients import NOT_HTTP, HeadDeadline, RefusableCycle
from tests.serving import serving


@pytest.fixture(autouse=True)
def checked_afresh() -> Iterator[None]:
    """uvicorn_fits runs once per process (cached): each test checks again, and leaves no answer of its own behind."""
    uvicorn_fit.uvicorn_fits.cache_clear()
    yield
    uvicorn_fit.uvicorn_fits.cache_clear()


class Built:
    """A raw ASGI app that notes the class of each request's cycle, reads the body, and answers `ok` (or, for
    POST /stream, a RelayResponse in chunks)."""

    def __init__(self) -> None:
        self.cycles: list[type] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.cycles.append(type(receive.__self__))
        if scope["path"] == "/stream":
            async def chunks() -> AsyncIterator[bytes]:
                for piece in (b"one ", b"two ", b"three"):
                    yield piece

            await RelayResponse(chunks(), 200, {"content-type": "text/plain"})(scope, receive, send)
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})


async def exchange(port: int, sent: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(sent)
    try:
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


GET = b"GET / HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n"
STREAM = b"POST /stream HTTP/1.1\r\nhost: gw\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
BAD_CHUNK = b"POST / HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n"


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warnings about uvicorn's HTTP protocol (the same check's WebSocket part, Lingering's: test_stopping.py)."""
    return [r.getMessage() for r in caplog.records if r.name == "aigrid.gateway" and r.levelno == logging.WARNING
            and "httptools protocol" in r.getMessage()]


def http_fit() -> tuple[bool, bool]:
    fit = uvicorn_fit.uvicorn_fits()
    return fit.swap, fit.wire


def test_the_uvicorn_installed_fits_without_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """The control: the uvicorn this project installs (pyproject's) is what the swap and ClientWire expect."""
    assert http_fit() == (True, True)
    assert warnings_of(caplog) == []


async def test_a_uvicorn_that_builds_another_cycle_is_warned_once_and_served_as_it_serves(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """uvicorn's protocol builds its cycle by the module's name RequestResponseCycle; here that name is another
    class (as a uvicorn that renamed or wrapped it would). Before: nothing said; the swap (`type is`) silently never
    happened and ClientWire silently found no wire (every streamed chunk through ASGI send). Now one warning for each,
    once per process however many connections, and uvicorn's own behaviour: requests served, streams whole, a bad
    chunk's connection closed with the 400."""

    class Renamed(httptools_impl.RequestResponseCycle):
        pass

    monkeypatch.setattr(httptools_impl, "RequestResponseCycle", Renamed)
    app = Built()
    async with serving(app, http=HeadDeadline, lifespan="off", log_level="error") as s:
        for _ in range(3):
            assert (await exchange(s.port, GET)).startswith(b"HTTP/1.1 200 ")
        streamed = await exchange(s.port, STREAM)
        assert streamed.startswith(b"HTTP/1.1 200 ") and b"one " in streamed and b"three" in streamed
        assert (await exchange(s.port, BAD_CHUNK)).endswith(NOT_HTTP)
    assert app.cycles == [Renamed] * 5  # never swapped to RefusableCycle
    said = warnings_of(caplog)
    assert len(said) == 2, said
    assert ".Renamed'" in said[0] and "RefusableCycle not used" in said[0]
    assert ".Renamed'" in said[1] and "relay_response.ClientWire" in said[1]
    assert http_fit() == (False, False)


async def test_a_cycle_without_a_name_the_swap_uses_is_left_as_uvicorn_built_it(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A uvicorn whose cycle lacks an attribute RefusableCycle or send_400_response uses (here a name added to what
    the swap reads, as a uvicorn that renamed one would look): no swap (a RefusableCycle would fail on that name
    mid-request), one warning naming it, the request refused in its body closed as uvicorn does; ClientWire, which
    does not read it, still finds its wire."""
    monkeypatch.setattr(uvicorn_fit, "SWAP_READS", (*uvicorn_fit.SWAP_READS, "body_refusal_hook"))
    app = Built()
    async with serving(app, http=HeadDeadline, lifespan="off", log_level="error") as s:
        assert (await exchange(s.port, GET)).startswith(b"HTTP/1.1 200 ")
        assert (await exchange(s.port, BAD_CHUNK)).endswith(NOT_HTTP)
    assert app.cycles == [httptools_impl.RequestResponseCycle] * 2
    said = warnings_of(caplog)
    assert len(said) == 1 and "without body_refusal_hook" in said[0], said
    assert http_fit() == (False, True)


async def test_with_uvicorn_as_expected_each_cycle_is_swapped() -> None:
    """The control of the two above: the swap happens (the body refusable part-way)."""
    app = Built()
    async with serving(app, http=HeadDeadline, lifespan="off", log_level="error") as s:
        assert (await exchange(s.port, GET)).startswith(b"HTTP/1.1 200 ")
    assert app.cycles == [RefusableCycle]


async def test_a_flow_without_what_clientwire_uses_sends_streams_through_asgi_send(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A uvicorn whose flow control lacks what ClientWire uses to write (here a name added to WIRE_FLOW_READS, as a
    uvicorn that renamed `drain` would look): one warning, and ClientWire finds no wire, so a stream goes through
    ASGI send, whole, rather than fail mid-answer on the missing name; the swap, which does not use it, still
    happens. Before, ClientWire.of gave the wire (its class check passed). The control (the wire used when uvicorn
    fits) is test_relay's test_the_wire_is_found_under_the_gateways_own_http_protocol."""
    monkeypatch.setattr(uvicorn_fit, "WIRE_FLOW_READS", (*uvicorn_fit.WIRE_FLOW_READS, "drain_hook"))
    found: list[ClientWire | None] = []
    of = ClientWire.of

    def noted(send: Any, gone: Any) -> ClientWire | None:
        found.append(of(send, gone))
        return found[-1]

    monkeypatch.setattr(ClientWire, "of", noted)
    app = Built()
    async with serving(app, http=HeadDeadline, lifespan="off", log_level="error") as s:
        streamed = await exchange(s.port, STREAM)
    assert streamed.startswith(b"HTTP/1.1 200 ") and b"one " in streamed and b"three" in streamed
    assert found == [None] and app.cycles == [RefusableCycle]  # asked, and no wire given
    said = warnings_of(caplog)
    assert len(said) == 1 and "without flow.drain_hook" in said[0] and "relay_response.ClientWire" in said[0], said
    assert http_fit() == (True, False)
