"""POST /v1/responses, GET and DELETE /v1/responses/{id}, POST /v1/responses/{id}/cancel, POST
/v1/responses/compact: OpenAI's Responses API in front of the one pipeline.

A Responses request (after the stored history of `previous_response_id`, if any) is translated to Chat
Completions (responses_translate.py) and served by routes.Routes.route like any chat request (auth, quotas,
firewall, routing, failover, continuation, audit; function tools named like the grid's server-side tools
run at the chosen site). The answer is translated back, streamed as Responses events (responses_stream.py).
Errors keep the OpenAI envelope, which the Responses API shares with Chat Completions.

Residency: a follow-up is routed with residency narrowed to the one jurisdiction where its conversation is
stored (response_store.py in memory, or that jurisdiction's Redis: stores.py, which this module calls for
every stored record), or refused with a 400 naming previous_response_id when the request asks for
another; the answer is stored in the jurisdiction of the site that served it. See docs/responses-api.md.

Compaction (`compact`, compaction.py): the conversation summarised by the model in one request of the same
pipeline, answered as its user messages and one compaction item whose summary is sealed to the tenant; such an
item in an input is opened (400 naming it when it is not this gateway's for this tenant) and its summary read by
the firewall as the client's own words; one made from a stored history routes the request to that history's jurisdiction.
Automatic compaction (`context_management`, `_auto_compact`): a create whose conversation is above its threshold
is compacted first by that same pass (an exchange and audit record of its own) and answered on the compacted
input; its Response's output starts with the compaction item, its usage counts both calls, and, stored, it starts
a new chain (its history reads stop at it).

Conversation (`conversation`, conversations_api.py): the conversation's items are the history before the
input, and the request's input items and the answer's output items are added to it once answered; a bound
conversation narrows the residency the same way (400 naming conversation when the request asks for another
jurisdiction); its first response served binds an unbound one to the serving site's jurisdiction.

Background (`background: true`, store required): the request is checked (its body, key, history and every
check that needs no state) and admitted (its quotas counted and reserved: a 429 to the create, the
reservation its run's to settle) and answered at once with a queued Response; the same pipeline then serves it in
a task of the gateway (background.py) with an Exchange of its own, closed like an audited route's
(routes.own_exchange: quota settled, audit record written, whatever its exit). Until its answer is stored (in its site's
jurisdiction, like any), GET answers from a placeholder without conversation content
(response_store.Pending); a run that ends without an answer leaves the placeholder failed or cancelled, and
one whose process died is failed by its first reader after its owner's lease, which writes that run's one
audit record (outcome `abandoned`; its quota left charged at its reservation: `_look`, background.py).
With `stream: true` the run is served streamed and its Responses events go to the response's event log
(event_log.py, in the stores of stores.py); the create answers a reader of that log, and
GET /v1/responses/{id}?stream=true&starting_after=N another one (`_follow`), on any worker or replica.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aigrid.agents.loop import OrphanToolResult, UnansweredToolCalls, check_tool_results, wants_server_tools
from aigrid.errors import (
    ApiError,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    Overloaded,
    PermissionDenied,
    StoreUnavailable,
    UpstreamFailed,
)
from aigrid.gateway.background import (
    ABANDONED,
    BACKGROUND_ROUTE,
    MAX_RUNS_PER_TENANT,
    error_code,
    error_object,
)
from aigrid.gateway.chat_events import cached_of, loop_stop_of
from aigrid.gateway.compaction import (
    AUTO_SHARE,
    KEY_PURPOSE,
    SUMMARY_MAX_TOKENS,
    Sealer,
    Summary,
    compaction_messages,
    summary_message,
    summary_of,
    user_items,
)
from aigrid.gateway.context_window import check_context, smallest_context
from aigrid.gateway.conversations_api import H_STORED_IN, Conversations, check_stored_in
from aigrid.gateway.cursor_list import page_after, page_object, page_query
from aigrid.gateway.envelope import field_name
from aigrid.gateway.event_log import FOLLOW_POLL_S, TERMINAL, LogWriter, event, kind_of, split
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
from aigrid.gateway.relay_response import RelayResponse, aclose_body
from aigrid.gateway.request_info import H_POLICY, H_RESIDENCY, build_request_info, estimate_prompt_tokens
from aigrid.gateway.response_store import FINAL, BrokenHistory, Pending, StoredResponse
from aigrid.gateway.responses_schema import CompactRequest, ResponsesRequest
from aigrid.gateway.responses_stream import Spent, added, responses_stream
from aigrid.gateway.responses_translate import (
    chat_body,
    check_include,
    held_tools,
    input_items,
    listed_tools,
    new_id,
    output_history,
    output_items,
    pending_object,
    response_object,
    settings,
    to_list,
    usage_block,
)
from aigrid.gateway.routes import (
    CHAT_PATH,
    H_TENANT,
    Audited,
    Routes,
    audited_route,
    authenticate,
    close_exchange,
    count_rejected,
    first_turn_tokens,
    json_response,
    own_exchange,
    refuse_unallowed_tools,
)
from aigrid.gateway.schemas import ChatRequest
from aigrid.gateway.stores import ResponseBook
from aigrid.gateway.urgency import body_urgency
from aigrid.security.authorize import authorize, check_made_for, check_produced_by, model_may_serve
from aigrid.security.principal import Principal, Scopes
from aigrid.security.quotas import Reservation

RESPONSES_PATH = "/v1/responses"
COMPACT_PATH = RESPONSES_PATH + "/compact"
_SSE = {"content-type": "text/event-stream", "cache-control": "no-cache"}
KEEPALIVE_S = 2.0
ORPHAN_S = 5.0
"""A reader of an event log: a comment every KEEPALIVE_S of silence; its writer checked every ORPHAN_S."""
_PARAMS = {"max_tokens": "max_output_tokens", "messages": "input"}
"""Pipeline errors name chat fields; these are their Responses names."""
_FORMAT = re.compile(r"^response_format(?:\.json_schema)?")
"""A chat `response_format` field's prefix, whose Responses field is under `text.format` (flattened)."""


class PreviousResponseNotFound(InvalidRequest):
    """A `previous_response_id` that cannot be continued (unknown, another tenant's, expired, a background
    response that ended without an answer, a chain that lost a turn): OpenAI's 400 `previous_response_not_found`
    naming `previous_response_id`, which agents (Codex, the Agents SDK) read to resend the whole history. Until
    the twenty-first session a 404 `not_found`."""

    code = "previous_response_not_found"

    def __init__(self, previous: str, why: str) -> None:
        super().__init__(f"Previous response with id {previous!r} not found: {why}", param="previous_response_id")


STOPPED = {"code": "server_error", "message": "the gateway stopped before this background response finished"}
MAX_FOLLOWERS_PER_TENANT = MAX_RUNS_PER_TENANT
"""Readers of event logs (GET /v1/responses/{id}?stream=true) one gateway serves at once per tenant; more is a
429. A read is counted in no quota, and each reader polls its log's store every FOLLOW_POLL_S while the response
runs: without a bound one tenant's readers took the event loop, or the Redis connections every tenant shares.
With `--workers N` each worker serves its share (`Gateway.share`): every worker's readers poll the one hub
(or Redis), and a bound per worker let one tenant's readers spread over N workers be N times it."""
log = logging.getLogger("aigrid.gateway")


class _Turn:
    """What one request learned while its body was read: the request, its chat body, who asked, history."""

    req: ResponsesRequest
    chat: dict[str, Any]
    principal: Principal
    earlier: int = 0
    """Chat messages before this turn's input: the instructions and the stored history."""
    bound: str | None = None
    """The jurisdiction of the stored conversation it reads (previous_response_id, a compaction item made from
    one): the request is routed only there."""

    def __init__(self) -> None:
        self.origins: list[str] = []
        """The Responses field each chat message came from (errors name it)."""
        self.history: list[dict[str, Any]] = []
        """The stored history's chat messages (of previous_response_id or conversation)."""
        self.lead: list[dict[str, Any]] = []
        """Automatic compaction (`context_management`): the compaction item its pass made, which the Response's
        output starts with; its turn is stored as a new chain root (its history is the summary)."""
        self.spent: Spent = (0, 0, 0)
        """The compaction pass's (prompt, completion, cached) tokens, added to the Response's usage."""
        self.listed: list[dict[str, Any]] = []
        """The grid's server-side tools the request offers where the conversation's context lists them not yet, which
        the mcp_list_tools item before the model's output lists (responses_translate.to_list; empty: no item)."""
        self.held: set[str] = set()
        """The grid tools the conversation's context lists already: mcp_list_tools items of its input, of its
        `conversation`'s items, of its previous_response_id chain (StoredResponse.listed)."""
        self.chain: list[str] = []
        """The grid models whose answers its previous_response_id chain holds (StoredResponse.produced_by): kept with
        its own answer's in its stored record."""


class ResponsesApi:
    def __init__(self, routes: Routes) -> None:
        self.pipeline = routes
        self.gw = routes.gw
        assert routes.gw.stores is not None, "build_app builds the stores"
        self.book = routes.gw.stores.responses
        """Stored responses and background placeholders, wherever each lives (stores.py)."""
        self.conversations = Conversations(routes.gw.stores.conversations)
        self.sealer = Sealer(routes.gw.guard.derived_key(KEY_PURPOSE))
        """Compaction items' summaries, sealed to their tenant (compaction.py)."""
        self._following: dict[str, int] = {}
        """Per tenant: the readers of event logs this process serves now (GET ?stream=true)."""

    def routes(self) -> list[Route]:
        """GET, DELETE and cancel of a stored or background response (POST /v1/responses is an audited route
        too: routes.Routes.audited): each is recorded like a request, with its outcome."""
        path = RESPONSES_PATH + "/{response_id}"
        items, cancel = path + "/input_items", path + "/cancel"
        return [Route(COMPACT_PATH, Audited(self.gw, COMPACT_PATH, self.compact, watch=True), methods=["POST"]),
                audited_route(self.gw, "GET", path, self.get), audited_route(self.gw, "DELETE", path, self.delete),
                audited_route(self.gw, "GET", items, self.list_input_items),
                audited_route(self.gw, "POST", cancel, self.cancel),
                audited_route(self.gw, "POST", RESPONSES_PATH + "/input_tokens", self.input_tokens)]

    def _principal(self, headers: dict[str, str]) -> Principal:
        return self.gw.guard.principal(headers.get("authorization"), headers.get(H_TENANT))

    async def create(self, request: Request, ex: Exchange) -> Response:
        headers = pipeline_headers(request)
        turn = _Turn()
        arrived = self.gw.clock()  # whence its deadline counts, for its compaction's pass and its answer alike
        try:
            # who asks first: a client without a key learns nothing of the schema and costs no body read
            ex.principal = caller = self._principal(headers)
            raw = await self.pipeline.read_json(request)
        except ApiError as e:
            count_rejected(self.gw, ex.route, e.code or "error")
            raise
        ex.body = {"model": raw["model"]} if "model" in raw else {}  # a refusal's access line names it
        if raw.get("background") is True:
            if ex.hangup is not None:
                ex.hangup.hold()  # a background response outlives its client: its create is not cut short either
            return await self._start_background(turn, raw, headers, ex, caller)

        rid = new_id("resp")
        prepared = None
        if raw.get("context_management") is not None:  # compacted first when it is long (its pass audited apart)
            prepared = turn = await self._auto_compact(raw, headers, caller, rid, arrived)

        async def read() -> dict[str, Any]:
            if prepared is None:
                await self._prepare(turn, raw, headers, caller)
            return turn.chat

        resp = await self._route(turn, headers, read, ex, caller, arrived)
        _served_by(turn, resp)
        extra = aigrid_headers(resp)

        async def keep(final: dict[str, Any]) -> None:
            """The answer is the client's whatever happens here: a store that does not answer is logged."""
            try:
                await self._add_turn(turn, final, extra)
            except StoreUnavailable as e:
                log.error("response %s was answered, but its turn could not be added to conversation %s: %s",
                          rid, turn.req.conversation, e.message)
            if turn.req.store:
                try:
                    await self._store(turn, final, extra)
                except StoreUnavailable as e:
                    log.error("response %s was answered, but could not be stored: %s", rid, e.message)

        if is_event_stream(resp):
            assert isinstance(resp, RelayResponse)
            events = restream(resp, lambda ev: responses_stream(ev, turn.req, rid, keep, lead=turn.lead,
                                                                spent=turn.spent, listed=turn.listed),
                              steps=ex.steps)
            return RelayResponse(events, 200, {**extra, "content-type": "text/event-stream",
                                               "cache-control": "no-cache"})
        body = await whole_body(resp)
        if ex.hangup is not None:
            ex.hangup.hold()  # the answer is whole: it is stored (and its conversation's turn added) whoever waits
        if resp.status_code >= 400:  # the engine's own error answer: already the OpenAI envelope
            return _refused(resp, body, extra)
        final = _final(turn, body, rid, int(time.time()), ex.steps)
        await keep(final)
        return Response(orjson.dumps(final), media_type="application/json", headers=extra)

    async def _prepare(self, turn: _Turn, raw: dict[str, Any], headers: dict[str, str], caller: Principal, *,
                       req: ResponsesRequest | None = None) -> None:
        """The request validated (`req`: already), its stored history read as `caller` (authenticated before its
        body was read) and its compaction items opened: its chat body."""
        turn.req = req = validate(ResponsesRequest, raw) if req is None else req
        check_include(getattr(req, "include", None))
        if req.background and not req.store:
            raise InvalidRequest("background: true requires store: true (a background response is kept to be "
                                 "retrieved with GET /v1/responses/{id})", param="background")
        if req.background and req.context_management:
            raise InvalidRequest("context_management: automatic compaction is not served for a background "
                                 "response; compact first (POST /v1/responses/compact), or leave out background",
                                 param="context_management")
        turn.principal = caller
        # the key's model scope before any stored history is read: a key not granted the model has nothing read
        # from the store for it (a conversation's every item, a previous_response_id chain), nor any of its errors
        authorize(caller, req.model)
        history: list[dict[str, Any]] = []
        if req.conversation is not None:
            if req.previous_response_id is not None:
                raise InvalidRequest("conversation: cannot be used together with previous_response_id",
                                     param="conversation")
            history = await self.conversations.history(turn.principal, req.conversation, headers, turn.held)
        elif req.previous_response_id is not None:
            history, turn.chain = await self._continue(turn.principal, req.previous_response_id, headers, turn.held)
            turn.bound = headers[H_RESIDENCY]
        turn.history = history
        summaries = self._open_compactions(turn, headers)
        turn.chat = chat_body(req, history, list(self.gw.agents.tools), turn.origins, summaries)
        turn.held |= held_tools(req.input)
        turn.listed = to_list(listed_tools(turn.chat, self.gw.agents.tools), turn.held)
        try:  # OpenAI's 400 for a function_call_output whose call_id is no function_call's before it, and for a
            check_tool_results(turn.chat["messages"])  # function_call that no function_call_output answers
        except UnansweredToolCalls as e:
            raise _no_output(req, e.ids) from e
        except OrphanToolResult as e:  # OpenAI's words, naming the item (`input.3`; its `output` until the 36th session)
            item = turn.origins[e.index].removesuffix(".output") if e.index < len(turn.origins) else "input"
            raise InvalidRequest(f"No tool call found for function call output with call_id {e.call_id}.",
                                 param=item) from e
        except ApiError as e:
            _own_error(e, turn)
            raise
        turn.earlier = (1 if req.instructions else 0) + len(history)

    def _open_compactions(self, turn: _Turn, headers: dict[str, str]) -> dict[int, dict[str, Any]]:
        """The chat message of each compaction item of the input, by its index: its sealed summary opened (a 400
        naming its encrypted_content when it is not one this gateway made for this tenant). A summary of a stored
        conversation is used as that conversation is (check_stored_in: the key may use its jurisdiction, the
        request asks for no other) and routes the request only there; a summary holds the answers of its models
        (`_summary_models`), which join the turn's chain (kept with its stored answer, sealed into its compaction)."""
        req, opened = turn.req, dict[int, dict[str, Any]]()
        if isinstance(req.input, str):
            return opened
        for i, item in enumerate(req.input):
            if item.get("type") != "compaction":
                continue
            at = field_name(("input", i))
            if req.conversation is not None:  # its turn would be kept there, and a conversation keeps none
                raise InvalidRequest(f"{at}: a compaction item cannot be added to a conversation; send it with "
                                     "previous_response_id, or alone, instead of conversation", param=at)
            summary = self.sealer.open(turn.principal.tenant, item, at)
            if summary.jurisdiction is not None:
                check_stored_in(turn.principal, summary.jurisdiction, at, "the conversation this compaction item "
                                "summarises", headers.get(H_RESIDENCY), writes=True)
                headers[H_RESIDENCY] = turn.bound = summary.jurisdiction
            turn.chain = sorted(set(turn.chain) | set(self._summary_models(turn.principal, summary, at)))
            opened[i] = summary_message(summary.text)
        return opened

    def _summary_models(self, principal: Principal, summary: Summary, at: str) -> list[str]:
        """The grid models whose answers a summary holds, once this caller may use it: a key narrowed to models uses
        only what models that may serve it produced (check_produced_by, as a stored response; until the
        thirty-seventh session a key of small-1b sent a summary large-70b wrote to small-1b). A summary sealed
        before then recorded its writer alone, not the chain it summarised: it counts as the answers of every grid
        model that may serve its tenant, so a key narrowed to fewer is refused it (403 model_not_allowed naming the
        item; compact again), and the tenant's other keys use it as before."""
        if summary.models is not None:
            check_produced_by(principal, summary.models, at, "the compaction item")
            return list(summary.models)
        tenant = self.gw.guard.tenants.get(principal.tenant)
        scopes = tenant.scopes if tenant is not None else Scopes()
        models = [m for m in sorted(self.gw.spec.models) if model_may_serve(scopes, m)]
        if not all(model_may_serve(principal.scopes, m) for m in models):
            raise PermissionDenied(f"{at}: the compaction item was sealed before this gateway recorded the models "
                                   f"whose answers a summary holds, and key {principal.key_id} may not use every "
                                   "model of its tenant; compact the conversation again with this key", param=at,
                                   code="model_not_allowed")
        return models

    async def compact(self, request: Request, ex: Exchange) -> Response:
        """POST /v1/responses/compact: the conversation (input items, the stored history of previous_response_id)
        summarised by the model through the one pipeline (auth, scopes, quotas, firewall, routing, audit: this
        route's record), answered as OpenAI does: its user messages word for word, then one compaction item
        whose sealed summary stands for everything else (compaction.py). Nothing is stored."""
        headers = pipeline_headers(request)
        turn = _Turn()
        try:
            ex.principal = caller = self._principal(headers)  # who asks first, as create
            raw = await self.pipeline.read_json(request)
        except ApiError as e:
            count_rejected(self.gw, ex.route, e.code or "error")
            raise

        async def read() -> dict[str, Any]:
            req = validate(CompactRequest, raw)
            for name in ("conversation", "background", "stream"):
                if getattr(req, name):
                    raise InvalidRequest(f"{name}: not served by /v1/responses/compact (it takes model, input, "
                                         "instructions and previous_response_id)", param=name)
            if not req.input and req.previous_response_id is None:
                raise InvalidRequest("input: give the conversation to compact (input items, previous_response_id, "
                                     "or both)", param="input")
            await self._prepare(turn, raw, headers, caller, req=req)
            return self._pass_body(turn)

        resp = await self._route(turn, headers, read, ex, caller)
        extra, body = aigrid_headers(resp), await whole_body(resp)
        if resp.status_code >= 400:  # the engine's own error answer: already the OpenAI envelope
            return _refused(resp, body, extra)
        item, spent = self._sealed(turn, body, ex, served_model(resp, turn.req.model))
        return Response(orjson.dumps({
            "id": new_id("resp"), "object": "response.compaction", "created_at": int(time.time()),
            "output": [*user_items(turn.history, input_items(turn.req.input)), item],
            "usage": usage_block(*spent)}), media_type="application/json", headers=extra)

    def _pass_body(self, turn: _Turn) -> dict[str, Any]:
        """The compaction pass's chat request for a prepared turn (its conversation after the compaction prompt,
        its origins shifted in place), at the urgency the request's body asks (its `priority`, `deadline_ms`,
        urgency.body_urgency: until the twenty-ninth session the pass ran at the default urgency)."""
        return {"model": turn.req.model, "messages": compaction_messages(turn.chat["messages"], turn.origins),
                "max_tokens": min(SUMMARY_MAX_TOKENS, self.gw.spec.gateway.max_output_tokens), "stream": False,
                **body_urgency(turn.chat)}

    def _sealed(self, turn: _Turn, body: bytes, ex: Exchange, writer: str) -> tuple[dict[str, Any], Spent]:
        """The compaction item of the pass's answer (its summary sealed to the tenant, with the jurisdiction of
        the history it read and the models whose answers it holds: `writer`, the grid model that served the pass,
        and the turn's chain) and the pass's (prompt, completion, cached) tokens; a 502 when it wrote none."""
        try:
            chat = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise UpstreamFailed("the engine's answer to the compaction pass was not JSON") from e
        text = summary_of(chat) if isinstance(chat, dict) else None
        if text is None:
            raise UpstreamFailed("the model wrote no summary in the compaction pass; try again")
        item_id = new_id("cmp")
        sealed = self.sealer.seal(turn.principal.tenant, Summary(text, writer, turn.bound, int(time.time()),
                                                                 tuple(sorted({writer, *turn.chain}))))
        ex.notes["compaction_item"] = item_id
        usage = chat.get("usage") or {}
        return ({"type": "compaction", "id": item_id, "encrypted_content": sealed},
                (int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), cached_of(usage)))

    async def _auto_compact(self, raw: dict[str, Any], headers: dict[str, str], caller: Principal,
                            rid: str, arrived: float) -> _Turn:
        """A create with `context_management` (OpenAI's automatic compaction), prepared: as it came when its
        conversation (input, instructions, tools and stored history, estimated as the router estimates prompt
        tokens) is within the entry's compact_threshold (none given: AUTO_SHARE of the model's context);
        above it, compacted first by the pass POST /v1/responses/compact runs (`_compaction_pass`), then
        prepared anew as that answer reads: its user messages, then the compaction item (its summary restored),
        which the Response's output starts with. The request's deadline counts from `arrived` for both calls (one
        budget: the answer gets what the pass left of it)."""
        turn = _Turn()
        try:
            await self._prepare(turn, raw, headers, caller)
            req = turn.req
            if not req.context_management:
                return turn
            if req.conversation is not None:
                raise InvalidRequest("context_management: automatic compaction is not served with conversation (a "
                                     "conversation keeps no compaction item); use previous_response_id",
                                     param="context_management")
            chat = validate(ChatRequest, turn.chat)
            threshold = req.context_management[0].compact_threshold
            if threshold is None:
                context = smallest_context(chat.model, self.gw.spec.models)
                threshold = None if context is None else int(context * AUTO_SHARE)
            if threshold is None or estimate_prompt_tokens(chat) <= threshold:
                return turn
        except ApiError as e:
            _own_error(e, turn)
            count_rejected(self.gw, f"POST {RESPONSES_PATH}", e.code or "error")
            raise
        item, spent = await self._compaction_pass(turn, headers, caller, rid, arrived)
        answer = _Turn()
        items = [*user_items(turn.history, input_items(req.input)), item]
        await self._prepare(answer, raw, headers, caller,
                            req=req.model_copy(update={"input": items, "previous_response_id": None}))
        answer.req = answer.req.model_copy(update={"previous_response_id": req.previous_response_id})  # echoed
        answer.lead, answer.spent = [item], spent  # its chain: the item's models (_open_compactions)
        return answer

    async def _compaction_pass(self, turn: _Turn, headers: dict[str, str], caller: Principal,
                               rid: str, arrived: float) -> tuple[dict[str, Any], Spent]:
        """An automatic compaction's pass, through the one pipeline as POST /v1/responses/compact's is, in an
        Exchange of its own closed like an audited route's (its quota reserved and settled to its usage, its
        own audit record on the compact route, `extra.response_id` naming the response it was made for): the
        pipeline keeps one reservation and one answer per exchange. Its failure fails the response."""
        ex = Exchange(COMPACT_PATH, time.time(), principal=caller, notes={"automatic": True, "response_id": rid})

        async def read() -> dict[str, Any]:
            return self._pass_body(turn)

        # a cancel: the client left (Audited's watch), or the gateway stops
        async with own_exchange(self.gw, ex, headers, cancelled="client_closed",
                                what=f"the compaction pass of response {rid}"):
            resp = await self._route(turn, dict(headers), read, ex, caller, arrived)
            body = await whole_body(resp)
            if resp.status_code >= 400:
                raise UpstreamFailed(f"the compaction pass (context_management) failed: the engine answered "
                                     f"{resp.status_code}; the response was not served", headers=retry_headers(resp))
            return self._sealed(turn, body, ex, served_model(resp, turn.req.model))

    async def _route(self, turn: _Turn, headers: dict[str, str], read: Callable[[], Awaitable[dict[str, Any]]],
                     ex: Exchange, caller: Principal, arrived: float | None = None) -> Response:
        """The one pipeline, as `caller` (authenticated once, before the body was read); its errors name the
        Responses fields. Restored summaries are user messages, read by the firewall as the client's own words
        (compaction.py: the texts they were made of were read as what they were when the pass read them)."""
        try:
            return await self.pipeline.route(CHAT_PATH, ChatRequest, headers, read, ex, caller=caller, arrived=arrived)
        except ApiError as e:
            _own_error(e, turn)
            raise

    # --- background -------------------------------------------------------------------------------------
    async def _start_background(self, turn: _Turn, raw: dict[str, Any], headers: dict[str, str],
                                ex: Exchange, caller: Principal) -> Response:
        """Check what can be checked without the pipeline's state (the body, the key, the stored history, the
        model, the headers, the context), answer a queued Response, run the request in the background."""
        gw = self.gw
        try:
            await self._prepare(turn, raw, headers, caller)
            ex.model, ex.body = turn.req.model, turn.chat
            parsed = validate(ChatRequest, turn.chat)
            asked = build_request_info("background", parsed, headers, gw.cities, gw.known_models,
                                       gw.spec.gateway.max_output_tokens, gw.location,
                                       may_use=caller.scopes.allows_model)
            # the key's scopes before the context check (as the pipeline does): a key not granted the model is
            # refused now, not told its context length, nor answered a queued response that fails when it runs
            gw.guard.authorize(ex, headers.get(H_POLICY) or caller.scopes.policy, asked.allowed_jurisdictions)
            prompt = parsed.prompt_text()
            check_context(parsed.model, len(prompt), gw.spec.models, "messages", prompt)
            gw.background.check_room(turn.principal.tenant)
            # admitted now, as OpenAI does (a 429 to the create, never a queued response that fails): the request
            # counted and its tokens reserved; the reservation goes to the run, which settles it (routes.route
            # admits no second time)
            reserved = asked.prompt_tokens + asked.max_output_tokens
            if wants_server_tools(turn.chat, gw.agents.tools):  # as the run (routes.route) reserves it: the tool
                # loop's first turn; each turn reserves the rest of its max_tokens as it starts (Guard.extend); a
                # tool the tenant may not have run is the create's 403, not a queued response that fails
                refuse_unallowed_tools(turn.chat, gw.agents.tools, caller)
                reserved = first_turn_tokens(turn.chat, gw.agents.tools, gw.agents.loop,
                                             gw.spec.models.get(parsed.model))
            await gw.guard.admit(ex, turn.chat, prompt, reserved,
                                 policy=headers.get(H_POLICY) or caller.scopes.policy,
                                 jurisdictions=asked.allowed_jurisdictions)
        except ApiError as e:
            _own_error(e, turn)
            count_rejected(gw, ex.route, e.code or "error")
            raise
        rid, created, tenant = new_id("resp"), int(time.time()), turn.principal.tenant
        ex.body = {"response_id": rid, "background": True}  # its record; the prompt is the run's
        writer, home = None, self.book.events_home(turn.principal.scopes.jurisdictions)
        shared = self.book if self.book.shared else None  # others read it: its owner named, its lease renewed
        if shared is not None:
            await gw.background.renew(shared)
        if turn.req.stream:  # its event log, begun before it is announced: a resume finds it from the start
            writer = LogWriter(home, tenant, rid)
            queued = response_object(turn.req, rid, created, [], status="queued")
            await writer.open([event("response.created", 0, response=queued),
                               event("response.queued", 1, response=queued)])
        await self.book.pending_add(Pending(rid, tenant, turn.req.model, created,
                                            owner=gw.background.owner if shared is not None else "",
                                            key_id=turn.principal.key_id, settings=settings(turn.req),
                                            scopes=turn.principal.scopes.to_dict()))
        admission = ex.hand_admission()  # the run's to settle
        gw.background.spawn(rid, tenant, self._run(turn, headers, rid, created, admission, writer), shared)
        if writer is not None:  # the create's own stream: the log from its start, followed live
            return RelayResponse(self._follow(home, tenant, rid, -1), 200, _SSE)
        return json_response(pending_object(rid, turn.req.model, created, "queued", echoed=settings(turn.req)))

    async def _run(self, turn: _Turn, headers: dict[str, str], rid: str, created: int, admission: Reservation,
                   writer: LogWriter | None = None) -> None:
        """One background request through the pipeline, in an Exchange of its own (routes.own_exchange), admitted
        by its create (`admission`: Exchange.take_admission); every exit leaves the response in a final status.
        With `writer` (created with stream) it is served streamed, as a live streamed request is, and its events
        go to its event log, which every exit ends (the stream's own last event, else one made from the final
        status), before its exchange closes."""
        gw, tenant = self.gw, turn.principal.tenant
        ex = Exchange(BACKGROUND_ROUTE, time.time(), notes={"response_id": rid})
        ex.take_admission(admission)

        async def read() -> dict[str, Any]:
            return turn.chat

        async with own_exchange(gw, ex, headers, what=f"background response {rid}"):
            try:
                try:
                    await self.book.mark(tenant, rid, "in_progress")
                    resp = await self._route(turn, headers, read, ex, turn.principal)
                    _served_by(turn, resp)
                    if writer is not None and is_event_stream(resp):
                        assert isinstance(resp, RelayResponse)
                        await self._stream(turn, resp, rid, created, ex, writer)
                        return
                    body = await whole_body(resp)
                    gw.background.check(rid)
                    gw.background.ending(rid)
                except asyncio.CancelledError:  # the client's cancel, or the gateway stopping
                    gw.background.ending(rid)
                    _uncancel()
                    ex.outcome = "cancelled"
                    await self._end(tenant, rid, "failed" if gw.background.stopping else "cancelled",
                                    STOPPED if gw.background.stopping else None, ex)
                    return
                except ApiError as e:  # refused by the pipeline (quota, firewall, no site) or every attempt failed
                    gw.background.ending(rid)
                    ex.error = e
                    await self._end(tenant, rid, "failed", error_object(e), ex)
                    return
                except Exception:  # a bug of ours: logged, the response failed
                    gw.background.ending(rid)
                    log.exception("internal error in background response %s", rid)
                    ex.outcome = "error:internal"
                    await self._end(tenant, rid, "failed", {"code": "server_error", "message": "internal error"}, ex)
                    return
                try:
                    await self._finish(turn, resp, body, rid, created, ex)
                except (ConnectionError, StoreUnavailable) as e:  # its store gone: the answer lost, the exchange closes
                    log.error("background response %s: its answer could not be stored: %s", rid, e)
                    ex.outcome = "error:internal"
            finally:  # its event log ended before its exchange closes
                if writer is not None and not writer.ended:
                    await self._end_log(writer)

    async def _stream(self, turn: _Turn, resp: RelayResponse, rid: str, created: int, ex: Exchange,
                      writer: LogWriter) -> None:
        """A streamed background run's answer into its event log (responses_stream's events, numbered on from
        the log's). Its last event is written only when it says what the response now is: an answer stored
        (completed, incomplete) or the stream's failure (the placeholder failed first); an answer not kept
        (its cancel came first, its store refused it) is ended by _run from the placeholder's status."""
        outcome: list[str] = []

        async def keep(final: dict[str, Any]) -> None:
            self.gw.background.ending(rid)
            outcome.append(await self._keep_background(turn, final, aigrid_headers(resp), ex))

        chunks = restream(resp, lambda ev: responses_stream(ev, turn.req, rid, keep, created=created,
                                                            seq=writer.next, listed=turn.listed), steps=ex.steps)
        try:
            async for chunk in chunks:
                self.gw.background.check(rid)
                events = split(chunk)
                last = bool(events) and kind_of(events[-1]) in TERMINAL
                if last and not outcome:  # the stream broke: response.failed, no answer
                    self.gw.background.ending(rid)
                    failed = orjson.loads(events[-1].split("data: ", 1)[1])["response"]
                    await self._end_broken(turn, failed, aigrid_headers(resp), ex)
                elif last and outcome[0] != "stored":
                    events, last = events[:-1], False
                await writer.write(events, last=last)
        finally:
            await aclose_body(chunks)  # the relay released however this ends

    async def _end_broken(self, turn: _Turn, failed: dict[str, Any], headers: dict[str, str], ex: Exchange) -> None:
        """A streamed background run whose stream broke (its response.failed: `failed`): stored as streamed, with the
        items it sent (the one cut `incomplete`), where it sent any and its site's jurisdiction is known (_store: its
        conversation is not added to); else its placeholder failed with the stream's error. Until the thirtieth
        session always the placeholder: GET said `output: []` where the stream and its replay had the cut item."""
        tenant, rid = turn.principal.tenant, failed["id"]
        if failed.get("output") and "x-aigrid-jurisdiction" in headers:
            try:
                outcome = await self._store(turn, failed, headers, background=True)
            except (ConnectionError, StoreUnavailable) as e:
                log.error("background response %s: its failed answer could not be stored: %s", rid, e)
                outcome = "refused"
            _came_first(outcome, ex)
            if outcome != "refused":  # stored, or its cancel (a reader's failure) came first: kept as it is
                return
        await self._end(tenant, rid, "failed", failed.get("error"), ex)

    async def _keep_background(self, turn: _Turn, final: dict[str, Any], headers: dict[str, str],
                               ex: Exchange) -> str:
        """A background run's answer stored (its placeholder dropped) and added to its conversation: the
        outcome of _store."""
        outcome = await self._store(turn, final, headers, background=True)
        _came_first(outcome, ex)
        if outcome == "stored":
            await self._add_turn(turn, final, headers)
        return outcome

    async def _end_log(self, writer: LogWriter) -> None:
        """The log's last event, from the response's final status (a store that does not answer: logged)."""
        try:
            last = await self._last_event(writer.tenant, writer.rid, writer.next)
        except (ConnectionError, StoreUnavailable) as e:
            log.error("background response %s: its event log could not be ended: %s", writer.rid, e)
            return
        await writer.write([last], last=True)

    async def _last_event(self, tenant: str, rid: str, seq: int) -> str:
        """The event that ends a streamed background response, from what is stored of it: its Response in
        response.completed or response.incomplete; failed or cancelled (OpenAI's stream has no event of its
        own for a cancel) in response.failed, the Response's `status` saying which, as GET shows it; gone
        (deleted, expired): an `error` event."""
        found = await self.book.lookup(tenant, rid)
        if isinstance(found, StoredResponse):
            status = found.response.get("status")
            kind = {"incomplete": "response.incomplete", "failed": "response.failed"}.get(status or "",
                                                                                        "response.completed")
            return event(kind, seq, response=found.response)
        if isinstance(found, Pending):
            return event("response.failed", seq, response=_pending_response(found))
        return event("error", seq, code="response_gone", param=None,
                     message=f"the response {rid!r} is no longer stored (deleted or expired)")

    async def _follow(self, store: ResponseBook, tenant: str, rid: str, after: int) -> AsyncIterator[bytes]:
        """A response's event log after number `after`, followed until its last event. Idle, a comment every
        KEEPALIVE_S (a client that left is noticed, proxies keep the connection); idle ORPHAN_S twice while
        the response has a final status, its writer is taken as gone (its store refused an append, its
        process died after its status): the stream ends with the event made from that status."""
        idle, checked, stale = 0.0, 0.0, False
        check_s = min(ORPHAN_S, self.gw.background.lease_s / 2)  # a dead owner's run is failed soon after its lease
        while True:
            try:
                got = await store.events_read(tenant, rid, after)
                if got is None:
                    yield event("error", after + 1, code="event_log_gone", param=None,
                                message=f"the event log of response {rid!r} is gone (deleted, expired or evicted "
                                        "from a full store); retrieve the response without stream").encode()
                    return
                events, ended = got
                if events:
                    after += len(events)
                    idle, checked, stale = 0.0, 0.0, False
                    yield "".join(events).encode()
                if ended:
                    return
                if events:
                    continue
                await asyncio.sleep(FOLLOW_POLL_S)
                idle += FOLLOW_POLL_S
                if idle >= KEEPALIVE_S:
                    idle = 0.0
                    yield b": waiting\n\n"
                checked += FOLLOW_POLL_S
                if checked >= check_s:
                    checked = 0.0
                    found = await self._look(tenant, rid)
                    if not (isinstance(found, StoredResponse) or (found is not None and found.status in FINAL)):
                        stale = False
                    elif stale:
                        log.warning("response %s: its event log ended with no last event; its stream ends from "
                                    "its status", rid)
                        yield (await self._last_event(tenant, rid, after + 1)).encode()
                        return
                    else:
                        stale = True
            except StoreUnavailable as e:
                log.warning("the stream of response %s ends: %s", rid, e.message)
                yield event("error", after + 1, code="store_unavailable", param=None, message=e.message).encode()
                return

    async def _counted(self, tenant: str, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """A reader's events, counted among its tenant's readers (MAX_FOLLOWERS_PER_TENANT, this worker's share) while they flow."""
        self._following[tenant] = self._following.get(tenant, 0) + 1
        try:
            async for chunk in events:
                yield chunk
        finally:
            left = self._following[tenant] - 1
            if left:
                self._following[tenant] = left
            else:
                del self._following[tenant]
            await aclose_body(events)

    async def _look(self, tenant: str, rid: str) -> StoredResponse | Pending | None:
        """The stored response or placeholder (book.lookup). A placeholder still running whose owner (another
        process) let its lease end, having died (background.py), is failed by this read (ABANDONED; once,
        whoever races: the store's atomic step), its exit audited and its quota settlement stated here
        (`_close_abandoned`, by the one reader whose step failed it), and its event log ended: a poller and a
        follower see it end."""
        found = await self.book.lookup(tenant, rid)
        if (not isinstance(found, Pending) or not found.owner or found.status in FINAL
                or self.gw.background.owns(rid)):
            return found
        failed = await self.book.abandon(found, dict(ABANDONED))
        if failed is None:  # its owner is alive, or another reader failed it first
            return found
        log.warning("background response %s of tenant %s: its owner %s did not renew its lease for %s s (its "
                    "process died): failed; audited here, its quota left charged at its reservation (settled by its "
                    "owner, in a second record, if it comes back)", rid,
                    tenant, found.owner, self.gw.background.lease_s)
        # a write that fails is logged: raised here, it skipped the failed response's audit and settlement
        self.gw.proxy.written(rid, self.gw.metrics.background_abandoned.inc)
        await self._close_abandoned(failed)
        try:
            store = await self.book.events_find(tenant, rid)
            last = None if store is None else await store.events_next(tenant, rid)
        except (ConnectionError, StoreUnavailable) as e:
            log.error("background response %s: its event log could not be ended: %s", rid, e)
            return failed
        if store is not None and last is not None and not last[1]:  # its dead writer's last event, written here
            writer = LogWriter(store, tenant, rid)
            writer.next = last[0]
            await self._end_log(writer)
        return failed

    async def _close_abandoned(self, failed: Pending) -> None:
        """The exit of a run whose process died, closed by the reader that failed it (only the one whose atomic
        `abandon` changed the placeholder comes here): one audit record of the background route, written like
        any exit's (routes.close_exchange: Guard.finish, the one audit path), with the tenant, the key and the
        model of its placeholder, outcome `abandoned`, and in `extra` the response id, the dead owner and
        the quota settlement. Its quota is not settled again: at admission the dead process reserved the
        prompt's estimate and the output limit in the quota store, and nobody knows the tokens its run used,
        so it stays charged at that reservation (none if it died before its admission; a quota store of that
        process's memory died with it). No usage is made up: the record counts no tokens. An owner only
        stalled past its lease that comes back settles the reservation to its usage and writes a second
        record, outcome `abandoned:settled`, with the same response id (`_abandoned_alive`): at most two."""
        ex = Exchange(BACKGROUND_ROUTE, time.time(), body={"response_id": failed.id, "background": True},
                      model=failed.model, outcome="abandoned",
                      principal=Principal(failed.tenant, failed.key_id or "unknown", Scopes()),
                      notes={"response_id": failed.id, "owner": failed.owner,
                             "reason": f"its owner {failed.owner} did not renew its lease for "
                                       f"{self.gw.background.lease_s} s (its process died)",
                             "quota": "charged at its reservation (its usage is unknown here; if its owner "
                                      "comes back, its record of outcome abandoned:settled settles it to its "
                                      "usage)"})
        await close_exchange(self.gw, ex)

    async def _end(self, tenant: str, rid: str, status: str, error: dict[str, Any] | None = None,
                   ex: Exchange | None = None) -> None:
        """A run's final status onto its placeholder (a store that does not answer: logged, the run still
        closes its exchange); `ex`, the run's: noted when a reader had failed it first as abandoned."""
        try:
            found = await self.book.mark(tenant, rid, status, error)
        except (ConnectionError, StoreUnavailable) as e:
            log.error("background response %s: its status %s could not be recorded: %s", rid, status, e)
            return
        if ex is not None and found is not None and found.status == "failed" and found.error == ABANDONED:
            _abandoned_alive(ex)

    async def _finish(self, turn: _Turn, resp: Response, body: bytes, rid: str, created: int,
                      ex: Exchange) -> None:
        """The answer of a background run stored (its placeholder dropped), or its placeholder failed."""
        tenant = turn.principal.tenant
        if resp.status_code >= 400:  # the engine's own error answer
            await self._end(tenant, rid, "failed", _refusal_object(resp.status_code, body), ex)
            return
        try:
            final = _final(turn, body, rid, created, ex.steps)
        except ApiError as e:
            ex.error = e
            await self._end(tenant, rid, "failed", error_object(e), ex)
            return
        await self._keep_background(turn, final, aigrid_headers(resp), ex)

    async def _add_turn(self, turn: _Turn, final: dict[str, Any], headers: dict[str, str]) -> None:
        """This request's input items and the answer's output items, added to its `conversation` (whether or
        not the Response itself is stored); the first turn served binds the conversation to its site's
        jurisdiction."""
        if turn.req.conversation is not None:
            await self.conversations.add_turn(turn.principal.tenant, turn.req.conversation,
                                              input_items(turn.req.input) + final["output"],
                                              headers.get("x-aigrid-jurisdiction"), final.get("model"))

    async def _continue(self, principal: Principal, previous: str, headers: dict[str, str], held: set[str],
                        ) -> tuple[list[dict[str, Any]], list[str]]:
        """The stored history of `previous` and the models whose answers it holds (check_produced_by: a key narrowed
        to models continues only what models that may serve it produced); narrows this request's residency to where
        it is stored. `held`: filled with the grid tools its chain lists (StoredResponse.listed)."""
        prev = await self._look(principal.tenant, previous)
        if prev is None:
            raise PreviousResponseNotFound(previous, "no stored response of this id for this tenant on this gateway")
        if isinstance(prev, Pending):
            if prev.status in FINAL:
                raise PreviousResponseNotFound(previous, f"the background response ended {prev.status} without an "
                                               "answer to continue")
            raise InvalidRequest(f"previous_response_id: the background response {previous!r} is still "
                                 f"{prev.status.replace('_', ' ')}; continue it once it has completed",
                                 param="previous_response_id")
        check_stored_in(principal, prev.jurisdiction, "previous_response_id", f"the conversation {previous!r}",
                        headers.get(H_RESIDENCY), writes=True)
        check_produced_by(principal, prev.produced_by(), "previous_response_id", f"the conversation {previous!r}")
        if prev.response.get("status") == "failed":  # stored as its stream broke (_end_broken): its answer was cut
            raise PreviousResponseNotFound(previous, "the background response ended failed, its answer cut: none to "
                                           "continue")
        try:
            history = await self.book.history(prev)
        except BrokenHistory as e:
            raise PreviousResponseNotFound(previous, f"an earlier turn ({e.args[0]}) is no longer stored, so its "
                                           "history cannot be rebuilt") from e
        headers[H_RESIDENCY] = prev.jurisdiction  # read by the pipeline after this body: route only there
        held.update(prev.listed)  # (a record of before the thirty-eighth session has none: its own output's list)
        held.update(held_tools(prev.response.get("output")))
        return history, prev.produced_by()

    async def _store(self, turn: _Turn, final: dict[str, Any], headers: dict[str, str], *,
                     background: bool = False) -> str:
        """Into the partition of the serving site's jurisdiction: "stored", "refused" (not a jurisdiction of
        the tenant's; no site named), or for a background answer "cancelled" (its cancel came first)."""
        jurisdiction, site = headers.get("x-aigrid-jurisdiction"), headers.get("x-aigrid-site", "")
        tenant = turn.principal.tenant
        if jurisdiction is None:
            if background:
                await self.book.mark(tenant, final["id"], "failed",
                                     {"code": "server_error", "message": "no jurisdiction to store the answer in"})
            return "refused"
        messages = turn.chat["messages"][turn.earlier:] + output_history(final["output"])
        # a compacted turn starts a chain of its own: its summary stands for the history, whose reads stop at it
        own = [final["model"]] if isinstance(final.get("model"), str) else []
        record = StoredResponse(final["id"], tenant, jurisdiction, site, final, messages,
                                previous=None if turn.lead else turn.req.previous_response_id,
                                inputs=input_items(turn.req.input),
                                models=sorted(set(own) | set(turn.chain)),
                                listed=sorted(turn.held | held_tools(final["output"])))
        allowed = turn.principal.scopes.jurisdictions
        if background:
            return await self.book.complete(record, allowed)
        return "stored" if await self.book.put(record, allowed) else "refused"

    async def input_tokens(self, request: Request, ex: Exchange) -> Response:
        """POST /v1/responses/input_tokens (the SDKs' `responses.input_tokens.count`): the request's input
        tokens, with the stored history of its `previous_response_id` or `conversation`, as the router estimates
        them (the figure that sizes prefill, cost and quota reservations; each engine behind the grid has its own
        tokenizer). `model` may be left out (any model). Nothing is routed or metered; the call is audited."""
        principal, headers = await authenticate(self.gw, request, ex)
        raw = await self.pipeline.read_json(request)
        ex.body = {k: raw[k] for k in ("model", "previous_response_id", "conversation") if k in raw}
        raw.setdefault("model", "auto")
        turn = _Turn()
        try:
            await self._prepare(turn, raw, headers, principal)
            chat = validate(ChatRequest, turn.chat)
            if chat.model != "auto" and chat.model not in self.gw.known_models:
                raise ModelNotFound(f"The model '{chat.model}' does not exist on this grid", param="model")
        except ApiError as e:
            _own_error(e, turn)
            raise
        return json_response({"object": "response.input_tokens",
                              "input_tokens": estimate_prompt_tokens(chat)})

    async def _stored_access(self, request: Request, ex: Exchange, *, heavy: bool = False) -> tuple[Principal, str]:
        """(caller, response id) of a GET or DELETE, noted on its exchange for the audit record; `heavy`: a read
        counted in requests per minute (routes.authenticate)."""
        principal, _ = await authenticate(self.gw, request, ex, heavy=heavy)
        rid = request.path_params["response_id"]
        ex.body = {"response_id": rid}
        return principal, rid

    async def _lookup(self, principal: Principal, rid: str) -> StoredResponse | Pending:
        """The caller's stored response or background placeholder (404: none of its tenant's); a stored one only
        for a key that may use the jurisdiction it is stored in (check_stored_in) and may be served by the models
        whose answers it holds (check_produced_by); a placeholder holds no conversation content."""
        found = await self._look(principal.tenant, rid)
        if found is None:
            raise NotFound(f"no stored response {rid!r}", param="response_id")
        if isinstance(found, StoredResponse):
            check_stored_in(principal, found.jurisdiction, "response_id", f"response {rid!r}")
            check_produced_by(principal, found.produced_by(), "response_id", f"response {rid!r}")
        return found

    async def get(self, request: Request, ex: Exchange) -> Response:
        """A stored response, or a background one's current state (its placeholder); with `stream=true` (a
        background response created with stream) its events after `starting_after`, followed to its end."""
        principal, rid = await self._stored_access(request, ex)  # who asks first: no query checked for nobody
        stream = request.query_params.get("stream", "false").lower() not in ("false", "0")
        after = -1
        if stream and "starting_after" in request.query_params:
            raw = request.query_params["starting_after"]
            if not raw.isdigit() or len(raw) > 18:
                raise InvalidRequest(f"starting_after: {raw!r} is not a sequence number (an integer, 0 or more)",
                                     param="starting_after")
            after = int(raw)
        found = await self._lookup(principal, rid)
        if stream:
            if isinstance(found, Pending):
                self._may_follow(principal, found)
            store = await self.book.events_find(principal.tenant, rid)
            if store is None:
                raise InvalidRequest(f"stream: response {rid!r} was not created with background: true and stream: "
                                     "true, so it has no events to stream again; retrieve it without stream",
                                     param="stream")
            ex.body = {"response_id": rid, "stream": True, "starting_after": after}
            most = self.gw.share(MAX_FOLLOWERS_PER_TENANT)
            if self._following.get(principal.tenant, 0) >= most:
                where = "on this gateway" if self.gw.workers == 1 else \
                    f"on this worker, its share of the gateway's {MAX_FOLLOWERS_PER_TENANT} over {self.gw.workers} workers"
                raise Overloaded(f"stream: {most} streams of this tenant's background responses are being read {where}, "
                                 "as many as it serves; retry later", param="stream", headers={"retry-after": "1"})
            return RelayResponse(self._counted(principal.tenant, self._follow(store, principal.tenant, rid, after)),
                                 200, _SSE)
        if isinstance(found, Pending):
            return json_response(_pending_response(found))
        return _stored_response(found)

    def _may_follow(self, principal: Principal, pending: Pending, doing: str = "read its events") -> None:
        """Whether this caller may read the event log of a background response without a stored answer: the log
        holds the answer's text, served where its creator may be served, so a caller narrowed to jurisdictions
        reads it only when it may use every jurisdiction its creator might (403 jurisdiction_not_allowed, as
        check_stored_in answers for the stored answer); a placeholder alone holds no content. The same for
        cancelling or deleting it (`doing`), as for a stored response. What the creator might is what the placeholder
        keeps of its scopes, not its key id: a token of the same `sub` with other jurisdiction claims is the same key
        id, and read the log of an answer served where it may not be. Likewise for the models that may serve it
        (_may_follow_models)."""
        self._may_follow_models(principal, pending, doing)
        allowed = principal.scopes.jurisdictions
        if allowed is None:
            return
        if pending.scopes is not None:
            where = Scopes.from_dict(pending.scopes).jurisdictions
        else:  # written before the scopes were kept: its creator's API key as it is now (a token's are unknown)
            guard = self.gw.guard
            creator, tenant = guard.authenticator.keys.get(pending.key_id), guard.tenants.get(pending.tenant)
            where = None if creator is None or tenant is None else \
                tenant.scopes.narrowed_by(creator.scopes).jurisdictions
        if where is None or not where <= allowed:
            raise PermissionDenied(f"response_id: key {principal.key_id} may not {doing}: response {pending.id!r} may "
                                   "be served outside the jurisdictions this key may use", param="response_id",
                                   code="jurisdiction_not_allowed")

    def _may_follow_models(self, principal: Principal, pending: Pending, doing: str) -> None:
        """The models' side of _may_follow: a caller narrowed to models acts on a background response not yet stored
        only when every grid model that may serve its creator may serve it (check_produced_by; its answer is not
        known before it is stored). A placeholder written before its creator's scopes were kept: not judged."""
        if pending.scopes is None:
            return
        check_made_for(principal, pending.scopes, self.gw.spec.models, "response_id",
                       f"response {pending.id!r} (to {doing})")

    async def cancel(self, request: Request, ex: Exchange) -> Response:
        """Cancel a background response: queued or in progress, it ends cancelled (its run stopped, its quota
        settled, its record written before this answers when this process runs it; by its own worker within
        background.POLL_S otherwise); one that has ended is returned unchanged; 400 for one not created in
        the background, 404 for none of this tenant's."""
        principal, rid = await self._stored_access(request, ex)
        # a run whose owner died is failed first, and returned as it is; a key that may not use where it is
        # stored or served may not cancel it (403)
        if isinstance(ahead := await self._lookup(principal, rid), Pending):
            self._may_follow(principal, ahead, "cancel it")
        found = await self.book.mark(principal.tenant, rid, "cancelled")
        if found is not None and found.status != "completed":  # completed: its answer is stored (stores.py)
            await self.gw.background.cancel(rid)
            return json_response(_pending_response(found))
        stored = await self._lookup(principal, rid)
        if isinstance(stored, Pending):  # added after the mark above: a cancel may come again
            return json_response(_pending_response(stored))
        if not stored.response.get("background"):
            raise InvalidRequest(f"response {rid!r} was not created with background: true; only background "
                                 "responses can be cancelled", param="response_id")
        return _stored_response(stored)

    async def list_input_items(self, request: Request, ex: Exchange) -> Response:
        """The stored response's input items, a page at a time (OpenAI's cursor list: `limit` 1-100, default
        20; `order` asc or desc, default desc; `after` an item id). A page walks every input item of the response:
        one request against requests per minute, unlike a poll."""
        principal, rid = await self._stored_access(request, ex, heavy=True)  # who asks first: no query checked for nobody
        q = page_query(request.query_params)
        found = await self._lookup(principal, rid)
        if isinstance(found, Pending):  # nothing of a background request is kept before its answer
            raise NotFound(f"the background response {rid!r} is {found.status.replace('_', ' ')}: its input "
                           "items are listed once its answer is stored", param="response_id")
        items = found.inputs if q.ascending else found.inputs[::-1]
        paged = page_after(items, [item.get("id") for item in items], q.after, q.limit)
        if paged is None:
            raise InvalidRequest(f"after: no input item {q.after!r} in response {rid!r}", param="after")
        return json_response(page_object(*paged))

    async def delete(self, request: Request, ex: Exchange) -> Response:
        principal, rid = await self._stored_access(request, ex)
        tenant = principal.tenant
        if isinstance(found := await self._lookup(principal, rid), Pending):
            self._may_follow(principal, found, "delete it")
        if not await self.book.delete(tenant, rid):
            pending = await self.book.pending_delete(tenant, rid)
            if pending is None:
                raise NotFound(f"no stored response {rid!r}", param="response_id")
            if pending.status not in FINAL:
                raise InvalidRequest(f"the background response {rid!r} is still {pending.status.replace('_', ' ')}:"
                                     " cancel it first (POST /v1/responses/{id}/cancel)", param="response_id")
        await self.book.events_delete(tenant, rid)  # a streamed one's event log goes with it
        return json_response({"id": rid, "object": "response", "deleted": True})


def _no_output(req: ResponsesRequest, ids: Sequence[str]) -> InvalidRequest:
    """OpenAI's 400 (its words) for function calls that no function_call_output answers, naming the first and its
    input item (param `input` where the call is the stored response's, previous_response_id's, as OpenAI names it).
    Until the thirty-sixth session the call went to the engine without its result; until the thirty-seventh the
    message went on to name the other calls ("(nor for call_...)"), which OpenAI's does not."""
    items = req.input if isinstance(req.input, list) else []
    at = next((k for k, item in enumerate(items) if item.get("type") == "function_call"
               and item.get("call_id") == ids[0]), None)
    return InvalidRequest(f"No tool output found for function call {ids[0]}.",
                          param="input" if at is None else field_name(("input", at)))


def _own_error(e: ApiError, turn: _Turn) -> None:
    """A pipeline error naming a chat field names the Responses field instead."""
    name_own_field(e, turn.origins)
    if e.param in _PARAMS:
        e.param = _PARAMS[e.param]
        e.message = e.message.replace("max_tokens", "max_output_tokens")
    elif e.param is not None and e.param.split(".", 1)[0] == "response_format":
        # text.format became response_format (its json_schema's fields one level down): name the client's own
        own = _FORMAT.sub("text.format", e.param)
        e.message = e.message.replace(e.param, own)
        e.param = own


def _refused(resp: Response, body: bytes, extra: dict[str, str]) -> Response:
    """An engine's own refusal (already the OpenAI envelope), whole or asked streamed, with what the pipeline says
    about trying again (front_door.retry_headers: the engine's Retry-After, `x-should-retry: false` past a wait an SDK
    sits through) as chat passes it; the WebSocket's `error` event carries them among its `headers`. Until the
    twenty-eighth session this door dropped both: the SDKs retried an engine's `retry-after: 3600` within seconds."""
    return Response(_own_refusal(body), status_code=resp.status_code, media_type="application/json",
                    headers={**extra, **retry_headers(resp)})


def _own_refusal(body: bytes) -> bytes:
    """An engine's refusal (the OpenAI envelope, engine_errors.py) naming a chat field names the Responses field, as
    _own_error names a pipeline error's: an engine's context 400, the gateway's `context_length_exceeded`, said
    `messages` and max_tokens on this door (the gateway's own check here says `input`) until review RV3 of the
    twenty-ninth session."""
    try:
        doc = orjson.loads(body)
        error = doc["error"]
        param, message = error["param"], error["message"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return body
    if not isinstance(param, str) or param not in _PARAMS or not isinstance(message, str):
        return body
    own = _PARAMS[param]
    error.update(param=own, message=message.replace(f"the {param}", f"the {own}").replace("max_tokens",
                                                                                          "max_output_tokens"))
    return orjson.dumps(doc)


def _refusal_object(status: int, body: bytes) -> dict[str, Any]:
    """A background run's `error` where its engine refused it (its OpenAI envelope, engine_errors.py, naming this door's
    fields: _own_refusal), as background.error_object makes one of the gateway's own: OpenAI's code for the status, the
    message, type, field and the gateway's code. Until review RV3 of the twenty-ninth session it was `server_error` with
    the message alone, whatever the status: an engine's context 400 (the gateway's `context_length_exceeded`) said
    `server_error` and chat's `messages`, where the same refusal of a request in the foreground is a 400 naming `input`."""
    try:
        error = orjson.loads(_own_refusal(body))["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        error = None
    error = error if isinstance(error, dict) else {}
    message = error.get("message")
    return {"code": error_code(status), "message": message if isinstance(message, str) and message else
            f"the engine answered {status}", "type": error.get("type"), "param": error.get("param"),
            "aigrid_code": error.get("code")}


def _served_by(turn: _Turn, resp: Response) -> None:
    """The Response (whole, streamed, stored) says in `model` the grid model that served it
    (front_door.served_model), not the one the request named: as chat's answer and the header say."""
    model = served_model(resp, turn.req.model)
    if model != turn.req.model:
        turn.req = turn.req.model_copy(update={"model": model})


def _final(turn: _Turn, body: bytes, rid: str, created: int, steps: bool) -> dict[str, Any]:
    """The Response of a whole chat answer; `steps`: a tool loop ran it (its `aigrid_steps` are the gateway's)."""
    try:
        chat = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise UpstreamFailed("the engine's answer was not JSON") from e
    output, finish = output_items(chat, steps, turn.listed)
    usage = chat.get("usage") or {}
    got = (int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), cached_of(usage))
    return response_object(turn.req, rid, created, [*turn.lead, *output], status="completed", finish_reason=finish,
                           usage=usage_block(*added(turn.spent, got)), loop_stop=loop_stop_of(chat))


def _stored_response(r: StoredResponse) -> Response:
    """A stored Response as GET answers it, with where it is stored and the site that served it."""
    return Response(orjson.dumps(r.response), media_type="application/json",
                    headers={H_STORED_IN: r.jurisdiction, "x-aigrid-site": r.site})


def _pending_response(p: Pending) -> dict[str, Any]:
    return pending_object(p.id, p.model, p.created_at, p.status, p.error, p.settings)


def _came_first(outcome: str, ex: Exchange) -> None:
    """A background run's exchange after _store's `outcome`, where its answer was not kept because another end came
    first: the client's cancel (`cancelled`: audited cancelled), or a reader that failed it, taking this process for
    dead (`failed`: _abandoned_alive). Any other outcome leaves the exchange as it is."""
    if outcome == "cancelled":
        ex.outcome = "cancelled"
    elif outcome == "failed":
        _abandoned_alive(ex)


def _abandoned_alive(ex: Exchange) -> None:
    """A run whose placeholder a reader failed as abandoned (this process had not renewed its lease in time:
    stalled, or cut off from its store) while it was alive after all: that reader wrote the run's `abandoned`
    record, charged at its reservation; this run's exchange settles its quota to its usage and writes the
    run's second and last record, outcome `abandoned:settled`, linked by `response_id`, carrying that usage."""
    ex.settles_abandoned = True
    ex.notes["settles"] = ("the abandoned record of this response_id: its owner was only stalled past its lease "
                           "and came back; its quota, charged at its reservation there, is settled to this "
                           "record's usage; its answer, if any, was not stored")


def _uncancel() -> None:
    """A cancelled run handles its cancel itself (records its end), then ends normally."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
