"""OpenAI's Conversations API (/v1/conversations, the SDKs' `client.conversations`), and what a Responses
request naming a `conversation` reads from it and adds to it (responses_api.py).

A conversation keeps Response items (conversation_store.py): the client's (`items` at creation, POST .../items)
and, after each response served with `conversation`, that request's input items and the answer's output
items. A response in a conversation is served by the one pipeline with the conversation's items as the
history before its input, exactly as a previous_response_id chain is: the firewall reads them there, every
time, like any prompt text.

Residency: a conversation is bound to one jurisdiction, at creation when the request's x-aigrid-residency
names exactly one (else when the tenant may use only one), else by the first items a writer kept to some
jurisdictions adds (the one it may keep them in: _writer_binds; naming none of several is a 400), else by its first
response (the jurisdiction of the site that served it). A response in a bound conversation is routed only there, or refused (400
`conversation_residency`) when its request asks for another. See docs/responses-api.md.

A bound conversation is used only by keys that may use its jurisdiction (another key of the tenant: 403
`jurisdiction_not_allowed` on every route), and written to (items, metadata) only by requests whose
x-aigrid-residency allows it (check_stored_in; stored responses too, responses_api.py).

Every route is authenticated and tenant-scoped (another tenant's conversation is a 404) and audited like
GET /v1/responses/{id} (routes.Audited: one record with the route, tenant and outcome; ids, never item text).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aigrid.errors import InvalidRequest, NotFound, PermissionDenied, StoreUnavailable
from aigrid.gateway.conversation_store import ANY_BINDING, MAX_CONVERSATION_BYTES, StoredConversation
from aigrid.gateway.conversations_schema import (
    ConversationCreate,
    ConversationItemsCreate,
    ConversationUpdate,
)
from aigrid.gateway.cursor_list import page_object, page_query
from aigrid.gateway.exchange import Exchange
from aigrid.gateway.front_door import validate
from aigrid.gateway.record_fields import read_record
from aigrid.gateway.request_info import H_RESIDENCY, residency
from aigrid.gateway.responses_translate import held_tools, input_items, input_messages, new_id
from aigrid.gateway.routes import Routes, audited_route, authenticate, json_response
from aigrid.gateway.stores import ConversationBook
from aigrid.security.authorize import check_produced_by, shown_jurisdictions
from aigrid.security.principal import Principal

log = logging.getLogger("aigrid.gateway")
CONVERSATIONS_PATH = "/v1/conversations"
H_STORED_IN = "x-aigrid-stored-jurisdiction"
"""On GET /v1/conversations/{id}: the jurisdiction the conversation is bound to (absent: not yet bound); on
GET /v1/responses/{id} (responses_api.py): the jurisdiction whose partition holds the response."""


def check_stored_in(principal: Principal, jurisdiction: str | None, param: str, what: str,
                    residency_header: str | None = None, *, writes: bool = False) -> None:
    """Whether this caller may use `what` (a stored response, a conversation), stored in `jurisdiction` (None:
    a conversation not bound yet): a key of its tenant narrowed to other jurisdictions may not read, change,
    delete or continue it (403 jurisdiction_not_allowed, as it could not be served there); and a request that
    `writes` to it or continues it must not ask to stay elsewhere (x-aigrid-residency: 400
    conversation_residency), or its data would be kept or served outside the residency it asked for."""
    if jurisdiction is None:
        return
    allowed = principal.scopes.jurisdictions
    if allowed is not None and jurisdiction not in allowed:
        raise PermissionDenied(f"{param}: {what} is stored in {jurisdiction}, a jurisdiction key {principal.key_id} "
                               "may not use", param=param, code="jurisdiction_not_allowed")
    asked = residency(residency_header) if writes else None
    if asked is not None and jurisdiction not in asked:
        raise InvalidRequest(f"{param}: {what} is stored in {jurisdiction} and can only be used there, but "
                             f"{H_RESIDENCY} asks for {shown_jurisdictions(asked)}", param=param,
                             code="conversation_residency")


def conversation_items(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The client's items as stored: each one a Responses input item the gateway serves (the same check as
    a Responses `input`, so that the conversation can always be replayed), with ids."""
    input_messages(raw, root="items")  # its 400 names `items[2].type`, written from the field's parts
    return input_items(raw)


class Conversations:
    """The conversation store as the gateway's code sees it (stores.Conversations: this process's memory,
    or a worker's hub, or a jurisdiction's Redis), through ConversationStore's wire form whichever it is."""

    def __init__(self, book: ConversationBook) -> None:
        self.book = book

    async def call(self, op: str, *arg: Any) -> Any:
        return await self.book.call(op, list(arg))

    async def history(self, principal: Principal, cid: str, headers: dict[str, str],
                      held: set[str] | None = None) -> list[dict[str, Any]]:
        """The conversation's items as chat messages (the history before a Responses request's input); narrows
        the request's residency to the conversation's jurisdiction when it is bound. Its items are read once the
        conversation may be used (its head: where it is bound, its size), never for a refusal. `held`: filled with
        the grid tools its mcp_list_tools items list (responses_translate.held_tools)."""
        missing = NotFound(f"conversation: no conversation {cid!r} for this tenant on this gateway",
                           param="conversation")
        found = await self.call("head", principal.tenant, cid)
        if found is None:
            raise missing
        bound = found["jurisdiction"]
        check_stored_in(principal, bound, "conversation", f"conversation {cid!r}", headers.get(H_RESIDENCY),
                        writes=True)
        check_produced_by(principal, found.get("models", ()), "conversation", f"conversation {cid!r}")
        if found["size"] > MAX_CONVERSATION_BYTES:  # its turns (each within a request's size) took it past
            raise InvalidRequest(f"conversation: {cid!r} holds {found['size']} bytes, more than "
                                 f"{MAX_CONVERSATION_BYTES}, the most one conversation may hold; start another",
                                 param="conversation", code="conversation_too_large")
        whole = await self.call("get", principal.tenant, cid)
        if whole is None:  # deleted meanwhile
            raise missing
        if whole["jurisdiction"] != bound:  # bound meanwhile, by a turn of another request
            bound = whole["jurisdiction"]
            check_stored_in(principal, bound, "conversation", f"conversation {cid!r}", headers.get(H_RESIDENCY),
                            writes=True)
        if bound is not None:
            headers[H_RESIDENCY] = bound  # read by the pipeline after this body: route only there
        if held is not None:
            held.update(held_tools(whole["items"]))
        try:
            return input_messages(whole["items"])
        except InvalidRequest as e:  # every item was checked when it was added; kept for safety
            raise InvalidRequest(f"conversation: an item of {cid!r} cannot be replayed: {e.message}",
                                 param="conversation") from e

    async def add_turn(self, tenant: str, cid: str, items: list[dict[str, Any]], jurisdiction: str | None,
                       model: str | None = None) -> None:
        """A served response's input and output items, added; the first one served binds the conversation to
        its site's jurisdiction; `model`, the grid model that answered, is kept with it (check_produced_by). A
        conversation deleted meanwhile keeps nothing."""
        await self.call("append", tenant, cid, items, jurisdiction, None, ANY_BINDING, model)


class ConversationsApi:
    def __init__(self, routes: Routes) -> None:
        self.pipeline = routes
        self.gw = routes.gw
        assert self.gw.stores is not None, "build_app builds the stores"
        self.store = Conversations(self.gw.stores.conversations)

    def routes(self) -> list[Route]:
        base = CONVERSATIONS_PATH
        one = base + "/{conversation_id}"
        items = one + "/items"
        item = items + "/{item_id}"
        table = [(base, "POST", self.create), (one, "GET", self.retrieve), (one, "POST", self.update),
                 (one, "DELETE", self.delete), (items, "GET", self.list_items), (items, "POST", self.add_items),
                 (item, "GET", self.retrieve_item), (item, "DELETE", self.delete_item)]
        return [audited_route(self.gw, method, path, handler) for path, method, handler in table]

    async def _access(self, request: Request, ex: Exchange, *, heavy: bool = False) -> tuple[Principal, str]:
        """Who asks, and for which conversation; both noted on the exchange for the audit record (ids only);
        `heavy`: a read counted in requests per minute (routes.authenticate)."""
        principal, _ = await authenticate(self.gw, request, ex, heavy=heavy)
        cid = request.path_params.get("conversation_id", "")
        ex.body = {"conversation_id": cid}
        if "item_id" in request.path_params:
            ex.body["item_id"] = request.path_params["item_id"]
        return principal, cid

    async def _found(self, request: Request, principal: Principal, cid: str, *, writes: bool = False) -> dict[str, Any]:
        """The caller's conversation as stored (404: none of its tenant's), which its key may use and, when the
        request `writes` to it, its residency allows (check_stored_in)."""
        found: dict[str, Any] | None = await self.store.call("head", principal.tenant, cid)  # no items: none needed
        if found is None:
            raise NotFound(f"no conversation {cid!r}", param="conversation_id")
        check_stored_in(principal, found["jurisdiction"], "conversation_id", f"conversation {cid!r}",
                        request.headers.get(H_RESIDENCY), writes=writes)
        check_produced_by(principal, found.get("models", ()), "conversation_id", f"conversation {cid!r}")
        return found

    def _asked(self, principal: Principal, header: str | None) -> frozenset[str] | None:
        """The jurisdictions a write's x-aigrid-residency names that a site of the grid is in, checked by the one
        check of every door (Guard.residency_within): naming none of the grid's, or none at all (`,`), is a 400;
        one outside the key's a 403. (Until review RV2 of 414856ad one unknown name beside a known, `eu, Mars`, was a 400
        here, where the chat door serves it in the EU.)"""
        return self.gw.guard.residency_within(principal, residency(header), "conversations")

    def _bound_at_creation(self, principal: Principal, header: str | None) -> str | None:
        """The jurisdiction a new conversation is bound to: the one x-aigrid-residency names (_asked), else the
        tenant's only one; None when neither names exactly one (its first response binds it)."""
        asked, allowed = self._asked(principal, header), principal.scopes.jurisdictions
        chosen = asked if asked is not None else allowed
        return next(iter(chosen)) if chosen is not None and len(chosen) == 1 else None

    def _writer_binds(self, principal: Principal, header: str | None, what: str) -> str | None:
        """The jurisdiction items written into a conversation not bound yet (`what`) bind it to: the one the writer
        keeps its data in (its x-aigrid-residency, else its key's jurisdictions); None for a writer kept no narrower
        than its tenant (the first response binds it, within the tenant's). One kept to several of them, fewer than
        its tenant, naming none, is the client's 400: left unbound, a response of another key of the tenant could
        serve those items elsewhere and bind the conversation where the writer may not read it (thirty-fourth
        session)."""
        one = self._bound_at_creation(principal, header)
        asked = self._asked(principal, header)
        kept_in = asked if asked is not None else principal.scopes.jurisdictions
        tenant = self.gw.guard.tenants.get(principal.tenant)
        everywhere = None if tenant is None else tenant.scopes.jurisdictions
        grid = self.gw.guard.jurisdictions  # where any response of the tenant can be served (a key of every
        reach = grid if everywhere is None else everywhere & grid  # jurisdiction of the grid is no narrower)
        # no narrower than its tenant (every key of which its first response is served within): left unbound
        if one is not None or kept_in is None or reach <= kept_in:
            return one
        kept = sorted(kept_in)
        raise InvalidRequest(f"{H_RESIDENCY}: {what} is not bound to a jurisdiction yet, and these items may be kept "
                             f"only in {', '.join(kept)}: name the one to bind it to with {H_RESIDENCY}",
                             param=H_RESIDENCY, code="conversation_residency")

    async def create(self, request: Request, ex: Exchange) -> Response:
        principal, _ = await self._access(request, ex)
        body = validate(ConversationCreate, await self.pipeline.read_json(request))
        items = conversation_items(body.items or [])
        header = request.headers.get(H_RESIDENCY)
        bound = self._writer_binds(principal, header, "a new conversation") if items else \
            self._bound_at_creation(principal, header)
        conv = StoredConversation(new_id("conv"), principal.tenant, int(time.time()), body.metadata or {},
                                  bound, items)
        ex.body = {"conversation_id": conv.id, "items": len(items)}
        return _with_jurisdiction(await self.store.call("create", dataclasses.asdict(conv)), bound)

    async def retrieve(self, request: Request, ex: Exchange) -> Response:
        principal, cid = await self._access(request, ex)
        conv = read_record(StoredConversation, await self._found(request, principal, cid), "a conversation's head")
        if conv is None:  # unreadable (logged): as absent
            raise NotFound(f"no conversation {cid!r}", param="conversation_id")
        return _with_jurisdiction(conv.public(), conv.jurisdiction)

    async def update(self, request: Request, ex: Exchange) -> Response:
        principal, cid = await self._access(request, ex)
        body = validate(ConversationUpdate, await self.pipeline.read_json(request))
        await self._found(request, principal, cid, writes=True)
        return json_response(await self._call("update", principal, cid, body.metadata or {}))

    async def delete(self, request: Request, ex: Exchange) -> Response:
        principal, cid = await self._access(request, ex)
        await self._found(request, principal, cid)
        if not await self.store.call("delete", principal.tenant, cid):
            raise NotFound(f"no conversation {cid!r}", param="conversation_id")
        return json_response({"id": cid, "object": "conversation.deleted", "deleted": True})

    async def list_items(self, request: Request, ex: Exchange) -> Response:
        """A page of items (OpenAI's cursor list: `limit` 1-100, default 20; `order` asc or desc, default desc;
        `after` an item id; `include` accepted, nothing to add). A page walks every item of the conversation (its
        ids, for the cursor): one request against requests per minute, unlike a poll."""
        principal, cid = await self._access(request, ex, heavy=True)  # who asks first: no query checked for nobody
        q = page_query(request.query_params)
        await self._found(request, principal, cid)
        page = await self._call("page", principal, cid, q.after, q.limit, q.order)
        if "bad_after" in page:
            raise InvalidRequest(f"after: no item {q.after!r} in conversation {cid!r}", param="after")
        return json_response(page_object(page["data"], page["has_more"]))

    async def add_items(self, request: Request, ex: Exchange) -> Response:
        principal, cid = await self._access(request, ex)
        body = validate(ConversationItemsCreate, await self.pipeline.read_json(request))
        items = conversation_items(body.items)
        for _ in range(2):  # a conversation is bound once: read again at most once
            found = await self._found(request, principal, cid, writes=True)
            bind = None if found["jurisdiction"] is not None else \
                self._writer_binds(principal, request.headers.get(H_RESIDENCY), f"conversation {cid!r}")
            # added only where it is bound as read and checked here: a response served elsewhere that binds it in
            # between has the append refused, nothing added, and the writer checked again against that binding
            added = await self._call("append", principal, cid, items, bind, MAX_CONVERSATION_BYTES,
                                     found["jurisdiction"])
            if "bound_elsewhere" not in added:
                break
            log.info("conversation %s of tenant %s was bound to %s while items were written: checked again",
                     cid, principal.tenant, added["bound_elsewhere"])
        else:
            raise StoreUnavailable(f"conversation {cid!r} changed its jurisdiction twice while these items were "
                                   "written; retry", headers={"retry-after": "1"})
        if "full" in added:
            raise InvalidRequest(f"items: conversation {cid!r} holds {added['full']} bytes; with these items it "
                                 f"would hold more than {MAX_CONVERSATION_BYTES}, the most one conversation may hold",
                                 param="items", code="conversation_too_large")
        ex.body = {**ex.body, "items": len(added["items"])}
        return json_response(page_object(added["items"], False))

    async def retrieve_item(self, request: Request, ex: Exchange) -> Response:
        return json_response(await self._on_item("item", request, ex, lambda found: found["item"]))

    async def delete_item(self, request: Request, ex: Exchange) -> Response:
        """Removes the item; answers the conversation (as OpenAI does; the store's False: no such item)."""
        return json_response(await self._on_item("delete_item", request, ex, lambda deleted: deleted or None))

    async def _call(self, op: str, principal: Principal, cid: str, *arg: Any) -> Any:
        """The store's `op` on the caller's conversation (found by _found before): 404 where it is gone since (the
        store answers None)."""
        result = await self.store.call(op, principal.tenant, cid, *arg)
        if result is None:
            raise NotFound(f"no conversation {cid!r}", param="conversation_id")
        return result

    async def _on_item(self, op: str, request: Request, ex: Exchange, answer: Callable[[Any], Any]) -> Any:
        """The store's `op` (`item`, `delete_item`) on the item of the path in the caller's conversation, and the
        `answer` made of what it returned: 404 naming `item_id` where that is None (no such item)."""
        principal, cid = await self._access(request, ex)
        item_id = request.path_params["item_id"]
        await self._found(request, principal, cid)
        answered = answer(await self._call(op, principal, cid, item_id))
        if answered is None:
            raise NotFound(f"no item {item_id!r} in conversation {cid!r}", param="item_id")
        return answered


def _with_jurisdiction(obj: dict[str, Any], jurisdiction: str | None) -> Response:
    headers = {H_STORED_IN: jurisdiction} if jurisdiction is not None else None
    return Response(orjson.dumps(obj), media_type="application/json", headers=headers)

