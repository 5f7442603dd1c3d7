"""Quota store calls named by an op (quota_backend.py), on each store (in process, a real Redis, the workers' hub):
a call that timed out after the store applied it is released exactly, a repeat applies nothing more, a call that
arrives after its release applies nothing, and a settlement that failed is tried once more without refunding twice."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from aigrid.security import quota_backend
from aigrid.security import quotas as quotas_module
from aigrid.security.quota_backend import Counter, MemoryQuotaBackend, QuotaBackend
from aigrid.security.quotas import Quotas
from tests.security.test_quota_extend import ALICE, BUDGET, NOW, RPM, RULES, TPM, backend, work  # noqa: F401

KINDS = ["memory", "redis", "hub"]


class LateAnswer:
    """A store whose next call named in `fail` fails with a timeout, after (`applied`) or before applying it:
    a Redis answer past its 1 s socket timeout, the hub's past its 5 s."""

    def __init__(self, inner: QuotaBackend) -> None:
        self.inner = inner
        self.fail: set[str] = set()
        self.applied = True
        self.refuse: set[str] = set()
        """Calls whose next one fails before the store has it (the store down)."""

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if name in self.refuse:
                self.refuse.discard(name)
                raise ConnectionError(f"{name}: the store cannot be reached")
            if name not in self.fail:
                return await method(*args, **kwargs)
            self.fail.discard(name)
            if self.applied:
                await method(*args, **kwargs)
            raise TimeoutError(f"{name}: no answer within the socket timeout")
        return call


async def values(store: QuotaBackend) -> tuple[int, int, int]:
    return await store.value(RPM), await store.value(TPM), await store.value(BUDGET)


@pytest.mark.parametrize("kind", KINDS)
async def test_an_admission_the_store_applied_before_timing_out_is_released(
        kind: str, work: Path, request: pytest.FixtureRequest) -> None:  # noqa: F811
    """Before: the request was refused (503) and its charge stayed for the window (a day, for a budget)."""
    async with backend(kind, work, request) as inner:
        store = LateAnswer(inner)
        q = Quotas(RULES, cast(QuotaBackend, store), clock=lambda: NOW)
        store.fail = {"consume"}
        with pytest.raises(TimeoutError):
            await q.admit(ALICE, 300)
        assert await values(inner) == (0, 0, 0)
        r = await q.admit(ALICE, 300)  # the store answering again: charged once
        assert await values(inner) == (1, 300, 300)
        store.fail = {"grow", "consume"}  # a further turn's charge, applied and unanswered
        with pytest.raises(TimeoutError):
            await q.extend(r, 200)
        assert await values(inner) == (1, 300, 300)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_repeated_op_applies_once_and_a_released_one_never(
        kind: str, work: Path, request: pytest.FixtureRequest) -> None:  # noqa: F811
    async with backend(kind, work, request) as store:
        c = [Counter(TPM, 300, 800, NOW + 30, 30.0), Counter(BUDGET, 300, 1000, NOW + 60, 60.0)]
        op = "aigrid:q:{acme}:op:one"
        assert await store.consume(c, op) == (None, [300, 300])
        assert await store.consume(c, op) == (None, [300, 300])  # a retry: the first answer, nothing added
        assert await store.grow(c, 0, "aigrid:q:{acme}:op:two") == 0
        assert await store.grow(c, 0, "aigrid:q:{acme}:op:two") == 0
        assert (await store.value(TPM), await store.value(BUDGET)) == (600, 600)
        await store.release(op, c)
        await store.release(op, c)  # released once
        assert (await store.value(TPM), await store.value(BUDGET)) == (300, 300)
        late = "aigrid:q:{acme}:op:late"
        await store.release(late, c)  # given up before the store had it
        with pytest.raises(quota_backend.Released):
            await store.consume(c, late)  # it arrives: applies nothing
        assert (await store.value(TPM), await store.value(BUDGET)) == (300, 300)
        refund = [Counter(TPM, -100, 800, NOW + 30, 30.0)]
        await store.adjust(refund, "aigrid:q:{acme}:op:settle")
        await store.adjust(refund, "aigrid:q:{acme}:op:settle")
        assert await store.value(TPM) == 200


@pytest.mark.parametrize("applied", [True, False])
@pytest.mark.parametrize("kind", KINDS)
async def test_a_settlement_that_timed_out_is_tried_again_and_refunds_once(
        kind: str, applied: bool, work: Path, request: pytest.FixtureRequest) -> None:  # noqa: F811
    """Before: the failed settlement was logged and the reservation stood (its refund lost) where the store had not
    applied it; tried again without an op, one it had applied would have been refunded twice."""
    async with backend(kind, work, request) as inner:
        store = LateAnswer(inner)
        store.applied = applied
        q = Quotas(RULES, cast(QuotaBackend, store), clock=lambda: NOW)
        r = await q.admit(ALICE, 300)
        store.fail = {"adjust"}
        await q.settle(r, 120)
        assert await values(inner) == (1, 120, 120)


async def until(check: Callable[[], object], within_s: float = 5.0) -> bool:
    """Whether `check` (what it returns, or, where that is awaitable, what that gives) holds within `within_s` (asked
    every 10 ms)."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        held = check()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return True
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_charge_whose_release_fails_too_is_released_once_the_store_answers(
        kind: str, work: Path, request: pytest.FixtureRequest,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The store applies the charge, its answer is lost, the release fails too, then the store answers again. Before:
    logged "could not be released", and the charge stayed for its whole window (a day, for a budget)."""
    monkeypatch.setattr(quotas_module, "RELEASE_RETRY_PAUSE_S", 0.01)
    async with backend(kind, work, request) as inner:
        store = LateAnswer(inner)
        q = Quotas(RULES, cast(QuotaBackend, store), clock=lambda: NOW)
        store.fail, store.refuse = {"consume"}, {"release"}
        with pytest.raises(TimeoutError):
            await q.admit(ALICE, 300)
        assert [m for m in caplog.messages if "could not be released" in m], caplog.messages
        assert await until(lambda: _zero(inner)), await values(inner)
        assert await until(lambda: not q._unreleased) and q.unreleased == 0
        await q.aclose()


async def _zero(store: QuotaBackend) -> bool:
    return await values(store) == (0, 0, 0)


async def test_a_release_that_keeps_failing_is_given_up_when_its_op_is_forgotten_and_the_wait_is_bounded(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Tried again only while the store keeps the charge's op; RELEASE_RETRY_MAX waiting at most; each given up is
    logged and counted, and a stop gives up those still waiting."""
    monkeypatch.setattr(quotas_module, "RELEASE_RETRY_PAUSE_S", 0.01)
    # 1 s (100 pauses) for a retry to happen at all: a loaded 2-core machine can stall the loop for tenths of a second
    monkeypatch.setattr(quotas_module, "RELEASE_RETRY_WITHIN_S", 1.0)
    monkeypatch.setattr(quotas_module, "RELEASE_RETRY_MAX", 2)
    inner = MemoryQuotaBackend()
    store = LateAnswer(inner)
    calls = {"release": 0}

    async def failing(op: str, counters: Any) -> None:
        calls["release"] += 1
        raise TimeoutError("release: no answer")

    monkeypatch.setattr(inner, "release", failing)
    q = Quotas(RULES, cast(QuotaBackend, store), clock=lambda: NOW)
    for _ in range(3):
        store.fail = {"consume"}
        with pytest.raises(TimeoutError):
            await q.admit(ALICE, 100)
    assert len(q._unreleased) == 2 and q.unreleased == 1  # the third: over the bound, given up at once
    assert await until(lambda: not q._unreleased, 10.0)
    assert q.unreleased == 3 and calls["release"] >= 4  # each tried again before its op was forgotten
    assert len([m for m in caplog.messages if "was not released" in m]) == 3
    store.fail = {"consume"}
    q._unreleased.pause_s = 60.0
    monkeypatch.setattr(inner, "release", failing)
    with pytest.raises(TimeoutError):
        await q.admit(ALICE, 100)
    await q.aclose()  # the gateway stops: the one waiting is given up, the background task ended
    assert q.unreleased == 4 and not q._unreleased and q._unreleased._task is None


async def test_a_release_the_store_keeps_failing_does_not_hold_up_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two failed charges wait for their release; the store keeps failing the first one's release (from the first
    round on) but takes the second's. Before, a round stopped at its first failure: the second was never tried while
    the first waited (RELEASE_RETRY_WITHIN_S, 25 s), its charge held all that time."""
    monkeypatch.setattr(quotas_module, "RELEASE_RETRY_PAUSE_S", 0.01)
    inner = MemoryQuotaBackend()
    store = LateAnswer(inner)
    q = Quotas(RULES, cast(QuotaBackend, store), clock=lambda: NOW)
    tried: list[str] = []
    real_release = inner.release

    async def release(op: str, counters: Any) -> None:
        tried.append(op)
        if op not in tried[:-1] or op == tried[0]:  # each one's first release fails, and every one of the first's
            raise ConnectionError("release: the store cannot take it")
        await real_release(op, counters)

    monkeypatch.setattr(inner, "release", release)
    for _ in range(2):
        store.fail = {"consume"}
        with pytest.raises(TimeoutError):
            await q.admit(ALICE, 100)
    assert len(q._unreleased) == 2 and await values(inner) == (2, 200, 200)
    first, second = tried[0], tried[1]
    assert first != second
    assert await until(lambda: len(q._unreleased) == 1)  # the second released, the first still waits
    assert tried[2:4] == [first, second]  # in the first round: tried right after the first one failed
    assert await values(inner) == (1, 100, 100)
    await q.aclose()
    assert q.unreleased == 1


class _HeldReplies:
    """A TCP relay to Redis on 127.0.0.1 that drops the next reply when `drop` is set: Redis has run the command,
    and its client's socket timeout fires (a Redis stalled or a network lost right after the write)."""

    def __init__(self, redis_port: int) -> None:
        self.redis_port = redis_port
        self.drop = False
        self.server: asyncio.Server | None = None
        self.pumps: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.redis_port)
        for task in (self._pump(reader, up_writer, False), self._pump(up_reader, writer, True)):
            t = asyncio.create_task(task)
            self.pumps.add(t)
            t.add_done_callback(self.pumps.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, replies: bool) -> None:
        try:
            while data := await src.read(65536):
                if replies and self.drop:
                    self.drop = False
                    continue
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for t in list(self.pumps):
            t.cancel()
        await asyncio.gather(*self.pumps, return_exceptions=True)
        await self.server.wait_closed()


@pytest.mark.parametrize("retries", [True, False], ids=["redis-py retries", "no retries"])
async def test_a_charge_whose_redis_reply_is_lost_is_charged_once(redis_port: int, retries: bool) -> None:
    """Real Redis, its reply lost after it ran the charge, the client's real 0.2 s socket timeout. A plain redis-py
    (8.x) client retries a command that timed out: before, the charge ran again, the request counted twice and its
    tokens reserved twice; now the repeat answers as the first did. Without retries, as the gateway's quota client
    runs (redis_client.connect's pool: one attempt, then the 503 at the guard), the charge is released; before, it
    stayed."""
    pytest.importorskip("redis", reason="the redis client package is not installed")
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import TimeoutError as RedisTimeout

    from aigrid.security.quotas_redis import RedisQuotaBackend

    relay = _HeldReplies(redis_port)
    port = await relay.start()
    direct = Redis(host="127.0.0.1", port=redis_port)
    client = (Redis(host="127.0.0.1", port=port, socket_timeout=0.2) if retries else
              Redis(host="127.0.0.1", port=port, socket_timeout=0.2, retry=Retry(NoBackoff(), 0)))
    rpm, budget = f"lost:{{acme}}:tenant:acme:rpm:{int(NOW // 60)}", "lost:{acme}:tenant:acme:budget:3"
    try:
        await direct.flushdb()
        q = Quotas(RULES, RedisQuotaBackend(client), clock=lambda: NOW, prefix="lost")
        r = await q.admit(ALICE, 100)  # the scripts loaded: the next reply is the charge's
        await q.settle(r, 0)
        relay.drop = True
        if retries:
            await q.admit(ALICE, 300)
            assert (int(await direct.get(rpm)), int(await direct.get(budget))) == (2, 300)
        else:
            with pytest.raises(RedisTimeout):
                await q.admit(ALICE, 300)
            assert (int(await direct.get(rpm)), int(await direct.get(budget))) == (1, 0)
        assert not relay.drop  # the charge's reply was the one lost: Redis had run it
    finally:
        await client.aclose()
        await direct.aclose()
        await relay.stop()


async def test_only_a_store_that_pauses_is_asked_by_op() -> None:
    """A gateway's own in-process store never pauses nor fails: no op is named, none recorded (its memory and time
    per request as before); the same store behind the hub is asked by op (HubQuotaBackend has no `pauses`)."""
    own = MemoryQuotaBackend()
    q = Quotas(RULES, own, clock=lambda: NOW)
    r = await q.admit(ALICE, 300)
    grown = await q.extend(r, 100)
    assert grown is not None
    await q.settle(grown[0], 50)
    assert own._ops == {} and r.op == ""
    hubs = LateAnswer(MemoryQuotaBackend())
    named = await Quotas(RULES, cast(QuotaBackend, hubs), clock=lambda: NOW).admit(ALICE, 300)
    assert named.op.startswith("aigrid:q:{acme}:op:") and list(hubs.inner._ops) == [named.op]


async def _ops_held(store: QuotaBackend) -> int:
    """The op records the store holds (the in-process store's table, Redis's op keys)."""
    if isinstance(store, MemoryQuotaBackend):
        return len(store._ops)
    return len([k async for k in store._redis.scan_iter("*:op:*")])  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ["memory", "redis"])  # the hub's store is the in-process one
async def test_a_refused_charge_records_no_op_and_is_weighed_afresh_when_asked_again(
        kind: str, work: Path, request: pytest.FixtureRequest) -> None:  # noqa: F811
    """Before: every refused charge (a 429, a tool loop's turn without room) was kept by its op for the op's TTL, though
    it applied nothing: in Redis one key per 429 for 120 s (10,000 refused admissions: 10,000 keys, 1.8 MB; a client
    hammering past its limit grows Redis by that), in the hub's memory for 30 s."""
    async with backend(kind, work, request) as store:
        c = [Counter(TPM, 500, 800, NOW + 30, 30.0)]
        assert await store.consume(c, "aigrid:q:{acme}:op:a") == (None, [500])
        assert await store.consume(c, "aigrid:q:{acme}:op:b") == (0, [])
        assert await store.grow(c, 0, "aigrid:q:{acme}:op:c") is None
        assert await _ops_held(store) == 1  # the one that applied something
        await store.release("aigrid:q:{acme}:op:a", c)
        assert await store.consume(c, "aigrid:q:{acme}:op:b") == (None, [500])  # asked again: room now, charged
        assert await store.consume(c, "aigrid:q:{acme}:op:b") == (None, [500])  # and that charge once
        assert await store.value(TPM) == 500


async def test_an_op_released_after_its_charge_is_kept_its_whole_ttl_from_the_release(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the in-process store forgot an op at the expiry of its first record (the charge's), though the release
    had recorded it again later: a late copy of the charge arriving in between applied."""
    now = [1000.0]
    monkeypatch.setattr(quota_backend, "time", type("Clock", (), {"monotonic": staticmethod(lambda: now[0])}))
    store = MemoryQuotaBackend(op_ttl_s=30.0)
    c = [Counter(TPM, 300, 800, NOW + 30, 30.0)]
    op = "aigrid:q:{acme}:op:x"
    await store.consume(c, op)
    now[0] += 20
    await store.release(op, c)
    now[0] += 20  # 40 s after the charge, 20 after the release
    with pytest.raises(quota_backend.Released):
        await store.consume(c, op)
    assert await store.value(TPM) == 0
    now[0] += 11  # the release's own 30 s over: forgotten
    assert await store.consume(c, op) == (None, [300]) and len(store._ops) == 1


class _Keys(MemoryQuotaBackend):
    """The in-process store asked by op (as the hub's is), noting every key a call names."""

    pauses = True

    def __init__(self) -> None:
        super().__init__()
        self.keys: set[str] = set()

    async def consume(self, counters: Any, op: str | None = None) -> Any:
        self.keys |= {c.key for c in counters} | {op or ""}
        return await super().consume(counters, op)

    async def grow(self, counters: Any, give: int, op: str | None = None) -> int | None:
        self.keys |= {c.key for c in counters} | {op or ""}
        return await super().grow(counters, give, op)

    async def adjust(self, counters: Any, op: str | None = None) -> None:
        self.keys |= {c.key for c in counters} | {op or ""}
        await super().adjust(counters, op)


@pytest.mark.parametrize("tenant", ["}x", "", "acme", "a{b", "a}b", "~7d78"])
async def test_every_key_of_a_tenant_s_request_is_in_one_redis_cluster_slot(tenant: str) -> None:
    """Before: a tenant named '' or beginning with '}' had an empty hash tag ({} or {}x}...): each counter and op key
    hashed whole, 4 to 6 slots for one request (a Cluster refuses such a script, CROSSSLOT); now '~' and the name in
    hex, which a plain name beginning with '~' is written as too (so '~7d78' does not share the keys of '}x')."""
    pytest.importorskip("redis", reason="the redis client package is not installed")
    from redis.crc import key_slot

    from aigrid.security.principal import Principal, Scopes

    store = _Keys()
    q = Quotas(RULES, store, clock=lambda: NOW)
    r = await q.admit(Principal(tenant, "k-alice", Scopes()), 100)
    grown = await q.extend(r, 100)
    assert grown is not None
    await q.settle(grown[0], 50)
    store.keys.discard("")
    assert len(store.keys) >= 5  # rpm, budget, tpm, three ops
    assert len({key_slot(k.encode()) for k in store.keys}) == 1, sorted(store.keys)
    if tenant == "~7d78":  # tenant '}x' written out: a plain name that looks like it is written out too
        assert all(k.startswith("aigrid:q:{~7e37643738}:") for k in store.keys), sorted(store.keys)


def test_a_charge_given_up_unreleased_is_counted_where_an_operator_reads_it(tmp_path: Any) -> None:
    """Quotas.unreleased was counted but nothing read it: a failed charge whose release the store kept refusing
    stayed charged with only a log line. The gateway's `aigrid_quota_unreleased_total` counts each (R1)."""
    import random

    from aigrid.gateway.app import build_gateway
    from tests.gateway.conftest import spec_in
    from tests.gateway.fake_engine import FakeEngine

    spec = spec_in(tmp_path)
    gw = build_gateway(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}, rng=random.Random(1))
    gw.guard.quotas._give_up("op-1", "the store did not take its release")
    assert b"aigrid_quota_unreleased_total 1.0" in gw.metrics.exposition()
