"""RelayResponse's cleanup writes the response head still held back (ClientWire.flush) and then releases the body
(aclose_body: the relay's engine released, its outcome booked). uvloop's transport.write raises RuntimeError on a
closed handle, and the flush ran first in the `finally`: a raise there skipped the release. Now the flush is logged
at debug and the release runs."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from starlette.types import Message

from aigrid.gateway.relay_response import ClientWire, RelayResponse

CLOSED = "unable to perform operation on <TCPTransport closed=True>; the handler is closed"  # uvloop's words


class _Transport:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def write(self, data: bytes) -> None:
        raise self.error


class _Cycle:
    flow = None
    disconnected = False  # uvicorn has not seen the connection lost yet

    def __init__(self, error: Exception) -> None:
        self.transport = _Transport(error)


class _FailingBody:
    """A relay whose engine fails before its first chunk; `aclose` stands for its cleanup."""

    def __init__(self) -> None:
        self.wire: ClientWire | None = None
        self.closed = False

    def __aiter__(self) -> _FailingBody:
        return self

    async def __anext__(self) -> bytes:
        raise OSError("the engine's connection broke")

    async def aclose(self) -> None:
        self.closed = True


class _Served:
    """A streamed response whose body fails before its first chunk, its head held back on a wire whose transport
    raises `error` on write: `run()` serves it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        wire = ClientWire(_Cycle(error), self.gone)
        wire._head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"  # held back for the first chunk

        async def start(cls: type, send: Any, head: Any, gone: Any, *, hold: bool = True) -> ClientWire:
            await send(head)
            return wire

        monkeypatch.setattr(ClientWire, "start", classmethod(start))
        self.sent: list[dict[str, Any]] = []
        self.body = _FailingBody()

    async def run(self) -> None:
        async def send(message: Message) -> None:
            self.sent.append(dict(message))

        async def receive() -> Message:
            await asyncio.Event().wait()
            return {"type": "http.disconnect"}

        response = RelayResponse(self.body, 200, {"content-type": "text/event-stream"})
        response.gone = self.gone
        await response({"type": "http", "method": "POST"}, receive, send)


async def test_a_head_that_cannot_be_written_does_not_skip_the_release(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    served = _Served(monkeypatch, RuntimeError(CLOSED))
    with caplog.at_level(logging.DEBUG, logger="aigrid.proxy"):
        await served.run()
    assert served.body.closed  # released: the engine given back, the outcome booked
    assert [m["type"] for m in served.sent] == ["http.response.start"]
    assert any(CLOSED in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records), caplog.records


async def test_an_unexpected_error_in_the_cleanup_still_releases_the_body(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug (not the closed handle) is raised, not swallowed, and the release runs first."""
    served = _Served(monkeypatch, ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        await served.run()
    assert served.body.closed
