"""A minimal streaming HTTP/1.1 client for the load generator: asyncio.Protocol + httptools, keep-alive pool.

Why not httpx: a load generator must cost far less per token than what it measures. Here one TCP read is
one callback that timestamps the bytes and frames its SSE events with the project's one codec
(engines/sse.py); no event is JSON-decoded here (the runner reads the usage event's payload once). httpx
spends several coroutine hops and a chunk iterator per read. Plain http:// only (the gateways under test
listen on loopback or a private network).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import httptools

from aigrid.engines.sse import DONE, SseDecoder, SseError
from aigrid.spec.models import url_without_password

Clock = Callable[[], float]


@dataclass(slots=True)
class Exchange:
    """What one request observed. Times are clock() readings (perf_counter by default)."""

    sent: float | None = None
    """When the request was written (None: never, its connection refused)."""
    status: int = 0
    first_byte: float | None = None
    arrivals: list[float] = field(default_factory=list)
    """Time of each read that completed at least one SSE event."""
    events: int = 0
    """SSE events with data (content chunks, the finish and usage chunks, [DONE])."""
    usage: bytes | None = None
    """The data of the last event that carries "usage"."""
    error_event: bool = False
    """An event carried "error" (a gateway that ended the stream with an error event)."""
    saw_done: bool = False
    done: float | None = None
    tail: bytes = b""
    body_bytes: int = 0
    error: str | None = None


class Target:
    """host, port and path prefix of a base URL such as http://127.0.0.1:8080/v1, and the Basic credentials of
    its user:password@ if it has one."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{url_without_password(base_url)!r}: the load generator speaks plain http:// only")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.base_url = base_url
        self.basic: str | None = None
        """`Basic base64(user:password)` of the URL's userinfo, percent-decoded (as curl and httpx send it); a
        user:password@ was redacted in every error but never sent, so a proxy behind it answered 401 to all."""
        if parts.username is not None or parts.password is not None:
            pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            self.basic = "Basic " + base64.b64encode(pair.encode()).decode("ascii")

    def with_auth(self, headers: dict[str, str]) -> dict[str, str]:
        """`headers` and the URL's Basic credentials, unless they carry an Authorization already (--header,
        --api-key): the one a user gave wins, as curl's -H does over its URL's user:password."""
        if self.basic is None or any(k.lower() == "authorization" for k in headers):
            return headers
        return {**headers, "authorization": self.basic}

    def request_head(self, path: str, length: int, headers: dict[str, str]) -> bytes:
        # an IPv6 literal in brackets, as in the URL (RFC 9110 Host): `host: ::1:8080` is no host and port
        host = f"[{self.host}]" if ":" in self.host else self.host
        lines = [f"POST {self.prefix}{path} HTTP/1.1", f"host: {host}:{self.port}",
                 "content-type: application/json", f"content-length: {length}", "accept-encoding: identity"]
        lines += [f"{k}: {v}" for k, v in self.with_auth(headers).items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


class _Conn(asyncio.Protocol):
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.ex: Exchange | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.keep_alive = True
        self.closed = False
        self._sse: SseDecoder | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if self.ex is not None:
                self.ex.error = f"connection lost: {exc!r}" if exc else "connection closed by the server"
            self.waiter.set_result(None)

    def send(self, data: bytes, ex: Exchange, waiter: asyncio.Future[None]) -> None:
        self.ex, self.waiter = ex, waiter
        self._sse = SseDecoder()
        assert self.transport is not None
        ex.sent = self.clock()
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            if self.ex is not None:
                self.ex.error = f"bad HTTP response: {e}"
            self.keep_alive = False
            if self.transport is not None:
                self.transport.close()

    def on_status(self, status: bytes) -> None:
        if self.ex is not None:
            self.ex.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        ex = self.ex
        if ex is None:
            return
        now = self.clock()
        if ex.first_byte is None:
            ex.first_byte = now
        ex.body_bytes += len(body)
        ex.tail = (ex.tail + body)[-2048:]  # a JSON body's usage, an error's message
        if self._sse is None:
            return
        try:
            events = self._sse.feed(body)
        except SseError:  # not an event stream after all (a large JSON body)
            self._sse = None
            return
        if not events:
            return
        ex.arrivals.append(now)
        for ev in events:
            data = ev.data
            if data is None:
                continue
            ex.events += 1
            if data == DONE:
                ex.saw_done = True
            elif b'"usage"' in data:
                ex.usage = data
            elif b'"error"' in data:
                ex.error_event = True

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        if self.ex is not None:
            self.ex.done = self.clock()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class Pool:
    """Keep-alive connections to one target, opened on demand, never more than `limit` (0: no limit)."""

    def __init__(self, target: Target, clock: Clock = time.perf_counter, limit: int = 0) -> None:
        self.target = target
        self.clock = clock
        self._idle: list[_Conn] = []
        self._all: set[_Conn] = set()
        self._sem = asyncio.Semaphore(limit) if limit else None

    async def _acquire(self) -> tuple[_Conn, bool]:
        """A connection, and whether it was reused from the pool."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn, True
            self._all.discard(conn)
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: _Conn(self.clock), self.target.host, self.target.port)
        self._all.add(conn)
        return conn, False

    async def post(self, path: str, body: bytes, headers: dict[str, str], timeout: float) -> Exchange:
        if self._sem is not None:
            await self._sem.acquire()
        try:
            data = self.target.request_head(path, len(body), headers) + body
            while True:
                ex = Exchange()
                try:
                    conn, reused = await self._acquire()
                except OSError as e:
                    ex.error = f"connect failed: {e}"
                    return ex
                await self._exchange(conn, data, ex, timeout)
                # a server may close an idle keep-alive connection without saying so (llama-server does
                # after a stream): a reused connection that died before any response byte is retried fresh
                if reused and ex.status == 0 and ex.first_byte is None and ex.error is not None and conn.closed:
                    continue
                return ex
        finally:
            if self._sem is not None:
                self._sem.release()

    async def _exchange(self, conn: _Conn, data: bytes, ex: Exchange, timeout: float) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        conn.send(data, ex, waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            ex.error = f"timed out after {timeout:g}s"
            conn.keep_alive = False
        conn.ex, conn.waiter = None, None
        if conn.keep_alive and not conn.closed and ex.error is None:
            self._idle.append(conn)
        else:
            self._all.discard(conn)
            if conn.transport is not None:
                conn.transport.close()
        if ex.done is None and ex.error is None:
            ex.error = "response incomplete"

    def close(self) -> None:
        for conn in self._all:
            if conn.transport is not None:
                conn.transport.close()
        self._all.clear()
        self._idle.clear()
