"""Deadlines for a client that sends its request slowly: the request's head here, its body in routes.read_body.

uvicorn arms no timer while a request's head arrives: a connection that sends nothing, or half a header line and
then nothing, stays open for good (checked on uvicorn 0.55: a connection with an unfinished head was still open
after 40 s), and after a response the keep-alive timer is dropped at the next request's first byte. A few
thousand such connections (slowloris) hold the gateway's file descriptors and memory, and no request of theirs
ever reaches the pipeline, its quotas or its audit log. Envoy's `request_headers_timeout`, nginx's
`client_header_timeout` (60 s) and the compiled routers bound it the same way.

`HeadDeadline` is uvicorn's httptools protocol with one timer more: from the connection's start, and from the
first byte of each later request on it, its head must be complete within HEAD_TIMEOUT_S; else the gateway answers
408 and closes the connection (logged, with the client's address). The body then has body_deadline_s: a minute
and its size at 64 KiB/s (routes.read_body and the Files API's upload: the API's own 408 envelope, audited as
every refused request is).

A head is also bounded in size (MAX_HEAD_BYTES, as Envoy's 60 KiB and a load balancer's 64 KiB): uvicorn took a
head of any size (64 MiB served), and httptools joins a header value's pieces as they arrive, in time quadratic
in its length (5.8 s of the event loop for one 64 MiB header, every client stalled). A head that grows past it is
answered 431 and closed as it arrives; a complete one over it is answered 431 instead of being served.

Requests a client pipelines (sends before reading the answers to the earlier ones) are bounded too: uvicorn parsed
every request of each read into a request cycle (about 2.4 KB each, for as little as 18 bytes sent), queued them
without limit and read on after each answer, so a client that pipelined small requests and never read its answers
had the gateway hold 481 MB (200,000 GETs) and more as it sent. While requests wait behind the one being answered
the connection is not read; at most MAX_PIPELINED wait, and the request past them is not served: the waiting ones are
answered in turn, the last with `connection: close`, and the connection closed (logged), as an HTTP/1.1 server may
(RFC 9112 9.3.2: a client retries on a new connection what was not answered). The head deadline waits while
an answer is owed on the connection (a pipelined head is not read then), and counts from its end.

A request HTTP refuses (llhttp's strict parse: a smuggling shape, a bad chunk, a control character) is answered 400
in the API's envelope (NOT_HTTP; uvicorn's was plain text) and closed; behind an answer still owed it is not answered
at once (uvicorn wrote its 400 into that answer and closed the connection): the owed answers go out, then the close.

A process holds at most max_connections() client connections (half its file-descriptor limit, RLIMIT_NOFILE): uvicorn
accepted connections (3,000 idle ones held, about 10 KB each) up to the process's descriptor limit, which its own
connections to engines, Redis, the audit log and files share (not measured: an engine connection refused for want of
a descriptor counts as the engine's failure). One past the bound is answered 503 `overloaded` and closed as it is
accepted, logged at most every LOG_EVERY_S.

`PongsWhileRead` is uvicorn's WebSocket protocol for a client that reads nothing: its pings are not answered
with pongs the gateway would hold for it without bound.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

HEAD_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 60.0
"""Every body's time, plus its size at MIN_BODY_RATE (body_deadline_s)."""
MIN_BODY_RATE = 64 * 1024
"""Bytes a second a body must average past BODY_TIMEOUT_S: a 4 MiB chat body has 124 s, a 100 MiB file or
message batch 27 minutes (at 1 Mbit/s they take 34 s and 14 minutes)."""


def body_deadline_s(declared: int | None, limit: int) -> float:
    """How long a body of `declared` bytes (its Content-Length; None: sent in chunks, then the route's `limit`)
    may take to arrive."""
    return BODY_TIMEOUT_S + (limit if declared is None else min(declared, limit)) / MIN_BODY_RATE
TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
MAX_HEAD_BYTES = 64 * 1024
"""A request's line and headers; a large JWT is a few KiB."""
MAX_PIPELINED = 16
"""Requests a connection may have waiting behind the one being answered (browsers do not pipeline; a client that
does, a few)."""
CONNECTIONS_SHARE = 0.5
"""The share of the process's file descriptors its client connections may hold; the rest are for engines, Redis,
the audit log, files and MCP servers."""
LOG_EVERY_S = 10.0
_BUSY_BODY = (b'{"error":{"message":"the gateway holds as many connections as it takes; try again shortly",'
              b'"type":"server_error","param":null,"code":"overloaded"}}')
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


_NOT_HTTP_BODY = (b'{"error":{"message":"the request is not valid HTTP/1.1","type":"invalid_request_error",'
                  b'"param":null,"code":"invalid_request"}}')
NOT_HTTP = (b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (len(_NOT_HTTP_BODY), _NOT_HTTP_BODY))


def max_connections() -> int:
    """Client connections one process holds at most: CONNECTIONS_SHARE of its soft RLIMIT_NOFILE (at least 64)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 30 if soft == resource.RLIM_INFINITY else max(64, int(soft * CONNECTIONS_SHARE))


HEAD_TOO_LARGE = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_TOO_LARGE_BODY = (b'{"error":{"message":"the request\'s headers are larger than the gateway takes (%d bytes)",'
                   b'"type":"invalid_request_error","param":null,"code":"request_header_too_large"}}' % MAX_HEAD_BYTES)


async def _head_too_large(scope: Any, receive: Any, send: Any) -> None:
    """What a complete head over MAX_HEAD_BYTES is answered, in place of the gateway's app."""
    await send({"type": "http.response.start", "status": 431,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                            (b"content-length", str(len(_TOO_LARGE_BODY)).encode())]})
    await send({"type": "http.response.body", "body": _TOO_LARGE_BODY})

log = logging.getLogger("aigrid.gateway")


_PONG = 0x8A
"""The first byte of a pong frame the server writes (FIN, opcode 0xA; control frames are never compressed)."""


class PongsWhileRead(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol (the one it picks with `websockets` installed), whose pongs wait only for a
    client that reads: uvicorn writes a pong for every ping whatever the connection holds unsent, so a client that
    sends pings and reads nothing had the gateway hold every pong (64 MiB of pings, 64 MiB held, until the
    keepalive closed it 40 s later). While the client reads none of what waits for it (the write buffer past its
    high-water mark, the same signal that stops the application's sends) a ping is left unanswered: RFC 6455 lets
    an endpoint answer only the latest one. The other frames the same read produced (a close's echo) are sent."""

    def handle_ping(self) -> None:
        output = self.conn.data_to_send()
        if not self.writable.is_set():
            output = [frame for frame in output if frame[:1] != bytes((_PONG,))]
        self.transport.write(b"".join(output))


class HeadDeadline(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on each request's head (module docstring)."""

    head_timeout_s = HEAD_TIMEOUT_S
    max_connections = staticmethod(max_connections)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        """What the head being read has sent in the pieces fed whole into it (the piece that starts it not)."""
        self._ended = False
        """A request ended within the piece being fed (data_received): the rest of the piece is not all head."""
        self._overflow = False
        """More than MAX_PIPELINED requests were pipelined: no more is read; closed after the last one waiting."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections():
            self._refuse_connection()
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()  # a later request on a kept connection: its head has the same time from its first byte

    def data_received(self, data: bytes) -> None:
        if self._overflow:  # past MAX_PIPELINED: nothing more is read (the parser stopped in error)
            return
        in_head = self._head_timer is not None  # armed from a head's first byte to its end
        self._ended = False
        super().data_received(data)
        if in_head and not self._ended and self._head_timer is not None:  # the piece went whole into that head
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse_head()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._ended = True

    def on_response_complete(self) -> None:
        super().on_response_complete()  # reads again, and starts the next request waiting
        if self.pipeline or self._overflow:  # uvicorn read on after every answer, the queue growing without end
            self.flow.pause_reading()
        elif self._head_timer is not None:  # a head begun while an answer was owed: its time counts from now
            self._disarm()
            self._arm()

    def send_400_response(self, msg: str) -> None:
        """What a request HTTP refuses is answered (in the API's envelope, not uvicorn's plain text), unless answers
        are owed on the connection: uvicorn wrote its 400 into the answer being sent and closed the connection."""
        owed = self.cycle is not None and not self.cycle.response_complete and not self.cycle.more_body
        if not (self._overflow or owed):
            self._close(NOT_HTTP, "its request is not valid HTTP/1.1 (400)")
            return
        if not self._overflow:
            self._overflow = True
            self._log_refused("a request it pipelined is not valid HTTP/1.1; closed after the answers owed")
        # past MAX_PIPELINED (on_headers_complete stopped the parser) or a request HTTP refuses behind owed answers:
        # the waiting requests are answered, the last with connection: close, and the connection is closed after it;
        # nothing more is read
        self.flow.pause_reading()
        if self.cycle is not None:
            self.cycle.keep_alive = False

    def on_headers_complete(self) -> None:
        if len(self.pipeline) >= MAX_PIPELINED:
            self._disarm()
            self._overflow = True
            self._log_refused(f"it pipelined more than {MAX_PIPELINED} requests; closed after those answered")
            raise ConnectionAbortedError("too many pipelined requests")  # stops the parser: send_400_response
        self._disarm()
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        self._head_bytes = 0
        if size <= MAX_HEAD_BYTES:
            super().on_headers_complete()
            return
        self._log_refused(f"its request head is {size} bytes, over {MAX_HEAD_BYTES} (431)")
        app, self.app = self.app, _head_too_large
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _too_slow(self) -> None:
        self._head_timer = None
        if self.cycle is not None and not self.cycle.response_complete:  # an answer is owed: the head is not read
            self._arm()  # (on_response_complete counts its time again from that answer's end)
            return
        self._close(TIMED_OUT, f"its request head was not complete within {self.head_timeout_s:.0f} s (408)")

    def _refuse_head(self) -> None:
        self._disarm()
        self._close(HEAD_TOO_LARGE, f"its request head passed {MAX_HEAD_BYTES} bytes (431)")

    def _refuse_connection(self) -> None:
        """Past max_connections: 503 and closed before anything is read (the connection leaves the count at once)."""
        self.connections.discard(self)
        state = self.server_state
        now = time.monotonic()
        refused = getattr(state, "aigrid_refused", 0) + 1
        if now - getattr(state, "aigrid_refused_logged", -LOG_EVERY_S) >= LOG_EVERY_S:
            log.warning("refused %d connection(s) since the last such line (at most one every %.0f s): this process "
                        "holds %d, its bound %d (slow_clients.max_connections)", refused, LOG_EVERY_S, len(self.connections),
                        self.max_connections())
            state.aigrid_refused_logged, refused = now, 0  # type: ignore[attr-defined]
        state.aigrid_refused = refused  # type: ignore[attr-defined]
        self.transport.write(BUSY)
        self.transport.close()

    def _log_refused(self, why: str) -> None:
        who = f"{self.client[0]}:{self.client[1]}" if self.client else "an unknown client"
        log.warning("refused a request from %s: %s", who, why)

    def _close(self, answer: bytes, why: str) -> None:
        """The connection answered `answer` and closed, logged with its client and `why`."""
        if self.transport.is_closing():
            return
        self._log_refused(why)
        self.transport.write(answer)
        self.transport.close()
