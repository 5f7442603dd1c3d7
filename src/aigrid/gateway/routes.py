"""The HTTP handlers: OpenAI routes, decisions, grid state, health and metrics."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from aigrid import __version__
from aigrid.agents.embeddings import create_embeddings, embedding_inputs
from aigrid.agents.loop import (
    EXTENSIONS,
    LoopConfig,
    Step,
    ToolMode,
    check_tool_choice,
    check_tool_results,
    first_turn,
    unallowed_tool,
    validate_tool_request,
    wants_server_tools,
)
from aigrid.agents.reply import ToolLoopEngine
from aigrid.agents.steps import Call, structured
from aigrid.agents.tool import ToolContext, ToolRegistry
from aigrid.core.types import Candidate, Decision, RequestInfo
from aigrid.core.urgency import DEFAULT_LEVEL
from aigrid.engines.fan_out import MAX_FANNED_REQUESTS, FanOutEngine, prompts_of
from aigrid.engines.legacy_completions import LegacyCompletionsEngine, needs_legacy
from aigrid.engines.protocol import Engine
from aigrid.errors import (
    ApiError,
    AuthenticationError,
    InvalidRequest,
    ModelNotFound,
    NoEligibleEndpoint,
    NotFound,
    PermissionDenied,
    RequestTimeout,
)
from aigrid.gateway.admission import Refused, Ticket
from aigrid.gateway.body_values import OFF_LOOP_BYTES, check_values
from aigrid.gateway.context_window import MAX_CHARS_PER_TOKEN, check_context, model_context, refuse_too_long
from aigrid.gateway.decisions import DecisionRecord, calibration_dict, prefill_queue_dict, readable_by
from aigrid.gateway.engine_body import check_legacy_functions
from aigrid.gateway.envelope import api_error_handler, field_name, from_validation, internal_error
from aigrid.gateway.escalation import Escalation
from aigrid.gateway.exchange import Exchange
from aigrid.gateway.front_door import pipeline_headers, with_api_key
from aigrid.gateway.guard import MIN_TURN_OUTPUT
from aigrid.gateway.modalities import check_images
from aigrid.gateway.model_list import find_model, model_list, model_page
from aigrid.gateway.model_texts import DocumentsAt, beside_messages, chat_texts, collected, completion_texts
from aigrid.gateway.numbers import plain_int
from aigrid.gateway.observe import observe
from aigrid.gateway.one_call import asks_one_call, first_call_only
from aigrid.gateway.openapi import openapi_document
from aigrid.gateway.output_filter import (
    OutputFilter,
    offered_names,
    redact_json_answer,
    redacted_step,
    refuse_unredacted_logprobs,
)
from aigrid.gateway.proxy import HedgePolicy, Wrap
from aigrid.gateway.relay_response import Hangup, RelayResponse
from aigrid.gateway.request_coding import check_plain
from aigrid.gateway.request_info import (
    CHARS_PER_TOKEN,
    DEFAULT_OUTPUT_TOKENS,
    H_POLICY,
    OutputBound,
    build_request_info,
    longest_prompt_tokens,
    prompt_units,
    turn_prompt_tokens,
)
from aigrid.gateway.schemas import ChatRequest, CompletionRequest, drop_unserved, output_limit
from aigrid.gateway.slow_clients import body_deadline_s
from aigrid.gateway.stopping import EXCHANGE
from aigrid.gateway.urgency import request_urgency
from aigrid.json_depth import depth_message, too_deep_raw
from aigrid.logs import fields
from aigrid.security.authorize import may_serve, scope_request
from aigrid.security.firewall.pipeline import Screened
from aigrid.security.firewall.texts import ModelText
from aigrid.security.principal import Principal, Scopes
from aigrid.security.quotas import rate_limit_headers
from aigrid.spec.models import ModelSpec
from aigrid.userinfo import without_userinfo

if TYPE_CHECKING:
    from aigrid.gateway.app import Gateway

access = logging.getLogger("aigrid.access")
log = logging.getLogger("aigrid.gateway")
H_TENANT = "x-aigrid-tenant"
HARD_FILTERS = frozenset({"model", "context", "quality", "residency", "tenant"})
"""Filters whose rejections no wait undoes (health, capacity, power and the like can)."""
CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
Handler = Callable[[Request, Exchange], Awaitable[Response]]
H_HEDGE = "x-aigrid-hedge"
SOCKET = "aigrid.socket"
"""The scope extension of a request made from a WebSocket's message (responses_socket.py): the socket's request id,
in the request's audit record (`extra.socket`). Set by the gateway only: a server's extensions are not a client's."""
_NO_SERVER_TOOLS = ToolRegistry()
"""What a request's tools are looked up in when server-side tools are not run for it: none (every tool is the client's)."""


def header_dict(request: Request) -> dict[str, str]:
    """The request's headers as a plain dict, the first value of each name (what `request.headers.get` gives).
    The pipeline looks up about ten headers per request, most of them absent: a dict answers each in a
    fraction of the time Starlette's Headers takes (a scan of the list and a KeyError per miss). Like Headers, it
    matches the names as the server gave them (ASGI: lower case); every name the pipeline asks for is lower case.
    Its credentials as every route reads them (front_door.with_api_key)."""
    return with_api_key({k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(request.scope["headers"])})


_CREDENTIALS = (b"authorization", b"x-api-key")


def one_credential(gw: Gateway, scope: Scope) -> None:
    """With enforcement on, a request (or a WebSocket's handshake) carrying two Authorization headers, or two
    x-api-key, is a 401: the routes read one (the model routes the first, `pipeline_headers` the last), and a proxy
    in front may check the other. So is one whose Authorization and x-api-key name different keys (the gateway
    reads Authorization, a proxy may check x-api-key); the same key in both is one credential."""
    if not gw.guard.enforcing:
        return
    sent = [(k.lower(), v) for k, v in scope["headers"] if k.lower() in _CREDENTIALS]
    given = dict(sent)
    if len(sent) != len(given):
        raise AuthenticationError("send one Authorization header (and at most one x-api-key): this request has "
                                  "two", headers={"WWW-Authenticate": "Bearer"})
    if len(given) == 2 and _bearer(given[b"authorization"]) != given[b"x-api-key"].strip():
        raise AuthenticationError("the Authorization header and x-api-key name different keys: send one (the "
                                  "gateway reads Authorization, a proxy in front may check the other)",
                                  headers={"WWW-Authenticate": "Bearer"})


def _bearer(value: bytes) -> bytes:
    """The credential of an Authorization header's value (`Bearer KEY`, the scheme in any case)."""
    scheme, _, rest = value.strip().partition(b" ")
    return rest.strip() if scheme.lower() == b"bearer" else value.strip()


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


class Audited:
    """An ASGI endpoint whose every request gets one Exchange, closed in a `finally` around the whole
    pipeline (the answer's last byte included): the quota is settled and the audit record written exactly
    once, whatever the exit: success, client error, firewall block, no eligible site, every candidate
    failed, client gone, gateway shutdown. It answers its own errors (the envelope), so the app can serve
    it without the framework's middleware on the streamed path (app.py, GatewayApp)."""

    def __init__(self, gw: Gateway, route: str, handler: Handler, *, watch: bool = False,
                 counts: bool = False) -> None:
        """`watch`: a client that hangs up before its answer starts cancels the request (relay_response.Hangup):
        the model routes, whose work (queue, firewall, engine) is worth stopping and safe to cut. `counts`: its
        refusals (`refused`) are counted here in aigrid_requests_rejected_total by code: the calls of audited_route
        (files, batches, stored responses, conversations, the grid's reads), which have no pipeline of their own that
        counts them as the model routes' does."""
        self.gw = gw
        self.route = route
        self.handler = handler
        self.watch = watch
        self.counts = counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = scope[EXCHANGE] = Exchange(self.route, time.time())  # a cut's 503 names its id (stopping.CutAnswers)
        if (socket := scope.get("extensions", {}).get(SOCKET)) is not None:  # a response.create of a WebSocket
            ex.notes["socket"] = socket
        hangup = ex.hangup = Hangup(receive, asyncio.current_task()) if self.watch else None
        request = Request(scope, receive if hangup is None else hangup.receive, send)
        if self.gw.tracing.enabled:
            ex.trace = self.gw.tracing.start(self.route, request.headers)
        try:
            try:
                try:
                    self.gw.guard.check_browser(scope)
                    one_credential(self.gw, scope)
                    response = await self.handler(request, ex)
                finally:
                    if hangup is not None:
                        hangup.armed = False  # the answer starts (or the error): only the relay watches now
            except ApiError as e:
                ex.error = e
                if self.counts and refused(e):  # a metrics file that cannot grow is logged, never the answer's
                    count_rejected(self.gw, self.route, e.code or "error")
                response = await api_error_handler(request, e, request_id=ex.request_id)
            except ClientDisconnect:  # gone while its body was read: nobody to answer
                ex.outcome = "client_closed"
                return
            except Exception:  # a bug of ours before the answer started: logged, answered with a 500
                log.exception("internal error on %s", self.route)
                ex.outcome = "error:internal"
                response = internal_error(request, ex.request_id)
                # the grid's: counted on every route (`refused`); a write that fails is logged, the 500 answered
                count_rejected(self.gw, self.route, INTERNAL)
            if hangup is not None:
                if isinstance(response, RelayResponse):
                    response.gone = hangup.watcher  # the same watcher: no second task on `receive`
                elif hangup.gone:  # answered whole while held (a tool loop, a background create) to nobody
                    ex.outcome = "client_closed"
            rid = ex.request_id.encode()  # what the SDKs show as a response's or an error's request id
            response.raw_headers.extend(((b"x-request-id", rid), (b"request-id", rid)))
            # the tenant's or key's per-minute limits, on an answer that is not an error: a 429 for another reason
            # (overloaded, abuse, shed) with remaining > 0 reads to a client's throttle as "retry now"; the quota's
            # own 429 carries them from its RateLimited (remaining 0). Their reset is the time left now, as the
            # headers are written (after a whole answer, or a stream's first byte), not at admission
            if ex.reservation is not None and ex.reservation.headroom and ex.error is None \
                    and response.status_code < 400:
                now = self.gw.guard.quotas.clock()
                response.raw_headers.extend((k.encode(), v.encode())
                                            for k, v in rate_limit_headers(*ex.reservation.headroom, now=now).items())
            # the access line's status: what the client is sent; none to a client gone before it (answered whole
            # while held, to nobody: until review RV4 that logged 200 beside its `client_closed`)
            ex.answered = None if ex.outcome == "client_closed" else response.status_code
            await response(scope, receive, send)
        except asyncio.CancelledError:
            if hangup is not None and hangup.caught():  # the client hung up before its answer started
                ex.outcome = "client_closed"
                return
            ex.outcome = "cancelled"
            raise
        except Exception:
            ex.outcome = "error:internal"
            raise
        except BaseException as e:  # no cancel and no client's act (KeyboardInterrupt, SystemExit): settled, raised on
            # (until the thirtieth session one before the first byte was audited client_closed, as if the client left)
            log.error("%s was cut by %s", self.route, type(e).__name__, exc_info=e)
            ex.outcome = "error:internal"
            raise
        finally:
            if hangup is not None:
                hangup.close()
            await close_exchange(self.gw, ex)


INTERNAL = "internal_error"
"""The code of the 500 answered for an exception that is not an ApiError (envelope.internal_error)."""


def refused(e: ApiError) -> bool:
    """An error that refuses a call for the grid's state or the tenant's limits, not for the call itself: a 429 (a
    quota's requests per minute, admit_call) or a 5xx (503 audit_unavailable, quota_unavailable, store_unavailable,
    insufficient_storage, shutting_down). A client's own mistake about its call (400, 401, 403, 404 of a file or batch
    it names, 409) is not: polling a batch that is not there would count as the grid refusing.

    The one rule of aigrid_requests_rejected_total (docs/observability.md): what the grid caused is counted on every
    route, once, by its code: these, and a 500 for an exception that is not an ApiError (INTERNAL, Audited). A
    client's 4xx is counted only where a request's prompt is read (the model routes' and embeddings' pipelines count
    every ApiError before routing): the dashboard's "Refused before routing, by code" shows validation, keys and
    firewall blocks there, and docs/reliability.md the gateway's own context_length_exceeded."""
    return e.status == 429 or e.status >= 500


def count_rejected(gw: Gateway, route: str, code: str) -> None:
    """One more refusal of `code` in aigrid_requests_rejected_total, counted just before its error is answered:
    through the gateway's guarded writes (Proxy.written, observe.MetricsWrites), so that a write that fails (a
    multiprocess metrics file that cannot grow on a full disk) is logged and the client still reads its own error
    (a 4xx stays a 4xx), not a 500."""
    gw.proxy.written(route, lambda: gw.metrics.rejected.labels(code).inc())


def audited_route(gw: Gateway, method: str, path: str, handler: Handler) -> Route:
    """A route whose requests are audited (Audited) as `METHOD path`, its refusals counted (Audited's `counts`)."""
    return Route(path, Audited(gw, f"{method} {path}", handler, counts=True), methods=[method])


async def authenticate(gw: Gateway, request: Request, ex: Exchange, *,
                       heavy: bool = False) -> tuple[Principal, dict[str, str]]:
    """The caller (bearer key or x-api-key, and the tenant header), kept on the exchange and admitted
    (Guard.admit_call: the audit log accepting; a call that writes, not a read, counted in requests per minute;
    a `heavy` read too, one whose cost grows with what the tenant stored: a file's content, a batch's results, a
    page of items); and the pipeline's headers it was read from."""
    headers = pipeline_headers(request)
    ex.principal = p = gw.guard.principal(headers.get("authorization"), headers.get(H_TENANT))
    await gw.guard.admit_call(ex, counted=heavy or request.method not in ("GET", "HEAD"))
    return p, headers


async def authenticate_read(gw: Gateway, request: Request, ex: Exchange) -> Principal:
    """The caller of an audited read that holds no prompt (the grid, the dashboard's data): `authenticate`, except
    that with enforcement off credentials that do not authenticate (another scheme, such as a proxy's Basic auth
    the browser repeats, an empty or stale key, an unknown tenant header) read as the anonymous caller, as these
    reads served them before they were audited."""
    try:
        principal, _ = await authenticate(gw, request, ex)
        return principal
    except (AuthenticationError, InvalidRequest):
        if gw.guard.enforcing:
            raise
    ex.principal = principal = gw.guard.principal(None, None)
    await gw.guard.admit_call(ex, counted=False)
    return principal


def body_too_large(what: str, limit: int, setting: str = "gateway.max_body_bytes", one: str = "request") -> str:
    """The one wording of a body past its limit: `request body is larger than 4,194,304 bytes, the most one request
    may hold (gateway.max_body_bytes)`, the figure with its separators and the setting that sets it; each door names
    what was too large and its own setting (a message batch's file: gateway.batch.max_file_bytes, one="batch")."""
    return f"{what} is larger than {limit:,} bytes, the most one {one} may hold ({setting})"


async def read_body(request: Request, limit: int, too_large: str, timeout_s: float | None = None) -> bytes:
    """The request's body, at most `limit` bytes (a larger one, declared or streamed: 400 request_too_large
    with the message `too_large`), whole within `timeout_s` (default: slow_clients.body_deadline_s; else 408
    request_timeout: a client that trickles its body held its connection and request for good)."""
    declared = plain_int(request.headers.get("content-length", ""))
    if declared is not None and declared > limit:
        raise InvalidRequest(too_large, code="request_too_large")
    chunks: list[bytes] = []

    async def keep(chunk: bytes) -> None:
        chunks.append(chunk)

    await receive_body(request, limit, lambda: InvalidRequest(too_large, code="request_too_large"), keep,
                       body_deadline_s(declared, limit) if timeout_s is None else timeout_s)
    return b"".join(chunks)


async def receive_body(request: Request, limit: int, refuse: Callable[[], ApiError],
                       write: Callable[[bytes], Awaitable[object]], timeout_s: float) -> int:
    """The request's body handed to `write` as it arrives, and its size: `refuse()` raised as soon as more than
    `limit` bytes came, 408 request_timeout unless all of it came within `timeout_s`; a body that says it is
    compressed, before any of it is read (request_coding: 400 unsupported_content_encoding)."""
    check_plain(request.headers)
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise refuse()
                await write(chunk)
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {timeout_s:g} s ({size} bytes came)") from None
    return size


def json_object(raw: bytes, *, counted: bool = True, dotted: bool = False) -> dict[str, Any]:
    """A JSON body that must be an object (400 invalid_json otherwise), nested no deeper than json_depth allows
    (400 naming the field in the door's form: `dotted` on the Messages door, envelope.field_name) and, where
    `counted` (a request's body; not a message batch's, whose requests are counted each), holding no more values
    than one request may (body_values: 400 naming the field)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(f"could not parse the JSON body: {e}", code="invalid_json") from e
    if not isinstance(body, dict):
        raise InvalidRequest("the JSON body must be an object", code="invalid_json")
    deep = too_deep_raw(raw, body)
    if deep is not None:  # it would parse here and fail when written for the engine (json_depth.py)
        field = field_name(deep, dotted=dotted)
        raise InvalidRequest(depth_message(field), param=field or None)
    if counted:
        check_values(body, raw)
    return body


async def close_exchange(gw: Gateway, ex: Exchange) -> None:
    """The end of one exchange, whatever its exit (Audited's `finally`; an exchange the gateway opens itself:
    own_exchange; a dead background run's exit: responses_api `_close_abandoned`): its admission ticket
    released, its span and metrics, the quota settled and the audit record written (Guard.finish, once), the
    outcome shared with the other workers, the access log line."""
    try:
        # its tenant holds one request less, the queue may move; an admitted request that never reached
        # an engine (its client left first) gives back its place in the ledger
        gw.admission.release(ex.ticket, started=ex.record is not None and bool(ex.record.attempts))
        # the span's end (when traced) and the GenAI metrics; a write that fails (a metrics file that cannot grow
        # on a full disk) is logged and the close goes on: until the thirtieth session it skipped the settlement
        written = gw.proxy.written
        written(ex.route, observe, ex, gw.metrics, written)
        kept = await gw.guard.finish(ex)  # a failed quota settle does not stop the record
        _count_close(gw, ex, kept)
        if gw.hub is not None and ex.record is not None:  # the outcome, for the other workers
            await gw.hub.publish_decision(ex.record.to_dict())
    finally:
        if access.isEnabledFor(logging.INFO):  # its fields are worth building only for a line written
            access.info("%s %s", ex.route, ex.final_outcome(), extra=fields(**ex.access_fields(time.time())))


def _count_close(gw: Gateway, ex: Exchange, kept: bool) -> None:
    """A closed exchange's audit and quota metrics (close_exchange, after Guard.finish), each write its own guarded
    call (Proxy.written): one that fails skips none of the others (in one call, until the thirty-first session, a
    failing aigrid_audit_lost_total left a request's unsettled quota uncounted)."""
    written = gw.proxy.written
    if not kept:
        written(ex.route, gw.metrics.audit_lost.inc)
    # each worker's own, current as it serves; each gauge its own write (inside: the backlog read guarded too)
    written(ex.route, gw.metrics.set_audit_backlog, gw.guard.audit, written, ex.route)
    if ex.unsettled:
        written(ex.route, gw.metrics.quota_unsettled.inc)


@asynccontextmanager
async def own_exchange(gw: Gateway, ex: Exchange, headers: Mapping[str, str] | None = None, *,
                       span: str | None = None, cancelled: str = "cancelled",
                       what: str | None = None) -> AsyncIterator[Exchange]:
    """An exchange the gateway opens itself, outside an HTTP request (a batch's line: batch_line.py; a background
    Response's run and an automatic compaction's pass: responses_api.py), closed as an audited route's is: with
    `headers` and tracing on, its span started (named `span`, else its route); and on every way out of the block,
    whatever it is (its end, an exception, a cancel), close_exchange run, once, after that way out is noted on it:
    an ApiError as its error, a cancel as the outcome `cancelled` ("cancelled" unless told), any other exception
    (a BaseException too: KeyboardInterrupt, SystemExit) logged (`what`: the work, else its route) as
    error:internal. The exception goes on to the caller (a failed close too, logged); what the block catches itself
    it notes itself."""
    try:
        if headers is not None and gw.tracing.enabled:
            ex.trace = gw.tracing.start(span or ex.route, headers)
        yield ex
    except ApiError as e:
        ex.error = e
        raise
    except asyncio.CancelledError:
        ex.outcome = cancelled
        raise
    except BaseException:  # a bug, or no cancel (KeyboardInterrupt, SystemExit: until the thirtieth session audited
        log.exception("internal error in %s", what or ex.route)  # `ok`, or client_closed once an engine had it)
        ex.outcome = "error:internal"
        raise
    finally:
        try:
            await close_exchange(gw, ex)
        except Exception:  # a bug of ours: its record may be lost (Guard.finish says so when it is)
            log.exception("the exchange of %s could not be closed", what or ex.route)
            raise


class Routes:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def audited(self, extra: Mapping[str, Handler] | None = None) -> dict[str, Audited]:
        """The routes that read prompts, each behind its Exchange (`extra`: the other front doors)."""
        handlers: dict[str, Handler] = {CHAT_PATH: self.chat_completions, COMPLETIONS_PATH: self.completions,
                                        EMBEDDINGS_PATH: self.embeddings, **(extra or {})}
        return {path: Audited(self.gw, path, handler, watch=True) for path, handler in handlers.items()}

    async def chat_completions(self, request: Request, ex: Exchange) -> Response:
        return await self.route(CHAT_PATH, ChatRequest, header_dict(request), lambda: self.read_json(request), ex)

    async def completions(self, request: Request, ex: Exchange) -> Response:
        return await self.route(COMPLETIONS_PATH, CompletionRequest, header_dict(request),
                                lambda: self.read_json(request), ex)

    async def read_json(self, request: Request, *, dotted: bool = False) -> dict[str, Any]:
        """The request's JSON object (json_object; `dotted`: the Messages door's field names)."""
        ex: Exchange | None = request.scope.get(EXCHANGE)
        if ex is not None and ex.principal is not None:  # a caller whose requests per minute admit found full is
            await self.gw.guard.quotas.refuse_spent(ex.principal)  # refused before its body costs a read and a parse
        limit = self.gw.spec.gateway.max_body_bytes
        raw = await read_body(request, limit, body_too_large("request body", limit))
        # a long body is parsed, depth-checked and counted on the gateway's parse threads (body_values.OFF_LOOP_BYTES)
        if len(raw) <= OFF_LOOP_BYTES:
            return json_object(raw, dotted=dotted)
        return await self.gw.parses.run(lambda: json_object(raw, dotted=dotted),
                                        owner=ex.principal.tenant if ex is not None and ex.principal else "")

    async def route(self, path: str, schema: type[ChatRequest | CompletionRequest], headers: Mapping[str, str],
                    read_body: Callable[[], Awaitable[dict[str, Any]]], ex: Exchange, *,
                    server_tools: bool = True, documents: DocumentsAt = (),
                    caller: Principal | None = None, arrived: float | None = None) -> Response:
        """The one pipeline. The front doors (messages_api.py, responses_api.py) call it with a body that
        `read_body` translates to Chat Completions and the headers they map (x-api-key -> authorization).
        `server_tools=False`: every tool is the client's, even one named like a server-side tool.
        `documents`: the chat content parts that are documents (read after `read_body`, which may
        fill it: model_texts.DocumentsAt).
        `caller`: who asks, already authenticated (a batch's line runs as its creator: batch_line.py).
        `arrived`: the gateway clock's time the request arrived, whence its deadline counts (default now): an
        automatic compaction's answer gets what its pass left of it (urgency.Deadline, responses_api.py). Its
        wait in the admission queue (its class's longest wait, its SLO's) counts from now, as any request's."""
        gw = self.gw
        started = gw.clock()
        arrived = started if arrived is None else arrived
        try:
            # who asks first: an unauthenticated client learns nothing of the schema and costs no body read
            ex.principal = principal = caller or gw.guard.principal(headers.get("authorization"),
                                                                    headers.get(H_TENANT))
            ex.body = body = await read_body()
            # llama.cpp's web UI sends them with every message (max_tokens -1 by default): no 400
            for name, why in drop_unserved(body).items():
                log.info("%s of tenant %s: %s left out of the engine's request (%s)", path, principal.tenant, name, why)
            try:
                parsed: ChatRequest | CompletionRequest = schema.model_validate(body)
            except ValidationError as e:
                raise from_validation(e) from e
            ex.model = parsed.model
            ex.trace.parsed(parsed.model, body)
            policy_name, hedge = self.asked(principal, headers)
            policy = gw.policies[policy_name]
            # the model's scope before its existence, and a model not found answered with the models the key may
            # use: a key learns no other model of the grid (as /v1/models shows it only its own)
            gw.guard.authorize(ex)
            decision_id = f"dec-{os.urandom(8).hex()}"  # 16 random hex digits (uuid4() took 5x as long)
            asked = build_request_info(decision_id, parsed, headers, gw.cities, gw.known_models,
                                       gw.spec.gateway.max_output_tokens, gw.location,
                                       may_use=principal.scopes.allows_model)
            # scopes before any work for the request: a key not granted the model learns nothing of its context
            # and has no image fetched
            gw.guard.authorize(ex, policy_name, asked.allowed_jurisdictions)
            prompt = parsed.prompt_text()
            # a long body's texts are collected on the parse threads (a walk of every value the firewall reads)
            texts = await collected(body, lambda: chat_texts(body, documents) if path == CHAT_PATH
                                    else completion_texts(body), gw.parses, principal.tenant)
            images = False
            if path == CHAT_PATH:
                images = check_images(parsed.model, body, gw.spec.models)
                check_tool_choice(body)
                # OpenAI's chat (its door, an OpenAI batch's line) reads no consecutive assistants as one turn
                check_tool_results(body.get("messages"), assistants_merge=not _openai_chat(ex.route))
                check_legacy_functions(parsed.model, body, gw.serving_kinds)  # a 400 unless hosted engines serve them
            # what the template puts into the prompt beside the messages counts too (documents, tools, template
            # variables): checked before the firewall reads any of it
            prompt_chars = len(prompt) + beside_messages(texts)
            prompt_param = "messages" if path == CHAT_PATH else "prompt"
            at_least = check_context(parsed.model, prompt_chars, gw.spec.models, prompt_param, prompt)
            refuse_unredacted_logprobs(bool(parsed.logprobs) if isinstance(parsed, ChatRequest) else parsed.logprobs is not None,
                                       gw.guard.firewall.redacts_output(principal.tenant), "logprobs")
            urgency = request_urgency(headers, body, principal, gw.tenant_levels.get(principal.tenant, DEFAULT_LEVEL))
            ex.ticket = Ticket(principal.tenant, urgency.level, urgency.deadline_ms,
                               deadline_field=urgency.deadline_field)
            # the prompt's lower bound: the router's context filter keeps it from a model that cannot hold it
            info = scope_request(principal, asked, priority=urgency.level, deadline_ms=urgency.deadline_ms,
                                 min_prompt_tokens=at_least)
            loop = None
            if path == CHAT_PATH and _offers_tools(body):
                # server-side tools run in the loop; client tools too on a model whose engines need constrained
                # output for tool calls (the loop returns the model's call to the client, OpenAI's way)
                registry = gw.agents.tools if server_tools else _NO_SERVER_TOOLS
                loop = replace(validate_tool_request(body, registry, gw.agents.loop),  # 400s before routing
                               server_tools=wants_server_tools(body, registry))
                refuse_unallowed_tools(body, registry, principal)
                context = model_context(parsed.model, gw.spec.models)
                if context is not None:  # a later turn that surely overflows ends the loop (finish "length"); a
                    # turn's engine that counts more than the context is not charged it (LoopConfig.most_turn_tokens)
                    loop = replace(loop, max_prompt_chars=context * MAX_CHARS_PER_TOKEN, most_turn_tokens=context)
            choices = _choices(parsed, body, loop)
            ex.ticket.width = choices  # each an engine request of its own (engines/fan_out.py), in the ledger
            reserved = info.prompt_tokens + choices * info.max_output_tokens
            if loop is not None and loop.server_tools:  # the loop's first turn (its prompt with the tools' text, and the
                # fewest output tokens it is sent with): each turn reserves the rest of its max_tokens as it starts
                reserved = first_turn_tokens(body, registry, loop, gw.spec.models.get(parsed.model))
            bound = None
            if loop is None or not loop.server_tools:  # the engine decodes no more than the grid's limit where the
                # client set none, each attempt's by its own model's context (Proxy._attempt; the reservation is
                # DEFAULT_OUTPUT_TOKENS, settled to what it decoded; a loop with server-side tools: each turn sets its
                # own max_tokens, reserved as it starts: agents.loop._turn_base, Guard.extend)
                bound = OutputBound(longest_prompt_tokens(parsed, asked.prompt_tokens),
                                    gw.spec.gateway.max_output_tokens)
            if not ex.preadmitted:  # a background Response's run: admitted by its create (Exchange.take_admission)
                await gw.guard.admit(ex, body, prompt, reserved,
                                     policy=policy_name, jurisdictions=asked.allowed_jurisdictions)
            if bound is not None and output_limit(body) is None and bound.grid_limit > info.max_output_tokens:
                # no limit of its own: admission reserved DEFAULT_OUTPUT_TOKENS a choice; each engine request may
                # decode no more than what its token limits give it room for, up to the grid's limit (Guard.widen)
                least = body.get("min_tokens")  # validated: an int, or None
                more = await gw.guard.widen(ex, choices * (bound.grid_limit - info.max_output_tokens),
                                            choices * max(0, (least or 0) - info.max_output_tokens))
                bound = replace(bound, grid_limit=info.max_output_tokens + more // choices)
            if images:  # image URLs fetched here, from public addresses, not by the engine: once the request is
                # within its quotas (a tenant past its limit has nothing fetched), before the firewall reads it
                await gw.images.inline(body, principal.tenant)
            await gw.guard.screen_request(ex, body, texts)
            if gw.right_sizer is not None:  # the prompt's quality estimate (an embedding) for the routing: once the
                # request is within its quotas and past the firewall, as the rest of the routing
                info = gw.right_sizer.apply(info, prompt, principal.tenant)
        except ApiError as e:
            count_rejected(gw, ex.route, e.code or "error")
            raise
        router, snapshot = gw.router(policy_name), gw.store.snapshot

        def decide(request: RequestInfo) -> Decision:
            return router(request, snapshot(), policy, gw.rng)

        try:
            decision = await gw.admission.admit(_spent(info, started - arrived), decide, ex.ticket, started,
                                                policy.ttft_slo_ms)
        except Refused as refused:  # shed (429) or a deadline it cannot meet (503), before any engine work
            if refused.decision is not None:
                kept = self._keep(ex, refused.decision, parsed.model, info, policy_name)
                kept.status = refused.error.code or "refused"
                await self._publish(kept)
            count_rejected(gw, ex.route, refused.error.code or "error")
            raise refused.error from None
        record = self._keep(ex, decision, parsed.model, info, policy_name)
        record.output_bound = bound
        record.deadline = urgency.budget(arrived)  # a failover or an escalation gets what is left of it (proxy.py)
        await self._publish(record)
        if decision.chosen is None:
            record.status = "rejected"
            try:  # a prompt no model the caller may reach can hold: the context check's 400, not a 503
                refuse_too_long(decision, snapshot(), info.min_prompt_tokens, prompt_chars, prompt_param, HARD_FILTERS)
            except InvalidRequest as e:
                count_rejected(gw, ex.route, e.code or "error")
                raise
            count_rejected(gw, ex.route, "no_eligible_endpoint")
            hide = gw.proxy.names.hide  # an unhealthy endpoint's reason is its engine's error: no address in it
            # a caller that is not an operator reads the endpoints that may serve it only (as in its decisions)
            servable = None if gw.guard.reader_of(principal) is None else self._servable(principal.scopes)
            details = "; ".join(f"{r.endpoint_id}: {r.filter} ({hide(r.reason, r.endpoint_id)})" for r in decision.rejected
                                if servable is None or r.endpoint_id in servable)
            # only rules that a retry cannot change (residency, the model, its context, quality, the tenant's): not retried
            hard = bool(decision.rejected) and {r.filter for r in decision.rejected} <= HARD_FILTERS
            raise NoEligibleEndpoint(f"{decision.reason}." + (f" {details}" if details else ""),
                                     headers={"x-aigrid-decision": decision_id},
                                     retry=False if hard else None)
        # a live request's own Authorization header, re-verified before each of its tool loop's model turns (a
        # token's exp); a background run's and a batch line's (no client: no hangup) keep no token that is read again
        live = headers.get("authorization") if ex.hangup is not None else None
        return await self._forward(path, body, parsed, ex, hedge, loop, live)

    def _keep(self, ex: Exchange, decision: Decision, model: str, info: RequestInfo, policy_name: str) -> DecisionRecord:
        """The decision onto the exchange and into the decision log (explain, the dashboard)."""
        assert ex.principal is not None
        ex.decision = decision
        ex.record = record = DecisionRecord(decision, time.time(), ex.principal.tenant, model, info.client_location,
                                            affinity_keys=(info.prefix_hash, info.session), trace=ex.trace,
                                            prompt_tokens=info.prompt_tokens,
                                            width=ex.ticket.width if ex.ticket is not None else 1)
        ex.trace.decided(decision, policy_name, ex.principal.tenant)
        self.gw.decisions.add(record)
        return record

    async def _publish(self, record: DecisionRecord) -> None:
        if self.gw.hub is not None:  # `aigrid explain` may ask any worker: shared with its outcome, or if it runs long
            self.gw.hub.decision_made(record)

    def _tool_loop(self, loop: LoopConfig, ex: Exchange, stream: bool, json_answer: bool = False,
                   authorization: str | None = None, asked_mode: ToolMode | None = None) -> Wrap:
        """Run the agent's tool loop at the chosen site, beside its engine (agents/) (on a native model with the
        client's tools only, when `json_answer`: the client's JSON response_format beside them); every tool result
        passes the firewall's choke point, its verdicts go on the exchange. Its finished model turns' usage
        goes on the exchange as they end (charged if the client leaves before the answer's count comes); each
        model turn grows the request's quota reservation by its estimate before it runs (Guard.extend: sent with
        a lower max_tokens where the quota has room for fewer; the loop ends, stop "token_budget", when it has no room); a streamed loop's client is watched through
        its whole answer (a hang-up stops the loop at once), and the prompt of a later model turn its engine
        holds is charged with them if it stops there. `authorization`: a live request's own header, verified again
        before each model turn (Authenticator.again: a bearer token's exp; None for a background run, a batch line).
        `asked_mode`: the request's `aigrid_tool_mode`, taken out of the body with the other extensions (_forward): a
        loop runs in it whatever its model's own mode (a native model's request of the client's tools alone runs no
        loop: it is sent to the engine as the client wrote it)."""
        agents, screen = self.gw.agents, self.gw.guard.screen
        assert ex.principal is not None
        caller = ex.principal
        tenant = caller.tenant

        async def screen_tool_output(texts: Sequence[ModelText]) -> Screened:
            screened = await screen.check(tenant, texts)
            ex.verdicts.extend(screened.verdicts)
            return screened

        def spent(so_far: Mapping[str, int], holding: Mapping[str, Any] | None) -> None:  # its own running total
            ex.loop_usage = dict(so_far)
            ex.loop_holding = 0 if holding is None else turn_prompt_tokens(holding)

        async def reserve(payload: Mapping[str, Any]) -> int | None:  # each turn reserves its own estimate (its
            # prompt and max_tokens, fewer where the quota has room for fewer: the turn's max_tokens) before it runs,
            # past what the reservation holds unused (admission's, for the first); no room ends the loop there
            # first its caller is asked again, as a batch's next line (Authenticator.again): a key revoked (its tenant
            # removed) while the loop runs raises AuthenticationError, and the loop ends there, stop "revoked"
            # (before the thirty-seventh session, brief ATK8, a background Response ran on to aigrid_max_steps)
            # a live request's bearer token is verified again too, its exp read: expired, the loop ends the same way
            # (until the thirty-seventh session, brief AUDSTOP, a live loop of a token ran on past its exp)
            self.gw.guard.authenticator.again(caller.tenant, caller.method, caller.key_id, caller.scopes,
                                              made="this request", authorization=authorization)
            out = output_limit(dict(payload)) or DEFAULT_OUTPUT_TOKENS
            return await self.gw.guard.extend(ex, turn_prompt_tokens(payload), out)

        def stopped(stop: str) -> None:  # why the loop ended, into its audit record and access line (Exchange.loop_stop)
            ex.loop_stop = stop

        registry = agents.tools if loop.server_tools else _NO_SERVER_TOOLS
        allows_tool = ex.principal.scopes.allows_tool
        watch = ex.hangup if stream else None
        firewall = self.gw.guard.firewall

        def shown(step: Step) -> Step:  # what the client sees of a step, under the tenant's output policy
            out, verdicts = redacted_step(firewall, tenant, step)
            ex.verdicts.extend(verdicts)
            return out

        def wrap(engine: Engine, cand: Candidate) -> Engine:
            mode = self.gw.spec.models[cand.model].tool_calls
            # the engine calls the client's tools itself, unless the answer is held to a JSON format: an engine
            # given both applies the format to the whole turn and calls no tool (vLLM), or refuses (llama-server);
            # the loop offers the tools without it and holds the answer to it (agents/loop.py)
            if mode == "native" and not loop.server_tools and not json_answer:
                return engine
            runs: dict[str, dict[str, Any]] = {}

            def ran(call: Call, step: Step | None) -> None:  # each tool run into the audit record, as it starts
                if step is None:  # (one a cancel cuts off still acts) and, updated, as it ends
                    runs[call.id] = run = {"tool": call.name, "site": cand.site_id, "call_id": call.id,
                                           "arguments": call.raw_arguments if call.arguments is None else call.arguments}
                    ex.tool_runs.append(run)
                else:
                    runs[call.id].update(ok=step.ok, ms=round(step.duration_ms, 2))

            # the tenant's tool scope holds for the registry the loop reads when it starts too: a tool an MCP
            # server adds since the request's check (tenants.NAME.tools) is not one this tenant has run; each
            # tool as the request's tenant sees it at its site (the sql tool: its own databases described too)
            context = ToolContext(cand.site_id, tenant)
            return ToolLoopEngine(engine, registry.scoped(allows_tool, context), context=context,
                                  config=dataclasses.replace(loop, mode=asked_mode or mode), screen=screen_tool_output,
                                  watch=watch, on_usage=spent, show=shown if firewall.redacts_output(tenant) else None,
                                  on_tool=ran, before_turn=reserve, on_stop=stopped)

        return wrap

    async def _forward(self, path: str, body: dict[str, Any], parsed: ChatRequest | CompletionRequest,
                       ex: Exchange, hedge: HedgePolicy | None, loop: LoopConfig | None = None,
                       authorization: str | None = None) -> Response:
        """Proxy with the tenant's output checks; their verdicts go on the exchange."""
        fw = self.gw.guard.firewall
        assert ex.principal is not None and ex.decision is not None and ex.record is not None
        tenant = ex.principal.tenant
        json_answer = structured(body.get("response_format"))  # the answer is JSON: read as such (output_filter)
        ex.steps = steps = loop is not None and loop.server_tools  # aigrid_steps are the gateway's (else an engine's)
        checked = fw.policy(tenant).pii_output != "off"  # else no output check reads the answer's tool calls
        tools = offered_names(body) if checked else frozenset()  # a call naming one keeps its name (CallNames)
        one_call = asks_one_call(body)  # parallel_tool_calls: false (each door's): its answer holds one call at most
        if parsed.stream:
            wants_usage = parsed.stream_options is not None and parsed.stream_options.include_usage
            if not wants_usage:  # meter with the engine's own count, then hide it from the client again
                body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
            ex.output = OutputFilter(fw.redacts_output(tenant), strip_usage=not wants_usage,  # also meters usage
                                     json_answer=json_answer, steps=steps, tools=tools, one_call=one_call)

        def redact(answer: bytes) -> bytes:  # a whole answer, or an engine's refusal of a stream (proxy.py)
            if one_call:  # its first tool call only, before the redaction reads it (one_call.py)
                answer = first_call_only(answer)
            if not checked:
                return answer
            redacted, verdicts = redact_json_answer(fw, tenant, answer, json_answer, steps, tools)
            ex.verdicts.extend(verdicts)
            return redacted

        # the loop's extensions are the gateway's, never an engine's (docs/agents.md): read by now into `loop`
        # (validate_tool_request), the asked tool mode apart, which the loop is given; until review RV1 of the
        # thirty-eighth session they reached the engine where no loop ran (no tool; a native model's client tools)
        asked_mode = body.get("aigrid_tool_mode") if loop is not None else None
        for name in EXTENSIONS:
            body.pop(name, None)
        wrap = None if loop is None else self._tool_loop(loop, ex, bool(parsed.stream), json_answer, authorization,
                                                         asked_mode)
        if (parsed.n or 1) > 1 or (isinstance(parsed, CompletionRequest) and prompts_of(body)):
            wrap = _fan_out(parsed.n or 1, self.gw.proxy.stream_idle_s)  # the engine asked once per answer, merged
        if isinstance(parsed, CompletionRequest) and (parsed.echo or parsed.logprobs is not None):
            wrap = _legacy_completions(body, wrap)  # echo and the legacy logprobs where the engine leaves them out
        escalate = None if wrap is not None or parsed.stream or path != CHAT_PATH else self._escalation(body, ex)
        if loop is not None and loop.server_tools:
            # a hedge runs a second attempt beside a slow first one; a loop's first byte comes after whole model turns
            # and tool runs (always "slow"), and its server-side tools act: never two runs of it at once
            hedge = None
        if loop is not None and loop.server_tools and not parsed.stream and ex.hangup is not None:
            # server-side tools act (SQL, MCP, the web): a whole (non-streamed) loop once started runs to its end
            # (docs/reliability.md); a streamed one stops at a hang-up, a tool already running left to finish
            ex.hangup.hold()
        return await self.gw.proxy.forward(path, body, ex.decision, ex.record, parsed.stream, hedge, output=ex.output,
                                           redact_answer=redact if checked or one_call else None, wrap=wrap,
                                           escalate=escalate)

    def _escalation(self, body: dict[str, Any], ex: Exchange) -> Escalation | None:
        """A right-sized chat answer of a tenant with `escalate`: asked with log-probabilities (escalation.py)."""
        sizer = self.gw.right_sizer
        assert ex.principal is not None and ex.decision is not None
        cfg = None if sizer is None else sizer.escalations.get(ex.principal.tenant)
        if sizer is None or cfg is None or ex.decision.model_choice is None:
            return None
        asked = body.get("logprobs") is True
        body["logprobs"] = True
        return Escalation(cfg.below_confidence, cfg.within_ms / 1000.0, sizer.sizes, strip=not asked)

    async def embeddings(self, request: Request, ex: Exchange) -> Response:
        """OpenAI /v1/embeddings, computed by the gateway's embedder (all-MiniLM-L6-v2), through the same
        auth, scope, quota, abuse and audit stages as the completion routes. Inputs are embedded, never
        read by a model that follows instructions, so the injection check does not apply."""
        gw = self.gw
        try:
            headers = header_dict(request)
            ex.principal = principal = gw.guard.principal(headers.get("authorization"), headers.get(H_TENANT))
            ex.body = body = await self.read_json(request)
            model = body.get("model", "")
            if not isinstance(model, str) or len(model) > 256:  # as the model routes' schema: the access line, the
                # audit record and the 404's message held it whole (3 MB of a model: 6 MB of audit record each)
                raise InvalidRequest("model must be the name of an embedding model, at most 256 characters",
                                     param="model")
            ex.model = model
            texts = embedding_inputs(body)
            units = sum(prompt_units(t) for t in texts)  # a token weight (request_info.prompt_units)
            await gw.guard.admit(ex, body, "\n".join(texts), max(1, units // CHARS_PER_TOKEN))
        except ApiError as e:
            count_rejected(gw, ex.route, e.code or "error")
            raise
        # a model not found is answered with the embedding models the key may use (as the model routes answer)
        answer = await create_embeddings(body, {name: e for name, e in gw.agents.embedders.items()
                                                if principal.scopes.allows_model(name)}, principal.tenant)
        ex.usage = answer["usage"]
        return json_response(answer)

    def asked(self, principal: Principal, headers: Mapping[str, str]) -> tuple[str, HedgePolicy | None]:
        """The policy (x-aigrid-policy, else the key's, the tenant's, the grid's default) and the hedge
        (x-aigrid-hedge) a model request's headers ask for, checked: every request here (route), a batch's create
        on the headers its lines will be sent with (batch_line.kept_headers)."""
        gw = self.gw
        policy_name = (headers.get(H_POLICY) or principal.scopes.policy
                       or gw.tenant_policies.get(principal.tenant, gw.spec.gateway.default_policy))
        if policy_name not in gw.policies:
            known = ", ".join(sorted(gw.policies))
            if headers.get(H_POLICY):
                raise InvalidRequest(f"unknown policy {policy_name!r}; known: {known}", param=H_POLICY)
            # the key's binding (`aigrid keys create --policy`, not checked against a grid): the operator's
            # to mend, not a mistake in this request
            log.warning("key %s is bound to policy %r, which this grid does not define (known: %s)",
                        principal.key_id, policy_name, known)
            raise PermissionDenied(f"key {principal.key_id} is bound to policy {policy_name!r}, which this grid "
                                   "does not define; ask the grid's operator to issue the key again")
        return policy_name, self._hedge(headers)

    def _hedge(self, headers: Mapping[str, str]) -> HedgePolicy | None:
        spec = self.gw.spec.gateway.hedge
        asked = headers.get(H_HEDGE, "").strip().lower()
        if asked not in ("", "on", "off"):
            raise InvalidRequest(f"{H_HEDGE} must be 'on' or 'off'", param=H_HEDGE)
        if asked == "on" and not (spec.enabled or spec.clients_may_ask):
            # a hedged request is charged one answer: its second attempt is engine work no quota counts
            raise PermissionDenied(f"{H_HEDGE}: on is not allowed on this grid (gateway.hedge.clients_may_ask is "
                                   "false); leave the header out or send 'off'", param=H_HEDGE, code="hedge_not_allowed")
        enabled = spec.enabled if asked == "" else asked == "on"
        return HedgePolicy(spec.factor, spec.min_ms) if enabled else None

    async def list_models(self, request: Request, ex: Exchange) -> Response:
        scopes = await self._caller_scopes(request, ex)
        return json_response(model_page(model_list(self.gw.spec, self.gw.agents.embedders, scopes),
                                        request.query_params))

    async def get_model(self, request: Request, ex: Exchange) -> Response:
        model_id = request.path_params["model_id"]
        scopes = await self._caller_scopes(request, ex)
        found = find_model(self.gw.spec, self.gw.agents.embedders, model_id, scopes)
        if found is None:
            known = ", ".join(m["id"] for m in model_list(self.gw.spec, self.gw.agents.embedders, scopes)["data"])
            raise ModelNotFound(f"The model '{model_id}' does not exist on this grid. Available: {known}",
                                param="model")
        return json_response(found)

    async def _caller_scopes(self, request: Request, ex: Exchange) -> Scopes:
        """What the caller's key may use (401 without a valid key when enforcement is on; the Anthropic SDK
        sends its key as `x-api-key`), the caller on the exchange for the read's audit record."""
        principal, _ = await authenticate(self.gw, request, ex)
        return principal.scopes

    async def get_decision(self, request: Request, ex: Exchange) -> Response:
        """One decision, for `aigrid explain`: audited (an operator reads every tenant's)."""
        principal, tenant = await self._decision_reader(request, ex)
        decision_id = request.path_params["decision_id"]
        rec = self.gw.decisions.get(decision_id)
        found = rec.to_dict() if rec is not None else None
        if found is None and self.gw.hub is not None:  # served by another worker
            found = await self.gw.hub.decision(decision_id)
        servable = None if tenant is None else self._servable(principal.scopes)
        # another tenant's, or one routed where this key may not be: hidden
        if found is None or (tenant is not None and found.get("tenant") != tenant) \
                or (servable is not None and not readable_by(found, servable)):
            raise NotFound(f"no decision {decision_id!r} "
                           "(the gateway keeps only the most recent decisions)", param="decision_id")
        if self._reads_addresses(principal):
            return json_response(found)
        return json_response(self.gw.proxy.names.decision(found, self.gw.engines if servable is None else servable))

    async def recent_decisions(self, request: Request, ex: Exchange) -> Response:
        """The latest decisions the caller may see: audited (an operator reads every tenant's), and counted as one
        request against requests per minute (a `heavy` read: up to 1,000 decisions, 2.7 MB and about 60 ms of the event
        loop a call; uncounted, four clients repeating it took another tenant's GET /v1/models from 5 to 600 ms)."""
        principal, _ = await authenticate(self.gw, request, ex, heavy=True)
        tenant = self.gw.guard.reader_of(principal)
        asked = plain_int(request.query_params.get("limit", "50"))
        if asked is None or not 1 <= asked <= 1000:
            raise InvalidRequest("limit must be an integer between 1 and 1000", param="limit")
        records = None  # the tenant's own read where they are kept: the work is what is answered
        if self.gw.hub is not None:  # every worker's, newest first
            records = await self.gw.hub.recent_decisions(asked, tenant)
        if records is None:  # one process, or the hub out of reach: this worker's own
            records = [r.to_dict() for r in self.gw.decisions.recent(asked, tenant)]
        if self._reads_addresses(principal):
            return json_response({"data": records})
        names = self.gw.proxy.names  # engines named by their endpoints' ids, not their addresses
        if tenant is None:  # every tenant's (enforcement off): every endpoint's rejections
            records = [names.decision(r, self.gw.engines) for r in records]
        else:
            servable = self._servable(principal.scopes)
            records = [names.decision(r, servable) for r in records
                       if r.get("tenant") == tenant and readable_by(r, servable)]
        return json_response({"data": records})

    async def _decision_reader(self, request: Request, ex: Exchange) -> tuple[Principal, str | None]:
        """Who reads decisions and whose (Guard.reader: None for every tenant's), the caller on the exchange for its
        audit record; like every audited read, not served while the audit log cannot take the record."""
        principal, _ = await authenticate(self.gw, request, ex)
        return principal, self.gw.guard.reader_of(principal)

    def _reads_addresses(self, principal: Principal) -> bool:
        """The one rule for the engines' own addresses (base URLs, internal hosts and ports) where a caller reads
        them: /v1/grid's `url` and a failing endpoint's `reason`, a decision's attempt errors and rejection reasons
        (`aigrid explain`). Only a caller the gateway knows to be an operator reads them: an operator tenant's key
        with security.enforce on. With enforcement off it knows nobody (any caller may send any x-aigrid-tenant; a
        keyless grid behind a proxy or on 0.0.0.0 takes callers it has never met): every caller still reads every
        tenant's decisions and the whole grid, each engine named by its endpoint's id (engine_names.EngineNames),
        as a tenant reads it. The log and the audit records keep the address; the 502/503 messages, a stream's
        error event and the live map never show it (anyone's)."""
        return self.gw.guard.enforcing and self.gw.guard.reader_of(principal) is None

    def _servable(self, scopes: Scopes) -> dict[str, str]:
        """The endpoints that may serve a caller of these scopes (the routing's hard filters), each with its model:
        what /v1/grid shows a caller that is not an operator, and what its decisions may name."""
        view = self.gw.store.snapshot()
        return {e.id: e.model for e in view.endpoints
                if may_serve(scopes, e.model, e.site_id, view.sites[e.site_id].jurisdiction)}

    async def grid(self, request: Request, ex: Exchange) -> Response:
        # any valid key: no tenant data here; the engines' own URLs (internal addresses) only for an operator's key
        # (_reads_addresses), in `url` and in a failing engine's `reason` (named by its endpoint's id for anyone
        # else, every caller of a grid without keys among them); a caller that is not an operator reads
        # the part of the grid that may serve it (its key's models, sites and jurisdictions), as /v1/models lists
        # only the models it may use
        principal = await authenticate_read(self.gw, request, ex)
        operator = self.gw.guard.reader_of(principal) is None
        addresses = self._reads_addresses(principal)  # not with enforcement off, where anyone is an "operator"
        view = self.gw.store.snapshot()
        servable = None if operator else self._servable(principal.scopes)
        shown = [e for e in view.endpoints if servable is None or e.id in servable]
        sites = {s.id: {"name": s.name, "lat": s.location.lat, "lon": s.location.lon,
                        "jurisdiction": s.jurisdiction, "hardware": s.hardware} for s in view.sites.values()
                 if operator or any(e.site_id == s.id for e in shown)}
        endpoints = []
        for e in shown:
            st = self.gw.store.state(e.id)  # fresh, so telemetry_age_s grows while an engine is silent
            endpoints.append({"id": e.id, "site": e.site_id, "model": e.model, "engine": e.engine,
                              **({"url": without_userinfo(self.gw.engines[e.id].base_url)} if addresses else {}),
                              "slots": e.max_concurrency, "healthy": st.healthy, "circuit": str(st.circuit),
                              "running": st.running, "waiting": st.waiting, "kv_usage": st.kv_usage,
                              "ttft_s": st.ttft_s, "error_rate": round(st.error_rate, 4),
                              "reason": st.reason if addresses else self.gw.proxy.names.hide(st.reason, e.id),
                              "telemetry_age_s": round(st.age_s, 2),
                              "measured_rtt_ms": None if st.rtt_ms is None else round(st.rtt_ms, 2),
                              "pending_requests": st.pending_requests,
                              "pending_prompt_tokens": st.pending_prompt_tokens, "decoding": st.decoding,
                              "prefill_queue": prefill_queue_dict(st.prefill_queue),
                              "calibration": calibration_dict(st.calibration)})
        return json_response({"name": self.gw.spec.name, "sites": sites, "endpoints": endpoints})

    async def livez(self, request: Request) -> Response:
        """Liveness: the gateway process serves. Unlike /healthz it stays 200 when every engine is down, so an
        orchestrator never restarts gateways because of their engines."""
        return json_response({"status": "alive"})

    async def healthz(self, request: Request) -> Response:
        """Readiness: 200 while an endpoint is healthy, else 503, to anyone (a probe or a load balancer has no key).
        Which endpoints are healthy and the shared state's health are the operators' (with enforcement off, every
        caller's): anyone else, a missing, wrong or tenant's key alike, reads the status only, never a 401."""
        view = self.gw.store.snapshot()
        healthy = [e.id for e in view.endpoints if view.state(e.id).healthy]
        status = 200 if healthy else 503
        said = "ok" if healthy else "no healthy endpoint"
        if not await self._operator_asks(request):
            return json_response({"status": said}, status)
        shared = {"backend": "in-process"} if self.gw.sync is None else self.gw.sync.status()
        return json_response({"status": said, "healthy": healthy, "endpoints": len(view.endpoints),
                              "shared_state": shared}, status)

    async def _operator_asks(self, request: Request) -> bool:
        """The caller holds an operator tenant's key (or enforcement is off); False for any other credential, whose
        refusal is audited (`_operator_refused`; a probe without a key asks nothing of an operator: no record)."""
        try:
            await self._operator_only(request, "GET /healthz", "this grid's /healthz details are read by operators",
                                      keyless_audited=False, answered="the status only")
            return True
        except ApiError:
            return False

    async def _operator_only(self, request: Request, route: str, what: str, *, keyless_audited: bool,
                             **notes: str) -> None:
        """Raises the 401 / 403 of a caller that is not an operator (nothing with enforcement off), its refusal audited
        (`_operator_refused`; one without a key only where `keyless_audited`). The caller is authenticated once: its
        principal, kept for the record (before, a refusal authenticated it a second time, Guard.principal after
        Guard.operator)."""
        guard = self.gw.guard
        if not guard.enforcing:
            return
        authorization = pipeline_headers(request).get("authorization")
        principal: Principal | None = None
        looked = False
        try:
            one_credential(self.gw, request.scope)  # as the audited routes: a proxy in front may check the other
            looked = True
            principal = guard.principal(authorization, None)
            guard.operator_of(principal, what)
        except ApiError as e:
            if authorization is not None or keyless_audited:
                await self._operator_refused(route, e, principal, None if looked else authorization, **notes)
            raise

    async def _operator_refused(self, route: str, error: ApiError, principal: Principal | None,
                                authorization: str | None, **notes: str) -> None:
        """The audit record of a refused operator check (/healthz's details, /metrics), written as an audited route's
        (close_exchange: Guard.finish, the one audit writer), naming the caller when its credentials name one (a
        tenant's key: a 403). Before, neither check left a record: a tenant's key probing them went unseen. Never
        waited for (AUDIT_WAIT_S): with the audit log full or stopped, the record is lost, logged and counted.
        `authorization`: a caller refused before it was authenticated (two credentials), looked up for the record."""
        if not self.gw.guard.audit_accepting():  # /healthz answers whatever the audit log does
            log.error("refused operator check on %s not audited: the audit log cannot take records now", route)
            # a write that fails is logged: raised here, the refusal (a 401 or 403) answered a 500
            self.gw.proxy.written(route, self.gw.metrics.audit_lost.inc)
            return
        ex = Exchange(route, time.time())
        ex.error = error
        ex.notes.update(notes)
        if principal is None and authorization is not None:
            try:
                principal = self.gw.guard.principal(authorization, None)
            except ApiError:
                pass  # a key the grid does not know: the record says "unauthenticated"
        ex.principal = principal  # None: no key, or one the grid does not know ("unauthenticated")
        await close_exchange(self.gw, ex)

    async def openapi(self, request: Request) -> Response:
        return json_response(openapi_document(__version__))

    async def metrics(self, request: Request) -> Response:
        if self.gw.spec.security.metrics == "operator":  # a refusal audited, a scrape not (one every few seconds)
            await self._operator_only(request, "GET /metrics", "this grid's /metrics is read by operators",
                                      keyless_audited=True)
        # a write that fails (a full disk) is logged, and the scrape answers with the series as last written
        gw, written = self.gw, self.gw.proxy.written
        endpoints = [(e.site_id, e.id) for e in gw.store.snapshot().endpoints]
        written("GET /metrics", gw.metrics.set_inflight, endpoints, gw.store.inflight, written, "GET /metrics")
        # drained since the last request; each series its own write (a failed one tried again at the next scrape)
        written("GET /metrics", gw.metrics.set_audit_backlog, gw.guard.audit, written, "GET /metrics")
        return Response(self.gw.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


OPENAI_BATCH_LINES = "/v1/batches (line) "
"""How an OpenAI batch's line's route begins (batch_line.BATCH_LINE_ROUTE, which imports this module)."""


def _openai_chat(route: str) -> bool:
    """A chat request OpenAI's chat door would read (its own route, an OpenAI batch's line), not one the Messages
    or Responses doors translated: those read consecutive assistant turns as one (agents/loop.check_tool_results)."""
    return route == CHAT_PATH or route.startswith(OPENAI_BATCH_LINES)


def _spent(info: RequestInfo, spent_s: float) -> RequestInfo:
    """`info` with what an earlier step of the request (an automatic compaction's pass) spent of its deadline taken
    off, for the admission queue: the deadline counts from the request's arrival, the queue's waits from now."""
    if info.deadline_ms is None or spent_s <= 0:
        return info
    return replace(info, deadline_ms=info.deadline_ms - spent_s * 1000.0)


def _offers_tools(body: Mapping[str, Any]) -> bool:
    tools = body.get("tools")
    return isinstance(tools, list) and bool(tools)


def refuse_unallowed_tools(body: Mapping[str, Any], registry: ToolRegistry, principal: Principal) -> None:
    """The client's 403 `tool_not_allowed` naming the first of the request's server-side tools its tenant may not
    have run (tenants.NAME.tools): a request before routing, a background Response at its create."""
    refused = unallowed_tool(body, registry, principal.scopes.allows_tool)
    if refused is not None:
        raise PermissionDenied(f"tools[{refused[0]}]: tenant {principal.tenant!r} may not have the server-side tool "
                               f"{refused[1]!r} run (tenants.{principal.tenant}.tools)",
                               param=("tools", refused[0]), code="tool_not_allowed")


def first_turn_tokens(body: Mapping[str, Any], registry: ToolRegistry, loop: LoopConfig,
                     model: ModelSpec | None) -> int:
    """What admission reserves of a tool loop's first model turn: its prompt's estimate with what it offers of the
    tools (a constrained turn's instructions, a native turn's definitions: the request's own estimate counts neither,
    only its `tools` as the client sent them) and the fewest output tokens it is sent with (MIN_TURN_OUTPUT, or its
    max_tokens if fewer: the rest is reserved as the turn starts, Guard.extend, shortened to the room left), in the
    model's tool-call mode (the larger of both for `auto`, whose model the routing picks)."""
    modes: tuple[ToolMode, ...] = (model.tool_calls,) if model is not None else ("constrained", "native")
    turns = (first_turn(body, registry, replace(loop, mode=mode)) for mode in modes)
    return max(turn_prompt_tokens(t) + min(output_limit(t) or DEFAULT_OUTPUT_TOKENS, MIN_TURN_OUTPUT) for t in turns)


def _choices(parsed: ChatRequest | CompletionRequest, body: Mapping[str, Any], loop: LoopConfig | None) -> int:
    """How many answers the request asks for (`n`, times the prompts of a completion's list of prompts); the
    form that more than one cannot serve is a 400."""
    n = parsed.n or 1
    if n > 1 and loop is not None:
        raise InvalidRequest("n > 1 is not served with tools: ask for one choice per request", param="n")
    prompts = body.get("prompt") if isinstance(parsed, CompletionRequest) else None  # a chat's is not read
    count = len(prompts) if isinstance(prompts, list) and prompts else 1
    choices = n * count
    if choices > MAX_FANNED_REQUESTS:  # each prompt of a list is an engine request of its own (engines/fan_out.py)
        raise InvalidRequest(f"a list of {count} prompts times n = {n} asks for {choices} answers; at most "
                             f"{MAX_FANNED_REQUESTS} a request (send more requests, or use the Batch API)",
                             param="prompt")
    return choices


def _fan_out(n: int, quiet_s: float) -> Wrap:
    def wrap(engine: Engine, cand: Candidate) -> Engine:
        return FanOutEngine(engine, n, quiet_s)

    return wrap


def _legacy_completions(body: Mapping[str, Any], outer: Wrap | None) -> Wrap:
    """The chosen engine, when its kind ignores `echo` and answers chat-format log-probabilities, behind
    LegacyCompletionsEngine; `outer` (several choices) then wraps that."""
    def wrap(engine: Engine, cand: Candidate) -> Engine:
        inner = LegacyCompletionsEngine(engine) if needs_legacy(engine, body) else engine
        return inner if outer is None else outer(inner, cand)

    return wrap
