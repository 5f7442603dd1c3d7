"""One line of a batch through the one pipeline (routes.Routes.route), exactly as a live request of the
batch's creator: authentication (re-checked here), scopes, quotas, abuse signals, the firewall's choke point,
routing at urgency `batch` (the core places it only where it leaves headroom to urgent work: docs/routing.md,
"Urgency"), failover and continuation, output checks, and one audit record (routes.close_exchange) whose
route names the batch and the line's custom_id.

Who asks: the batch's creator as it was authenticated when the batch was created (no secret is kept). Each
line checks again that the tenant is still in the spec, that an API key is still there and not revoked, and
takes the scopes the tenant and the key have now; a JWT's claims are those it had at creation, narrowed by
the tenant's scopes now; a batch created without a key (enforcement off) fails its lines once keys are
enforced.

The line's answer becomes a line of the batch's output file (2xx) or error file (any refusal or failure), in
OpenAI's shape: `{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error": null}`; a
refusal for capacity or rate (429, 503) is marked retryable (batch_runner.py tries it again later).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from aigrid.errors import ApiError, AuthenticationError, UpstreamFailed
from aigrid.gateway.batch_input import Line
from aigrid.gateway.batch_store import StoredBatch
from aigrid.gateway.exchange import Exchange
from aigrid.gateway.front_door import whole_body
from aigrid.gateway.guard import Guard
from aigrid.gateway.request_info import H_LOCATION, H_POLICY, H_RESIDENCY
from aigrid.gateway.routes import CHAT_PATH, Routes, close_exchange
from aigrid.gateway.schemas import ChatRequest, CompletionRequest
from aigrid.gateway.urgency import H_PRIORITY
from aigrid.security.principal import Principal, Scopes

log = logging.getLogger("aigrid.gateway")
BATCH_LINE_ROUTE = "/v1/batches (line)"
"""The route of a line's exchange (its audit record, access log line), followed by the batch id and custom_id."""
KEPT_HEADERS = (H_LOCATION, H_RESIDENCY, H_POLICY, "x-aigrid-hedge")
"""The create call's headers that each line is routed with (residency, where the client is, policy)."""
RETRYABLE = frozenset({429, 503})


def line_route(bid: str, custom_id: str) -> str:
    return f"{BATCH_LINE_ROUTE} {bid} custom_id={custom_id}"


def caller_record(p: Principal) -> dict[str, Any]:
    """Who created a batch, as stored with it (no secret)."""
    return {"tenant": p.tenant, "key_id": p.key_id, "method": p.method, "scopes": p.scopes.to_dict()}


def line_caller(guard: Guard, stored: Mapping[str, Any]) -> Principal:
    """The batch's creator as it may ask now (see the module's docstring); 401 when it no longer may."""
    tenant = guard.tenants.get(str(stored["tenant"]))
    if tenant is None:
        raise AuthenticationError(f"the tenant {stored['tenant']!r} that created this batch is no longer on this grid")
    method, key_id = str(stored["method"]), str(stored["key_id"])
    auth = guard.authenticator
    if method == "api_key":
        record = auth.keys.get(key_id)
        if record is None or record.revoked or record.tenant != tenant.id:
            raise AuthenticationError(f"the API key {key_id} that created this batch has been revoked")
        scopes = tenant.scopes.narrowed_by(record.scopes)
    elif method == "jwt":
        scopes = tenant.scopes.narrowed_by(Scopes.from_dict(dict(stored["scopes"])))
    elif auth.enforce:
        raise AuthenticationError("this batch was created without a key, and keys are now enforced")
    else:
        scopes = tenant.scopes
    return Principal(tenant.id, key_id, scopes, method)


@dataclass(frozen=True, slots=True)
class LineResult:
    ok: bool
    record: dict[str, Any]
    """The output or error file's line."""
    usage: Mapping[str, Any] | None = None
    retry_after_s: float | None = None
    """Set when the line was refused for capacity or rate: it may be tried again after this long."""


def request_line(custom_id: str, status: int, request_id: str, body: Any) -> dict[str, Any]:
    return {"id": "batch_req_" + os.urandom(12).hex(), "custom_id": custom_id,
            "response": {"status_code": status, "request_id": request_id, "body": body}, "error": None}


class BatchLine:
    def __init__(self, routes: Routes) -> None:
        self.routes = routes
        self.gw = routes.gw

    async def run(self, batch: StoredBatch, line: Line) -> LineResult:
        gw = self.gw
        endpoint = batch.obj["endpoint"]
        headers = {k: v for k, v in batch.headers.items() if k in KEPT_HEADERS}
        headers[H_PRIORITY] = "batch"
        ex = Exchange(line_route(batch.id, line.custom_id), time.time())
        if gw.tracing.enabled:
            ex.trace = gw.tracing.start(endpoint, headers)
        body = line.body()

        async def read() -> dict[str, Any]:
            return body

        try:
            try:
                caller = line_caller(gw.guard, batch.principal)
                resp = await self.routes.route(endpoint, ChatRequest if endpoint == CHAT_PATH else CompletionRequest,
                                               headers, read, ex, caller=caller)
                answer = await whole_body(resp)
            except ApiError as e:  # refused by the pipeline, or every attempt failed
                ex.error = e
                return self._refused(line, e, ex)
            except asyncio.CancelledError:  # the gateway stopping: the line runs again on resume
                ex.outcome = "cancelled"
                raise
            except Exception:  # a bug of ours: logged, the line failed
                log.exception("internal error in batch %s, line %s", batch.id, line.custom_id)
                ex.outcome = "error:internal"
                return LineResult(False, request_line(line.custom_id, 500, _request_id(ex), {"error": {
                    "message": "internal error", "type": "server_error", "param": None, "code": "internal_error"}}))
        finally:
            await close_exchange(gw, ex)
        try:
            parsed: Any = orjson.loads(answer)
        except orjson.JSONDecodeError:
            bad = UpstreamFailed("the engine's answer was not JSON")
            return LineResult(False, request_line(line.custom_id, bad.status, _request_id(ex, resp.headers),
                                                  bad.envelope()))
        ok = resp.status_code < 400
        usage = parsed.get("usage") if ok and isinstance(parsed, dict) else None
        return LineResult(ok, request_line(line.custom_id, resp.status_code, _request_id(ex, resp.headers), parsed),
                          usage if isinstance(usage, dict) else None)

    @staticmethod
    def _refused(line: Line, e: ApiError, ex: Exchange) -> LineResult:
        retry = None
        if e.status in RETRYABLE:
            try:
                retry = float(e.headers.get("retry-after", "0"))
            except ValueError:
                retry = 0.0
        return LineResult(False, request_line(line.custom_id, e.status, _request_id(ex, e.headers), e.envelope()),
                          retry_after_s=retry)


def _request_id(ex: Exchange, headers: Mapping[str, str] | None = None) -> str:
    if ex.decision is not None:
        return ex.decision.request_id
    return (headers or {}).get("x-aigrid-decision", "")
