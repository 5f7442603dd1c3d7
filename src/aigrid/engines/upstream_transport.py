"""Http1Transport: an httpx transport for the gateway's upstream traffic, built for many concurrent streams.

Why: under 200 concurrent streams the gateway spent about 60% of its CPU inside httpcore's connection
pool (py-spy; docs/benchmarks.md): every request and every response close walks every pooled connection,
and its idle-connection check is quadratic in the pool size, each step asking anyio for socket details.
This transport keeps the httpx API that the adapters use (Request in, streamed Response out, httpx
exceptions), so OpenAICompatEngine, health probes, scrapes and tests are unchanged, but the pool is a
LIFO list of idle keep-alive connections per origin: O(1) to take and to give back. Parsing is httptools
(the parser uvicorn uses); each TCP read is one callback that hands the decoded bytes to the waiting reader.

Limits and backpressure: at most `max_connections` requests in flight per origin (the next waits up to
the request's pool timeout, then httpx.PoolTimeout); a request body that the engine does not read within
the write timeout raises httpx.WriteTimeout; and a response is read from the socket only as fast as its
reader takes it: past `high_water` buffered bytes the connection stops reading (TCP pushes back on the
engine) until the reader has taken them. A slow client therefore holds the engine back instead of making
the gateway buffer the engine's whole answer.

A reader may instead attach a sink to the body (`_Body.attach`): each socket read's body bytes are then
handed to it from the read callback itself, one call per read (several HTTP chunks of one read joined), with
no task woken per read: the gateway's relay writes them on to its client from there (gateway/relay.py). The
sink returns False, or the response ends, fails or goes silent for the read timeout, and the connection
detaches it and resolves the future attach() returned; whatever it had not handed over is then read as
before (a silent engine's ReadTimeout included).

HTTP/1.1 over plain TCP only (engines sit on loopback or a private network); https:// raises
httpx.UnsupportedProtocol so that a caller can keep httpx's own transport for such URLs.

What an engine may send that is not one answer to the request sent (docs/reliability.md, "The wire"): interim
responses (100 Continue, 103 Early Hints) are skipped, their heads counted in the head's bound; a 101 (an upgrade
the gateway never asks for) is a protocol error; any byte after a response's end (a second response glued to it, a
response sent before the next request) is never read as part of an answer and the connection is not reused, so a
later request cannot be handed another's bytes. A connection closed without a byte of answer is reported as
CLOSED_IDLE (which callers resend once) only when it was a pooled one: a fresh connection's request may have been
read and acted on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import httptools
import httpx

CLOSED_IDLE = "Server disconnected without sending a response"
"""The same message httpcore raises, so that callers that resend on it (openai_compat) keep working; raised for a
pooled (kept-alive) connection only."""
CLOSED_FRESH = "the engine closed a new connection without answering"
"""A fresh connection closed before any byte of answer: the engine may have read the request, so it is not resent."""
SWITCHED = "the engine switched protocols (HTTP 101), which the gateway never asks for"
HIGH_WATER = 256 * 1024
"""Response bytes buffered per connection before it stops reading from the socket."""
MAX_HEAD_BYTES = 1 << 20
"""The most bytes of a response's head (status line and headers): more is a protocol error (Go's net/http allows
10 MB, nginx a few KiB a line; an engine's head is a few hundred bytes)."""
Sink = Callable[[bytes], bool]
"""Takes one read's body bytes; False: detach me (the bytes passed were taken all the same)."""

log = logging.getLogger("aigrid.engines")


def _expire(future: asyncio.Future[None], error: type[httpx.TimeoutException], message: str) -> None:
    if not future.done():
        future.set_exception(error(message))


async def _wait(future: asyncio.Future[None], timeout: float | None, message: str,
                error: type[httpx.TimeoutException] = httpx.ReadTimeout) -> None:
    """Await a future the protocol resolves, failing with `error` after `timeout` seconds. One timer
    handle, no task: asyncio.wait_for costs several times more, and this runs once per relayed chunk (so the
    exception is built only when the timer fires)."""
    if timeout is None:
        await future
        return
    timer = asyncio.get_running_loop().call_later(timeout, _expire, future, error, message)
    try:
        await future
    finally:
        timer.cancel()


class _Conn(asyncio.Protocol):
    def __init__(self, origin: tuple[str, int], high_water: int = HIGH_WATER) -> None:
        self.origin = origin
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._headers: list[tuple[bytes, bytes]] = []
        self._head: asyncio.Future[None] | None = None
        self._chunks: deque[bytes] = deque()
        self.buffered = 0
        """Response bytes received and not yet taken by the reader (bounded by high_water + one read)."""
        self._high_water = high_water
        self._reading_paused = False
        self._writable: asyncio.Future[None] | None = None  # set while the socket's send buffer is full
        self._wakeup: asyncio.Future[None] | None = None
        self._waiting_since: float | None = None
        """When the reader started waiting for bytes (None: not waiting)."""
        self._read_timer: asyncio.TimerHandle | None = None
        self._read_timeout: float | None = None
        self._error: Exception | None = None
        self.complete = False
        self.keep_alive = False
        self.got_bytes = False
        self.reused = False
        """Taken from the pool for this request (a kept-alive connection), not opened for it."""
        self._interim = False
        """The message being parsed is an interim (1xx) response: skipped, the final one follows."""
        self._head_left: int | None = MAX_HEAD_BYTES
        """Bytes the response head may still take (httptools keeps a header whole until its line ends: a head that
        never ended held the gateway's memory without bound until the first-byte deadline); None once it is whole."""
        self._sink: Sink | None = None
        self._detached: asyncio.Future[None] | None = None
        self._last_data = 0.0
        """Sink mode: the loop time of the last bytes handed over (the read timeout counts from there)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timed_out = False
        """The sink was detached because the engine was silent for the read timeout: next_chunk raises."""

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.resume_writing()
        if not self.complete and self._error is None:  # else the error that closed it (_fail) is the one to say
            if not self.got_bytes:
                self._error = httpx.RemoteProtocolError(CLOSED_IDLE if self.reused else CLOSED_FRESH)
            else:
                self._error = httpx.ReadError(f"connection lost mid-response: {exc!r}" if exc else
                                              "server closed the connection mid-response")
        self._wake()

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        if self._head is None:  # nothing asked yet on this connection (reset() clears it for a pooled one)
            self._fail(httpx.RemoteProtocolError("the engine sent a response it was not asked for"))
            return
        if self._head_left is not None:  # the head is still coming (None once it is whole)
            self._head_left -= len(data)
            if self._head_left < 0:
                self._fail(httpx.RemoteProtocolError(f"the response head is larger than {MAX_HEAD_BYTES} bytes"))
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # a 101 parsed to its end: llhttp stops at the switch
            self._fail(httpx.RemoteProtocolError(SWITCHED))
            return
        except httptools.HttpParserError as e:
            # a callback's own refusal (on_message_begin, on_headers_complete) is the error's context
            own = e.__context__
            self._fail(own if isinstance(own, httpx.RemoteProtocolError) else
                       httpx.RemoteProtocolError(f"invalid HTTP response: {e}"))
            return
        if self._sink is not None and self._chunks:
            self._deliver()

    def _fail(self, error: Exception) -> None:
        if self.complete:  # the answer was whole: it stands, the connection is not reused
            log.warning("engine %s:%d: %s after a whole response; connection closed", *self.origin, error)
        self._error = error
        self.keep_alive = False
        if self.transport is not None:
            self.transport.close()
        self._wake()

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self.complete:  # bytes past the response's end: never part of this answer nor of the next request's
            raise httpx.RemoteProtocolError("the engine sent a response it was not asked for")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # interim (RFC 9110 15.2): skipped; its bytes stay counted in the head's bound
            self._headers = []
            if status < 100:
                raise httpx.RemoteProtocolError(f"invalid HTTP response: status {status}")
            if status == 101:
                raise httpx.RemoteProtocolError(SWITCHED)
            self._interim = True
            return
        self._head_left = None
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        if self._sink is not None:
            return  # data_received hands the read over once it is parsed
        self.buffered += len(body)
        if self.buffered > self._high_water and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()  # the reader is slow: let TCP push back on the engine
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:  # the final response follows on the same connection
            self._interim = False
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()
        self._wake()

    def _wake(self) -> None:
        if self._head is not None and not self._head.done():
            self._head.set_result(None)
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)
        if self._sink is not None:
            self.detach()  # the end, or an error: the reader takes over

    # sink mode
    def attach(self, sink: Sink, timeout: float | None) -> asyncio.Future[None] | None:
        """Hand every later read's body bytes to `sink` from the read callback (what is buffered now at once);
        the future resolves when the sink is detached. None: the response is over or failed already (read it
        with next_chunk)."""
        if self.complete or self._error is not None or self.closed or self._sink is not None:
            return None
        self._loop = loop = asyncio.get_running_loop()
        self.stop_read_timer()  # next_chunk's, if it armed one
        self._sink = sink
        self._detached = detached = loop.create_future()
        self._read_timeout = timeout
        if timeout is not None:
            self._last_data = now = loop.time()
            self._read_timer = loop.call_at(now + timeout, self._sink_deadline)
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        if self._chunks:
            self._deliver()
        return detached

    def detach(self) -> None:
        """Back to next_chunk: later bytes are buffered for it. Idempotent; nothing when no sink is attached."""
        detached, self._detached = self._detached, None
        if detached is None:
            return
        self._sink = None
        self.stop_read_timer()
        if not detached.done():
            detached.set_result(None)

    def _deliver(self) -> None:
        chunks = self._chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        if self._read_timer is not None and self._loop is not None:
            self._last_data = self._loop.time()
        sink = self._sink
        if sink is not None and not sink(data):
            self.detach()

    def _sink_deadline(self) -> None:
        self._read_timer = None
        if self._sink is None or self._read_timeout is None:
            return
        loop = asyncio.get_running_loop()
        due = self._last_data + self._read_timeout
        if loop.time() < due:
            self._read_timer = loop.call_at(due, self._sink_deadline)
            return
        self._timed_out = True  # the engine was silent for the whole read timeout
        self.detach()

    # used by the transport
    def reset(self) -> None:
        self.stop_read_timer()
        self.parser = httptools.HttpResponseParser(self)
        self._headers, self._chunks, self._error, self._head = [], deque(), None, None
        self.complete = self.keep_alive = self.got_bytes = self._timed_out = self._interim = False
        self._head_left = MAX_HEAD_BYTES
        self.buffered = 0
        self._sink = self._detached = None

    async def send(self, data: bytes, timeouts: Mapping[str, float | None]) -> tuple[int, list[tuple[bytes, bytes]]]:
        assert self.transport is not None
        if self._error is not None:  # the engine spoke first (data_received) and the connection is closing
            raise self._error
        self._head = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        if self._writable is not None:  # the engine is not reading the request body
            await _wait(self._writable, timeouts.get("write"), "timed out writing the request", httpx.WriteTimeout)
        # "head": how long the head may take, when the caller says so (a whole answer's comes once it is whole); else
        # the read timeout
        head = timeouts["head"] if "head" in timeouts else timeouts.get("read")
        await _wait(self._head, head, "timed out waiting for the response head")
        if self._error is not None and self._head_left is not None:  # failed before a final head was whole
            raise self._error
        return self.parser.get_status_code(), self._headers

    async def next_chunk(self, timeout: float | None) -> bytes:
        """The response bytes received since the last call, waiting for some; StopAsyncIteration at the end."""
        while not self._chunks:
            if self.complete:
                self.stop_read_timer()
                raise StopAsyncIteration
            if self._error is not None:
                self.stop_read_timer()
                raise self._error
            if self._timed_out:  # while a sink was attached (attach)
                self._timed_out = False
                raise httpx.ReadTimeout("timed out waiting for response bytes")
            loop = asyncio.get_running_loop()
            self._wakeup = wakeup = loop.create_future()
            if timeout is None:
                await wakeup
                continue
            # One timer per connection, not one per wait: this is the wait before each relayed chunk. It
            # stays armed across waits and, when it fires, either expires the wait in progress (it began
            # `timeout` ago) or moves to that wait's own deadline: the same deadline as a timer per wait.
            self._waiting_since = now = loop.time()
            if self._read_timer is None or self._read_timeout != timeout:
                self.stop_read_timer()
                self._read_timeout = timeout
                self._read_timer = loop.call_at(now + timeout, self._read_deadline)
            try:
                await wakeup
            finally:
                self._waiting_since = None
        if len(self._chunks) == 1:
            data = self._chunks.popleft()
        else:
            data = b"".join(self._chunks)
            self._chunks.clear()
        self.buffered = 0
        if self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()
        if not data:
            raise StopAsyncIteration
        return data

    def _read_deadline(self) -> None:
        self._read_timer = None
        since, wakeup, timeout = self._waiting_since, self._wakeup, self._read_timeout
        if since is None or wakeup is None or wakeup.done() or timeout is None:
            return  # no wait in progress: the next one arms the timer again
        loop = asyncio.get_running_loop()
        if loop.time() < since + timeout:
            self._read_timer = loop.call_at(since + timeout, self._read_deadline)
            return
        wakeup.set_exception(httpx.ReadTimeout("timed out waiting for response bytes"))

    def stop_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def close(self) -> None:
        self.closed = True
        self.detach()
        self.stop_read_timer()
        if self.transport is not None:
            self.transport.close()


class _Body(httpx.AsyncByteStream):
    """The response body: an async iterator (one plain coroutine per read, no generator frames)."""

    def __init__(self, transport: Http1Transport, conn: _Conn, read_timeout: float | None) -> None:
        self._transport = transport
        self._conn = conn
        self._timeout = read_timeout
        self._released = False

    def __aiter__(self) -> _Body:
        return self

    def __anext__(self) -> Coroutine[Any, Any, bytes]:  # the connection's own coroutine: one frame less per chunk
        return self._conn.next_chunk(self._timeout)

    def attach(self, sink: Sink) -> asyncio.Future[None] | None:
        """Sink mode (see the module's docstring); the read timeout applies between reads."""
        return None if self._released else self._conn.attach(sink, self._timeout)

    def detach(self) -> None:
        if not self._released:
            self._conn.detach()

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            self._transport.release(self._conn)


class _Origin:
    """Connections of one origin: the idle ones (LIFO) and a cap on those in use."""

    __slots__ = ("idle", "active", "waiters")

    def __init__(self) -> None:
        self.idle: list[_Conn] = []
        self.active = 0
        self.waiters: deque[asyncio.Future[None]] = deque()


class Http1Transport(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 to any number of origins: at most `max_connections` requests in flight and
    `max_idle` idle connections kept per origin; `high_water` response bytes buffered per connection."""

    def __init__(self, *, max_connections: int = 1000, max_idle: int = 256, keepalive_expiry: float = 30.0,
                 high_water: int = HIGH_WATER) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._origins: dict[tuple[str, int], _Origin] = {}
        self._max_connections = max_connections
        self._max_idle = max_idle
        self._expiry = keepalive_expiry
        self._high_water = high_water

    def in_use(self, host: str, port: int) -> int:
        """Requests in flight to one origin (for tests and metrics)."""
        o = self._origins.get((host, port))
        return o.active if o is not None else 0

    def idle(self, host: str, port: int) -> int:
        o = self._origins.get((host, port))
        return len(o.idle) if o is not None else 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"Http1Transport speaks plain http only, not {url.scheme!r}")
        body = await request.aread()
        head = [f"{request.method} {url.raw_path.decode('ascii')} HTTP/1.1".encode()]
        if "host" not in request.headers:
            head.append(b"host: " + url.netloc)
        head += [k + b": " + v for k, v in request.headers.raw]
        if body and "content-length" not in request.headers:
            head.append(b"content-length: %d" % len(body))
        timeouts = request.extensions.get("timeout", {})
        status, headers, stream = await self.exchange((url.host, url.port or 80), head, body, timeouts)
        return httpx.Response(status, headers=headers, stream=stream, extensions={"http_version": b"HTTP/1.1"})

    async def exchange(self, origin: tuple[str, int], head: list[bytes], body: bytes,
                       timeouts: Mapping[str, float | None]) -> tuple[int, list[tuple[bytes, bytes]], _Body]:
        """Send one request (`head`: its request line and header lines, host and content-length included)
        and return the response's status, headers and body stream (close it: that frees the connection).
        Raises httpx's transport errors. The proxied path calls this directly, without httpx's client."""
        data = b"\r\n".join(head) + b"\r\n\r\n" + body
        pool = self._origins.get(origin)
        if pool is None:
            pool = self._origins[origin] = _Origin()
        await self._slot(pool, origin, timeouts.get("pool"))
        try:
            conn = await self._connect(pool, origin, timeouts.get("connect"))
        except BaseException:
            self._free(pool)
            raise
        try:
            status, headers = await conn.send(data, timeouts)
        except BaseException:
            conn.close()
            self._free(pool)
            raise
        return status, headers, _Body(self, conn, timeouts.get("read"))

    async def _slot(self, pool: _Origin, origin: tuple[str, int], timeout: float | None) -> None:
        """Take one of the origin's max_connections, waiting up to `timeout` (the pool timeout) for one."""
        if pool.active < self._max_connections and not pool.waiters:
            pool.active += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pool.waiters.append(waiter)
        try:
            await _wait(waiter, timeout, f"all {self._max_connections} connections to {origin[0]}:{origin[1]} "
                        "are busy", httpx.PoolTimeout)
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._free(pool)  # handed a slot just as it gave up: pass it on
            elif waiter in pool.waiters:
                pool.waiters.remove(waiter)
            raise
        # the slot was handed over by _free (pool.active already counts it)

    def _free(self, pool: _Origin) -> None:
        while pool.waiters:
            waiter = pool.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # hand the slot over: active stays the same
                return
        pool.active -= 1

    async def _connect(self, pool: _Origin, origin: tuple[str, int], timeout: float | None) -> _Conn:
        now = time.monotonic()
        while pool.idle:
            conn = pool.idle.pop()
            if not conn.closed and now - conn.idle_since < self._expiry:
                conn.reset()
                conn.reused = True
                return conn
            conn.close()
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Conn(origin, self._high_water), origin[0], origin[1]), timeout)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {origin[0]}:{origin[1]} timed out") from None
        except OSError as e:
            raise httpx.ConnectError(f"cannot connect to {origin[0]}:{origin[1]}: {e}") from e
        return conn

    def release(self, conn: _Conn) -> None:
        """Back to the pool if the response was read to its end on a keep-alive connection, else closed;
        either way its slot is free for the next request."""
        pool = self._origins[conn.origin]
        self._free(pool)
        if conn.closed or not conn.complete or not conn.keep_alive or len(pool.idle) >= self._max_idle:
            conn.close()
            return
        conn.stop_read_timer()
        conn.idle_since = time.monotonic()
        pool.idle.append(conn)

    async def aclose(self) -> None:
        for pool in self._origins.values():
            for conn in pool.idle:
                conn.close()
            pool.idle.clear()
