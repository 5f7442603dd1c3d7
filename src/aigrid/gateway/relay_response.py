"""The streamed answer's ASGI response: chunks straight to `send`, with one plain task watching for the
client's disconnect, and, under uvicorn's httptools server, a wire straight to the client's socket.

Starlette's StreamingResponse runs each response in an anyio task group (to listen for the disconnect while
streaming) when the server speaks ASGI < 2.4, as uvicorn does; per chunk and per response that machinery was
about a quarter of the gateway's CPU at 200 streams (docs/benchmarks.md). Here the watcher is one asyncio
future on `receive()`, checked between chunks; when the client is gone the relay stops, so its generator's
cleanup releases the engine at once.

ClientWire: once the response head has gone out through `send`, a relay that can (relay.StreamRelay) writes
the body's HTTP chunks to the client's transport itself, from the engine connection's read callback where the
engine is on aigrid's own transport: no task switch and no ASGI message per relayed read. It writes exactly
what uvicorn's `send` would (`%x\\r\\n` + bytes + `\\r\\n`), stops when the client's socket is full (uvicorn's
flow control says so; the relay waits on the same flow control as `send` does before writing more) or gone,
and the response still ends through `send` (the last chunk, keep-alive, uvicorn's bookkeeping).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

try:  # uvicorn's internals: a uvicorn without them (or another server) gets `send` only
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
except ImportError:  # pragma: no cover
    RequestResponseCycle = None  # type: ignore[assignment,misc]


class ClientWire:
    """The client's socket under uvicorn's httptools protocol, for the body of one chunked response."""

    __slots__ = ("_cycle", "_transport", "_flow", "gone")

    def __init__(self, cycle: Any, gone: asyncio.Future[None]) -> None:
        self._cycle, self._transport, self._flow, self.gone = cycle, cycle.transport, cycle.flow, gone

    @classmethod
    def of(cls, send: Send, gone: asyncio.Future[None]) -> ClientWire | None:
        """The wire behind `send` once the response head was sent, or None (another server, a wrapped send,
        a body that is not chunked)."""
        cycle = getattr(send, "__self__", None)
        if RequestResponseCycle is None or type(cycle) is not RequestResponseCycle:
            return None
        try:
            usable = (cycle.chunked_encoding is True and cycle.response_started and not cycle.response_complete
                      and not cycle.disconnected and cycle.scope["method"] != "HEAD"
                      and hasattr(cycle.transport, "write") and hasattr(cycle.flow, "write_paused"))
        except (AttributeError, KeyError):  # a uvicorn whose cycle is not what this was written against
            return None
        return cls(cycle, gone) if usable else None

    @property
    def closed(self) -> bool:
        return self._cycle.disconnected or self.gone.done()

    @property
    def paused(self) -> bool:
        """The client's socket buffer is full (uvicorn's flow control): write no more until drain()."""
        return self._flow.write_paused

    async def drain(self) -> bool:
        """Wait until the client's socket takes more (what uvicorn's `send` waits for); True: the client is gone."""
        await self._flow.drain()
        return self.closed

    def write(self, body: bytes) -> bool:
        """One HTTP chunk to the client (dropped when it is gone); False when the relay should stop writing
        here: the client is gone or its socket's buffer is full."""
        if self._cycle.disconnected:
            return False
        self._transport.write(b"%x\r\n%b\r\n" % (len(body), body))
        return not self._flow.write_paused


class RelayResponse(Response):
    def __init__(self, chunks: AsyncIterator[bytes], status_code: int, headers: Mapping[str, str]) -> None:
        self.body_iterator = chunks
        self.status_code = status_code
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            wire = ClientWire.of(send, gone)
            if wire is not None and hasattr(self.body_iterator, "wire"):
                self.body_iterator.wire = wire  # type: ignore[attr-defined]
            async for chunk in self.body_iterator:
                if gone.done() or (wire is not None and wire.closed):
                    break
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            else:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # ASGI 2.4 servers raise on send after the client left: nothing more to deliver
        finally:
            gone.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gone
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()  # the relay's cleanup: release the engine, book the outcome


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
