"""Conversations (OpenAI's Conversations API, conversations_api.py): per tenant, bound to one jurisdiction.

A conversation is a list of Response items with ids (messages, function calls and their outputs, mcp_call
runs), its metadata and its jurisdiction. The jurisdiction is set once and never changes: at creation from
the request's residency (the x-aigrid-residency header naming exactly one jurisdiction, else the tenant's
only allowed one), else by the first response served in it (the serving site's jurisdiction). A response in
a bound conversation is routed only there (responses_api.py), as a previous_response_id follow-up is to
where its chain is stored (response_store.py).

Every operation has a wire form (`apply`: an operation name and a JSON list in, JSON out), so a gateway
alone and the workers of one gateway (`--workers N`, whose hub holds the one store: hub.py) run the very
same code; a caller never holds a reference into the store.

This store lives in this gateway's memory (or its hub's) and does not survive a restart: at most `max_bytes`
of conversations, their items and metadata (their memory, footprint.py); over it, the conversation written to longest ago of the tenant holding the most
is evicted first (fair_lru.py: a tenant cannot push out the others' conversations); a response naming an
evicted conversation gets a 404, never an answer without its history. A jurisdiction named in
`gateway.stores` keeps its conversations in that Redis instead (stores_redis.py runs these same operations
on each conversation it reads), shared by every gateway that names it (stores.py).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from aigrid.gateway.cursor_list import page_after
from aigrid.gateway.fair_lru import FairLru
from aigrid.gateway.footprint import RECORD, footprint
from aigrid.gateway.record_fields import read_record

log = logging.getLogger("aigrid.gateway")
MAX_BYTES = 256 * 1024 * 1024
"""Default budget of the whole store: its conversations, items and metadata in this process's memory (footprint.py)."""
MAX_CONVERSATION_BYTES = 16 * 1024 * 1024
"""The most one conversation may hold (its footprint, as the store's budget counts it): some 16 million characters
of text, more than any model's context (a conversation is replayed whole: truncation disabled). Without it one
conversation grew past the store's whole budget (the record being written is never evicted for its own sake),
in a jurisdiction's Redis without any bound, and every call on it read or copied all of it on the event loop."""
_ITEM_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "mcp_call": "mcp",
                "reasoning": "rs"}


class ConversationFull(Exception):
    """An append refused: the conversation would grow past its limit (args[0]: the bytes it holds)."""


class BoundElsewhere(Exception):
    """An append refused: the conversation is not bound where its writer read it was (args[0]: where it is)."""


ANY_BINDING = "*any*"
"""`append`'s `expect` when the writer read no binding (a served response's turn): added wherever it is bound."""


@dataclass(slots=True)
class StoredConversation:
    id: str
    tenant: str
    created_at: int
    metadata: dict[str, str] = field(default_factory=dict)
    jurisdiction: str | None = None
    """Where its responses are served; None: not yet bound (its first response binds it)."""
    items: list[dict[str, Any]] = field(default_factory=list)
    """Response items with ids, oldest first."""
    size: int = 0
    models: list[str] = field(default_factory=list)
    """The grid models whose answers it holds (each response served in it adds its own: `append`'s `model`), which a
    key narrowed to models must be allowed (authorize.check_produced_by); empty in one of before the
    thirty-fifth session."""

    def public(self) -> dict[str, Any]:
        """The Conversation object of the API."""
        return {"id": self.id, "object": "conversation", "created_at": self.created_at, "metadata": self.metadata}


def _size(value: Any) -> int:
    """What `value` holds of this process's memory (footprint.py); before, its JSON length: an empty
    conversation weighed 4 bytes of the budget for 464 held."""
    return footprint(value)


class ConversationStore:
    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self._all: FairLru[StoredConversation] = FairLru(max_bytes)

    def __len__(self) -> int:
        return len(self._all)

    # --- the operations (in-process) ------------------------------------------------------------------------
    def create(self, conv: StoredConversation) -> StoredConversation:
        conv.items = _unique_ids(conv.items, set())
        conv.size = RECORD + _size(conv.items) + _size(conv.metadata) + _size(conv.models)
        self._all.put(conv.tenant, conv.id, conv, conv.size)
        return conv

    def get(self, tenant: str, cid: str) -> StoredConversation | None:
        return self._all.get(tenant, cid)

    def update(self, tenant: str, cid: str, metadata: dict[str, str]) -> StoredConversation | None:
        conv = self._all.get(tenant, cid)
        if conv is not None:
            grown = _size(metadata) - _size(conv.metadata)
            conv.metadata = metadata
            conv.size += grown
            self._all.resize(tenant, cid, grown)
        return conv

    def delete(self, tenant: str, cid: str) -> bool:
        return self._all.pop(tenant, cid) is not None

    def append(self, tenant: str, cid: str, items: list[dict[str, Any]], bind: str | None = None,
               limit: int | None = None, expect: str | None = ANY_BINDING, model: str | None = None,
               ) -> tuple[list[dict[str, Any]], str | None] | None:
        """`items` added at the end (an id already in the conversation replaced by a new one); `bind`: the
        jurisdiction of the site that served them, which binds a conversation not yet bound. The items as
        stored and the conversation's jurisdiction; None: no such conversation. Raises ConversationFull, adding
        nothing, when the conversation would hold more than `limit` bytes; BoundElsewhere, adding nothing, when it
        is not bound to `expect` (the binding its writer read and checked, None: unbound; ANY_BINDING: any), as
        when a response served elsewhere bound it between the writer's read and this append. `model`: the grid model
        whose answer the items hold (a served response's turn), kept in `models`."""
        conv = self._all.get(tenant, cid)
        if conv is None:
            return None
        if expect != ANY_BINDING and conv.jurisdiction != expect:
            raise BoundElsewhere(conv.jurisdiction)
        added = _unique_ids(items, {str(item.get("id")) for item in conv.items})
        grown = sum(_size(item) + 8 for item in added)  # each item and its slot in conv.items
        if limit is not None and conv.size + grown > limit:
            raise ConversationFull(conv.size)
        conv.items.extend(added)
        if model is not None and model not in conv.models:
            conv.models.append(model)
            grown += _size(model) + 8  # the name and its slot in conv.models
        if conv.jurisdiction is None and bind is not None:
            conv.jurisdiction = bind
        elif bind is not None and bind != conv.jurisdiction:  # two first turns at once, served apart
            log.warning("conversation %s of tenant %s is bound to %s; a turn served in %s was added to it",
                        cid, tenant, conv.jurisdiction, bind)
        conv.size += grown
        self._all.resize(tenant, cid, grown)
        return added, conv.jurisdiction

    def page(self, tenant: str, cid: str, after: str | None, limit: int,
             order: str) -> tuple[list[dict[str, Any]], bool] | None:
        """A page of items (OpenAI's cursor list) and whether more follow; None: no such conversation.
        Raises KeyError(after) for an `after` that is not an item of it."""
        conv = self._all.get(tenant, cid)
        if conv is None:
            return None
        items = conv.items if order == "asc" else conv.items[::-1]
        paged = page_after(items, [item.get("id") for item in items], after, limit)
        if paged is None:
            raise KeyError(after)
        return paged

    def delete_item(self, tenant: str, cid: str, item_id: str) -> bool | None:
        """True: removed; False: no such item; None: no such conversation."""
        conv = self._all.get(tenant, cid)
        if conv is None:
            return None
        for i, item in enumerate(conv.items):
            if item.get("id") == item_id:
                del conv.items[i]
                shrunk = _size(item) + 8
                conv.size -= shrunk
                self._all.resize(tenant, cid, -shrunk, newest=False)
                return True
        return False

    # --- the wire form (the workers' hub, and a gateway alone through the same code) --------------------------
    def apply(self, op: str, arg: list[Any]) -> Any:
        """One operation, JSON in and out: what `Conversations` (conversations_api.py) sends, in-process or
        through the hub (hub.py, op `conversation_<op>`)."""
        if op == "create":  # fields a newer aigrid added left out (a worker newer than its hub: record_fields.py)
            conv = read_record(StoredConversation, arg[0], "a conversation to create")
            if conv is None:
                raise ValueError("unreadable conversation record")
            return self.create(conv).public()
        tenant, cid, *rest = arg
        if op == "get":
            found = self.get(tenant, cid)
            return None if found is None else dataclasses.asdict(found)
        if op == "head":  # the conversation without its items: all a call needs but a response's history
            found = self.get(tenant, cid)
            return None if found is None else {"id": found.id, "tenant": found.tenant, "created_at": found.created_at,
                                               "metadata": dict(found.metadata), "jurisdiction": found.jurisdiction,
                                               "size": found.size, "models": list(found.models)}
        if op == "update":
            found = self.update(tenant, cid, dict(rest[0]))
            return None if found is None else found.public()
        if op == "delete":
            return self.delete(tenant, cid)
        if op == "append":  # tenant, cid, items, bind[, limit[, expect[, model]]]
            try:
                done = self.append(tenant, cid, list(rest[0]), rest[1], *rest[2:5])
            except ConversationFull as e:
                return {"full": e.args[0]}
            except BoundElsewhere as e:
                return {"bound_elsewhere": e.args[0]}
            return None if done is None else {"items": done[0], "jurisdiction": done[1]}
        if op == "page":
            after, limit, order = rest
            try:
                paged = self.page(tenant, cid, after, int(limit), str(order))
            except KeyError:
                return {"bad_after": after}
            return None if paged is None else {"data": paged[0], "has_more": paged[1]}
        if op == "item":
            conv = self.get(tenant, cid)
            if conv is None:
                return None
            return {"item": next((item for item in conv.items if item.get("id") == rest[0]), None)}
        if op == "delete_item":  # the conversation's object once removed; False: no such item
            removed = self.delete_item(tenant, cid, rest[0])
            conv = self.get(tenant, cid) if removed else None
            return removed if conv is None else conv.public()
        raise ValueError(f"unknown conversation operation {op!r}")


def new_item_id(kind: str) -> str:
    return f"{_ITEM_PREFIX.get(kind, 'item')}_{uuid.uuid4().hex[:24]}"


def _unique_ids(items: list[dict[str, Any]], taken: set[str]) -> list[dict[str, Any]]:
    """Each item with an id of its own: a missing one, or one already taken, replaced by a new one."""
    out = []
    for item in items:
        item_id = item.get("id")
        if not isinstance(item_id, str) or not item_id or item_id in taken:
            item = {**item, "id": new_item_id(str(item.get("type", "message")))}
        taken.add(item["id"])
        out.append(item)
    return out
