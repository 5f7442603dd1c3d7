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
One refused in its body, after its head was handed to the app (a bad chunk size), is refused by the app itself: the
body's next read raises InvalidRequest (RefusableCycle), which the app answers in its envelope and audits as the
client's bad request (routes.Audited), and the connection is closed after that answer. Before, the connection was
closed under the app, whose read saw a client that hung up: audited `client_closed`; so it still is once the answer
has begun (a route that streams without reading its body), when a 400 can no longer be sent.

A process holds at most max_connections() client connections (half its file-descriptor limit, RLIMIT_NOFILE, read
once per server: Connections): uvicorn accepted connections (3,000 idle ones held, about 10 KB each) up to the
process's descriptor limit, which its own connections to engines, Redis, the audit log and files share (not measured:
an engine connection refused for want of a descriptor counts as the engine's failure). One client address holds at
most its share of them (gateway.connection_share_per_address, half by default; loopback exempt: a proxy or sidecar on
the same host brings every client from it). One past either is answered 503 `too_many_connections` with Retry-After
(errors.TooManyConnections, BUSY) and closed as it is accepted: the gateway's own capacity, as nginx's limit_conn and
Envoy's overload manager answer it, not the client's rate nor a request the admission queue shed (429 `overloaded`).
Refusals for the process's bound are logged at most every LOG_EVERY_S; for an address's share at most once a minute
per address (ADDRESS_LOG_EVERY_S), each line naming the address, what it holds and the setting: behind a proxy on
another host (an ingress, a Kubernetes Service, Docker's 172.17.0.1) every client may come from a few addresses, and
the share is then set to 1 (docs/deploy.md).

The class swap (RefusableCycle) and relay_response.ClientWire rely on uvicorn's internals, and pyproject allows any
uvicorn from 0.45 on: uvicorn_fit.uvicorn_fits checks them once per process (at startup) and, where they are not what
this was written against, logs a warning and leaves uvicorn's own behaviour in place rather than break a request.

`PongsWhileRead` is uvicorn's WebSocket protocol for a client that reads nothing: its pings are not answered
with pongs the gateway would hold for it without bound.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import resource
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from aigrid.errors import ApiError, InvalidRequest, RequestHeaderTooLarge, RequestTimeout, TooManyConnections
from aigrid.gateway.browsers import is_loopback
from aigrid.gateway.envelope import error_response
from aigrid.gateway.uvicorn_fit import uvicorn_fits

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
MAX_HEAD_BYTES = 64 * 1024
"""A request's line and headers; a large JWT is a few KiB."""
MAX_PIPELINED = 16
"""Requests a connection may have waiting behind the one being answered (browsers do not pipeline; a client that
does, a few)."""
CONNECTIONS_SHARE = 0.5
"""The share of the process's file descriptors its client connections may hold; the rest are for engines, Redis,
the audit log, files and MCP servers."""
ADDRESS_SHARE = 0.5
"""The default share of those one client address may hold (the spec's gateway.connection_share_per_address)."""
LOG_EVERY_S = 10.0
"""A refusal for the process's bound is logged at most this often (with how many since the last line)."""
ADDRESS_LOG_EVERY_S = 60.0
"""A refusal for one address's share is logged at most this often per address (with how many since its last line)."""


def wire_answer(err: ApiError) -> bytes:
    """`err`'s whole HTTP/1.1 answer as the app renders it (envelope.error_response: the envelope, its headers and
    x-should-retry), with `connection: close`: what is written on a connection refused outside the app."""
    response = error_response(err)
    head = b"".join(b"%s: %s\r\n" % (name, value) for name, value in response.raw_headers)
    status = b"HTTP/1.1 %d %s\r\n" % (err.status, HTTPStatus(err.status).phrase.encode())
    return status + head + b"connection: close\r\n\r\n" + bytes(response.body)


BUSY = wire_answer(TooManyConnections("the gateway holds as many connections as it takes; try again shortly",
                                      headers={"retry-after": "1"}))
"""A connection past the process's bound, as it is accepted."""
BUSY_ADDRESS = wire_answer(TooManyConnections(
    "this client address holds as many connections as the gateway gives one address "
    "(gateway.connection_share_per_address); close one or try again shortly", headers={"retry-after": "1"}))
"""A connection past its address's share, as it is accepted."""
NOT_HTTP = wire_answer(InvalidRequest("the request is not valid HTTP/1.1"))


@functools.cache
def timed_out(seconds: float) -> bytes:
    """What a head not complete within its deadline (HeadDeadline.head_timeout_s, `seconds`) is answered: 408 naming
    the deadline in force (it named HEAD_TIMEOUT_S whatever the protocol's was)."""
    return wire_answer(RequestTimeout(f"the request's head was not complete within {seconds:g} s"))


TIMED_OUT = timed_out(HEAD_TIMEOUT_S)
"""A head not complete within the default deadline, HEAD_TIMEOUT_S."""
_TOO_LARGE = RequestHeaderTooLarge(f"the request's headers are larger than the gateway takes ({MAX_HEAD_BYTES} bytes)")
HEAD_TOO_LARGE = wire_answer(_TOO_LARGE)
"""A head that grows past MAX_HEAD_BYTES, as it arrives (a complete one: _head_too_large, the same answer)."""
NOT_HTTP_BODY = "the request's body is not valid HTTP/1.1 (its chunked framing: a chunk's size or line end)"
"""What a request refused in its body is told (RefusableCycle)."""


def max_connections() -> int:
    """Client connections one process holds at most: CONNECTIONS_SHARE of its soft RLIMIT_NOFILE (at least 64)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 30 if soft == resource.RLIM_INFINITY else max(64, int(soft * CONNECTIONS_SHARE))


def address_of(host: str) -> str:
    """What one client's share is counted under: its IPv4 address, or its IPv6 address's /64 (the block one home or
    host is given: counted by address, a client with a /64 had 2^64 shares)."""
    if ":" not in host or host.startswith("::ffff:"):
        return host
    try:
        return f"{ipaddress.IPv6Network((host.partition('%')[0], 64), strict=False).network_address}/64"
    except ValueError:
        return host


class Connections:
    """One server's bounds on its client connections, shared by all of them (on uvicorn's ServerState): `cap`, read
    once (max_connections' system call ran on every accepted connection before), and how many each address holds.
    The table holds only addresses with a connection open, at most `cap` of them: an address leaves it with its last
    connection."""

    __slots__ = ("cap", "share", "per_address", "held", "exempt", "refused", "logged_at", "refused_from", "counted")

    def __init__(self, cap: int, share: float = ADDRESS_SHARE, exempt: Callable[[str], bool] = is_loopback,
                 counted: Callable[[], None] | None = None) -> None:
        self.cap = cap
        self.share = share
        self.per_address = max(1, int(cap * share))
        """Connections one address holds at most; at `cap` it bounds nothing more."""
        self.held: dict[str, int] = {}
        self.exempt = exempt
        """Addresses not counted (default: loopback, a proxy or sidecar on the same host)."""
        self.refused = 0
        """Refusals for the process's bound since its last log line (at `logged_at`)."""
        self.logged_at = -LOG_EVERY_S
        self.refused_from: dict[str, tuple[int, float]] = {}
        """Per address refused for its share within ADDRESS_LOG_EVERY_S: the refusals since its last log line, and
        when that line was (addresses whose line is older leave it when another line is due, their count told)."""
        self.counted = counted
        """Called once for each connection refused (either bound): gateway_server points it at
        aigrid_requests_rejected_total{code="too_many_connections"} through Proxy.written (observe.MetricsWrites: a
        write that fails is counted and logged rate-limited, never raised), so it must not raise; a refusal costs
        that once, nothing per chunk."""

    def take(self, host: str | None, open_now: int) -> tuple[bytes | None, str | None]:
        """A new connection from `host` (one of `open_now` the server holds, itself counted): the answer it is
        refused with (else None), and what it is counted under (address_of: `give_back` it when the connection ends;
        None: not counted)."""
        if open_now > self.cap:
            return BUSY, None
        if host is None or self.per_address >= self.cap or self.exempt(host):
            return None, None
        key = address_of(host)
        held = self.held.get(key, 0)
        if held >= self.per_address:
            return BUSY_ADDRESS, None
        self.held[key] = held + 1
        return None, key

    def refused_address(self, key: str, now: float) -> list[tuple[str, int]]:
        """A connection counted under `key` (address_of) refused for its share at `now` (monotonic): the log lines
        due, as (address, refusals since its last line): `key`'s, this one counted, when its line is due (at most one
        every ADDRESS_LOG_EVERY_S per address), and then any other address whose line is that old with refusals
        not yet told, as it leaves the table (they were dropped untold); else none."""
        count, at = self.refused_from.get(key, (0, -ADDRESS_LOG_EVERY_S))
        if now - at < ADDRESS_LOG_EVERY_S:
            self.refused_from[key] = (count + 1, at)
            return []
        due = [(key, count + 1)]
        for old, (untold, t) in list(self.refused_from.items()):
            if old != key and now - t >= ADDRESS_LOG_EVERY_S:
                del self.refused_from[old]
                if untold:
                    due.append((old, untold))
        self.refused_from[key] = (0, now)
        return due

    def give_back(self, host: str) -> None:
        """One connection counted under `host` (take's) has ended."""
        held = self.held.get(host, 0) - 1
        if held > 0:
            self.held[host] = held
        else:
            self.held.pop(host, None)


_CONNECTIONS = "aigrid_connections"
"""The attribute of uvicorn's ServerState (one per server, shared by its connections) that holds its Connections."""


def bound_connections(state: ServerState, share: float, counted: Callable[[], None] | None = None) -> None:
    """The server's Connections from the spec's share (stopping.gateway_server, before it serves), each refusal
    `counted`; a server without one gets HeadDeadline's defaults at its first connection (refusals not counted)."""
    setattr(state, _CONNECTIONS, Connections(max_connections(), share, counted=counted))


class RefusableCycle(RequestResponseCycle):
    """uvicorn's request cycle, whose body the connection may refuse part-way (HeadDeadline.send_400_response): the
    app's next read of it raises InvalidRequest, which the app answers and audits as it does any bad request. Once
    the answer has begun (a route that streams without reading the body: its read is the disconnect watch,
    relay_response._disconnected) it can no longer be a 400: the connection is closed and the read says the client
    is gone, as before RefusableCycle (a raise there ended the stream with a traceback, its cleanup skipped)."""

    refused = False
    answering = False
    """The app has sent its answer's head. uvicorn's response_started is set later, once its send has waited for a
    client that reads nothing to take what the connection holds (flow.drain, before the head is written): a refusal
    in that wait is past the app's answer, as one after it (receive)."""

    async def send(self, message: Any) -> None:
        """uvicorn's send, with `connection: close` on an answer's head when the connection closes after it
        (keep_alive False: HeadDeadline's refusals, an HTTP/1.0 client): uvicorn writes it itself only from 0.53 on,
        and pyproject allows 0.45 (before, those answers said nothing of the close that followed). The connection
        is read after super().send's wait for a client that reads nothing (flow.drain), done here first: a body
        refused during it (keep_alive then False) had its answer's head say nothing of the close under 0.45-0.52."""
        if message["type"] == "http.response.start":
            self.answering = True  # before the wait below, which comes before uvicorn's response_started
            if uvicorn_fits().wire and self.flow.write_paused and not self.disconnected:  # (flow as ClientWire's)
                await self.flow.drain()
            if not self.keep_alive and not any(name.lower() == b"connection"
                                               for name, _ in message.get("headers", ())):
                message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
        await super().send(message)

    async def receive(self) -> Any:
        if not self.refused:
            message = await super().receive()
            if not self.refused:  # else refused while this read waited for the body
                return message
        if not self.answering:  # (not response_started: the app's head may still wait in send, flow.drain)
            raise InvalidRequest(NOT_HTTP_BODY)
        self.disconnected = True  # a head still waiting in send is then never written (super().send returns)
        self.transport.close()
        return {"type": "http.disconnect"}


async def _head_too_large(scope: Any, receive: Any, send: Any) -> None:
    """What a complete head over MAX_HEAD_BYTES is answered, in place of the gateway's app (HEAD_TOO_LARGE's)."""
    response = error_response(_TOO_LARGE)
    await send({"type": "http.response.start", "status": response.status_code,
                "headers": [*response.raw_headers, (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": bytes(response.body)})

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
    """The process's bound, read once per server (Connections) unless stopping.gateway_server set it."""
    connection_share = ADDRESS_SHARE
    exempt = staticmethod(is_loopback)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._swap = uvicorn_fits().swap
        """Each request's cycle is made a RefusableCycle (else uvicorn's, as it built it: uvicorn_fit.uvicorn_fits)."""
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        """What the head being read has sent in the pieces fed whole into it (the piece that starts it not)."""
        self._ended = False
        """A request ended within the piece being fed (data_received): the rest of the piece is not all head."""
        self._overflow = False
        """More than MAX_PIPELINED requests were pipelined: no more is read; closed after the last one waiting."""
        self._counted: str | None = None
        """The address this connection is counted under in its server's Connections, while it is."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        book: Connections | None = getattr(self.server_state, _CONNECTIONS, None)
        if book is None:
            book = Connections(self.max_connections(), self.connection_share, self.exempt)
            setattr(self.server_state, _CONNECTIONS, book)
        host = self.client[0] if self.client else None
        refused, self._counted = book.take(host, len(self.connections))
        if refused is not None:
            self._refuse_connection(book, refused, host)
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._uncount()
        super().connection_lost(exc)

    def _uncount(self) -> None:
        if self._counted is not None:
            getattr(self.server_state, _CONNECTIONS).give_back(self._counted)
            self._counted = None

    def handle_websocket_upgrade(self) -> None:
        """A WebSocket, once upgraded, leaves its address's count (its protocol, not this one, sees it end); it stays
        in the process's, and gateway.max_sockets_per_tenant and _per_key bound it."""
        self._uncount()
        super().handle_websocket_upgrade()

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
        are owed on the connection: uvicorn wrote its 400 into the answer being sent and closed the connection. A
        request refused in its body (its head handed to the app) is refused by the app (RefusableCycle)."""
        cycle = self.cycle
        if isinstance(cycle, RefusableCycle) and cycle.more_body and not cycle.response_complete and not self._overflow:
            self._overflow = True  # nothing more is read
            self._log_refused("its request body is not valid HTTP/1.1 (400 by the app); closed after its answer")
            self.flow.pause_reading()
            cycle.refused = True
            cycle.keep_alive = False
            cycle.message_event.set()  # a read waiting for the body sees it now
            return
        owed = cycle is not None and not cycle.response_complete and not cycle.more_body
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
        if cycle is not None:
            cycle.keep_alive = False

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
            if self._swap and type(self.cycle) is RequestResponseCycle:  # the one just made (for an upgrade: none)
                self.cycle.__class__ = RefusableCycle  # its body may be refused part-way (send_400_response)
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
        self._close(timed_out(self.head_timeout_s),
                    f"its request head was not complete within {self.head_timeout_s:g} s (408)")

    def _refuse_head(self) -> None:
        self._disarm()
        self._close(HEAD_TOO_LARGE, f"its request head passed {MAX_HEAD_BYTES} bytes (431)")

    def _refuse_connection(self, book: Connections, answer: bytes, host: str | None) -> None:
        """Past the process's bound or its address's share: `answer` (503) and closed before anything is read (the
        connection leaves the count at once)."""
        self.connections.discard(self)
        if book.counted is not None:  # guarded by its giver (stopping.gateway_server: Proxy.written, rate-limited)
            book.counted()
        now = time.monotonic()
        if answer is BUSY_ADDRESS and host is not None:
            for key, refused in book.refused_address(address_of(host), now):
                log.warning("refused %d connection(s) from %s since its last such line (at most one a minute per "
                            "address): it holds %d, the most one address may (gateway.connection_share_per_address "
                            "%g of this process's bound %d; loopback exempt). Behind a reverse proxy, ingress, "
                            "Service or Docker's published port every client may come from the proxy's few "
                            "addresses: set gateway.connection_share_per_address to 1 there (docs/deploy.md)",
                            refused, key, book.held.get(key, 0), book.share, book.cap)
        else:
            book.refused += 1
            if now - book.logged_at >= LOG_EVERY_S:
                log.warning("refused %d connection(s) since the last such line (at most one every %.0f s): this "
                            "process holds %d, its bound %d (slow_clients.max_connections: half the file-descriptor "
                            "limit); the last from %s", book.refused, LOG_EVERY_S, len(self.connections), book.cap,
                            host)
                book.logged_at, book.refused = now, 0
        self.transport.write(answer)
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
