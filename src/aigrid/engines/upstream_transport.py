"""Http1Transport: an httpx transport for the gateway's upstream traffic, built for many concurrent streams.

Why: under 200 concurrent streams the gateway spent about 60% of its CPU inside httpcore's connection
pool (py-spy; docs/benchmarks.md): every request and every response close walks every pooled connection,
and its idle-connection check is quadratic in the pool size, each step asking anyio for socket details.
This transport keeps the httpx API that the adapters use (Request in, streamed Response out, httpx
exceptions), so OpenAICompatEngine, health probes, scrapes and tests are unchanged, but the pool is a
LIFO list of idle keep-alive connections per origin: O(1) to take and to give back. Parsing is httptools
(the parser uvicorn uses); each TCP read is one callback that hands the decoded bytes to the waiting reader.

HTTP/1.1 over plain TCP only (engines sit on loopback or a private network); https:// raises
httpx.UnsupportedProtocol so that a caller can keep httpx's own transport for such URLs.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator

import httptools
import httpx

CLOSED_IDLE = "Server disconnected without sending a response"
"""The same message httpcore raises, so that callers that resend on it (openai_compat) keep working."""
_EOF = b""


def _expire(future: asyncio.Future[None], message: str) -> None:
    if not future.done():
        future.set_exception(httpx.ReadTimeout(message))


async def _wait(future: asyncio.Future[None], timeout: float | None, message: str) -> None:
    """Await a future the protocol resolves, failing with ReadTimeout after `timeout` seconds. One timer
    handle, no task: asyncio.wait_for costs several times more, and this runs once per relayed chunk."""
    if timeout is None:
        await future
        return
    timer = asyncio.get_running_loop().call_later(timeout, _expire, future, message)
    try:
        await future
    finally:
        timer.cancel()


class _Conn(asyncio.Protocol):
    def __init__(self, origin: tuple[str, int]) -> None:
        self.origin = origin
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._headers: list[tuple[bytes, bytes]] = []
        self._head: asyncio.Future[None] | None = None
        self._chunks: deque[bytes] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._error: Exception | None = None
        self.complete = False
        self.keep_alive = False
        self.got_bytes = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            if not self.got_bytes:
                self._error = httpx.RemoteProtocolError(CLOSED_IDLE)
            else:
                self._error = httpx.ReadError(f"connection lost mid-response: {exc!r}" if exc else
                                              "server closed the connection mid-response")
        self._wake()

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._error = httpx.RemoteProtocolError(f"invalid HTTP response: {e}")
            self.keep_alive = False
            if self.transport is not None:
                self.transport.close()
            self._wake()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()
        self._wake()

    def _wake(self) -> None:
        if self._head is not None and not self._head.done():
            self._head.set_result(None)
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    # used by the transport
    def reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self._headers, self._chunks, self._error = [], deque(), None
        self.complete = self.keep_alive = self.got_bytes = False

    async def send(self, data: bytes, timeout: float | None) -> tuple[int, list[tuple[bytes, bytes]]]:
        assert self.transport is not None
        self._head = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        await _wait(self._head, timeout, "timed out waiting for the response head")
        if self._error is not None and not self._headers:
            raise self._error
        return self.parser.get_status_code(), self._headers

    async def read(self, timeout: float | None) -> bytes:
        while not self._chunks:
            if self.complete:
                return _EOF
            if self._error is not None:
                raise self._error
            self._wakeup = asyncio.get_running_loop().create_future()
            await _wait(self._wakeup, timeout, "timed out waiting for response bytes")
        if len(self._chunks) == 1:
            return self._chunks.popleft()
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Body(httpx.AsyncByteStream):
    def __init__(self, transport: Http1Transport, conn: _Conn, read_timeout: float | None) -> None:
        self._transport = transport
        self._conn = conn
        self._timeout = read_timeout
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self._conn.read(self._timeout)
            if not chunk:
                return
            yield chunk

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            self._transport.release(self._conn)


class Http1Transport(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 to any number of origins; `max_idle` idle connections kept per origin."""

    def __init__(self, *, max_idle: int = 256, keepalive_expiry: float = 30.0) -> None:
        self._idle: dict[tuple[str, int], list[_Conn]] = {}
        self._max_idle = max_idle
        self._expiry = keepalive_expiry

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"Http1Transport speaks plain http only, not {url.scheme!r}")
        origin = (url.host, url.port or 80)
        timeouts = request.extensions.get("timeout", {})
        body = await request.aread()
        head = [f"{request.method} {url.raw_path.decode('ascii')} HTTP/1.1".encode()]
        if "host" not in request.headers:
            head.append(b"host: " + url.netloc)
        head += [k + b": " + v for k, v in request.headers.raw]
        if body and "content-length" not in request.headers:
            head.append(b"content-length: %d" % len(body))
        data = b"\r\n".join(head) + b"\r\n\r\n" + body
        conn = await self._acquire(origin, timeouts.get("connect"))
        try:
            status, headers = await conn.send(data, timeouts.get("read"))
        except BaseException:
            conn.close()
            raise
        return httpx.Response(status, headers=headers, stream=_Body(self, conn, timeouts.get("read")),
                              extensions={"http_version": b"HTTP/1.1"})

    async def _acquire(self, origin: tuple[str, int], timeout: float | None) -> _Conn:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self._expiry:
                conn.reset()
                return conn
            conn.close()
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Conn(origin), origin[0], origin[1]), timeout)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {origin[0]}:{origin[1]} timed out") from None
        except OSError as e:
            raise httpx.ConnectError(f"cannot connect to {origin[0]}:{origin[1]}: {e}") from e
        return conn

    def release(self, conn: _Conn) -> None:
        """Back to the pool if the response was read to its end on a keep-alive connection, else closed."""
        if conn.closed or not conn.complete or not conn.keep_alive:
            conn.close()
            return
        idle = self._idle.setdefault(conn.origin, [])
        if len(idle) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
