"""One request of an Anthropic message batch (message_batches_api.py) through the one pipeline, exactly as a
live POST /v1/messages of the batch's creator: the same translation to chat and back (messages_api.py,
`MessagesApi.answer`), authentication re-checked for the request (batch_line.line_caller), scopes, quotas, the
firewall's choke point, routing at urgency `batch`, failover, output checks and one audit record whose route
names the batch and the request's custom_id.

The answer is kept as the OpenAI batch runner keeps a line's (batch_runner.py, batch_output.py): a line of the
batch's output file (the Message) or error file (Anthropic's error envelope and status), read back as
Anthropic's results (`succeeded`, `errored`). A refusal for capacity or rate (429, 503) is marked retryable,
as for an OpenAI batch's line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from aigrid.errors import ApiError
from aigrid.gateway.batch_input import Line
from aigrid.gateway.batch_line import KEPT_HEADERS, RETRYABLE, LineResult, line_caller, request_line
from aigrid.gateway.batch_store import StoredBatch
from aigrid.gateway.envelope import anthropic_error, anthropic_error_response
from aigrid.gateway.exchange import Exchange
from aigrid.gateway.front_door import whole_body
from aigrid.gateway.messages_api import MESSAGES_PATH, MessagesApi
from aigrid.gateway.routes import Routes, close_exchange
from aigrid.gateway.urgency import H_PRIORITY

log = logging.getLogger("aigrid.gateway")
MESSAGE_BATCH_LINE_ROUTE = "/v1/messages/batches (request)"
"""The route of a request's exchange (its audit record, access log line), followed by the batch id and custom_id."""


def request_route(bid: str, custom_id: str) -> str:
    return f"{MESSAGE_BATCH_LINE_ROUTE} {bid} custom_id={custom_id}"


class MessageBatchLine:
    def __init__(self, routes: Routes, messages: MessagesApi) -> None:
        self.gw = routes.gw
        self.messages = messages

    async def run(self, batch: StoredBatch, line: Line) -> LineResult:
        gw = self.gw
        headers = {k: v for k, v in batch.headers.items() if k in KEPT_HEADERS}
        headers[H_PRIORITY] = "batch"
        ex = Exchange(request_route(batch.id, line.custom_id), time.time())
        if gw.tracing.enabled:
            ex.trace = gw.tracing.start(MESSAGES_PATH, headers)
        params = line.body()

        async def read() -> dict[str, Any]:
            return params

        try:
            try:
                caller = line_caller(gw.guard, batch.principal)
                resp = await self.messages.answer(headers, read, ex, caller=caller)
                answer = await whole_body(resp)
                status = resp.status_code
            except ApiError as e:  # refused by the pipeline, or every attempt failed
                ex.error = e
                refused = anthropic_error_response(e)
                status, answer = refused.status_code, bytes(refused.body)
                retry = None
                if e.status in RETRYABLE:
                    try:
                        retry = float(e.headers.get("retry-after", "0"))
                    except ValueError:
                        retry = 0.0
                return LineResult(False, request_line(line.custom_id, status, _request_id(ex),
                                                      _with_request_id(orjson.loads(answer), ex)),
                                  retry_after_s=retry)
            except asyncio.CancelledError:  # the gateway stopping: the request runs again on resume
                ex.outcome = "cancelled"
                raise
            except Exception:  # a bug of ours: logged, the request errored
                log.exception("internal error in message batch %s, request %s", batch.id, line.custom_id)
                ex.outcome = "error:internal"
                failed = anthropic_error(500, "internal error in the aigrid gateway (logged)")
                return LineResult(False, request_line(line.custom_id, 500, _request_id(ex),
                                                      _with_request_id(orjson.loads(failed.body), ex)))
        finally:
            await close_exchange(gw, ex)
        body: Any = orjson.loads(answer)  # a Message, or Anthropic's envelope of the engine's refusal
        ok = status < 400
        return LineResult(ok, request_line(line.custom_id, status, _request_id(ex),
                                           body if ok else _with_request_id(body, ex)))


def _request_id(ex: Exchange) -> str:
    return ex.decision.request_id if ex.decision is not None else ""


def _with_request_id(envelope: dict[str, Any], ex: Exchange) -> dict[str, Any]:
    """Anthropic's ErrorResponse carries the request's id: here the decision's (`aigrid explain` reads it)."""
    rid = _request_id(ex)
    return {**envelope, "request_id": rid} if rid else envelope
