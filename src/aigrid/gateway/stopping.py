"""How a gateway process stops (server.py's one process, and each of workers.py's workers): its signals, its grace,
and what a request the stop cuts answers.

The first SIGINT or SIGTERM: uvicorn's graceful stop. No new connection is taken; every HTTP request gets the grace
(`gateway.shutdown_grace_s`, 5 s by default) to end, and one still running then is cancelled (its quota settled,
its record `cancelled`); a Responses WebSocket gets the same grace for the response it is running, new
`response.create` events refused meanwhile (`error` event, 503 `shutting_down`), and is then closed 1012 by the
gateway (`Lingering`, responses_socket.py); a response still running at the grace's end is cancelled (`cancelled`)
and its socket closed 1012. Before, a socket was closed 1012 at once, its response cut with no grace. Then the
lifespan's shutdown (app.py): background runs cancelled, running batch lines given `gateway.batch.drain_s`, the
MCP servers stopped, the audit log's final checkpoint. A second signal cuts the grace short: every request still
running is cancelled now and the batches' drain is skipped; the lifespan's shutdown still runs. uvicorn's own
second Ctrl-C (`force_exit`) skipped the lifespan's shutdown: no record for the requests then running, no final
checkpoint, and the process hung for good in asyncio.run's last cancel (found 2026-12-06 by SIGTERM twice,
`tests/gateway/test_shutdown.py`).

A request cut before its answer began is answered 503 `shutting_down` in its API's envelope (`CutAnswers`), and
a stream cut mid-way ends with an error event in its front door's form; before, uvicorn's plain-text 500 and a
chunked body cut off mid-way. The 503 names the request as its audit record does (`x-request-id`, `request-id`,
routes.Audited's Exchange under the scope's EXCHANGE; a stream's head carried them already); before, it named none,
so a client could not match the refusal to its `cancelled` record. The last words are sent whole: a later cancel
(a third signal, the grace's end after a second signal) waits for them, SEND_BOUND_S at most; before, it cut them
mid-way (the 503's body, the error event) and the connection was closed on the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import weakref
from collections.abc import Coroutine, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

import orjson
import uvicorn
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from aigrid.errors import ShuttingDown
from aigrid.gateway.envelope import ANTHROPIC_PREFIX, ANTHROPIC_VERSION, api_error_handler
from aigrid.gateway.slow_clients import HeadDeadline, PongsWhileRead, bound_connections
from aigrid.gateway.uvicorn_fit import uvicorn_fits

if TYPE_CHECKING:
    from aigrid.gateway.app import Gateway
    from aigrid.gateway.exchange import Exchange

log = logging.getLogger("aigrid.gateway")
CUT = "the gateway is stopping"
"""The stop's cancel of a request (a second signal's; GRACE_END is uvicorn's at the grace's end): work the grid throws
away, charged nothing beyond what was delivered (proxy._CHARGED_CUTS leaves both out; docs/reliability.md)."""
GRACE_END = "Task cancelled, timeout graceful shutdown exceeded"
"""uvicorn's cancel of the requests still running at the grace's end (uvicorn.Server.shutdown)."""
SEND_BOUND_S = 1.0
"""The most a cut request's last words wait for a client that reads nothing."""
CUT_WAIT_S = 2 * SEND_BOUND_S
"""At the grace's end, how long the requests uvicorn then cancels may take to end (their last words, SEND_BOUND_S at
most, and their records) before the lifespan's shutdown stops the audit log (`GatewayServer.shutdown`)."""
EXCHANGE = "aigrid.exchange"
"""The ASGI scope's key under which routes.Audited leaves its request's Exchange when it opens it: the request id a
cut request's 503 names (x-request-id, request-id), the one its audit record keeps. A key of the request's own scope,
not its `state`: a WebSocket's response.create shares the socket's state (responses_socket._request_scope)."""


class GatewayServer(uvicorn.Server):
    """uvicorn, its signals handled here (`stop_on_signals`): uvicorn re-raised SIGTERM after shutting down, which
    killed the process before the engines, the hub and the audit log were closed, and its second Ctrl-C skipped the
    lifespan's shutdown (module docstring)."""

    def __init__(self, config: uvicorn.Config, gateway: Gateway) -> None:
        super().__init__(config)
        self.gateway = gateway
        self.hurried = False
        self._cut: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        """The requests' tasks the stop cancelled (`hurry`, and uvicorn at the grace's end: `shutdown`): a later signal
        does not cancel them again (their records being written, their last words sent, a socket's 1012 close). Until
        2026-12-06 only hurry's own: a second signal within CUT_WAIT_S of the grace's end cancelled the requests and
        sockets uvicorn had just cut again, cutting their last words and a socket's close."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's, whose lifespan's shutdown waits for the requests it cancelled at the grace's end (CUT_WAIT_S at
        most). uvicorn cancels them and runs the lifespan's shutdown at once, which stopped the audit log while they
        were still writing their records: a WebSocket's response cut so, and its socket's, were lost (`audit record
        lost ... the audit log is not running`; a request's record wins that race only by having fewer steps)."""
        lifespan = self.lifespan
        closing = lifespan.shutdown

        async def after_the_cut() -> None:
            if cut := [task for task in self.server_state.tasks if not task.done()]:  # uvicorn cancelled them just now
                self._cut.update(cut)  # (GRACE_END), before any await: a signal from now on cuts none of them again
                await asyncio.wait(cut, timeout=CUT_WAIT_S)
            await closing()

        lifespan.shutdown = after_the_cut
        await super().shutdown(sockets)

    def signalled(self) -> None:
        """One SIGINT or SIGTERM: the first stops gracefully, the next ones cut the grace short."""
        self.gateway.stopping = True
        if not self.should_exit:
            self.should_exit = True
            return
        self.hurry()

    def hurry(self) -> None:
        """Every request still running is cancelled now (each settles and writes its record), the batches' drain
        is skipped; the lifespan's shutdown still runs. Each request is cancelled once: a third signal cancelled
        every one again, cutting the last words being sent (CutAnswers) and the closes under way."""
        if not self.hurried:
            log.warning("stopping now: the requests still running are cut (their records say `cancelled`)")
        self.hurried = True
        self.config.timeout_graceful_shutdown = 0  # a stop not yet at its wait cancels what runs at once
        for task in list(self.server_state.tasks):
            if task not in self._cut:
                self._cut.add(task)
                task.cancel(CUT)
        if self.gateway.batches is not None:
            self.gateway.batches.runner.hurry()


def stop_on_signals(server: GatewayServer) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.signalled)


def gateway_server(app: ASGIApp, gateway: Gateway, **options: Any) -> GatewayServer:
    """uvicorn as `aigrid up` (server.py) and each worker (workers.py) run the app: a cut request's last words
    (CutAnswers), the head deadline and its bounds (slow_clients.HeadDeadline), the grace (the spec's
    gateway.shutdown_grace_s: uvicorn's timeout_graceful_shutdown), the signals handled here (stop_on_signals);
    `options` the rest of uvicorn.Config's (where it listens, responses_socket.server_options: its WebSocket protocol
    is a Lingering one). log_config None: uvicorn leaves aigrid.logs' handlers as they are (its own config took them
    off uvicorn.error). The benchmarks' gateway (bench/gateway_launch.py) is built here too."""
    proxies = gateway.spec.gateway.forwarded_allow_ips  # X-Forwarded-* believed from these peers only, else no one
    config = uvicorn.Config(CutAnswers(app), log_config=None, log_level="warning", http=HeadDeadline, lifespan="on",
                            # uvicorn types it int; its wait (asyncio.timeout) takes the spec's float
                            timeout_graceful_shutdown=gateway.spec.gateway.shutdown_grace_s,  # type: ignore[arg-type]
                            proxy_headers=bool(proxies), forwarded_allow_ips=list(proxies) or None, **options)
    server = GatewayServer(config, gateway)
    refused, written = gateway.metrics.rejected.labels("too_many_connections").inc, gateway.proxy.written
    # a write that fails (a full disk) is logged rate-limited: a connection flood is not one line per refusal
    bound_connections(server.server_state, gateway.spec.gateway.connection_share_per_address,
                      lambda: written("a refused connection", refused))
    uvicorn_fits()  # uvicorn's internals HeadDeadline, ClientWire and Lingering use: at startup, once per process
    stop_on_signals(server)
    return server


STOP_NOTICE = "aigrid.stop_notice"
"""The WebSocket scope's extension under which a Lingering connection hands its app its StopNotice."""


class StopNotice:
    """What a WebSocket's app is told when the stop begins (`begun`), if it said it ends its socket itself then
    (`heeded`: responses_socket._Connection, which lets its response under way end within the grace, refuses new
    ones, then closes 1012)."""

    def __init__(self) -> None:
        self.begun = asyncio.Event()
        self.heeded = False


class Lingering(PongsWhileRead):
    """uvicorn's WebSocket protocol (slow_clients.PongsWhileRead) whose socket is not closed at once when the stop
    begins: uvicorn's shutdown closed every WebSocket there and then (1012), its response under way cut, while an
    HTTP request got the grace. Here, when the app heeds the StopNotice (the scope's extensions[STOP_NOTICE]), the
    stop only tells it (`begun`); the app closes 1012 once its response ends, or when uvicorn cancels it at the
    grace's end (or a second signal: GatewayServer.hurry). An app that does not heed it is closed at once, as before.
    Under a uvicorn without the attributes this reads (uvicorn_fit.LINGER_READS, checked once per process:
    uvicorn_fits), it is uvicorn's own protocol: no notice in the scope, every socket closed at the stop's beginning.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.notice = StopNotice()
        self._lingers = uvicorn_fits().lingers

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # made for a handshake it takes (101) only; its app runs after this
        if scope is not None and self._lingers:
            scope["extensions"][STOP_NOTICE] = self.notice

    def shutdown(self) -> None:
        if (self.notice.heeded and self.handshake_complete and self.initial_response is None and not self.close_sent
                and not self.disconnected):  # heeded only where handle_connect gave the notice (_lingers)
            # the app's close then waits for the client's echo as long as a cut request's last words wait (uvicorn's
            # close_timeout, 10 s, held the stop that long, or the grace, for a client that never echoed it)
            self.close_timeout = SEND_BOUND_S
            self.notice.begun.set()
            return
        super().shutdown()


class CutAnswers:
    """An HTTP request the stop cancels (`GatewayServer`, or uvicorn at the end of the grace) ends with words its
    client can read: 503 `shutting_down` in the API's envelope when no answer had begun, an error event when a
    stream (text/event-stream) had. Its record was written on the way out (routes.Audited: `cancelled`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        answer = _Watched(send, scope)
        try:
            await self.app(scope, receive, answer.send)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or not task.cancelling():  # not a cancel of this request (the stop's are): a bug of
                raise  # ours (a future someone else cancelled), uvicorn's 500 and its traceback, not `shutting_down`
            task.uncancel()  # the cut is taken: the last words below are sent, not cancelled again
            if not await _whole(answer.last_words(scope, receive), task):
                raise


async def _whole(words: Coroutine[Any, Any, bool], task: asyncio.Task[Any]) -> bool:
    """The last words sent whole, by a task of their own: a cancel of the request's `task` meanwhile (the grace's end
    after a second signal's cut, a third signal) waits for them (SEND_BOUND_S at most, `last_words`) and is taken
    back. Before, it cut the send mid-way: the 503's body or the error event never ended, the connection closed."""
    sending = asyncio.ensure_future(words)
    while True:
        try:
            return await asyncio.shield(sending)
        except asyncio.CancelledError:
            if sending.cancelled():  # not by us (nobody else holds it): nothing left to wait for
                raise
            task.uncancel()  # waited out: the next turn returns what they came to, once sent


def _door(scope: Scope) -> str:
    """The front door whose form a cut stream's error event takes (_Watched._event): `anthropic` (its path, or an
    anthropic-version header on any), `responses` (the one whose error event carries a sequence_number), else
    `openai` (Chat Completions, Completions)."""
    if str(scope.get("path", "")).startswith(ANTHROPIC_PREFIX) or any(
            bytes(k).lower() == ANTHROPIC_VERSION.encode() for k, _ in scope.get("headers") or ()):
        return "anthropic"
    return "responses" if str(scope.get("path", "")).startswith("/v1/responses") else "openai"


_DATA = b'data: {"type":"'
_NUMBER = b',"sequence_number":'
_HEAD_BYTES = 160
"""More than the longest head _sequence_number reads (an event type of at most 100 bytes, a number of at most 18
digits): what of a send is kept to read a number split between it and the next."""


def _sequence_number(seen: bytes, at: int) -> tuple[int, int] | None:
    """The sequence_number of the event whose type begins at seen[at] (_DATA before it) and where it ends, where it
    is all there (the `,` or `}` after its digits); None else. No JSON string holds `","sequence_number":` (its
    quotes would be escaped), so what follows the type's closing quote is the event's own."""
    quote = seen.find(b'"', at, at + 101)
    if quote < 0 or not seen.startswith(_NUMBER, quote + 1):
        return None
    start = quote + 1 + len(_NUMBER)
    ahead = seen[start:start + 19]
    end = start + len(ahead) - len(ahead.lstrip(b"0123456789"))
    return (int(seen[start:end]), end) if start < end < len(seen) and seen[end] in b",}" else None


class _Watched:
    """What a request's answer has sent so far, seen on its way to the server's send. The relay's ClientWire sees
    through it (`server_send`) and writes a pass-through stream's chunks on the client's socket, past this: only
    the head and the end pass here then (OpenAI's chat and completions, whose error event has no number to keep).
    Before it named `server_send`, every request of `aigrid up` and of each worker went without the wire (a
    relayed chunk ~34 us instead of ~24 us, docs/benchmarks.md's fifth round)."""

    def __init__(self, send: Send, scope: Scope) -> None:
        self._send = self.server_send = send
        self._scope = scope
        self.started = self.ended = self.stream = self._numbered = False
        self.events = 0
        """The next event's sequence_number on the Responses API (translated streams, which are never written on the
        wire): the last one sent plus one, read from the events (`_count`), or the events with a name sent so far
        where they carry none. Read on a Responses stream only (`_numbered`): until the twenty-eighth session every
        chunk of every stream passing here (Chat Completions, Anthropic Messages) was searched for a number its
        error event does not carry."""
        self._tail = b""

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            headers = dict((bytes(k).lower(), bytes(v)) for k, v in message.get("headers") or ())
            self.stream = headers.get(b"content-type", b"").startswith(b"text/event-stream")
            self._numbered = self.stream and _door(self._scope) == "responses"  # once a stream, at its head
        elif message["type"] == "http.response.body":
            if self._numbered:
                self._count(bytes(message.get("body", b"")))
            self.ended = not message.get("more_body", False)
        await self._send(message)

    def _count(self, body: bytes) -> None:
        """The next sequence_number after `body`: the last event's whose number is all here (a Responses event's data
        begins `{"type":"...","sequence_number":N,`, responses_stream._Events), plus one. Until the twenty-seventh
        session the events were counted from 0 in each response: a stream that does not begin at 0 (a background
        response followed with `starting_after`, or its create's stream numbered on from its event log) ended with
        an error event numbered as one already sent. A number split between two sends is read with the next (the
        last _HEAD_BYTES of each kept)."""
        at = body.rfind(_DATA)
        if at >= 0 and (got := _sequence_number(body, at + len(_DATA))) is not None:  # one event a send, mostly
            self.events = got[0] + 1
        else:
            seen = self._tail + body
            at = len(seen)
            while (at := seen.rfind(_DATA, 0, at)) >= 0:
                got = _sequence_number(seen, at + len(_DATA))
                if got is not None:
                    if got[1] >= len(self._tail):  # (else read with the last send: the character after it was there)
                        self.events = got[0] + 1
                    break
            else:  # events without a number (none of the Responses API's)
                self.events += body.startswith(b"event: ") + body.count(b"\nevent: ")
        self._tail = body[-_HEAD_BYTES:] if len(body) >= _HEAD_BYTES else (self._tail + body)[-_HEAD_BYTES:]

    async def last_words(self, scope: Scope, receive: Receive) -> bool:
        """Whether the client got an end it can read (else the connection is closed on it, as before)."""
        if self.ended:
            return True
        if self.started and not self.stream:  # a body begun and cut: nothing can be added to it
            return False
        err = ShuttingDown(f"{CUT}: this request was cut before its answer ended; send it again",
                           headers={"retry-after": "1"})
        ex: Exchange | None = scope.get(EXCHANGE)
        rid = None if ex is None else ex.request_id  # an audited route's: its record's (a stream's head had it)
        try:
            async with asyncio.timeout(SEND_BOUND_S):
                if not self.started:
                    response = await api_error_handler(Request(scope), err, request_id=rid)
                    if rid is not None:
                        response.raw_headers.extend(((b"x-request-id", rid.encode()), (b"request-id", rid.encode())))
                    await response(scope, receive, self._send)
                else:
                    await self._send({"type": "http.response.body", "body": self._event(_door(scope), err),
                                      "more_body": False})
        except (TimeoutError, OSError) as e:
            log.info("a cut request's last words were not sent: %r", e)
            return False
        return True

    def _event(self, door: str, err: ShuttingDown) -> bytes:
        if door == "anthropic":
            data: dict[str, Any] = {"type": "error", "error": {"type": "overloaded_error", "message": err.message}}
            return b"event: error\ndata: " + orjson.dumps(data) + b"\n\n"
        if door == "responses":
            data = {"type": "error", "code": err.code, "message": err.message, "param": None,
                    "sequence_number": self.events}
            return b"event: error\ndata: " + orjson.dumps(data) + b"\n\n"
        return b"data: " + orjson.dumps(err.envelope()) + b"\n\n"
