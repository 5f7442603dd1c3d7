"""Quotas.extend: a request's reservation grown before a further model call (a tool loop's later turn), on each
backend (in process, Redis, the workers' hub): charged under the same token limits, in the windows current at the
time (a loop past a minute boundary charges the new minute), all or none, no request counted, refused (nothing
charged) where a counter has no room, and settled once to the real usage, each window its share."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest

from aigrid.gateway.hub import Hub
from aigrid.gateway.hub_client import HubClient, HubQuotaBackend
from aigrid.security.principal import Principal, Scopes
from aigrid.security.quota_backend import MemoryQuotaBackend, QuotaBackend
from aigrid.security.quotas import QuotaLimits, QuotaRules, Quotas, Reservation

ALICE = Principal("acme", "k-alice", Scopes())
NOW = 86_400.0 * 3 + 30  # 30 s into a minute window
RULES = QuotaRules(default_tenant=QuotaLimits(requests_per_min=10, token_budget=1000),
                   default_key=QuotaLimits(tokens_per_min=800))
BUDGET = "aigrid:q:{acme}:tenant:acme:budget:3"
TPM = f"aigrid:q:{{acme}}:key:k-alice:tpm:{int(NOW // 60)}"
RPM = f"aigrid:q:{{acme}}:tenant:acme:rpm:{int(NOW // 60)}"


@pytest.fixture
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="aigrid-q-"))  # short: a Unix socket path has ~100 bytes
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@asynccontextmanager
async def backend(kind: str, work: Path, request: pytest.FixtureRequest) -> AsyncIterator[QuotaBackend]:
    if kind == "memory":
        yield MemoryQuotaBackend()
    elif kind == "redis":
        pytest.importorskip("redis", reason="the redis client package is not installed")
        from redis.asyncio import Redis

        from aigrid.security.quotas_redis import RedisQuotaBackend
        port = request.getfixturevalue("redis_port")
        client = Redis(host="127.0.0.1", port=port)
        await client.flushdb()
        try:
            yield RedisQuotaBackend(client)
        finally:
            await client.aclose()
    else:
        hub = Hub(work / "hub.sock", None)
        await hub.start()
        client = HubClient(hub.path, hub.token)
        try:
            yield HubQuotaBackend(client)
        finally:
            await client.aclose()
            await hub.stop()


@pytest.mark.parametrize("kind", ["memory", "redis", "hub"])
async def test_extend_charges_the_token_counters_all_or_none_and_settle_corrects_once(
        kind: str, work: Path, request: pytest.FixtureRequest) -> None:
    async with backend(kind, work, request) as store:
        q = Quotas(RULES, store, clock=lambda: NOW)
        r = await q.admit(ALICE, 300)  # the first turn: its prompt's estimate and max_tokens
        extended = await q.extend(r, 400)  # the loop's next turn
        assert extended is not None and extended[1] == 0
        grown = extended[0]
        assert grown.reserved_tokens == 700
        assert (await store.value(BUDGET), await store.value(TPM), await store.value(RPM)) == (700, 700, 1)
        assert await q.extend(grown, 200) is None  # past the key's 800 tokens a minute: nothing charged
        assert (await store.value(BUDGET), await store.value(TPM)) == (700, 700)
        assert await q.extend(grown, 0) == (grown, 0)  # nothing to reserve: nothing asked
        await q.settle(grown, 450)  # the real usage of both turns, once
        assert (await store.value(BUDGET), await store.value(TPM), await store.value(RPM)) == (450, 450, 1)


async def test_extend_without_token_limits_grows_the_reservation_only() -> None:
    q = Quotas(QuotaRules(default_key=QuotaLimits(requests_per_min=5)), clock=lambda: NOW)
    r = await q.admit(ALICE, 100)
    extended = await q.extend(r, 50)
    assert extended is not None and extended[0].reserved_tokens == 150 and extended[0].token_counters == ()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


MINUTE = int(NOW // 60)
EDGE = MINUTE * 60.0 + 59  # a second before the minute ends
LOOP_RULES = QuotaRules(default_tenant=QuotaLimits(token_budget=5000), default_key=QuotaLimits(tokens_per_min=800))


def tpm(minute: int) -> str:
    return f"aigrid:q:{{acme}}:key:k-alice:tpm:{minute}"


async def across_the_minute(q: Quotas, clock: Clock, first: int, then: int) -> Reservation | None:
    """A loop's first turn admitted at 59 s of a minute, its next turn reserved at 61 s, in the next minute."""
    clock.now = EDGE
    r = await q.admit(ALICE, first)
    clock.now = EDGE + 2
    extended = await q.extend(r, then)
    return None if extended is None else extended[0]


async def charged(store: QuotaBackend) -> tuple[int, int, int]:
    """The key's tokens in the minute of admission, in the next one, and the tenant's day's budget."""
    return await store.value(tpm(MINUTE)), await store.value(tpm(MINUTE + 1)), await store.value(BUDGET)


@pytest.fixture(params=["memory", "redis", "hub"])
async def loop_quotas(work: Path, request: pytest.FixtureRequest) -> AsyncIterator[tuple[QuotaBackend, Clock, Quotas]]:
    async with backend(request.param, work, request) as store:
        clock = Clock(EDGE)
        yield store, clock, Quotas(LOOP_RULES, store, clock=clock)


async def test_a_turn_past_a_minute_boundary_is_charged_in_the_new_minute_and_settled_in_both(
        loop_quotas: tuple[QuotaBackend, Clock, Quotas]) -> None:
    store, clock, q = loop_quotas
    grown = await across_the_minute(q, clock, 300, 400)
    assert grown is not None and grown.reserved_tokens == 700
    assert await charged(store) == (300, 400, 700)  # the day's budget: one window, both turns
    clock.now = EDGE + 5
    await q.settle(grown, 350)  # the real usage of both turns: each minute its share (300:400 of 350)
    assert await charged(store) == (150, 200, 350)


async def test_a_full_old_minute_does_not_refuse_a_turn_in_the_new_one(
        loop_quotas: tuple[QuotaBackend, Clock, Quotas]) -> None:
    store, clock, q = loop_quotas
    grown = await across_the_minute(q, clock, 700, 400)  # 700 of the key's 800 in the minute of admission
    assert grown is not None and grown.reserved_tokens == 1100  # the new minute has room for the turn
    assert await q.extend(grown, 500) is None  # 400 + 500 past the new minute's 800: nothing charged
    assert await charged(store) == (700, 400, 1100)
    await q.settle(grown, 0)  # a loop cut before any engine counted a token: nothing stays charged
    assert await charged(store) == (0, 0, 0)


async def test_a_reservation_handed_away_charges_and_settles_nothing() -> None:
    """Exchange.hand_admission empties the creator's counters: its headroom only, nothing to grow or settle."""
    store = MemoryQuotaBackend()
    q = Quotas(LOOP_RULES, store, clock=lambda: EDGE)
    r = await q.admit(ALICE, 300)
    emptied = replace(r, token_counters=(), reserved_tokens=0)
    extended = await q.extend(emptied, 100)
    assert extended is not None and extended[0].token_counters == ()
    grown = extended[0]
    await q.settle(grown, 50)
    assert (await store.value(tpm(MINUTE)), await store.value(BUDGET)) == (300, 300)


@pytest.mark.parametrize("kind", ["memory", "redis", "hub"])
async def test_a_turn_is_charged_past_what_the_reservation_holds_unused_and_shortened_to_the_room_left(
        kind: str, work: Path, request: pytest.FixtureRequest) -> None:
    """`used`: the finished turns' real usage. A turn is charged only past what the reservation holds unused (before,
    its whole estimate on top of it: a loop whose first turn wrote 10 of its 256 tokens held 246 for nothing and was
    refused its next turn on a tight budget); where a counter has room for less, up to `give` of it is left out (the
    turn's max_tokens lowered by that much), and past `give` nothing is charged."""
    rules = QuotaRules(default_tenant=QuotaLimits(token_budget=1000))
    async with backend(kind, work, request) as store:
        q = Quotas(rules, store, clock=lambda: NOW)
        r = await q.admit(ALICE, 300)
        extended = await q.extend(r, 400, used=100)  # 200 of the 300 unused: 200 more
        assert extended is not None and extended[1] == 0 and await store.value(BUDGET) == 500
        grown = extended[0]
        assert grown.reserved_tokens == 500
        extended = await q.extend(grown, 700, used=300, give=300)  # needs 500 more, 500 left
        assert extended is not None and extended[1] == 0 and await store.value(BUDGET) == 1000
        grown = extended[0]
        extended = await q.extend(grown, 300, used=900, give=250)  # needs 200 more, none left: 200 left out
        assert extended is not None and extended[1] == 200 and await store.value(BUDGET) == 1000
        assert await q.extend(extended[0], 300, used=1000, give=250) is None  # no room even for its floor
        assert await store.value(BUDGET) == 1000
        later = await q.extend(extended[0], 300, used=1100, give=300)  # 100 used past the reservation: made up
        assert later is None and await store.value(BUDGET) == 1000
        await q.settle(extended[0], 950)
        assert await store.value(BUDGET) == 950


class Counted:
    """A store whose every call is counted by name: one call is one round trip to Redis or the hub."""

    def __init__(self, inner: QuotaBackend) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return await method(*args, **kwargs)
        return call


@pytest.mark.parametrize("kind", ["memory", "redis", "hub"])
async def test_a_turn_is_reserved_in_one_round_trip_to_the_store(
        kind: str, work: Path, request: pytest.FixtureRequest) -> None:
    """Extend read each token limit's counter (up to four: tenant and key, per minute and budget) one after another
    before its charge: four round trips to Redis or the hub per turn, and a race with other requests between the
    reads and the charge. The store now reads and charges in one step."""
    rules = QuotaRules(default_tenant=QuotaLimits(tokens_per_min=900, token_budget=1000),
                       default_key=QuotaLimits(tokens_per_min=1000, token_budget=5000))
    async with backend(kind, work, request) as inner:
        store = Counted(inner)
        q = Quotas(rules, cast(QuotaBackend, store), clock=lambda: NOW)
        r = await q.admit(ALICE, 300)
        store.calls.clear()
        grown = await q.extend(r, 400, give=200)
        assert grown is not None and grown[1] == 0 and store.calls == ["grow"]
        store.calls.clear()
        shortened = await q.extend(grown[0], 400, give=300)  # tenant minute has 200 left: 200 left out
        assert shortened is not None and shortened[1] == 200 and len(store.calls) == 1
        assert await inner.value(f"aigrid:q:{{acme}}:tenant:acme:tpm:{MINUTE}") == 900
        assert await q.extend(shortened[0], 100) is None and len(store.calls) == 2  # full: refused, one call
        assert await inner.value(BUDGET) == 900


async def test_extend_lowers_the_tokens_headroom_the_rate_limit_headers_say_by_what_it_charged() -> None:
    """(brief RV1, review of ATK6) The headers' remaining tokens are the room after the request's whole reservation:
    a loop's later turn, or a widening given less than it asked (`give`), lowers them by what it charged in the
    same window; a turn in the next minute leaves the admission's window's room as it was. Before, extend() kept
    admission's headroom: the headers said the room before every turn but the first."""
    clock = Clock(NOW)
    q = Quotas(RULES, MemoryQuotaBackend(), clock=clock)
    r = await q.admit(ALICE, 300)
    [room] = [h for h in r.headroom if h.kind == "tokens"]
    assert room.remaining == 500
    extended = await q.extend(r, 400)
    assert extended is not None
    assert [h.remaining for h in extended[0].headroom if h.kind == "tokens"] == [100]
    assert [h.remaining for h in extended[0].headroom if h.kind == "requests"] == \
        [h.remaining for h in r.headroom if h.kind == "requests"]
    widened = await q.extend(extended[0], 1_000, give=1_000)  # 100 of 1,000 fit
    assert widened is not None and widened[1] == 900
    assert [h.remaining for h in widened[0].headroom if h.kind == "tokens"] == [0]
    clock.now = NOW + 60  # the next minute: admission's window's room is not this turn's
    later = await q.extend(r, 100)
    assert later is not None and [h.remaining for h in later[0].headroom if h.kind == "tokens"] == [500]
