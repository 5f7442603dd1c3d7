"""WebSocket /v1/responses: the Responses API's WebSocket mode (the OpenAI SDKs' `client.responses.connect()`).

A client opens one socket and sends `response.create` events (the body of POST /v1/responses, wrapped as an
event); it receives the events a streamed POST /v1/responses sends, one JSON text message per event.

One pipeline: each `response.create` is served by the audited POST /v1/responses endpoint itself (routes.Audited
around ResponsesApi.create), called as ASGI with a request made of the handshake's headers and the event's body
(`stream: true`): authentication (the same keys and JWT, checked again for every response: a key revoked while
the socket is open is refused at its next response), tenant rules, quotas and their settlement, the firewall,
routing, previous_response_id and store, the audit record per response. Its streamed answer's SSE events are
sent as messages (with the create's `stream_id` added when it gave one); an answer that is an error (the 4xx
and 5xx a POST gets) is one `error` event: `{"type": "error", "status", "error": {type, code, message, param,
headers}}` (the SDKs' ResponseWsError). A client that closes the socket mid-response is the endpoint's hang-up
(its Hangup sees `http.disconnect`): the engine request closed, the quota settled, the record `client_closed`.

One response at a time per socket: a `response.create` sent while one runs waits for it, in order (the SDK's
`stream_id` lanes are FIFO; every lane of a socket shares that one order), at most MAX_QUEUED waiting, of at most
`max_body_bytes` together (past it a 429 `error` event, code `too_many_queued`). `background` is refused
(as OpenAI refuses it over a socket); `generate: false` (prepare without generating) is not served.

Steering (`response.steer`, responses_steer.py): user input for a response running on this socket, validated
and queued (`response.steer.accepted`); when that response ends completed (or incomplete), its automatic
successor, the target's own `response.create` with the queued input and previous_response_id the target, runs
next on its lane, before any queued create, through the same audited endpoint (its `response.created` commits
the steers; an `error` event refuses it, and each steer is returned in `response.steer.failed`
`successor_creation_failed`). A target that ends with client-owned tool calls keeps its steers waiting
(`response.steer.pending` with the required_input stubs, after its response.completed) until the client's
`response.create` continuing it, whose input they are prepended to. A running response with a steer accepted
stops at its next text chunk outside a function call (`incomplete`, reason `steered`: relay_response.SteerCut),
audited `steered` and charged what it streamed. Steers still queued when the client leaves are dropped (logged).

The door: the handshake is authenticated before it is accepted (401/403 with the OpenAI envelope as an HTTP
denial response, which the SDK raises as websockets' InvalidStatus with that status and body), admitted like
an audited call (503 while the audit log cannot take records; 403 from a web page of another origin:
`_same_origin`) and bounded (`gateway.max_sockets` open on this process, `gateway.max_sockets_per_tenant` of one
tenant, else 429 `overloaded`); what waits on the process's sockets is bounded too (WAITING_BODIES); one audit record per connection (route `WS /v1/responses`: its
responses, the events refused, the creates dropped unserved, its steers accepted, committed, failed and dropped,
why it closed) beside each
response's own. A message larger than
`gateway.max_body_bytes` (the HTTP body limit) is answered an `error` event `request_too_large`, and the server
itself stops reading at SLACK_BYTES past it (uvicorn's `ws_max_size`, `server_options`: close 1009); a message
that is not a JSON object, is nested too deep, or names an unknown `type` is an `error` event naming it, the
socket kept open, until MAX_REFUSED_RUN messages in a row were refused (closed 1008); a socket silent for IDLE_S with nothing running is closed (1000, "idle").

When the gateway stops (stopping.Lingering tells the socket, `_Connection._halt`), the response under way gets the
stop's grace (gateway.shutdown_grace_s) as an HTTP request does; creates waiting or sent meanwhile are refused (an
`error` event, 503 `shutting_down`), then the socket is closed 1012 (`closed: server`). One still running at the
grace's end is cancelled (`cancelled`), told so (an `error` event), and closed 1012. Before 2026-12-06 uvicorn closed
every socket 1012 at once, its response cut with no grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from aigrid.engines.sse import Event, SseDecoder
from aigrid.errors import ApiError, InvalidRequest, Overloaded, ShuttingDown
from aigrid.gateway.body_values import OFF_LOOP_BYTES
from aigrid.gateway.browsers import check_origin
from aigrid.gateway.envelope import bounded_error, error_response
from aigrid.gateway.exchange import Exchange
from aigrid.gateway.front_door import pipeline_headers
from aigrid.gateway.parse_pool import ParsePool
from aigrid.gateway.relay_response import STEER, SteerCut
from aigrid.gateway.responses_steer import (
    MAX_STEERS,
    Steer,
    accepted,
    failed,
    new_steer,
    pending,
    prepended,
    required_input,
    steer_items,
    successor,
    successor_size,
    unsupported,
)
from aigrid.gateway.routes import (
    H_TENANT,
    SOCKET,
    body_too_large,
    close_exchange,
    count_rejected,
    json_object,
    one_credential,
)
from aigrid.gateway.stopping import CUT, SEND_BOUND_S, STOP_NOTICE, Lingering, StopNotice
from aigrid.spec.models import GridSpec

if TYPE_CHECKING:
    from aigrid.gateway.app import Gateway
    from aigrid.security.principal import Principal

ROUTE = "WS /v1/responses"
MAX_QUEUED = 16
"""`response.create` events a socket may have waiting behind the one running, together at most `max_body_bytes`
(a socket holds no more than two HTTP requests' bodies); one more is an `error` event `too_many_queued`."""
WAITING_BODIES = 32
"""What waits on all the sockets of a process (creates queued behind a running response, steers not yet committed)
is at most this many `max_body_bytes` together; past it a socket that already holds something waiting is refused
more (`too_many_queued`, `too_many_pending_steers`), while one that holds nothing may still queue one: a tenant that
fills it slows the others to one response at a time, never refuses them outright. The sockets themselves are
bounded by `gateway.max_sockets` and `gateway.max_sockets_per_tenant` (spec)."""
IDLE_S = 300.0
"""A socket with no message and nothing running for this long is closed (1000, "idle")."""
SLACK_BYTES = 64 * 1024
"""The server reads a message up to `max_body_bytes` plus this (the event's own fields), then closes (1009)."""
MAX_STREAM_ID = 128
"""The longest `stream_id` (a create's lane) a socket takes: it is written back on every event of the response, so a
lane of the message's whole size (up to `max_body_bytes`) was that many bytes again per token event (a 3 MiB lane on a
16-token response: 75.5 MB written, compressed on the event loop, for a client reading kilobytes). Longer: the
create's 400 naming `stream_id` (thirty-fourth session)."""
MAX_REFUSED_RUN = 32
"""Messages in a row a socket may have refused at once by the socket itself (an `error` event each: not JSON, an
unknown `type`, a create or steer it cannot take); the last of them closes it 1008 (policy violation) with the
reason, `closed: refused` in its record. A create the endpoint refuses (a 4xx before any `response.created`: an
unknown model, a bad field, a 429) counts as one more; a response created or a steer accepted starts
the count again; refusals of the gateway's stop (`shutting_down`) are not counted. One socket answered ~8,000
refusals a second until the thirty-fourth session (scripts/bench_socket_refusals.py); so past this it refuses at most
this many per response created, each authenticated and counted against its quota. (Until review RV3 a create queued
started the count again, so 31 bad messages and a create for a model that does not exist, over and over, were
answered ~700 refusals a second without end. Until the thirty-eighth session's review RV4 the endpoint's 429 did not
count: a tenant past its requests per minute, its creates refused before their body is read (brief ATK9) and charged
nothing, looped them on one socket at 2,689 refusals a second, each audited, never closed.)"""
MAX_ENDED = 1024
"""Ids of this socket's ended responses it remembers, to tell a steer that it came too late (else not found)."""
CLOSE_NORMAL, CLOSE_POLICY = 1000, 1008
CLOSE_RESTART = 1012
"""uvicorn's close of a WebSocket when the server stops (its `shutdown`): the app reads it as the disconnect's code."""
_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_CHAINED = frozenset({"completed", "incomplete"})
"""The statuses of a response stored with its answer, which a successor continues."""
_HOP = frozenset({"connection", "upgrade", "content-length", "content-type", "transfer-encoding"})
_ERROR_HEADERS = ("retry-after", "x-request-id", "x-should-retry")
_GONE = (OSError, RuntimeError, WebSocketDisconnect)
"""What a send to a socket the client closed raises (the server's ClientDisconnected, Starlette's own)."""
log = logging.getLogger("aigrid.gateway")


def server_options(spec: GridSpec) -> dict[str, Any]:
    """uvicorn's WebSocket settings for this grid: a message is read no further than the HTTP body limit plus
    SLACK_BYTES (uvicorn's default, 16 MiB, whatever the limit), compressed or not; pongs are not piled up for a
    client that reads nothing (slow_clients.PongsWhileRead); at the stop the socket is the app's to close
    (stopping.Lingering: its response under way gets the grace)."""
    return {"ws_max_size": spec.gateway.max_body_bytes + SLACK_BYTES, "ws": Lingering}


class ResponsesSocket:
    """The ASGI endpoint of WebSocket /v1/responses; `endpoint` is the audited POST /v1/responses (app.py)."""

    def __init__(self, gw: Gateway, endpoint: ASGIApp) -> None:
        self.gw = gw
        self.endpoint = endpoint
        self.open: dict[str, int] = {}
        """Per tenant: the sockets this process holds open now."""
        self.keyed: dict[tuple[str, str], int] = {}
        """Per (tenant, key id) of an authenticated caller: the sockets this process holds open now."""
        self.sockets = 0
        """The sockets this process holds open now, every tenant's."""
        self.pool = _Waiting(WAITING_BODIES * gw.spec.gateway.max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        ex = Exchange(ROUTE, time.time())
        tenant: str | None = None
        key: tuple[str, str] | None = None
        try:
            try:
                one_credential(self.gw, scope)
                headers = pipeline_headers(ws)
                _same_origin(headers)
                self.gw.guard.check_browser(scope)  # without keys: a page's name pointed at it (browsers.py)
                ex.principal = principal = self.gw.guard.principal(headers.get("authorization"), headers.get(H_TENANT))
                await self.gw.guard.admit_call(ex, counted=False)  # not opened while no record can be written
                key = _key_of(principal)
                self._bound(principal.tenant, key)
            except ApiError as e:
                ex.error = e
                count_rejected(self.gw, ROUTE, e.code or "error")  # a write that fails: logged, the refusal its own
                await _deny(ws, e, ex.request_id)
                return
            tenant = principal.tenant
            self.open[tenant] = self.open.get(tenant, 0) + 1
            if key is not None:
                self.keyed[key] = self.keyed.get(key, 0) + 1
            self.sockets += 1
            # guarded as the socket's close: raised, the count and the record of a socket never served were skipped
            self.gw.proxy.written(ROUTE, self.gw.metrics.responses_sockets.inc)
            await ws.accept(headers=[(b"x-request-id", ex.request_id.encode())])
            conn = _Connection(ws, self.endpoint, _request_scope(scope, ex.request_id),
                               self.gw.spec.gateway.max_body_bytes, self.pool, self.gw.parses, lambda: self.gw.stopping,
                               scope.get("extensions", {}).get(STOP_NOTICE), owner=principal.tenant)
            try:
                await conn.run()
            finally:
                ex.notes.update(responses=conn.served, refused_events=conn.refused, closed=conn.closed_by,
                                steers=conn.steers, dropped_creates=conn.dropped)
        finally:
            if tenant is not None:
                self.sockets -= 1
                self.gw.proxy.written(ROUTE, self.gw.metrics.responses_sockets.dec)  # raised: no audit record
                self.open[tenant] -= 1
                if not self.open[tenant]:
                    del self.open[tenant]
                if key is not None:
                    self.keyed[key] -= 1
                    if not self.keyed[key]:
                        del self.keyed[key]
            await close_exchange(self.gw, ex)

    def _bound(self, tenant: str, key: tuple[str, str] | None) -> None:
        """429 `overloaded` for a socket past the process's bound, its tenant's or its key's (the spec's
        gateway.max_sockets, gateway.max_sockets_per_tenant, gateway.max_sockets_per_key): each holds a file
        descriptor, a task and what waits on it, whatever it sends, so without a bound one tenant's sockets took
        the whole process, and one key of a tenant (until the twenty-first session) all of its tenant's."""
        spec = self.gw.spec.gateway
        if key is not None and self.keyed.get(key, 0) >= spec.max_sockets_per_key:
            raise Overloaded(f"{spec.max_sockets_per_key} sockets of this key are open on this gateway, as many as it "
                             "holds for one key (gateway.max_sockets_per_key); close one or retry later",
                             headers={"retry-after": "1"})
        if self.open.get(tenant, 0) >= spec.max_sockets_per_tenant:
            raise Overloaded(f"{spec.max_sockets_per_tenant} sockets of tenant {tenant!r} are open on this gateway, as "
                             "many as it holds for one tenant (gateway.max_sockets_per_tenant); close one or retry "
                             "later", headers={"retry-after": "1"})
        if self.sockets >= spec.max_sockets:
            raise Overloaded(f"{spec.max_sockets} sockets are open on this gateway, as many as it holds "
                             "(gateway.max_sockets); retry later", headers={"retry-after": "1"})


def _key_of(principal: Principal) -> tuple[str, str] | None:
    """What gateway.max_sockets_per_key counts: an API key or a JWT subject of its tenant; None without keys."""
    return None if principal.method == "anonymous" else (principal.tenant, principal.key_id)


@dataclass
class _Waiting:
    """The bytes waiting on all the sockets of a process (their queued creates and uncommitted steers), at most
    `limit` (WAITING_BODIES) beyond a first one per socket."""

    limit: int
    held: int = 0

    def admits(self, conn: _Connection, size: int) -> bool:
        return not conn.queued_bytes + conn.steer_bytes or self.held + size <= self.limit


def _same_origin(headers: Mapping[str, str]) -> None:
    """403 for a handshake sent by a browser for a page of another origin (its Origin header not this gateway's
    own address, as the Host header names it): a browser opens a socket to any address for any page and lets the
    page read its messages (no CORS on sockets), so without it a page the user visits would use a gateway
    without keys (the demo's, on 127.0.0.1) with the user's reach. The SDKs and other programs send no Origin."""
    check_origin(headers.get("origin"), headers.get("host"), "cross_origin_websocket",
                 "a WebSocket handshake from a web page of another origin", "a browser's page may open a socket "
                 "only to the gateway that served it; a program sends no Origin header")


async def _deny(ws: WebSocket, e: ApiError, request_id: str) -> None:
    """The handshake refused with the error's HTTP answer (status, envelope, headers), which the SDK raises as
    websockets' InvalidStatus; a server without the denial extension closes (1008, the message as reason)."""
    response = error_response(e)
    response.raw_headers.append((b"x-request-id", request_id.encode()))
    try:
        if (await ws.receive())["type"] != "websocket.connect":
            return  # gone before its handshake was answered
        if "websocket.http.response" in ws.scope.get("extensions", {}):
            await ws.send_denial_response(response)
        else:
            await ws.close(CLOSE_POLICY, e.message[:120])
    except _GONE as gone:
        log.debug("%s: a refusal to a client already gone dropped: %r", ROUTE, gone)


def _request_scope(scope: Scope, socket_id: str) -> dict[str, Any]:
    """The POST /v1/responses request each `response.create` becomes: the handshake's headers (its key, tenant,
    location, residency, policy), JSON; its audit record names the socket's (routes.SOCKET)."""
    headers = [(k, v) for k, v in scope["headers"]
               if k.lower() not in _HOP and not k.lower().startswith(b"sec-websocket-")]
    return {"type": "http", "asgi": scope.get("asgi", {"version": "3.0"}), "http_version": "1.1", "method": "POST",
            "scheme": "https" if scope.get("scheme") == "wss" else "http", "path": "/v1/responses",
            "raw_path": b"/v1/responses", "root_path": scope.get("root_path", ""), "query_string": b"",
            "headers": headers, "client": scope.get("client"), "server": scope.get("server"),
            "state": scope.get("state", {}), "extensions": {SOCKET: socket_id}}


@dataclass(eq=False)
class _Run:
    """One response to serve: a client's `response.create` or an automatic successor. Once its response.created
    passed: its id, the steers accepted for it; once it ended, its Response."""

    create: dict[str, Any]
    """The body of POST /v1/responses it is served as (read from `body` when it leaves the queue)."""
    stream_id: str | None
    size: int = 0
    """Its bytes counted in the socket's queued_bytes while it waits."""
    body: bytes = b""
    """While it waits: the client's message, `size` bytes, parsed only when it leaves the queue (parsed, a body
    of many small values is held as 15 to 25 times its bytes: a socket's 1 MiB of `[{}, ...]` waiting held
    24 MiB where 1 MiB was counted)."""
    commits: list[Steer] = field(default_factory=list)
    """The steers its response.created commits (a successor's, or those prepended to a client's create)."""
    rid: str | None = None
    steers: list[Steer] = field(default_factory=list)
    final: dict[str, Any] | None = None
    cut: SteerCut = field(default_factory=SteerCut)
    """Wanted once a steer for it is accepted: its answer stops at its next text chunk (`incomplete`, `steered`)."""


class _Connection:
    """One accepted socket: a reader of the client's messages and one runner of its responses, in order."""

    def __init__(self, ws: WebSocket, endpoint: ASGIApp, scope: dict[str, Any], limit: int,
                 pool: _Waiting, parses: ParsePool, stopping: Callable[[], bool] = lambda: False,
                 notice: StopNotice | None = None, owner: str = "") -> None:
        self.ws, self.endpoint, self.scope, self.limit, self.pool = ws, endpoint, scope, limit, pool
        self.parses = parses
        """The gateway's parse threads (Gateway.parses): a long message is parsed there, in its tenant's turn (`owner`,
        ParsePool.run: since the thirty-eighth session, brief ATK9; before, every socket's parses waited as one)."""
        self.owner = owner
        self.stopping = stopping
        """Whether the gateway is stopping (Gateway.stopping): a close then with uvicorn's 1012 is the server's."""
        self.notice = notice
        """The server's word that the stop began (stopping.Lingering); None under a server that closes at once."""
        if notice is not None:
            notice.heeded = True
        self.halting = False
        """The stop began: the response under way may end within the grace, nothing new is served (`_halt`)."""
        self.current: _Run | None = None
        """The response running now or last."""
        self.queue: asyncio.Queue[_Run | None] = asyncio.Queue()
        self.queued_bytes = 0
        self.gone = asyncio.Event()
        self.running = False
        self.last_active = time.monotonic()
        self.sending = asyncio.Lock()
        self.served = self.refused = 0
        self.refused_run = 0
        """The client's messages refused in a row (MAX_REFUSED_RUN)."""
        self.dropped = 0
        """Creates still waiting when the client left: never served, counted in the socket's record."""
        self.closed_by = "client"
        """Who ended the socket: `client`, `idle`, `refused` (MAX_REFUSED_RUN), or `server` (the gateway stopping)."""
        self.active: dict[str, _Run] = {}
        """The responses running now (created, not ended), by id: what a steer may target."""
        self.ended: dict[str, str] = {}
        """The last MAX_ENDED ended responses' statuses, by id."""
        self.waiting: dict[str, list[Steer]] = {}
        """Steers of responses that ended with client-owned tool calls, by response id, until the client's
        response.create continues it."""
        self.steer_bytes = 0
        self.steer_seq = 0
        self.steers = {"accepted": 0, "committed": 0, "failed": 0, "dropped": 0}

    async def run(self) -> None:
        runner = asyncio.create_task(self._serve())
        halter = None if self.notice is None else asyncio.create_task(self._halt(self.notice, runner))
        cut, cut_run = False, None
        try:
            await self._read()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not (self.halting or self.stopping()) or task is None or not task.cancelling():
                raise
            # the stop's cut (the grace's end, a second signal) of a socket whose response still runs: taken, as an
            # HTTP request's is (stopping.CutAnswers): its response cancelled, then the socket closed 1012 below
            task.uncancel()
            self.closed_by, cut = "server", True
            cut_run = self.current if self.running else None
        finally:
            if halter is not None:
                halter.cancel()
                await asyncio.wait([halter])
            for run in self.active.values():  # no successor follows: it is not stopped for a steer but a hang-up
                run.cut.wanted = False
            if self.closed_by == "server":  # the stop closed it (1012): the running response is cancelled, as the
                # stop cancels an HTTP request (`cancelled`, not `client_closed`), and with its reason (stopping.CUT):
                # the grid's cut, charged nothing beyond what was delivered (proxy._CHARGED_CUTS)
                runner.cancel(CUT)
            self.gone.set()  # the running response sees its client gone (http.disconnect); the rest are dropped
            self.queue.put_nowait(None)  # the runner's wait ends; a running response ends by its own hang-up path
            try:
                await runner
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self.closed_by != "server" or (task is not None and task.cancelling()):
                    raise
            finally:  # what still waits is dropped: the process's count of waiting bytes lets it go
                self.pool.held -= self.queued_bytes + self.steer_bytes
            while not self.queue.empty():
                self.dropped += self.queue.get_nowait() is not None
            if self.dropped:
                log.info("%s: the client left with %d response.create events waiting: dropped unserved", ROUTE,
                         self.dropped)
            counts = self.steers
            counts["dropped"] = counts["accepted"] - counts["committed"] - counts["failed"]
            if counts["dropped"]:
                log.info("%s: the client left with %d accepted steers not yet committed: dropped", ROUTE,
                         counts["dropped"])
        if cut:  # its response cut: it ends with an `error` event (as a stream cut over HTTP), then the close
            try:  # bounded as an HTTP request's last words are: a client that reads nothing holds up no stop
                async with asyncio.timeout(SEND_BOUND_S):
                    if cut_run is not None:
                        await self.ws.send_text(_tagged(cut_run.stream_id, _stopping_event(
                            "this response was cut at the end of the stop's grace (gateway.shutdown_grace_s)")).decode())
                    await self._close_for_stop()
            except (TimeoutError, *_GONE) as e:
                log.info("%s: a cut socket's last words were not sent: %r", ROUTE, e)

    async def _halt(self, notice: StopNotice, runner: asyncio.Task[None]) -> None:
        """The stop began (stopping.Lingering): the creates waiting are refused (an `error` event, 503
        `shutting_down`, as a POST refused by the stop), and so is every later one; the response under way runs to
        its end (the grace: gateway.shutdown_grace_s; at its end the stop cancels it, `run`), and no successor of
        it is started; then the socket is closed 1012 as uvicorn closed it at once before (closed_by `server`)."""
        await notice.begun.wait()
        self.halting = True
        while not self.queue.empty():
            waiting = self.queue.get_nowait()
            if waiting is None:
                continue
            self.queued_bytes -= waiting.size
            self.pool.held -= waiting.size
            self.refused += 1
            await self._send(_tagged(waiting.stream_id, _stopping_event()))
        self.queue.put_nowait(None)  # the runner ends after the response it runs
        await asyncio.wait([runner])
        await self._close_for_stop()

    async def _close_for_stop(self) -> None:
        try:
            await self.ws.close(CLOSE_RESTART, "the gateway is stopping")
        except _GONE as e:  # the client closed it at the same moment: its close stands
            log.debug("%s: the stop's close of a socket already closed: %r", ROUTE, e)
            return
        self.closed_by = "server"

    # --- the client's messages ------------------------------------------------------------------------------
    async def _read(self) -> None:
        while True:
            # while a response runs, awake at least every IDLE_S to count from its end (a wait without a deadline
            # begun then would outlast it: a client silent after one create held its socket for good)
            busy = self.running or not self.queue.empty()
            wait = IDLE_S if busy else IDLE_S - (time.monotonic() - self.last_active)
            try:
                message = await asyncio.wait_for(self.ws.receive(), wait) if wait > 0 else None
            except TimeoutError:
                message = None
            if message is None:
                if self.running or not self.queue.empty() or time.monotonic() - self.last_active < IDLE_S:
                    continue
                self.closed_by = "idle"
                with contextlib.suppress(*_GONE):  # unless the client closed it at the same moment
                    await self.ws.close(CLOSE_NORMAL, f"idle for {IDLE_S:g} s")
                return
            if message["type"] == "websocket.disconnect":
                # the stop's close is uvicorn's 1012 (Service Restart), put before the client's own close code; a
                # client that closed on its own during a stop (1000, 1001, 1006) left: `client`, its response
                # `client_closed`. Before, any close during a stop was recorded the server's
                if message.get("code") == CLOSE_RESTART and self.stopping():
                    self.closed_by = "server"
                return
            self.last_active = time.monotonic()
            data = message.get("bytes") if message.get("text") is None else message["text"].encode()
            if self.refused_run < MAX_REFUSED_RUN:  # else the last refusal was a create's, the endpoint's: unread
                await self._take(data or b"")
            if self.refused_run >= MAX_REFUSED_RUN:
                self.closed_by = "refused"
                log.info("%s: %d messages in a row refused: socket closed %d", ROUTE, self.refused_run, CLOSE_POLICY)
                with contextlib.suppress(*_GONE):  # unless the client closed it at the same moment
                    await self.ws.close(CLOSE_POLICY, f"{self.refused_run} messages in a row refused (see their "
                                                      "error events)")
                return

    async def _take(self, data: bytes) -> None:
        """One client message: a create queued, a steer answered at once, anything else refused at once."""
        try:
            if len(data) > self.limit:
                raise InvalidRequest(body_too_large("message", self.limit), code="request_too_large")
            # as an HTTP body is read: 400 invalid_json, or nested too deep; a long one on the gateway's parse threads
            # (routes.read_json)
            event = (json_object(data) if len(data) <= OFF_LOOP_BYTES
                     else await self.parses.run(json_object, data, owner=self.owner))
            kind = event.get("type")
            if kind == "response.steer":
                await self._steer(event, data)
                return
            if kind != "response.create":
                raise InvalidRequest(f"type: unknown client event {kind!r}; this socket takes 'response.create' and "
                                     "'response.steer'", param="type", code="unknown_event_type")
            if self.halting:
                raise _shutting_down()
            stream_id = event.pop("stream_id", None)
            event.pop("type")
            if stream_id is not None and not isinstance(stream_id, str):
                raise InvalidRequest("stream_id: must be a string", param="stream_id")
            if stream_id is not None and len(stream_id) > MAX_STREAM_ID:
                raise InvalidRequest(f"stream_id: at most {MAX_STREAM_ID} characters (it is {len(stream_id)}); every "
                                     "event of the response carries it", param="stream_id")
            if event.get("background") is True:
                raise InvalidRequest("background: a response over a WebSocket is not run in the background; send "
                                     "it with POST /v1/responses", param="background")
            if event.get("generate") is False:
                raise InvalidRequest("generate: false (preparing a response without generating it) is not served "
                                     "by this gateway", param="generate")
            size = len(data)
            if self.queue.qsize() >= MAX_QUEUED or (self.queued_bytes and self.queued_bytes + size > self.limit):
                raise Overloaded(f"{self.queue.qsize()} response.create events ({self.queued_bytes} bytes) are "
                                 f"waiting on this socket behind the running response, as many as it holds (at most "
                                 f"{MAX_QUEUED}, {self.limit} bytes); send this one after a response ends",
                                 code="too_many_queued")
            if not self.pool.admits(self, size):
                raise Overloaded(f"the sockets of this gateway hold {self.pool.held} bytes waiting, as many as it "
                                 "holds; send this one after this socket's response ends",
                                 code="too_many_queued", headers={"retry-after": "1"})
            self.queued_bytes += size
            self.pool.held += size
            self.queue.put_nowait(_Run({}, stream_id, size, data))
        except ApiError as e:
            self.refused += 1
            self.refused_run += not self.halting  # the stop's refusals are not the client's
            await self._send(_error_event(e.status, cast(Mapping[str, Any], e.envelope()["error"]),
                                          e.response_headers()))

    # --- steering ------------------------------------------------------------------------------------------
    async def _steer(self, event: dict[str, Any], message: bytes) -> None:
        """A steer validated and queued on the running response it names (accepted), or refused (failed); kept as
        the `message` it came in (Steer)."""
        try:
            items = steer_items(event)
        except InvalidRequest as e:
            await self._steer_refused(event, "invalid_input", e.message)
            return
        if self.halting:  # its successor would not run
            await self._steer_refused(event, "shutting_down", _shutting_down().message)
            return
        rid = event["previous_response_id"]
        run = self.active.get(rid)
        if run is None:
            status = self.ended.get(rid)
            if status is None:
                await self._steer_refused(event, "response_not_found", f"no response {rid!r} is running on this "
                                          "socket (only a response of this socket, once created, can be steered)")
            else:
                await self._steer_refused(
                    event, "response_already_completed" if status in _CHAINED else "response_not_active",
                    f"the response {rid!r} has ended ({status}) and takes no more steering input; send it in a "
                    "response.create with this previous_response_id")
            return
        why = unsupported(run.create)
        if why is not None:
            await self._steer_refused(event, "steering_not_supported", f"the response {rid!r} cannot be steered: "
                                      f"{why}", run.stream_id)
            return
        steer = new_steer(event, message, items, run.stream_id)
        body = successor_size(run.create, rid, [*run.steers, steer])
        if (len(run.steers) >= MAX_STEERS or body > self.limit or self.steer_bytes + steer.size > self.limit
                or not self.pool.admits(self, steer.size)):
            await self._steer_refused(
                event, "too_many_pending_steers", f"the response {rid!r} holds {len(run.steers)} steers (at most "
                f"{MAX_STEERS}; its successor at most {self.limit} bytes, gateway.max_body_bytes, and this one "
                f"would make it {body}; this socket's queued steers {self.steer_bytes + steer.size}; this "
                f"gateway's sockets hold {self.pool.held} bytes waiting, at most {self.pool.limit}); send it "
                "after the response ends", run.stream_id)
            return
        run.steers.append(steer)
        run.cut.wanted = True  # stopped at its next text chunk outside a function call, then its successor runs
        self.steer_bytes += steer.size
        self.pool.held += steer.size
        self.steers["accepted"] += 1
        self.refused_run = 0
        await self._send(accepted(self._seq(), steer))

    async def _steer_refused(self, event: Mapping[str, Any], code: str, message: str,
                             stream_id: str | None = None) -> None:
        self.refused += 1
        self.refused_run += code != "shutting_down"  # the stop's refusals are not the client's
        await self._send(failed(self._seq(), code, message, event, stream_id))

    async def _lose(self, steers: list[Steer], code: str, message: str) -> None:
        """Accepted steers that will not be committed, returned to the client (dropped if it is gone)."""
        if self.gone.is_set():
            return
        for steer in steers:
            self._settle(steer, "failed")
            await self._send(failed(self._seq(), code, message, steer))

    def _settle(self, steer: Steer, outcome: str) -> None:
        self.steer_bytes -= steer.size
        self.pool.held -= steer.size
        self.steers[outcome] += 1

    def _seq(self) -> int:
        """Steering events are numbered on their own, per socket, from 0."""
        self.steer_seq += 1
        return self.steer_seq - 1

    def _observe(self, run: _Run, kind: str, data: bytes) -> None:
        """A response's created or final event, before the client has it: steerable from the one, no more
        from the other."""
        try:
            response = orjson.loads(data)["response"]
            rid = response["id"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as e:
            log.warning("%s: a %s event without its response: %r", ROUTE, kind, e)
            return
        if kind == "response.created":
            run.rid = rid
            self.active[rid] = run
        elif self.active.pop(rid, None) is not None:
            run.final = response
            self.ended[rid] = str(response.get("status"))
            if len(self.ended) > MAX_ENDED:
                del self.ended[next(iter(self.ended))]

    async def _after(self, run: _Run) -> _Run | None:
        """What a response's steers become once it ended: its successor (served next), waiting for the client's
        tool results (pending), or returned (failed)."""
        self.active.pop(run.rid or "", None)  # a response that never sent its final event (the client left)
        steers, run.steers = run.steers, []
        if not steers or self.gone.is_set():
            return None
        if self.halting:
            await self._lose(steers, "shutting_down", _shutting_down().message)
            return None
        status = None if run.final is None else run.final.get("status")
        if run.rid is None or status not in _CHAINED:
            await self._lose(steers, "response_not_active", f"the response {run.rid!r} ended "
                             f"{status or 'without an answer'}; its steering input was not applied")
            return None
        assert run.final is not None
        required = required_input(run.final)
        if required:
            self.waiting[run.rid] = steers
            for steer in steers:
                await self._send(pending(self._seq(), steer, required))
            return None
        return _Run(successor(run.create, run.rid, steers), run.stream_id, commits=steers)

    # --- the responses, one at a time ------------------------------------------------------------------------
    async def _serve(self) -> None:
        while not self.gone.is_set():
            run = await self.queue.get()
            if run is None or self.gone.is_set():
                return
            self.queued_bytes -= run.size
            self.pool.held -= run.size
            if run.body:  # parsed only now, as _take read it
                run.create, run.body = orjson.loads(run.body), b""
                del run.create["type"]
                run.create.pop("stream_id", None)
                run.create["stream"] = True  # implicit over a socket
            previous = run.create.get("previous_response_id")
            if isinstance(previous, str) and previous in self.waiting:  # the continuation its steers waited for
                if prepended(run.create, self.waiting[previous]):
                    run.commits = self.waiting.pop(previous)
            next_run: _Run | None = run
            while next_run is not None and not self.gone.is_set():
                await self._serve_one(next_run)
                next_run = await self._after(next_run)

    async def _serve_one(self, run: _Run) -> None:
        self.running, self.current = True, run
        status = 0
        try:
            status = await self._respond(run)
        except Exception:  # the endpoint answers its own errors; anything else is ours: logged, said, go on
            log.exception("internal error on %s", ROUTE)
            await self._send(_error_event(500, {"type": "server_error", "code": "internal_error", "param": None,
                                                "message": "internal error in the aigrid gateway (logged)"}, {}))
        finally:
            self.running = False
            self.served += 1
            self.last_active = time.monotonic()
        if run.rid is not None:  # a response created: the client's refusals in a row end (MAX_REFUSED_RUN)
            self.refused_run = 0
        elif 400 <= status < 500:  # the endpoint refused the create, as the socket a bad message (a 429 too: RV4)
            self.refused_run += 1
        if run.rid is not None:  # its response.created: the commit point
            for steer in run.commits:
                self._settle(steer, "committed")
        elif run.commits:
            await self._lose(run.commits, "successor_creation_failed", "the response continuing "
                             f"{run.commits[0].target!r} with this input was refused (its error event says why)")

    async def _respond(self, run: _Run) -> int:
        """One `response.create` through the audited POST /v1/responses endpoint; its answer's HTTP status."""
        body = orjson.dumps(run.create)
        scope = {**self.scope, "headers": [*self.scope["headers"], (b"content-type", b"application/json"),
                                           (b"content-length", str(len(body)).encode())]}
        answer = _Answer(self, run)
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await self.gone.wait()  # the endpoint's hang-up watch: the socket closed
            return {"type": "http.disconnect"}

        # the endpoint's answer, served in this task, may be stopped for a steer, where one may be accepted for it
        # (else its relay would note each chunk's text for a steer that is refused: steering_not_supported)
        token = STEER.set(run.cut if unsupported(run.create) is None else None)
        try:
            await self.endpoint(scope, receive, answer.send)
        finally:
            STEER.reset(token)
        await answer.end()
        return answer.status

    async def _send(self, message: bytes) -> None:
        if self.gone.is_set():
            return
        async with self.sending:
            try:
                await self.ws.send_text(message.decode())
            except _GONE as e:  # the client is gone (the server raises on a send after its close): nothing to say
                log.debug("%s: a message to a closed socket dropped: %r", ROUTE, e)
                self.gone.set()


class _Answer:
    """The endpoint's HTTP answer as socket messages: an event stream event by event, an error as one event."""

    def __init__(self, conn: _Connection, run: _Run) -> None:
        self.conn, self.run = conn, run
        self.tag = b"" if run.stream_id is None else b'{"stream_id":' + orjson.dumps(run.stream_id) + b","
        self.status = 0
        self.headers: dict[str, str] = {}
        self.pending = b""
        """An error answer's envelope, gathered whole (a stream's events go through `sse`, the one codec)."""
        self.sse = SseDecoder()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in message.get("headers", ())}
            return
        body = message.get("body", b"")
        if self.status >= 400:
            self.pending += body  # an error's envelope, sent whole at the end
            return
        for event in self.sse.feed(body):
            await self._event(event)

    async def _event(self, event: Event) -> None:
        """One SSE event's data (its lines joined, as a client reads them) as one message; a comment, none."""
        data = event.data
        if data is None:
            return
        kind = event.event.decode("latin-1")
        if kind == "response.created" or kind in _TERMINAL:
            self.conn._observe(self.run, kind, data)
        await self.conn._send(self.tag + data[1:] if self.tag and data.startswith(b"{") else data)

    async def end(self) -> None:
        if self.status < 400:
            if (last := self.sse.flush()) is not None:  # an event its stream did not end with a blank line
                await self._event(last)
            return
        try:
            error = orjson.loads(self.pending)["error"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            error = {"type": "server_error", "code": None, "param": None,
                     "message": self.pending.decode("utf-8", "replace")[:500]}
        message = _error_event(self.status, error, self.headers)
        await self.conn._send(self.tag + message[1:] if self.tag else message)


def _shutting_down(what: str = "this socket serves no new response (the one under way may end)") -> ShuttingDown:
    return ShuttingDown(f"the gateway is stopping: {what}; send it again on a new socket", headers={"retry-after": "1"})


def _stopping_event(what: str | None = None) -> bytes:
    e = _shutting_down() if what is None else _shutting_down(what)
    return _error_event(e.status, cast(Mapping[str, Any], e.envelope()["error"]), e.response_headers())


def _tagged(stream_id: str | None, message: bytes) -> bytes:
    """A message of the lane `stream_id` (the create's own, given back)."""
    return message if stream_id is None else b'{"stream_id":' + orjson.dumps(stream_id) + b"," + message[1:]


def _error_event(status: int, error: Mapping[str, Any], headers: Mapping[str, str]) -> bytes:
    """The SDKs' ResponseWsError: the HTTP error's envelope, its status and the headers a client acts on."""
    kept = {k: v for k, v in headers.items() if k in _ERROR_HEADERS or k.startswith("x-ratelimit-")}
    shown = bounded_error({"error": dict(error)})["error"]  # its message bounded, as error_response's
    return orjson.dumps({"type": "error", "status": status, "error": {**cast(Mapping[str, Any], shown),
                                                                       "headers": kept}})
