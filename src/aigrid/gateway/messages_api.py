"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's Messages API in front of the one pipeline.

A Messages request is translated to Chat Completions (messages_translate.py) and served by
routes.Routes.route exactly as a chat request is (authentication with `x-api-key` or a bearer key, quotas,
the firewall's choke point, routing, failover, continuation, one audit record per request); the answer is
translated back, streamed in Anthropic's event sequence (messages_stream.py). Every error, the pipeline's
(envelope.py, by path) and the engine's (here), leaves in Anthropic's shape:
{"type": "error", "error": {"type": ..., "message": ...}} with Anthropic's status codes, so the anthropic
SDKs raise their own exception classes. See docs/messages-api.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aigrid.errors import ApiError, ModelNotFound, NotFound
from aigrid.gateway.engine_errors import engine_error_message
from aigrid.gateway.envelope import anthropic_error
from aigrid.gateway.exchange import Exchange
from aigrid.gateway.front_door import (
    aigrid_headers,
    is_event_stream,
    name_own_field,
    pipeline_headers,
    restream,
    retry_headers,
    served_model,
    validate,
    whole_body,
)
from aigrid.gateway.messages_schema import CountTokensRequest, MessagesRequest
from aigrid.gateway.messages_stream import anthropic_stream
from aigrid.gateway.messages_translate import (
    DocumentParts,
    anthropic_message,
    chat_body,
    chat_tools,
    message_id,
    name_messages_field,
    placed_messages,
    prefill_of,
)
from aigrid.gateway.relay_response import RelayResponse
from aigrid.gateway.request_info import estimate_prompt_tokens
from aigrid.gateway.routes import CHAT_PATH, Routes, audited_route, authenticate
from aigrid.gateway.schemas import ChatRequest
from aigrid.security.authorize import authorize
from aigrid.security.principal import Principal
from aigrid.security.quotas import QuotaExceeded, Reservation, rate_limit_headers

MESSAGES_PATH = "/v1/messages"
_JSON = "application/json"


class MessagesApi:
    def __init__(self, routes: Routes) -> None:
        self.pipeline = routes

    def routes(self) -> list[Route]:
        """count_tokens, audited like every call (POST /v1/messages itself is an audited route of
        routes.Routes.audited)."""
        return [audited_route(self.pipeline.gw, "POST", MESSAGES_PATH + "/count_tokens", self.count_tokens)]

    async def create(self, request: Request, ex: Exchange) -> Response:
        return await self.answer(pipeline_headers(request), lambda: self.pipeline.read_json(request, dotted=True), ex)

    async def answer(self, headers: Mapping[str, str], read_json: Callable[[], Awaitable[dict[str, Any]]],
                     ex: Exchange, *, caller: Principal | None = None) -> Response:
        """One Messages request through the pipeline: a live POST /v1/messages, or a message batch's request
        run as its creator (`caller`; message_batch_line.py). A refusal of the pipeline is raised (ApiError);
        the engine's own is answered in Anthropic's shape."""
        req: MessagesRequest | None = None
        prefill = ""
        origins: list[str] = []
        documents: DocumentParts = {}

        async def read() -> dict[str, Any]:
            nonlocal req, prefill
            raw = await read_json()
            ex.body = {"model": raw["model"]} if "model" in raw else {}  # a refusal's access line names it
            req = validate(MessagesRequest, raw, dotted=True)
            no_thread(req)
            placed = placed_messages(req, documents)
            origins.extend(where for _, where in placed)
            chat = chat_body(req)
            prefill = prefill_of(chat)
            return chat

        try:
            resp = await self.pipeline.route(CHAT_PATH, ChatRequest, headers, read, ex, server_tools=False,
                                             documents=documents, caller=caller)
        except ApiError as e:
            if not _name_document(e, documents):
                name_own_field(e, origins, dotted=True)
                name_messages_field(e, req)
            over_quota_limits(e)
            raise
        assert req is not None  # the pipeline read the body before answering
        headers = aigrid_headers(resp)
        model = served_model(resp, req.model)  # Anthropic's `model`: the model that handled the request
        said = anthropic_rate_limits(ex.reservation)  # an answer served only (routes.py adds OpenAI's x-ratelimit-*)
        if is_event_stream(resp):
            assert isinstance(resp, RelayResponse)
            # the router's own estimate of the prompt (RequestInfo.prompt_tokens), until the engine's usage comes
            estimate = ex.record.prompt_tokens if ex.record is not None else 0
            mid = message_id()
            prewarm = req.max_tokens == 0
            events = restream(resp, lambda ev: anthropic_stream(ev, message_id=mid, model=model,
                                                                input_estimate=estimate,
                                                                stop_sequences=req.stop_sequences, prefill=prefill,
                                                                prewarm=prewarm))
            return RelayResponse(events, 200, {**headers, **said, "content-type": "text/event-stream",
                                               "cache-control": "no-cache"})
        body = await whole_body(resp)
        if resp.status_code >= 400:  # the engine's own refusal (an OpenAI envelope), in Anthropic's shape
            return anthropic_error(resp.status_code if resp.status_code < 500 else 500, engine_error_message(body),
                                   {**headers, **retry_headers(resp)}, request_id=ex.request_id)
        # a 2xx whole answer is a completion's JSON: proxy._whole (every whole answer, wrapped or not) and the
        # escalation check it (usage.whole_answer) and fail one that is not (UpstreamFailed, 502); a stream that is
        # not text/event-stream fails before its first byte (test_each_door_says_its_own_apis_rate_limit_headers...)
        chat = orjson.loads(body)
        return Response(orjson.dumps(anthropic_message(chat, model, req.stop_sequences, prefill,
                                                       prewarm=req.max_tokens == 0)),
                        media_type=_JSON, headers={**headers, **said})

    async def count_tokens(self, request: Request, ex: Exchange) -> Response:
        """The prompt's token count as the router estimates it (the same figure that sizes prefill, cost and
        quota reservations); the engines behind the grid each have their own tokenizer. No tokens charged; the
        call is audited and counts as one request against requests per minute (routes.authenticate), as the
        Responses API's input_tokens."""
        gw = self.pipeline.gw
        try:
            principal, _ = await authenticate(gw, request, ex)  # before the body
        except ApiError as e:
            over_quota_limits(e)
            raise
        raw = await self.pipeline.read_json(request, dotted=True)
        ex.body = {"model": raw["model"]} if "model" in raw else {}
        req = validate(CountTokensRequest, raw, dotted=True)
        ex.model = req.model
        no_thread(req)  # a thread's continue counts the new turn alone: the SDK replays the whole conversation
        authorize(principal, req.model)
        if req.model != "auto" and req.model not in gw.known_models:
            raise ModelNotFound(f"The model '{req.model}' does not exist on this grid", param="model")
        tools = chat_tools(req)
        placed = placed_messages(req)
        try:
            chat = validate(ChatRequest, {"model": req.model, "messages": [m for m, _ in placed], **tools}, dotted=True)
        except ApiError as e:  # the client's field, as POST /v1/messages names it: a tool's `input_schema` (it named
            name_own_field(e, [where for _, where in placed], dotted=True)  # chat's `tools.0.function.parameters`
            name_messages_field(e, None)  # until the thirty-eighth session's review, RV3), a message's own field
            raise
        return Response(orjson.dumps({"input_tokens": estimate_prompt_tokens(chat)}), media_type=_JSON,
                        headers=anthropic_rate_limits(ex.reservation))


def over_quota_limits(e: ApiError) -> None:
    """The quota's own 429 (QuotaExceeded) says Anthropic's rate-limit headers of the per-minute limit it names
    (remaining 0) beside OpenAI's: the one place both of this door's routes (a message, count_tokens) add them."""
    if isinstance(e, QuotaExceeded) and e.headroom:
        e.headers.update(rate_limit_headers(*e.headroom, family="anthropic"))


def anthropic_rate_limits(reservation: Reservation | None) -> dict[str, str]:
    """Anthropic's rate-limit headers of an admitted request's per-minute limits (quotas.rate_limit_headers, the
    tightest of each kind, as OpenAI's x-ratelimit-* beside them say); nothing, and no work, for a tenant without
    per-minute limits. Until the twenty-eighth session the Messages door sent only OpenAI's names, which an Anthropic
    client's throttle does not read."""
    if reservation is None or not reservation.headroom:
        return {}
    return rate_limit_headers(*reservation.headroom, family="anthropic")


def no_thread(req: CountTokensRequest) -> None:
    """Anthropic's message threads (`thread`, beta message-threads-2026-08-12): the gateway holds no thread, so
    `{"type": "create"}` is accepted and ignored (the request carries the whole conversation) and a
    `{"type": "continue", "previous_message_id": ...}`, which sends only the new turn, is Anthropic's 404
    `thread_not_found`: the SDKs' tool runner then replays the whole conversation with a new thread, and
    every turn is served (before, the new turn alone reached the model: a tool_result answering nothing)."""
    thread = (req.model_extra or {}).get("thread")
    if isinstance(thread, dict) and thread.get("type") == "continue":
        raise NotFound(f"no thread holds message {str(thread.get('previous_message_id'))!r}: this gateway keeps no "
                       "message threads; send the whole conversation (thread create, or no thread)",
                       param="thread.previous_message_id", code="thread_not_found")


def _name_document(err: ApiError, documents: DocumentParts) -> bool:
    """An error of the pipeline about a document's part of a user message (a firewall block at
    `messages[1].content[1].text`) names the document block's own field (`messages.0.content.1.source`), read from
    the error's field's parts (ApiError.field; until the thirty-eighth session from its param string)."""
    at = (err.field or ())[:4]
    for (i, j), field in documents.items():
        if at == ("messages", i, "content", j):
            err.message = f"{err.message} (at {field})"
            err.param, err.field = field, None
            return True
    return False
