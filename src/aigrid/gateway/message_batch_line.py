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

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.responses import Response

from aigrid.errors import ApiError
from aigrid.gateway.batch_input import Line
from aigrid.gateway.batch_line import LineResult, LineRun, request_line, retry_after
from aigrid.gateway.batch_store import StoredBatch
from aigrid.gateway.envelope import anthropic_error, anthropic_error_response
from aigrid.gateway.exchange import Exchange
from aigrid.gateway.messages_api import MESSAGES_PATH, MessagesApi
from aigrid.gateway.routes import Routes
from aigrid.security.principal import Principal

MESSAGE_BATCH_LINE_ROUTE = "/v1/messages/batches (request)"
"""The route of a request's exchange (its audit record, access log line), followed by the batch id and custom_id."""


def request_route(bid: str, custom_id: str) -> str:
    return f"{MESSAGE_BATCH_LINE_ROUTE} {bid} custom_id={custom_id}"


class MessageBatchLine(LineRun):
    """A request of an Anthropic message batch: served by MessagesApi.answer, answered as Anthropic writes it."""

    route_name = MESSAGE_BATCH_LINE_ROUTE

    def __init__(self, routes: Routes, messages: MessagesApi) -> None:
        super().__init__(routes.gw)
        self.messages = messages

    def path(self, batch: StoredBatch) -> str:
        return MESSAGES_PATH

    async def serve(self, batch: StoredBatch, headers: dict[str, str], read: Callable[[], Awaitable[dict[str, Any]]],
                    ex: Exchange, caller: Principal) -> Response:
        return await self.messages.answer(headers, read, ex, caller=caller)

    def answered(self, line: Line, status: int, answer: bytes, headers: Mapping[str, str], ex: Exchange) -> LineResult:
        body: Any = orjson.loads(answer)  # a Message, or Anthropic's envelope of the engine's refusal
        ok = status < 400
        return LineResult(ok, request_line(line.custom_id, status, ex.request_id,
                                           body if ok else _with_request_id(body, ex)))

    def refused(self, line: Line, e: ApiError, ex: Exchange) -> LineResult:
        refused = anthropic_error_response(e)
        return LineResult(False, request_line(line.custom_id, refused.status_code, ex.request_id,
                                              _with_request_id(orjson.loads(bytes(refused.body)), ex)),
                          retry_after_s=retry_after(e))

    def failed(self, line: Line, ex: Exchange) -> LineResult:
        failed = anthropic_error(500, "internal error in the aigrid gateway (logged)")
        return LineResult(False, request_line(line.custom_id, 500, ex.request_id,
                                              _with_request_id(orjson.loads(bytes(failed.body)), ex)))


def _with_request_id(envelope: dict[str, Any], ex: Exchange) -> dict[str, Any]:
    """Anthropic's ErrorResponse carries the request's id: the exchange's (the decision's, which `aigrid explain`
    reads, else its own), as its audit record does, a line refused before any decision included."""
    return {**envelope, "request_id": ex.request_id}
