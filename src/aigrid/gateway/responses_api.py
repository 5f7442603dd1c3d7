"""POST /v1/responses, GET and DELETE /v1/responses/{id}: OpenAI's Responses API in front of the one pipeline.

A Responses request (after the stored history of `previous_response_id`, if any) is translated to Chat
Completions (responses_translate.py) and served by routes.Routes.route like any chat request (auth, quotas,
firewall, routing, failover, continuation, audit; function tools named like the grid's server-side tools
run at the chosen site). The answer is translated back, streamed as Responses events (responses_stream.py).
Errors keep the OpenAI envelope, which the Responses API shares with Chat Completions.

Residency: a follow-up is routed with residency narrowed to the one jurisdiction where its conversation is
stored (response_store.py), or refused with a 400 naming previous_response_id when the request asks for
another; the answer is stored in the jurisdiction of the site that served it. See docs/responses-api.md.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aigrid.errors import ApiError, InvalidRequest, NotFound, UpstreamFailed
from aigrid.gateway.chat_events import cached_of
from aigrid.gateway.exchange import Exchange
from aigrid.gateway.front_door import (
    aigrid_headers,
    is_event_stream,
    name_own_field,
    pipeline_headers,
    restream,
    validate,
    whole_body,
)
from aigrid.gateway.relay_response import RelayResponse
from aigrid.gateway.request_info import H_RESIDENCY, residency
from aigrid.gateway.response_store import BrokenHistory, StoredResponse
from aigrid.gateway.responses_schema import ResponsesRequest
from aigrid.gateway.responses_stream import responses_stream
from aigrid.gateway.responses_translate import (
    chat_body,
    input_items,
    new_id,
    output_history,
    output_items,
    response_object,
    usage_block,
)
from aigrid.gateway.routes import CHAT_PATH, H_TENANT, Audited, Routes, json_response
from aigrid.gateway.schemas import ChatRequest
from aigrid.security.principal import Principal

RESPONSES_PATH = "/v1/responses"
H_STORED_IN = "x-aigrid-stored-jurisdiction"
"""On GET /v1/responses/{id}: the jurisdiction whose partition holds the conversation."""
_PARAMS = {"max_tokens": "max_output_tokens", "messages": "input"}
"""Pipeline errors name chat fields; these are their Responses names."""


class _Turn:
    """What one request learned while its body was read: the request, its chat body, who asked, history."""

    req: ResponsesRequest
    chat: dict[str, Any]
    principal: Principal
    earlier: int = 0
    """Chat messages before this turn's input: the instructions and the stored history."""

    def __init__(self) -> None:
        self.origins: list[str] = []
        """The Responses field each chat message came from (errors name it)."""


class ResponsesApi:
    def __init__(self, routes: Routes) -> None:
        self.pipeline = routes
        self.gw = routes.gw

    def routes(self) -> list[Route]:
        """GET and DELETE of a stored conversation (POST /v1/responses is an audited route too:
        routes.Routes.audited): reading or deleting one is recorded like a request, with its outcome."""
        path = RESPONSES_PATH + "/{response_id}"
        items = path + "/input_items"
        return [Route(path, Audited(self.gw, f"GET {path}", self.get), methods=["GET"]),
                Route(path, Audited(self.gw, f"DELETE {path}", self.delete), methods=["DELETE"]),
                Route(items, Audited(self.gw, f"GET {items}", self.list_input_items), methods=["GET"])]

    def _principal(self, headers: dict[str, str]) -> Principal:
        return self.gw.guard.principal(headers.get("authorization"), headers.get(H_TENANT))

    async def create(self, request: Request, ex: Exchange) -> Response:
        headers = pipeline_headers(request)
        turn = _Turn()

        async def read() -> dict[str, Any]:
            turn.req = req = validate(ResponsesRequest, await self.pipeline.read_json(request))
            turn.principal = self._principal(headers)
            history: list[dict[str, Any]] = []
            if req.previous_response_id is not None:
                history = await self._continue(turn.principal.tenant, req.previous_response_id, headers)
            turn.chat = chat_body(req, history, list(self.gw.agents.tools), turn.origins)
            turn.earlier = (1 if req.instructions else 0) + len(history)
            return turn.chat

        try:
            resp = await self.pipeline.route(CHAT_PATH, ChatRequest, headers, read, ex)
        except ApiError as e:
            name_own_field(e, turn.origins)
            if e.param in _PARAMS:
                e.param = _PARAMS[e.param]
                e.message = e.message.replace("max_tokens", "max_output_tokens")
            raise
        rid, extra = new_id("resp"), aigrid_headers(resp)

        async def keep(final: dict[str, Any]) -> None:
            if turn.req.store:
                await self._store(turn, final, extra)

        if is_event_stream(resp):
            assert isinstance(resp, RelayResponse)
            events = restream(resp, lambda ev: responses_stream(ev, turn.req, rid, keep))
            return RelayResponse(events, 200, {**extra, "content-type": "text/event-stream",
                                               "cache-control": "no-cache"})
        body = await whole_body(resp)
        if resp.status_code >= 400:  # the engine's own error answer: already the OpenAI envelope
            return Response(body, status_code=resp.status_code, media_type="application/json", headers=extra)
        try:
            chat = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise UpstreamFailed("the engine's answer was not JSON") from e
        output, finish = output_items(chat)
        usage = chat.get("usage") or {}
        final = response_object(turn.req, rid, int(time.time()), output, status="completed", finish_reason=finish,
                                usage=usage_block(int(usage.get("prompt_tokens") or 0),
                                                  int(usage.get("completion_tokens") or 0), cached_of(usage)))
        await keep(final)
        return Response(orjson.dumps(final), media_type="application/json", headers=extra)

    async def _continue(self, tenant: str, previous: str, headers: dict[str, str]) -> list[dict[str, Any]]:
        """The stored history of `previous`; narrows this request's residency to where it is stored."""
        hub = self.gw.hub
        prev = await hub.response_get(tenant, previous) if hub else self.gw.responses.get(tenant, previous)
        if prev is None:
            raise NotFound(f"previous_response_id: no stored response {previous!r} for this tenant on this "
                           "gateway", param="previous_response_id")
        asked = residency(headers.get(H_RESIDENCY))
        if asked is not None and prev.jurisdiction not in asked:
            raise InvalidRequest(
                f"previous_response_id: the conversation {previous!r} is stored in {prev.jurisdiction} and can "
                f"only be continued there, but {H_RESIDENCY} asks for {', '.join(sorted(asked))}",
                param="previous_response_id", code="conversation_residency")
        try:
            history = await hub.response_history(prev) if hub else self.gw.responses.history(prev)
        except BrokenHistory as e:
            raise NotFound(f"previous_response_id: an earlier turn of {previous!r} ({e.args[0]}) is no longer "
                           "stored, so its history cannot be rebuilt", param="previous_response_id") from e
        headers[H_RESIDENCY] = prev.jurisdiction  # read by the pipeline after this body: route only there
        return history

    async def _store(self, turn: _Turn, final: dict[str, Any], headers: dict[str, str]) -> None:
        jurisdiction, site = headers.get("x-aigrid-jurisdiction"), headers.get("x-aigrid-site", "")
        if jurisdiction is None:
            return
        messages = turn.chat["messages"][turn.earlier:] + output_history(final["output"])
        record = StoredResponse(final["id"], turn.principal.tenant, jurisdiction, site, final, messages,
                                previous=turn.req.previous_response_id, inputs=input_items(turn.req.input))
        if self.gw.hub is not None:  # any worker may serve the follow-up
            await self.gw.hub.response_put(record, turn.principal.scopes.jurisdictions)
        else:
            self.gw.responses.put(record, turn.principal.scopes.jurisdictions)

    def _stored_access(self, request: Request, ex: Exchange) -> tuple[str, str]:
        """(tenant, response id) of a GET or DELETE, noted on its exchange for the audit record."""
        ex.principal = self._principal(pipeline_headers(request))
        rid = request.path_params["response_id"]
        ex.body = {"response_id": rid}
        return ex.principal.tenant, rid

    async def get(self, request: Request, ex: Exchange) -> Response:
        tenant, rid = self._stored_access(request, ex)
        found = await self.gw.hub.response_get(tenant, rid) if self.gw.hub else self.gw.responses.get(tenant, rid)
        if found is None:
            raise NotFound(f"no stored response {request.path_params['response_id']!r}", param="response_id")
        return Response(orjson.dumps(found.response), media_type="application/json",
                        headers={H_STORED_IN: found.jurisdiction, "x-aigrid-site": found.site})

    async def list_input_items(self, request: Request, ex: Exchange) -> Response:
        """The stored response's input items, a page at a time (OpenAI's cursor list: `limit` 1-100, default
        20; `order` asc or desc, default desc; `after` an item id)."""
        query = request.query_params
        limit = query.get("limit", "20")
        if not limit.isdigit() or not 1 <= int(limit) <= 100:
            raise InvalidRequest("limit must be an integer between 1 and 100", param="limit")
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequest("order must be 'asc' or 'desc'", param="order")
        tenant, rid = self._stored_access(request, ex)
        found = await self.gw.hub.response_get(tenant, rid) if self.gw.hub else self.gw.responses.get(tenant, rid)
        if found is None:
            raise NotFound(f"no stored response {rid!r}", param="response_id")
        items = found.inputs if order == "asc" else found.inputs[::-1]
        after = query.get("after")
        if after is not None:
            ids = [item.get("id") for item in items]
            if after not in ids:
                raise InvalidRequest(f"after: no input item {after!r} in response {rid!r}", param="after")
            items = items[ids.index(after) + 1:]
        page = items[: int(limit)]
        return json_response({"object": "list", "data": page, "has_more": len(items) > len(page),
                              "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None})

    async def delete(self, request: Request, ex: Exchange) -> Response:
        tenant, rid = self._stored_access(request, ex)
        deleted = await self.gw.hub.response_delete(tenant, rid) if self.gw.hub else self.gw.responses.delete(tenant, rid)
        if not deleted:
            raise NotFound(f"no stored response {rid!r}", param="response_id")
        return json_response({"id": rid, "object": "response", "deleted": True})

