"""One line of a batch through the one pipeline (routes.Routes.route), exactly as a live request of the
batch's creator: authentication (re-checked here), scopes, quotas, abuse signals, the firewall's choke point,
routing at urgency `batch` (the core places it only where it leaves headroom to urgent work: docs/routing.md,
"Urgency"), failover and continuation, output checks, and one audit record (routes.own_exchange) whose
route names the batch and the line's custom_id.

Who asks: the batch's creator as it was authenticated when the batch was created (no secret is kept). Each
line checks again that the tenant is still in the spec, that an API key is still there and not revoked, and
takes the scopes the tenant and the key have now; a JWT's claims are those it had at creation, narrowed by
the tenant's scopes now; a batch created without a key (enforcement off) fails its lines once keys are
enforced. One rule with a live request's (Authenticator.again).

The line's answer becomes a line of the batch's output file (2xx) or error file (any refusal or failure), in
OpenAI's shape: `{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error": null}`; a
refusal for capacity or rate (429, 503) is marked retryable (batch_runner.py tries it again later).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

from aigrid.errors import ApiError, InvalidRequest, UpstreamFailed, retry_after_s
from aigrid.gateway.batch_input import Line
from aigrid.gateway.batch_store import StoredBatch
from aigrid.gateway.envelope import bounded_error
from aigrid.gateway.exchange import Exchange
from aigrid.gateway.front_door import whole_body
from aigrid.gateway.guard import Guard
from aigrid.gateway.request_info import H_LOCATION, H_POLICY, H_RESIDENCY, parse_location, residency
from aigrid.gateway.routes import CHAT_PATH, Routes, body_too_large, own_exchange
from aigrid.gateway.schemas import ChatRequest, CompletionRequest
from aigrid.gateway.urgency import H_PRIORITY
from aigrid.security.principal import Principal, Scopes

if TYPE_CHECKING:
    from aigrid.gateway.app import Gateway

log = logging.getLogger("aigrid.gateway")
BATCH_LINE_ROUTE = "/v1/batches (line)"
"""The route of a line's exchange (its audit record, access log line), followed by the batch id and custom_id."""
KEPT_HEADERS = (H_LOCATION, H_RESIDENCY, H_POLICY, "x-aigrid-hedge")
"""The create call's headers that each line is routed with (residency, where the client is, policy)."""
RETRYABLE = frozenset({429, 503})


def kept_headers(routes: Routes, caller: Principal, headers: Mapping[str, str]) -> dict[str, str]:
    """The create call's KEPT_HEADERS, checked as every model request's are (Routes.asked: the policy and the hedge;
    the client's location; Guard.authorize_scopes: the jurisdictions asked within the grid's and the caller's, the
    policy its key is bound to), so that a header no line could be sent with is the create's 4xx naming it (until the
    thirty-fourth session it was kept unread, the batch accepted and each of its lines failed)."""
    kept = {k: v for k, v in headers.items() if k in KEPT_HEADERS}
    policy, _ = routes.asked(caller, kept)
    parse_location(kept.get(H_LOCATION), routes.gw.cities)
    routes.gw.guard.authorize_scopes(caller, None, policy, residency(kept.get(H_RESIDENCY)))
    return kept


def line_bound(gw: Gateway) -> int:
    """The most one line of a batch may hold, as a live request's body (gateway.max_body_bytes), read here only: what
    a create's check allows (batches_api), what a running batch reads of a line (batch_runner, message batches'
    results) and what a line's run refuses past (LineRun.run) are one bound."""
    return gw.spec.gateway.max_body_bytes


def line_route(bid: str, custom_id: str) -> str:
    return f"{BATCH_LINE_ROUTE} {bid} custom_id={custom_id}"


def caller_record(p: Principal) -> dict[str, Any]:
    """Who created a batch, as stored with it (no secret)."""
    return {"tenant": p.tenant, "key_id": p.key_id, "method": p.method, "scopes": p.scopes.to_dict()}


def line_caller(guard: Guard, stored: Mapping[str, Any], within: frozenset[str] | None = None) -> Principal:
    """The batch's creator as it may ask now (see the module's docstring; Authenticator.again): 401 when it no longer
    may. `within`:
    the jurisdictions the batch was made under (StoredBatch.jurisdictions: its creator's, narrowed to its input
    file's), which no line leaves, whatever the creator's key may use now."""
    caller = guard.authenticator.again(str(stored["tenant"]), str(stored["method"]), str(stored["key_id"]),
                                       Scopes.from_dict(dict(stored["scopes"])), made="this batch")
    if within is None:
        return caller
    return replace(caller, scopes=caller.scopes.narrowed_by(Scopes(jurisdictions=within)))


@dataclass(frozen=True, slots=True)
class LineResult:
    ok: bool
    record: dict[str, Any]
    """The output or error file's line."""
    usage: Mapping[str, Any] | None = None
    retry_after_s: float | None = None
    """Set when the line was refused for capacity or rate: it may be tried again after this long."""
    charged: int = 0
    """The tokens its exchange charged (Exchange.used_tokens): 0 for a line refused before any engine answered."""


def request_line(custom_id: str, status: int, request_id: str, body: Any) -> dict[str, Any]:
    return {"id": "batch_req_" + os.urandom(12).hex(), "custom_id": custom_id,
            "response": {"status_code": status, "request_id": request_id, "body": body}, "error": None}


def retry_after(e: ApiError) -> float | None:
    """How long a line refused for capacity or rate (429, 503) waits before it is tried again; None: never.
    A batch may wait longer than an SDK call would (a quota window, a spent budget that resets within the
    batch's day: its Retry-After); a refusal that says no wait helps (`retry` False without a Retry-After: a
    line larger than any window) is never tried again."""
    if e.status not in RETRYABLE:
        return None
    wait = retry_after_s(e.headers)  # the quota says Retry-After, the admission queue retry-after
    if wait is None:
        return None if e.retry is False else 0.0
    return max(wait, 0.0) if math.isfinite(wait) else None


class LineRun:
    """How every batch's line runs (the OpenAI batch's here, an Anthropic message batch's in
    message_batch_line.py): the creator's headers that route it, urgency batch, an Exchange of its own with its
    trace, the creator re-checked, and on every way out the exchange closed (routes.own_exchange: quota settled,
    one audit record).
    A subclass says how the line is served and how its answer, a refusal and an internal error are written."""

    route_name = BATCH_LINE_ROUTE

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def path(self, batch: StoredBatch) -> str:
        raise NotImplementedError

    async def serve(self, batch: StoredBatch, headers: dict[str, str], read: Callable[[], Awaitable[dict[str, Any]]],
                    ex: Exchange, caller: Principal) -> Response:
        raise NotImplementedError

    def answered(self, line: Line, status: int, answer: bytes, headers: Mapping[str, str], ex: Exchange) -> LineResult:
        raise NotImplementedError

    def refused(self, line: Line, e: ApiError, ex: Exchange) -> LineResult:
        raise NotImplementedError

    def failed(self, line: Line, ex: Exchange) -> LineResult:
        """An internal error of the gateway (logged by routes.own_exchange)."""
        raise NotImplementedError

    async def run(self, batch: StoredBatch, line: Line) -> LineResult:
        gw = self.gw
        headers = {k: v for k, v in batch.headers.items() if k in KEPT_HEADERS}
        headers[H_PRIORITY] = "batch"
        ex = Exchange(f"{self.route_name} {batch.id} custom_id={line.custom_id}", time.time())
        limit = line_bound(gw)

        async def read() -> dict[str, Any]:
            """The line's body, no larger than a live request's may be (gateway.max_body_bytes; the line as
            written, its custom_id, method and url with it): a batch carries nothing a request could not."""
            if len(line.text) > limit:
                raise InvalidRequest(body_too_large("this request", limit), code="request_too_large")
            return line.body()

        # its exit noted on the exchange, which is closed before the line's result is written; a cancel (the
        # gateway stopping) goes on: the line runs again on resume
        try:
            async with own_exchange(gw, ex, headers, span=self.path(batch),
                                    what=f"batch {batch.id}, line {line.custom_id}"):
                caller = line_caller(gw.guard, batch.principal, batch.jurisdictions)
                resp = await self.serve(batch, headers, read, ex, caller)
                answer = await whole_body(resp)
        except ApiError as e:  # refused by the pipeline, or every attempt failed
            result = self.refused(line, e, ex)
        except Exception:  # noqa: BLE001 -- a bug of ours, logged by own_exchange: the line failed
            result = self.failed(line, ex)
        else:
            result = self.answered(line, resp.status_code, answer, resp.headers, ex)
        return replace(result, charged=ex.used_tokens())


class BatchLine(LineRun):
    """A line of an OpenAI batch: served by Routes.route on the batch's endpoint."""

    def __init__(self, routes: Routes) -> None:
        super().__init__(routes.gw)
        self.routes = routes

    def path(self, batch: StoredBatch) -> str:
        return str(batch.obj["endpoint"])

    async def serve(self, batch: StoredBatch, headers: dict[str, str], read: Callable[[], Awaitable[dict[str, Any]]],
                    ex: Exchange, caller: Principal) -> Response:
        endpoint = self.path(batch)
        return await self.routes.route(endpoint, ChatRequest if endpoint == CHAT_PATH else CompletionRequest,
                                       headers, read, ex, caller=caller)

    def answered(self, line: Line, status: int, answer: bytes, headers: Mapping[str, str], ex: Exchange) -> LineResult:
        try:
            parsed: Any = orjson.loads(answer)
        except orjson.JSONDecodeError:
            bad = UpstreamFailed("the engine's answer was not JSON")
            return LineResult(False, request_line(line.custom_id, bad.status, ex.request_id,
                                                  bad.envelope()))
        ok = status < 400
        usage = parsed.get("usage") if ok and isinstance(parsed, dict) else None
        return LineResult(ok, request_line(line.custom_id, status, ex.request_id, parsed),
                          usage if isinstance(usage, dict) else None)

    def refused(self, line: Line, e: ApiError, ex: Exchange) -> LineResult:
        return LineResult(False, request_line(line.custom_id, e.status, ex.request_id, bounded_error(e.envelope())),
                          retry_after_s=retry_after(e))

    def failed(self, line: Line, ex: Exchange) -> LineResult:
        return LineResult(False, request_line(line.custom_id, 500, ex.request_id, {"error": {
            "message": "internal error", "type": "server_error", "param": None, "code": "internal_error"}}))
