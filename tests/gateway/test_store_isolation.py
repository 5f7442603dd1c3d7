"""Tenants against each other in the Redis stores (`gateway.stores`, stores_redis.py), on a REAL redis-server
(tests/security/redis_server.py): one tenant's records cannot push out another's (a per-tenant bound, its own
oldest evicted: `_Ledger`), and no id a tenant sends reaches another tenant's key."""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import ValidationError
from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot

from aigrid.gateway import stores_redis
from aigrid.gateway.app import build_gateway
from aigrid.gateway.conversation_store import ConversationStore
from aigrid.gateway.hub import Hub
from aigrid.gateway.hub_client import HubClient
from aigrid.gateway.response_store import Pending, ResponseStore, StoredResponse
from aigrid.gateway.stores import (
    ConversationBook,
    HubConversations,
    HubResponses,
    MemoryConversations,
    MemoryResponses,
    ResponseBook,
    build_stores,
)
from aigrid.gateway.stores_redis import RedisStore
from aigrid.spec.models import GatewaySpec
from tests.gateway.conftest import _no_sleep, spec_in
from tests.security.redis_server import redis_server

BOUND = 400_000
"""A tenant's bound in these tests (bytes)."""


@pytest.fixture
def port(tmp_path: Path) -> Iterator[int]:
    with redis_server(tmp_path) as p:
        yield p


@pytest.fixture
async def store(port: int, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RedisStore]:
    # the module's default, so that the same test runs (and fails) on a store that has no bound
    monkeypatch.setattr(stores_redis, "TENANT_MAX_BYTES", BOUND, raising=False)
    s = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", "g", ["EU", "unbound"], ttl_s=600)
    try:
        yield s
    finally:
        await s.aclose()


def record(tenant: str, rid: str, size: int) -> StoredResponse:
    return StoredResponse(rid, tenant, "EU", "fra", {"id": rid}, turn=[{"role": "user", "content": "x" * size}])


async def test_a_noisy_tenant_cannot_evict_a_quiet_tenant_s_records_from_a_full_redis(
        port: int, store: RedisStore) -> None:
    """A Redis with a maxmemory (as docs/responses-api.md asks) evicted by its own policy whoever owned the
    key: a tenant writing much pushed out every other tenant's stored responses and conversations. Past its
    bound, the writing tenant now loses its own oldest records, and the Redis never fills."""
    r = redis.Redis(port=port)
    try:
        r.config_set("maxmemory", r.info("memory")["used_memory"] + 3_000_000)
        r.config_set("maxmemory-policy", "volatile-lru")
        book, convs = store.responses, store.conversations
        quiet = [f"q{i}" for i in range(5)]
        for rid in quiet:
            await book.put(record("quiet", rid, 2000), None)
        conv = await convs.call("create", [{"id": "c1", "tenant": "quiet", "created_at": 1,
                                             "items": [{"id": "m1", "role": "user", "content": "hi"}]}])
        for i in range(150):  # 15 MB, five times the Redis's room
            await book.put(record("noisy", f"n{i}", 100_000), None)
        for rid in quiet:
            assert isinstance(await book.lookup("quiet", rid), StoredResponse), rid
        assert (await convs.call("get", ["quiet", conv["id"]])) is not None
        # the noisy tenant keeps its newest records, within its bound
        assert isinstance(await book.lookup("noisy", "n149"), StoredResponse)
        assert await book.lookup("noisy", "n0") is None
        held = sum(r.memory_usage(k) or 0 for k in r.scan_iter(b"aigrid:g:resp:EU:{noisy}:*"))
        assert held <= BOUND + 120_000
    finally:
        r.close()


async def test_a_tenant_s_bound_counts_every_kind_of_record_and_what_it_deleted_no_more(store: RedisStore) -> None:
    book, convs = store.responses, store.conversations
    await book.pending_add(Pending("p1", "t", "m", 1))
    await book.events_append("t", "p1", 0, ["event: a\ndata: {}\n\n"] * 10, False)
    conv = await convs.call("create", [{"id": "c1", "tenant": "t", "created_at": 1}])
    await convs.call("append", ["t", conv["id"], [{"role": "user", "content": "y" * 150_000}], None])
    for i in range(2):
        await book.put(record("t", f"r{i}", 95_000), None)
    # all within the bound: nothing evicted
    assert await book.lookup("t", "p1") is not None and await book.events_next("t", "p1") == (10, False)
    # deleting frees room: the next writes evict nothing (four records of 95 kB and the small ones)
    assert await book.delete("t", "r0") and await convs.call("delete", ["t", conv["id"]])
    for i in range(2, 5):
        await book.put(record("t", f"r{i}", 95_000), None)
    assert await book.lookup("t", "p1") is not None and await book.lookup("t", "r1") is not None
    # past it, the oldest go first (the placeholder's event log, r1), never the record just written nor a background
    # run's placeholder (its polls and cancels were 404s while the run went on)
    await book.put(record("t", "r5", 95_000), None)
    assert await book.lookup("t", "p1") is not None and await book.events_next("t", "p1") is None
    assert await book.lookup("t", "r1") is None and await book.lookup("t", "r2") is not None
    await book.put(record("t", "big", 2 * BOUND), None)
    assert isinstance(await book.lookup("t", "big"), StoredResponse)
    assert all([await book.lookup("t", f"r{i}") is None for i in range(1, 6)])
    assert await book.lookup("t", "p1") is not None
    assert await book.lookup("u", "big") is None


async def test_an_id_cannot_reach_into_a_tenant_whose_name_holds_the_key_s_braces(store: RedisStore) -> None:
    """Keys were `resp:<j>:{<tenant>}:<id>` with the tenant as it is: tenant `a` asking for id `x}:r1` read the
    key of tenant `a}:x`'s record `r1` (and could delete it, or its conversations)."""
    book, convs = store.responses, store.conversations
    await book.put(record("a}:x", "r1", 10), None)
    conv = await convs.call("create", [{"id": "c1", "tenant": "a}:x", "created_at": 1}])
    assert await book.lookup("a", "x}:r1") is None
    assert not await book.delete("a", "x}:r1")
    assert not await convs.call("delete", ["a", f"x}}:{conv['id']}"])
    assert await convs.call("get", ["a}:x", conv["id"]]) is not None
    assert isinstance(await book.lookup("a}:x", "r1"), StoredResponse)


async def test_an_event_log_evicted_mid_run_takes_no_more_events(store: RedisStore) -> None:
    """An append after the log was evicted (the tenant's bound) or expired started a new stream at its number:
    a reader from the start read the run's later events as if they were all. It is refused now (ValueError, as
    in memory: the run writes its log no further and its readers end from its final status)."""
    book = store.responses
    await book.events_append("t", "p1", 0, ["event: a\ndata: {}\n\n"] * 3, False)
    await book.put(record("t", "r1", 2 * BOUND), None)  # evicts the log
    assert await book.events_next("t", "p1") is None
    with pytest.raises(ValueError, match="gone"):
        await book.events_append("t", "p1", 3, ["event: b\ndata: {}\n\n"], True)
    assert await book.events_next("t", "p1") is None


async def test_a_tenant_s_ledger_counts_what_its_records_hold_of_the_redis(port: int) -> None:
    """The ledger counted a record's fields and 128 bytes, where Redis holds some 600 more per record: a tenant
    of small records (placeholders, short turns, empty conversations) held 2.4-2.7 times its bound."""
    r = redis.Redis(port=port)
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", "g", ["EU", "unbound"], ttl_s=600,
                                tenant_max_bytes=1 << 30)
    try:
        for kind in ("pending", "response", "conversation"):
            r.flushall()
            base = r.info("memory")["used_memory"]
            for i in range(2000):
                rid = f"resp_{i:024d}"
                if kind == "pending":
                    await store.responses.pending_add(Pending(rid, "ten", "smollm2-135m", 1_700_000_000,
                                                              owner="0123456789abcdef", key_id="key_abcdef"))
                elif kind == "response":
                    await store.responses.put(StoredResponse(rid, "ten", "EU", "fra", {"id": rid},
                                                             turn=[{"role": "user", "content": "x" * 100}]), None)
                else:
                    await store.conversations.call("create", [{"id": rid, "tenant": "ten", "created_at": 1}])
            used = r.info("memory")["used_memory"] - base
            counted = int(r.hget("aigrid:g:sizes:{ten}", ""))
            assert 0.7 < used / counted < 1.3, (kind, used, counted)
    finally:
        r.close()
        await store.aclose()


# --- every backend: another tenant's ids -----------------------------------------------------------------------
@pytest.fixture(params=["memory", "hub", "redis"])
async def books(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[ResponseBook, ConversationBook]]:
    """A ResponseBook and a ConversationBook of each backend: this process's memory, the workers' hub (over its
    socket), a Redis."""
    if request.param == "memory":
        yield MemoryResponses(ResponseStore()), MemoryConversations(ConversationStore())
    elif request.param == "hub":
        work = Path(tempfile.mkdtemp(prefix="aigrid-iso-"))  # short: a Unix socket path has ~100 bytes
        hub = Hub(work / "hub.sock", None)
        await hub.start()
        client = HubClient(hub.path, hub.token)
        try:
            yield HubResponses(client), HubConversations(client)
        finally:
            await client.aclose()
            await hub.stop()
            shutil.rmtree(work, ignore_errors=True)
    else:
        with redis_server(tmp_path) as p:
            s = RedisStore.from_url(f"redis://127.0.0.1:{p}/0", "g", ["EU", "unbound"], ttl_s=600)
            try:
                yield s.responses, s.conversations
            finally:
                await s.aclose()


async def test_no_call_of_one_tenant_reaches_another_tenant_s_records(
        books: tuple[ResponseBook, ConversationBook]) -> None:
    """Tenant `b` with tenant `a`'s ids (as if leaked) and ids built to reach other keys (`*`, `..`, a hash
    tag's braces, 10,000 characters) reads, changes and deletes nothing of `a`'s, on every backend."""
    rb, cb = books
    first = record("a", "resp_1", 10)
    await rb.put(first, None)
    follow = record("a", "resp_2", 10)
    follow.previous = "resp_1"
    await rb.put(follow, None)
    await rb.pending_add(Pending("resp_3", "a", "m", 1, "in_progress"))
    await rb.events_append("a", "resp_3", 0, ["event: a\ndata: {}\n\n"], False)
    await cb.call("create", [{"id": "conv_1", "tenant": "a", "created_at": 1,
                              "items": [{"id": "msg_1", "type": "message", "role": "user", "content": "secret"}]}])
    odd = ["*", "resp_*", "../resp_1", "}:resp_1", "a}:resp_1", "{a}:resp_1", "\x00", "r" * 10_000]
    for rid in ["resp_1", "resp_2", "resp_3", *odd]:
        assert await rb.lookup("b", rid) is None
        assert await rb.delete("b", rid) is False
        assert await rb.mark("b", rid, "cancelled") is None
        assert await rb.pending_delete("b", rid) is None
        assert await rb.events_read("b", rid, -1) is None and await rb.events_next("b", rid) is None
        assert await rb.events_delete("b", rid) is False
    assert await rb.cancelled([("b", "resp_3")]) == {}
    for cid in ["conv_1", "*", "}:conv_1", "a}:conv_1", "c" * 10_000]:
        for op, rest in (("get", []), ("head", []), ("page", [None, 10, "asc"]), ("item", ["msg_1"]),
                         ("update", [{"x": "y"}]), ("append", [[{"id": "msg_2", "role": "user", "content": "z"}], None]),
                         ("delete_item", ["msg_1"])):
            assert await cb.call(op, ["b", cid, *rest]) in (None, False), (op, cid)
        assert await cb.call("delete", ["b", cid]) is False
    # a's records are whole: its chain, its run (still running), its log and its conversation
    assert isinstance(await rb.lookup("a", "resp_2"), StoredResponse)
    assert len(await rb.history(follow)) == 2
    running = await rb.lookup("a", "resp_3")
    assert isinstance(running, Pending) and running.status == "in_progress"
    assert await rb.events_next("a", "resp_3") == (1, False)
    conv = await cb.call("get", ["a", "conv_1"])
    assert conv["metadata"] == {} and [i["id"] for i in conv["items"]] == ["msg_1"]


async def test_a_ledger_missing_its_sizes_neither_hangs_nor_stays_over(port: int, store: RedisStore) -> None:
    """Both ledger keys expire, so Redis's maxmemory policy may evict one without the other: a ledger whose
    `sizes` was gone kept its keys in `held` for ever (removed only with a size), and the eviction loop, taking
    the same oldest key again and again, held the Redis in the script until its busy limit."""
    r = redis.Redis(port=port)
    try:
        for i in range(3):
            await store.responses.put(record("t", f"r{i}", 100_000), None)
        r.delete("aigrid:g:sizes:{t}")
        await store.responses.put(record("t", "r3", 2 * BOUND), None)  # over: the oldest go, whatever their size
        assert [await store.responses.lookup("t", f"r{i}") is None for i in range(3)] == [True] * 3
        assert r.zrange("aigrid:g:held:{t}", 0, -1) == [b"aigrid:g:resp:EU:{t}:r3"]
    finally:
        r.close()


async def test_the_spec_sets_a_tenant_s_bound(tmp_path: Path, port: int) -> None:
    """`gateway.store_tenant_max_bytes` bounds each tenant in the gateway's Redis stores (a constant before)."""
    spec = spec_in(tmp_path)
    spec = spec.model_copy(update={"gateway": spec.gateway.model_copy(update={
        "stores": {"EU": f"redis://127.0.0.1:{port}/0"}, "store_tenant_max_bytes": 1024 * 1024})})
    stores = build_stores(build_gateway(spec, {}, rng=random.Random(1), sleep=_no_sleep))
    eu = stores.responses.home("EU")
    try:
        for i in range(12):  # 1.2 MB
            await eu.put(record("t", f"r{i}", 100_000), None)
        assert await eu.lookup("t", "r0") is None and isinstance(await eu.lookup("t", "r11"), StoredResponse)
    finally:
        await stores.aclose()
    with pytest.raises(ValidationError):
        GatewaySpec(store_tenant_max_bytes=1000)


async def test_a_ledger_missing_its_held_set_does_not_evict_the_tenant_s_new_records(
        port: int, store: RedisStore) -> None:
    """The other half: Redis's maxmemory policy evicted `held` but not `sizes`. The sizes (and total) of the
    keys `held` listed stayed, renewed by every later write and removed by nothing (only what `held` lists
    leaves it): the total stayed near the bound for good, and each write evicted the tenant's other records."""
    r = redis.Redis(port=port)
    try:
        for i in range(4):
            await store.responses.put(record("t", f"r{i}", 95_000), None)
        r.delete("aigrid:g:held:{t}")
        for i in range(5):
            await store.responses.put(record("t", f"s{i}", 10_000), None)
        assert [isinstance(await store.responses.lookup("t", f"s{i}"), StoredResponse) for i in range(5)] == [True] * 5
        assert int(r.hget("aigrid:g:sizes:{t}", "")) < 100_000
    finally:
        r.close()


async def test_one_write_evicts_a_bounded_number_of_records(port: int) -> None:
    """The ledger's script evicted all that a write put past the bound in one go, and a script holds the whole
    Redis: a tenant of many small records writing one large evicted them all at once (100,000 in 0.76 s, every
    tenant's calls waiting). One write evicts at most EVICT_MOST; the next writes go on."""
    r = redis.Redis(port=port)
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", "g", ["EU", "unbound"], ttl_s=600,
                                tenant_max_bytes=2_000_000)
    most = stores_redis.EVICT_MOST
    try:
        for i in range(most + 200):  # small stored responses (placeholders are never evicted)
            await store.responses.put(record("t", f"n{i}", 1), None)
        await store.responses.put(record("t", "big", 2_000_000), None)
        left = sum(1 for _ in r.scan_iter(b"aigrid:g:resp:EU:{t}:n*", count=1000))
        assert left == 200, left
        assert isinstance(await store.responses.lookup("t", "big"), StoredResponse)
        await store.responses.put(record("t", "small", 10), None)  # the rest go now (and big, alone past the bound)
        assert sum(1 for _ in r.scan_iter(b"aigrid:g:resp:EU:{t}:n*", count=1000)) == 0
        assert isinstance(await store.responses.lookup("t", "small"), StoredResponse)
    finally:
        r.close()
        await store.aclose()


async def test_an_event_log_append_is_one_redis_call_its_bytes_held(port: int, store: RedisStore) -> None:
    """A background stream appends to its log at every chunk: the ledger (753cac7) made each append two scripts
    (the append, then the ledger's), twice the round trips and calls per chunk. One script does both now."""
    r = redis.Redis(port=port)
    try:
        await store.responses.events_append("t", "p1", 0, ["event: a\ndata: {}\n\n"], False)
        r.config_resetstat()
        for i in range(1, 11):
            await store.responses.events_append("t", "p1", i, ["event: b\ndata: {}\n\n"], i == 10)
        calls = sum(v["calls"] for k, v in r.info("commandstats").items() if k in ("cmdstat_evalsha", "cmdstat_eval"))
        assert calls == 10, calls
        assert await store.responses.events_next("t", "p1") == (11, True)
        counted = int(r.hget("aigrid:g:sizes:{t}", "aigrid:g:events:{t}:p1"))
        assert counted == stores_redis.RECORD_BYTES + 11 * (len("event: a\ndata: {}\n\n") + stores_redis.EVENT_BYTES)
    finally:
        r.close()


def round_trips(monkeypatch: pytest.MonkeyPatch) -> Callable[[Awaitable[Any]], Awaitable[int]]:
    """`trips(call)`: the commands `call` sends on the store's connections (its round trips), counted from now."""
    sent = [0]
    real = AbstractConnection.send_packed_command

    async def counted(self: AbstractConnection, *a: Any, **k: Any) -> None:
        sent[0] += 1
        await real(self, *a, **k)

    async def trips(call: Awaitable[Any]) -> int:
        sent[0] = 0
        await call
        return sent[0]

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
    return trips


async def test_each_write_and_its_ledger_hold_are_one_round_trip(
        port: int, store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """R2 (twenty-first session): a stored response, placeholder or conversation write was the write, then the
    ledger's script: two round trips per write where there had been one. One script (or, for a conversation's
    change, one MULTI/EXEC holding it) does both now. Counted as commands sent on the store's connections."""
    book, convs = store.responses, store.conversations
    # warm: the connection opened, every script loaded
    await book.put(record("t", "w0", 10), None)
    await book.pending_add(Pending("w1", "t", "m", 1, "in_progress"))
    await book.complete(record("t", "w1", 10), None)
    conv = await convs.call("create", [{"id": "cw", "tenant": "t", "created_at": 1}])
    await convs.call("update", ["t", conv["id"], {"k": "v"}])
    trips = round_trips(monkeypatch)
    assert await trips(book.put(record("t", "r1", 1024), None)) == 1
    assert await trips(book.pending_add(Pending("p1", "t", "m", 1, "in_progress"))) == 1
    assert await trips(book.complete(record("t", "p1", 1024), None)) == 1
    assert await trips(convs.call("create", [{"id": "c1", "tenant": "t", "created_at": 1}])) == 1
    assert await trips(convs.call("update", ["t", "c1", {"k": "v"}])) == 3  # WATCH, GET, MULTI..EXEC
    r = redis.Redis(port=port)
    try:
        held = {k.decode() for k in r.zrange("aigrid:g:held:{t}", 0, -1)}
        assert {"aigrid:g:resp:EU:{t}:r1", "aigrid:g:resp:EU:{t}:p1", "aigrid:g:conv:{t}:c1"} <= held
        assert "aigrid:g:pending:{t}:p1" not in held
        assert int(r.hget("aigrid:g:sizes:{t}", "aigrid:g:conv:{t}:c1")) == \
            stores_redis.RECORD_BYTES + r.strlen("aigrid:g:conv:{t}:c1")
        r.script_flush()  # Redis lost its scripts: a conversation's change loads it again, written once
        assert await convs.call("update", ["t", "c1", {"k": "w"}]) is not None
        assert (await convs.call("get", ["t", "c1"]))["metadata"] == {"k": "w"}
    finally:
        r.close()


async def test_another_gateway_s_eviction_cannot_fall_between_a_write_and_its_hold(port: int) -> None:
    """R2 (twenty-first session): gateway A rewrote the tenant's oldest record, then held it in the ledger in a
    second call; gateway B's write in between evicted that record as the oldest (A's hold not yet run): A's
    write was lost while its put returned True, and the ledger went on counting a record that was not there.
    The write and its hold are one script now: B's eviction comes before it or after it, never between."""
    a = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", "g", ["EU", "unbound"], ttl_s=600, tenant_max_bytes=BOUND)
    b = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", "g", ["EU", "unbound"], ttl_s=600, tenant_max_bytes=BOUND)
    try:
        for i in range(3):  # 360 KB of the 400 KB bound, r0 the oldest
            await a.responses.put(record("t", f"r{i}", 120_000), None)
            await asyncio.sleep(0.002)  # the ledger orders by the millisecond
        real, calls = a.responses._g, [0]

        async def then_b(call: Awaitable[Any]) -> Any:  # B writes right after A's first Redis call answers
            result = await real(call)
            calls[0] += 1
            if calls[0] == 1:
                await asyncio.sleep(0.002)
                await b.responses.put(record("t", "r3", 120_000), None)
            return result

        then_b.names = real.names  # type: ignore[attr-defined]  # the ledger's eviction warning names the store
        a.responses._g = a.responses._ledger._g = then_b  # type: ignore[assignment]
        assert await a.responses.put(record("t", "r0", 120_000), None) is True
        assert isinstance(await b.responses.lookup("t", "r0"), StoredResponse)  # A's write, kept
        assert await b.responses.lookup("t", "r1") is None  # the oldest once A's write was held
    finally:
        await a.aclose()
        await b.aclose()


async def test_only_the_tenant_s_placeholders_are_kept_from_eviction_whatever_a_key_spells(port: int) -> None:
    """Placeholders were told from other records by `pending:{` anywhere in the key: a jurisdiction spelled so
    (`resp:legal-pending:{t}:...`) made every stored response of it unevictable, the tenant's bound gone (R4)."""
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", "g", ["x-pending", "unbound"], ttl_s=600,
                                tenant_max_bytes=400_000)
    try:
        await store.responses.pending_add(Pending("p1", "t", "m", 1))
        for i in range(6):
            await store.responses.put(StoredResponse(f"r{i}", "t", "x-pending", "fra", {"id": f"r{i}"},
                                                     turn=[{"role": "user", "content": "x" * 95_000}]), None)
        assert await store.responses.lookup("t", "r0") is None  # the oldest stored response went
        assert isinstance(await store.responses.lookup("t", "r5"), StoredResponse)
        assert await store.responses.lookup("t", "p1") is not None  # the placeholder stays
    finally:
        await store.aclose()


async def test_a_delete_and_a_placeholder_s_rewrite_are_one_script_with_their_ledger(
        port: int, store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """S (twenty-second session): a delete was the DEL, then the ledger's script (the tenant's total still counted
    the deleted record between them: another gateway's write there evicted one more of its records), and a
    placeholder's mark or abandon rewrote it with no ledger at all: its error's bytes were never counted, and the
    ledger forgot the placeholder `ttl` after its creation while the mark's EXPIRE kept it. Each is one script now."""
    book, convs = store.responses, store.conversations
    for warm in ("w0", "w1"):  # the connection opened, every script loaded
        await book.put(record("t", warm, 10), None)
        await book.pending_add(Pending(warm, "t", "m", 1, "in_progress", owner="gone"))
        await book.events_append("t", warm, 0, ["event: a\n\n"], False)
        await book.mark("t", warm, "cancelled")
        await book.abandon(Pending(warm, "t", "m", 1, "in_progress", owner="gone"), {})
        await book.pending_delete("t", warm)
        await book.delete("t", warm)
        await book.events_delete("t", warm)
        await convs.call("create", [{"id": "c" + warm, "tenant": "t", "created_at": 1}])
        await convs.call("delete", ["t", "c" + warm])
    await book.put(record("t", "r1", 1024), None)
    await book.events_append("t", "r1", 0, ["event: a\n\n"], False)
    await convs.call("create", [{"id": "c1", "tenant": "t", "created_at": 1}])
    await book.pending_add(Pending("p1", "t", "m", 1, "in_progress", owner="gone"))
    await book.pending_add(Pending("p2", "t", "m", 1, "in_progress", owner="gone"))
    r = redis.Redis(port=port)
    try:
        held, sizes = "aigrid:g:held:{t}", "aigrid:g:sizes:{t}"
        before = r.zscore(held, "aigrid:g:pending:{t}:p1")
        await asyncio.sleep(0.005)
        trips = round_trips(monkeypatch)
        error = {"code": "server_error", "message": "x" * 5000}
        assert await trips(book.mark("t", "p1", "failed", error)) == 1
        # the owner's lease (not in the tenant's slot) read first, then the one script
        assert await trips(book.abandon(Pending("p2", "t", "m", 1, "in_progress", owner="gone"), error)) == 2
        for rid in ("p1", "p2"):  # held again at its new weight, its last write now
            key = f"aigrid:g:pending:{{t}}:{rid}"
            weight = stores_redis.RECORD_BYTES + sum(len(k) + len(v) for k, v in r.hgetall(key).items())
            assert int(r.hget(sizes, key)) == weight > 5000
            assert r.zscore(held, key) > before
        for delete in (book.delete("t", "r1"), book.events_delete("t", "r1"), convs.call("delete", ["t", "c1"]),
                       book.pending_delete("t", "p1")):
            assert await trips(delete) == 1
        assert await book.delete("t", "r1") is False and await book.events_delete("t", "r1") is False
        left = {k.decode() for k in r.zrange(held, 0, -1)}
        assert left == {"aigrid:g:pending:{t}:p2"}
        assert int(r.hget(sizes, "")) == int(r.hget(sizes, "aigrid:g:pending:{t}:p2"))
    finally:
        r.close()


@pytest.mark.parametrize("grid", ["g", "g{", "{", "a}b", "{x}", "~61"])
async def test_a_tenant_s_keys_share_one_slot_whatever_the_grid_is_named(port: int, grid: str) -> None:
    """S (twenty-third session): keys began `aigrid:<grid>:` with the grid as it is, and a key's hash tag (Redis
    Cluster) is between its first `{` and the next `}`: grid `g{` made `aigrid:g{:resp:EU:{t}:r1`'s tag
    `:resp:EU:{t`, so a tenant's keys fell in different slots (each write and its ledger are one script: refused
    as CROSSSLOT). A grid whose name holds `{` (or begins with `~`) is written `~` and its name in hex; other
    names' keys are as they were."""
    r = redis.Redis(port=port)
    s = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", grid, ["EU", "unbound"], ttl_s=600)
    try:
        book, convs = s.responses, s.conversations
        await book.put(record("t", "r1", 10), None)
        await book.pending_add(Pending("p1", "t", "m", 1))
        await book.events_append("t", "p1", 0, ["event: a\ndata: {}\n\n"], False)
        await convs.call("create", [{"id": "c1", "tenant": "t", "created_at": 1}])
        keys = [k.decode() for k in r.keys("*")]
        assert len(keys) == 6, keys  # the record, the placeholder, its log, the conversation, the ledger's two
        assert {key_slot(k.encode()) for k in keys} == {key_slot(b"{t}")}, keys  # before (g{, {, {x}): several
        assert all(k.count("{") == 1 for k in keys), keys
        # and no two grids share keys: an escaped name is no plain one's
        assert stores_redis.key_prefix("g{") != stores_redis.key_prefix("~" + b"g{".hex())
        if "{" not in grid and "~" not in grid:  # other names' keys are unchanged
            assert f"aigrid:{grid}:resp:EU:{{t}}:r1" in keys
    finally:
        r.flushdb()
        r.close()
        await s.aclose()
