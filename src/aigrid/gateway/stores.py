"""Where stored Responses, background placeholders and Conversations live, behind one async interface each,
so that the routes (responses_api.py, conversations_api.py) and the background runs (background.py) call one
thing wherever a record is kept:

- `ResponseBook`: stored responses (`put`, `lookup`, `history`, `delete`) and background placeholders
  (`pending_add`, `mark`, `complete`, `cancelled`, `pending_delete`, and their owners' leases: `heartbeat`,
  `abandon`), with the names and meanings of response_store.ResponseStore's methods;
- `ConversationBook`: `call(op, arg)`, the wire form of conversation_store.ConversationStore.apply.

Each has three implementations: this process's memory (`MemoryResponses`, `MemoryConversations`), the
workers' hub (`HubResponses`, `HubConversations`, with `--workers N`) and a Redis (stores_redis.py, for the
jurisdictions named in `gateway.stores`). The gateway uses the router of each (`Responses`,
`Conversations`, built by `build_stores` with the app): a record goes to the store of its jurisdiction
(the jurisdiction of the site that served it, or a conversation's bound one) and to no other; what has no
jurisdiction yet (background placeholders, unbound conversations) to the `unbound` store, else memory (or
the hub). A record is found by asking every store at once (ids carry no jurisdiction): a record found is
answered even when another store does not answer; a miss while a store does not answer is a 503
(StoreUnavailable), never a 404 that may be wrong, and never an answer from a partial history.

Across two stores (a placeholder in one, its answer stored in another) `complete` cannot be one step; it is
done so that a cancel still wins or loses as a whole (`Responses.complete`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from aigrid.errors import StoreUnavailable
from aigrid.gateway.conversation_store import ConversationStore
from aigrid.gateway.event_log import READ_MAX
from aigrid.gateway.record_fields import read_record
from aigrid.gateway.response_store import REFUSED, UNKEPT, Pending, ResponseStore, StoredResponse
from aigrid.spec.models import UNBOUND_STORE

if TYPE_CHECKING:
    from aigrid.gateway.app import Gateway
    from aigrid.gateway.hub_client import HubClient
    from aigrid.gateway.stores_redis import RedisStore

log = logging.getLogger("aigrid.gateway")
T = TypeVar("T")
UNSTORED = {"code": "server_error", "message": "the answer could not be stored: its jurisdiction's store did "
                                               "not answer"}


class ResponseBook(Protocol):
    """Stored responses and background placeholders (response_store.ResponseStore's methods, async)."""

    shared: bool
    """Other processes write to it too (a hub, a Redis): a cancel sent elsewhere must be polled for."""

    async def lookup(self, tenant: str, rid: str) -> StoredResponse | Pending | None: ...

    async def history(self, record: StoredResponse) -> list[dict[str, Any]]:
        """Raises response_store.BrokenHistory when a turn of the chain is no longer stored."""
        ...

    async def put(self, record: StoredResponse, allowed: frozenset[str] | None) -> bool: ...

    async def delete(self, tenant: str, rid: str) -> bool: ...

    async def pending_add(self, pending: Pending) -> None: ...

    async def mark(self, tenant: str, rid: str, status: str,
                   error: dict[str, Any] | None = None) -> Pending | None: ...

    async def complete(self, record: StoredResponse, allowed: frozenset[str] | None) -> str: ...

    async def cancelled(self, keys: list[tuple[str, str]]) -> dict[str, str]: ...

    async def pending_delete(self, tenant: str, rid: str) -> Pending | None: ...

    async def heartbeat(self, owner: str, lease_s: float) -> None:
        """`owner`'s runs are alive for `lease_s` more (background.BackgroundRuns renews it every poll)."""
        ...

    async def abandon(self, pending: Pending, error: dict[str, Any]) -> Pending | None:
        """`pending` failed with `error` if still running and its owner's lease has ended: the placeholder as
        failed, or None when nothing changed (owner alive, moved on, another reader failed it first)."""
        ...

    async def events_append(self, tenant: str, rid: str, first: int, events: list[str], ended: bool) -> None:
        """A streamed background response's events numbered first, first + 1... (event_log.py); `ended`: its
        last."""
        ...

    async def events_read(self, tenant: str, rid: str, after: int,
                          limit: int = READ_MAX) -> tuple[list[str], bool] | None:
        """Its events after number `after`, and whether they reach its last; None: no log here."""
        ...

    async def events_next(self, tenant: str, rid: str) -> tuple[int, bool] | None:
        """The number its log's next event would take and whether the log has ended; None: no log here."""
        ...

    async def events_delete(self, tenant: str, rid: str) -> bool: ...


class ConversationBook(Protocol):
    """Conversations, as conversation_store.ConversationStore.apply's operations (JSON in, JSON out)."""

    async def call(self, op: str, arg: list[Any]) -> Any: ...


# --- this process's memory ------------------------------------------------------------------------------
class MemoryResponses:
    shared = False

    def __init__(self, store: ResponseStore) -> None:
        self.store = store

    async def lookup(self, tenant: str, rid: str) -> StoredResponse | Pending | None:
        return self.store.lookup(tenant, rid)

    async def history(self, record: StoredResponse) -> list[dict[str, Any]]:
        return self.store.history(record)

    async def put(self, record: StoredResponse, allowed: frozenset[str] | None) -> bool:
        return self.store.put(record, allowed)

    async def delete(self, tenant: str, rid: str) -> bool:
        return self.store.delete(tenant, rid)

    async def pending_add(self, pending: Pending) -> None:
        self.store.add_pending(pending)

    async def mark(self, tenant: str, rid: str, status: str,
                   error: dict[str, Any] | None = None) -> Pending | None:
        found = self.store.mark(tenant, rid, status, error)
        return None if found is None else dataclasses.replace(found)  # a copy, as every other store answers

    async def complete(self, record: StoredResponse, allowed: frozenset[str] | None) -> str:
        return self.store.complete(record, allowed)

    async def cancelled(self, keys: list[tuple[str, str]]) -> dict[str, str]:
        return self.store.cancelled(keys)

    async def pending_delete(self, tenant: str, rid: str) -> Pending | None:
        return self.store.delete_pending(tenant, rid)

    async def heartbeat(self, owner: str, lease_s: float) -> None:
        self.store.heartbeat(owner, lease_s)

    async def abandon(self, pending: Pending, error: dict[str, Any]) -> Pending | None:
        found = self.store.abandon(pending, error)
        return None if found is None else dataclasses.replace(found)

    async def events_append(self, tenant: str, rid: str, first: int, events: list[str], ended: bool) -> None:
        self.store.events.append(tenant, rid, first, events, ended)

    async def events_read(self, tenant: str, rid: str, after: int,
                          limit: int = READ_MAX) -> tuple[list[str], bool] | None:
        return self.store.events.read(tenant, rid, after, limit)

    async def events_next(self, tenant: str, rid: str) -> tuple[int, bool] | None:
        return self.store.events.next(tenant, rid)

    async def events_delete(self, tenant: str, rid: str) -> bool:
        return self.store.events.delete(tenant, rid)


class MemoryConversations:
    def __init__(self, store: ConversationStore) -> None:
        self.store = store

    async def call(self, op: str, arg: list[Any]) -> Any:
        return self.store.apply(op, arg)


# --- the workers' hub -----------------------------------------------------------------------------------
async def _hub(call: Awaitable[T]) -> T:
    from aigrid.gateway.hub_client import HubError

    try:
        return await call
    except HubError as e:
        raise StoreUnavailable(f"the store of stored responses and conversations (the workers' hub) did not "
                               f"answer: {e}; retry later", headers={"retry-after": "1"}) from e


class HubResponses:
    shared = True

    def __init__(self, hub: HubClient) -> None:
        self.hub = hub

    async def lookup(self, tenant: str, rid: str) -> StoredResponse | Pending | None:
        return await _hub(self.hub.response_lookup(tenant, rid))

    async def history(self, record: StoredResponse) -> list[dict[str, Any]]:
        return await _hub(self.hub.response_history(record))

    async def put(self, record: StoredResponse, allowed: frozenset[str] | None) -> bool:
        return await _hub(self.hub.response_put(record, allowed))

    async def delete(self, tenant: str, rid: str) -> bool:
        return await _hub(self.hub.response_delete(tenant, rid))

    async def pending_add(self, pending: Pending) -> None:
        await _hub(self.hub.response_pending_add(pending))

    async def mark(self, tenant: str, rid: str, status: str,
                   error: dict[str, Any] | None = None) -> Pending | None:
        return await _hub(self.hub.response_mark(tenant, rid, status, error))

    async def complete(self, record: StoredResponse, allowed: frozenset[str] | None) -> str:
        return await _hub(self.hub.response_complete(record, allowed))

    async def cancelled(self, keys: list[tuple[str, str]]) -> dict[str, str]:
        return await _hub(self.hub.response_cancelled(keys))

    async def pending_delete(self, tenant: str, rid: str) -> Pending | None:
        return await _hub(self.hub.response_pending_delete(tenant, rid))

    async def heartbeat(self, owner: str, lease_s: float) -> None:
        await _hub(self.hub.call("response_heartbeat", [owner, lease_s]))

    async def abandon(self, pending: Pending, error: dict[str, Any]) -> Pending | None:
        found = await _hub(self.hub.call("response_abandon", [dataclasses.asdict(pending), error]))
        return None if found is None else read_record(Pending, found, "a background placeholder from the hub")

    async def events_append(self, tenant: str, rid: str, first: int, events: list[str], ended: bool) -> None:
        await _hub(self.hub.call("response_events_append", [tenant, rid, first, events, ended]))

    async def events_read(self, tenant: str, rid: str, after: int,
                          limit: int = READ_MAX) -> tuple[list[str], bool] | None:
        got = await _hub(self.hub.call("response_events_read", [tenant, rid, after, limit]))
        return None if got is None else ([str(e) for e in got[0]], bool(got[1]))

    async def events_next(self, tenant: str, rid: str) -> tuple[int, bool] | None:
        got = await _hub(self.hub.call("response_events_next", [tenant, rid]))
        return None if got is None else (int(got[0]), bool(got[1]))

    async def events_delete(self, tenant: str, rid: str) -> bool:
        return bool(await _hub(self.hub.call("response_events_delete", [tenant, rid])))


class HubConversations:
    def __init__(self, hub: HubClient) -> None:
        self.hub = hub

    async def call(self, op: str, arg: list[Any]) -> Any:
        return await _hub(self.hub.call(f"conversation_{op}", arg))


# --- the routers ----------------------------------------------------------------------------------------
async def _ask(stores: Iterable[T], call: Callable[[T], Awaitable[Any]]) -> tuple[list[tuple[T, Any]],
                                                                               StoreUnavailable | None]:
    """`call` on every store at once: the answers of those that answered, and the first refusal, if any."""
    stores = list(stores)
    answers = await asyncio.gather(*(call(s) for s in stores), return_exceptions=True)
    done, down = [], None
    for store, answer in zip(stores, answers, strict=True):
        if isinstance(answer, StoreUnavailable):
            down = down or answer
        elif isinstance(answer, BaseException):
            raise answer
        else:
            done.append((store, answer))
    return done, down


async def _removed(stores: Iterable[T], remove: Callable[[T], Awaitable[bool]]) -> bool:
    """`remove` on every store at once: True once one removed it, though another did not answer (ids carry no
    jurisdiction: at most one holds it); else the first refusal (StoreUnavailable), or False."""
    done, down = await _ask(stores, remove)
    if any(answer for _, answer in done):
        return True
    if down is not None:
        raise down
    return False


class Responses:
    """The gateway's ResponseBook: each jurisdiction's records in its own store, the placeholders in one."""

    def __init__(self, homes: dict[str, ResponseBook], default: ResponseBook, pending: ResponseBook,
                 jurisdictions: Iterable[str]) -> None:
        self._homes, self._default, self._pending = homes, default, pending
        self._all = _distinct([*(self.home(j) for j in sorted(jurisdictions)), pending])
        """Every store that may hold a record: the jurisdictions' (of the grid's sites) and the placeholders'."""
        self.shared = pending.shared

    def home(self, jurisdiction: str) -> ResponseBook:
        return self._homes.get(jurisdiction, self._default)

    async def lookup(self, tenant: str, rid: str) -> StoredResponse | Pending | None:
        """The stored response, else its placeholder. Asked of every store at once; a miss asks the record
        stores once more, since a placeholder dropped (by `complete`, after its answer was written) between
        the two reads would otherwise read as neither."""
        done, down = await _ask(self._all, lambda s: s.lookup(tenant, rid))
        found = [answer for _, answer in done if answer is not None]
        stored = next((f for f in found if isinstance(f, StoredResponse)), None)
        if stored is not None:
            return stored
        if found:
            return found[0]
        if len(self._all) > 1 and down is None:
            again, down = await _ask([s for s in self._all if s is not self._pending], lambda s: s.lookup(tenant, rid))
            stored = next((a for _, a in again if isinstance(a, StoredResponse)), None)
            if stored is not None:
                return stored
        if down is not None:
            raise down
        return None

    async def history(self, record: StoredResponse) -> list[dict[str, Any]]:
        return await self.home(record.jurisdiction).history(record)

    async def put(self, record: StoredResponse, allowed: frozenset[str] | None) -> bool:
        return await self.home(record.jurisdiction).put(record, allowed)

    async def delete(self, tenant: str, rid: str) -> bool:
        return await _removed(self._all, lambda s: s.delete(tenant, rid))

    async def pending_add(self, pending: Pending) -> None:
        await self._pending.pending_add(pending)

    async def mark(self, tenant: str, rid: str, status: str,
                   error: dict[str, Any] | None = None) -> Pending | None:
        return await self._pending.mark(tenant, rid, status, error)

    async def cancelled(self, keys: list[tuple[str, str]]) -> dict[str, str]:
        return await self._pending.cancelled(keys)

    async def pending_delete(self, tenant: str, rid: str) -> Pending | None:
        return await self._pending.pending_delete(tenant, rid)

    async def heartbeat(self, owner: str, lease_s: float) -> None:
        await self._pending.heartbeat(owner, lease_s)

    async def abandon(self, pending: Pending, error: dict[str, Any]) -> Pending | None:
        return await self._pending.abandon(pending, error)

    def events_home(self, allowed: frozenset[str] | None) -> ResponseBook:
        """Where a streamed background response's event log is written (it holds the answer's text): the store
        of the tenant's jurisdiction when its key may use exactly one (where its answer will be stored), else
        the placeholders' (`unbound`, else memory or the hub), as an unbound conversation's items."""
        if allowed is not None and len(allowed) == 1:
            return self.home(next(iter(allowed)))
        return self._pending

    async def events_find(self, tenant: str, rid: str) -> ResponseBook | None:
        """The store holding this response's event log (every store asked at once), None: none has one."""
        done, down = await _ask(self._all, lambda s: s.events_read(tenant, rid, -1, 1))
        found = next((store for store, answer in done if answer is not None), None)
        if found is None and down is not None:
            raise down
        return found

    async def events_delete(self, tenant: str, rid: str) -> bool:
        return await _removed(self._all, lambda s: s.events_delete(tenant, rid))

    async def complete(self, record: StoredResponse, allowed: frozenset[str] | None) -> str:
        """A background answer stored and its placeholder dropped: in one step where one store holds both
        (memory, the hub, one Redis: a Lua script). Across two stores: the placeholder is read (a cancel that
        came first: nothing stored), the answer written, then the placeholder marked completed, which a
        cancel that came meanwhile refuses: the answer is then deleted again ("cancelled"), so the cancel's
        client and every later GET agree; else the placeholder is dropped ("stored"). A GET in that instant
        may see the answer that the cancel then removes. A placeholder a reader failed (its owner's lease had
        ended) refuses the answer the same way ("failed")."""
        home, pend = self.home(record.jurisdiction), self._pending
        if home is pend:
            return await home.complete(record, allowed)
        tenant, rid = record.tenant, record.id
        now = await pend.mark(tenant, rid, "in_progress")
        if now is not None and now.status in UNKEPT:  # cancelled, or failed by a reader (its lease ended)
            return now.status
        try:
            kept = await home.put(record, allowed)
        except StoreUnavailable:
            await pend.mark(tenant, rid, "failed", dict(UNSTORED))
            raise
        if not kept:
            await pend.mark(tenant, rid, "failed", dict(REFUSED))
            return "refused"
        after = await pend.mark(tenant, rid, "completed")
        if after is not None and after.status in UNKEPT:
            await home.delete(tenant, rid)
            return after.status
        await pend.pending_delete(tenant, rid)
        return "stored"


class Conversations:
    """The gateway's ConversationBook: a bound conversation in its jurisdiction's store, an unbound one in
    the `unbound` store; the first response served in an unbound one binds it and moves it to its
    jurisdiction's store (when that is another)."""

    def __init__(self, homes: dict[str, ConversationBook], default: ConversationBook,
                 unbound: ConversationBook, jurisdictions: Iterable[str]) -> None:
        self._homes, self._default, self._unbound = homes, default, unbound
        self._all = _distinct([*(self.home(j) for j in sorted(jurisdictions)), unbound])

    def home(self, jurisdiction: str | None) -> ConversationBook:
        return self._unbound if jurisdiction is None else self._homes.get(jurisdiction, self._default)

    async def call(self, op: str, arg: list[Any]) -> Any:
        if op == "create":
            return await self.home(arg[0].get("jurisdiction")).call(op, arg)
        done, down = await _ask(self._all, lambda s: s.call(op, arg))
        hits = [(store, answer) for store, answer in done if (answer is True if op == "delete" else answer is not None)]
        if not hits:
            if down is not None:
                raise down
            return False if op == "delete" else None
        store, answer = hits[0]
        if op == "append" and arg[3] is not None and answer.get("jurisdiction") is not None:  # not refused
            await self._settle(store, answer["jurisdiction"], arg[0], arg[1])
        return answer

    async def _settle(self, held: ConversationBook, jurisdiction: str, tenant: str, cid: str) -> None:
        """A conversation just bound to `jurisdiction` moves to that jurisdiction's store: written there,
        then removed where it was (a failure in between is put right by its next turn)."""
        home = self.home(jurisdiction)
        if home is held:
            return
        found = await held.call("get", [tenant, cid])
        if found is None:
            return
        await home.call("create", [found])
        await held.call("delete", [tenant, cid])
        log.info("conversation %s of tenant %s bound to %s: moved to that jurisdiction's store", cid, tenant,
                 jurisdiction)


def _distinct(stores: list[T]) -> list[T]:
    out: list[T] = []
    for s in stores:
        if not any(s is o for o in out):
            out.append(s)
    return out


@dataclass
class Stores:
    """A gateway's stores (Gateway.stores, built with the app; the Redis clients closed by its lifespan)."""

    responses: Responses
    conversations: Conversations
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def aclose(self) -> None:
        for close in self.closers:
            await close()


def build_stores(gw: Gateway) -> Stores:
    """The memory (or, for a worker, the hub) for every jurisdiction, except those `gateway.stores` names:
    their Redis, one client per URL, used directly by every worker. redis is imported only then (about 12 MB of
    each worker's memory otherwise)."""
    spec = gw.spec.gateway
    if spec.stores:
        from aigrid.gateway.stores_redis import RedisStore
    local_r: ResponseBook = HubResponses(gw.hub) if gw.hub is not None else MemoryResponses(gw.responses)
    local_c: ConversationBook = HubConversations(gw.hub) if gw.hub is not None else \
        MemoryConversations(gw.conversations)
    by_url: dict[str, RedisStore] = {}
    for url in spec.stores.values():
        if url not in by_url:
            names = sorted(k for k, u in spec.stores.items() if u == url)
            by_url[url] = RedisStore.from_url(url, gw.spec.name, names, ttl_s=round(spec.store_ttl_days * 86400),
                                              tenant_max_bytes=spec.store_tenant_max_bytes,
                                              password_env=spec.redis_password_env)
    homes = {key: by_url[url] for key, url in spec.stores.items() if key != UNBOUND_STORE}
    unbound = by_url.get(spec.stores.get(UNBOUND_STORE, ""))
    jurisdictions = {site.jurisdiction for site in gw.spec.sites.values()}
    responses = Responses({j: r.responses for j, r in homes.items()}, local_r,
                          unbound.responses if unbound is not None else local_r, jurisdictions)
    conversations = Conversations({j: r.conversations for j, r in homes.items()}, local_c,
                                  unbound.conversations if unbound is not None else local_c, jurisdictions)
    return Stores(responses, conversations, [r.aclose for r in by_url.values()])
