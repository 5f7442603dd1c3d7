"""Quotas in process: 429 with Retry-After, per tenant and per key, settlement with real usage."""

from __future__ import annotations

import asyncio
import inspect
import time
import typing
from collections.abc import Sequence
from unittest.mock import patch

import pytest

from aigrid.errors import RateLimited
from aigrid.security.principal import Principal, Scopes
from aigrid.security.quota_backend import Consumed, Counter, MemoryQuotaBackend
from aigrid.security.quotas import QuotaExceeded, QuotaLimits, QuotaRules, Quotas, rate_limit_headers

ALICE = Principal("acme", "k-alice", Scopes())
BOB = Principal("acme", "k-bob", Scopes())


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def test_requests_per_minute_per_key_gives_429_with_retry_after() -> None:
    clock = Clock(1_000_040.0)  # 20 s into a minute window
    q = Quotas(QuotaRules(default_key=QuotaLimits(requests_per_min=3)), clock=clock)
    for _ in range(3):
        await q.admit(ALICE, 10)
    with pytest.raises(RateLimited) as e:
        await q.admit(ALICE, 10)
    assert e.value.status == 429 and e.value.headers["Retry-After"] == "40"
    assert "key requests per minute (3)" in e.value.message
    await q.admit(BOB, 10)  # another key has its own counter
    clock.t += 40
    await q.admit(ALICE, 10)  # next window


async def test_tenant_limit_is_shared_by_its_keys() -> None:
    q = Quotas(QuotaRules(tenants={"acme": QuotaLimits(requests_per_min=2)}), clock=Clock(60.0))
    await q.admit(ALICE, 1)
    await q.admit(BOB, 1)
    with pytest.raises(RateLimited, match="tenant requests per minute"):
        await q.admit(BOB, 1)
    await q.admit(Principal("other", "k-x", Scopes()), 1)


async def test_refused_request_does_not_consume_other_counters() -> None:
    q = Quotas(QuotaRules(default_tenant=QuotaLimits(requests_per_min=100),
                          default_key=QuotaLimits(tokens_per_min=100)), clock=Clock(0.0))
    await q.admit(ALICE, 80)
    with pytest.raises(RateLimited, match="tokens per minute"):
        await q.admit(ALICE, 30)
    assert await q.backend.value("aigrid:q:{acme}:tenant:acme:rpm:0") == 1


async def test_settle_replaces_reservation_with_real_usage() -> None:
    q = Quotas(QuotaRules(default_key=QuotaLimits(tokens_per_min=1000)), clock=Clock(0.0))
    r = await q.admit(ALICE, 900)  # reserved prompt + max_tokens
    await q.settle(r, 120)  # used far less
    await q.admit(ALICE, 800)  # fits: 120 + 800 <= 1000
    with pytest.raises(RateLimited):
        await q.admit(ALICE, 100)


async def test_token_budget_over_its_period() -> None:
    clock = Clock(86_400.0 * 10 + 3600)
    q = Quotas(QuotaRules(default_tenant=QuotaLimits(token_budget=1000, budget_period_s=86_400)), clock=clock)
    await q.admit(ALICE, 600)
    with pytest.raises(RateLimited, match="token budget") as e:
        await q.admit(BOB, 600)
    assert e.value.headers["Retry-After"] == str(86_400 - 3600)


async def test_concurrent_admissions_never_exceed_the_limit() -> None:
    q = Quotas(QuotaRules(default_key=QuotaLimits(requests_per_min=50)), clock=Clock(0.0))

    async def one() -> bool:
        await asyncio.sleep(0)
        try:
            await q.admit(ALICE, 1)
            return True
        except RateLimited:
            return False

    results = await asyncio.gather(*(one() for _ in range(400)))
    assert sum(results) == 50


async def test_the_quotas_429_carries_its_headroom_and_each_family_is_built_from_it() -> None:
    """The quota's 429 carries the limit it names (remaining 0, the window's exact time left), from which the one
    builder says OpenAI's x-ratelimit-* (in its headers already) or Anthropic's anthropic-ratelimit-* (the reset the
    window's end, rounded up once); a spent budget has no per-minute headroom (review RV7 of e31f7698)."""
    q = Quotas(QuotaRules(default_key=QuotaLimits(requests_per_min=1)), clock=lambda: 1_800_000_030.2)
    await q.admit(ALICE, 10)
    with pytest.raises(QuotaExceeded) as e:
        await q.admit(ALICE, 10)
    [room] = e.value.headroom
    assert (room.kind, room.limit, room.remaining) == ("requests", 1, 0)
    assert room.ends_at == 1_800_000_060.0
    assert e.value.headers["x-ratelimit-reset-requests"] == "30s" and e.value.headers["Retry-After"] == "30"
    assert rate_limit_headers(room, family="anthropic") == {
        "anthropic-ratelimit-requests-limit": "1", "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2027-01-15T08:01:00Z"}  # 1_800_000_060, the window's end
    # built later (an answer's headers, after the request ran 5.5 s): still the window's end, not 5.5 s past it;
    # read as now + the time left at admission it said 08:01:06Z, and a second past the end for any delay at all (review RV10)
    with patch.object(time, "time", lambda: 1_800_000_035.7):
        assert rate_limit_headers(room, family="anthropic")["anthropic-ratelimit-requests-reset"] == \
            "2027-01-15T08:01:00Z"
    spent = Quotas(QuotaRules(default_key=QuotaLimits(token_budget=5)), clock=lambda: 30.0)
    with pytest.raises(QuotaExceeded) as e:
        await spent.admit(ALICE, 10)  # larger than the budget
    assert e.value.headroom == () and not [k for k in e.value.headers if "ratelimit" in k]


async def test_the_headroom_left_is_the_tightest_of_the_tenants_and_the_keys() -> None:
    q = Quotas(QuotaRules(tenants={"acme": QuotaLimits(requests_per_min=10, tokens_per_min=1000, token_budget=5000)},
                          keys={"k-alice": QuotaLimits(requests_per_min=3)}), clock=lambda: 30.0)
    r = await q.admit(ALICE, 300)
    rooms = {h.kind: (h.limit, h.remaining, h.ends_at) for h in r.headroom}
    assert rooms == {"requests": (3, 2, 60.0), "tokens": (1000, 700, 60.0)}  # the key's 3/min is the tighter
    r = await q.admit(BOB, 300)  # another key of the tenant: the tenant's limits only
    assert {h.kind: h.remaining for h in r.headroom} == {"requests": 8, "tokens": 400}
    assert rate_limit_headers(*r.headroom, now=30.0) == {
        "x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "8", "x-ratelimit-reset-requests": "30s",
        "x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "400", "x-ratelimit-reset-tokens": "30s"}
    assert (await Quotas(QuotaRules()).admit(ALICE, 10)).headroom == ()  # no limit: no headers


async def test_openais_reset_is_the_time_left_when_the_headers_are_built() -> None:
    """x-ratelimit-reset-* is the time left in the window when the answer's headers are built (Headroom.ends_at less
    the quotas' clock then), not the duration measured at admission: an answer written 50 s after admission in a
    window's last 55 s said 55s (until the twenty-ninth session), its window ended 45 s before."""
    q = Quotas(QuotaRules(default_key=QuotaLimits(requests_per_min=5, tokens_per_min=1000)), clock=lambda: 65.0)
    r = await q.admit(ALICE, 300)
    at_admission = rate_limit_headers(*r.headroom, now=65.0)
    assert (at_admission["x-ratelimit-reset-requests"], at_admission["x-ratelimit-reset-tokens"]) == ("55s", "55s")
    later = rate_limit_headers(*r.headroom, now=115.0)
    assert (later["x-ratelimit-reset-requests"], later["x-ratelimit-reset-tokens"]) == ("5s", "5s")
    assert rate_limit_headers(*r.headroom, now=130.0)["x-ratelimit-reset-requests"] == "0s"  # past its end: none left
    with pytest.raises(TypeError):  # the OpenAI family has no reset without the time it is said at
        rate_limit_headers(*r.headroom)


def test_openais_headers_without_now_are_refused_at_type_check_time() -> None:
    """rate_limit_headers without `now` type-checked for the OpenAI family and raised TypeError only when it ran (96a0b403):
    its overloads (what mypy checks a call against) make `now` required wherever the family may be OpenAI's, the
    default included, and leave it optional for Anthropic's (`mypy` on `rate_limit_headers(room)`: no overload matches)."""
    variants = typing.get_overloads(rate_limit_headers)
    assert variants, "no overloads: a call without now type-checks"
    for variant in variants:
        params = inspect.signature(variant).parameters
        family = params["family"]
        if family.default == "openai" or "openai" in str(family.annotation):
            assert params["now"].default is inspect.Parameter.empty, params
            assert params["now"].kind is inspect.Parameter.KEYWORD_ONLY
        else:
            assert family.default is inspect.Parameter.empty, params  # Anthropic's is named, never the default


async def test_a_full_requests_per_minute_is_refused_unread_only_where_admit_found_it_full() -> None:
    """(brief ATK9) refuse_spent answers admit's 429 for a principal whose requests-per-minute counter admit found
    full in this window: not before admit found it, not another key's (a key's own limit), not once the window ends,
    not where the limit was raised since; a token limit found full is not kept (a settlement gives tokens back)."""
    clock = Clock(1_000_040.0)  # 20 s into a minute window
    q = Quotas(QuotaRules(default_key=QuotaLimits(requests_per_min=1, tokens_per_min=100)), clock=clock)
    await q.admit(ALICE, 10)
    await q.refuse_spent(ALICE)  # full, but admit has not refused it yet: read as before
    with pytest.raises(QuotaExceeded):
        await q.admit(ALICE, 10)
    with pytest.raises(QuotaExceeded) as e:
        await q.refuse_spent(ALICE)
    assert e.value.headers["Retry-After"] == "40" and "key requests per minute (1)" in e.value.message
    assert e.value.headroom[0].kind == "requests" and e.value.headroom[0].remaining == 0
    await q.refuse_spent(BOB)  # another key: its own counter
    q.rules = QuotaRules(default_key=QuotaLimits(requests_per_min=5, tokens_per_min=100))
    await q.refuse_spent(ALICE)  # the limit raised since: admit asked again
    clock.t += 40
    q.rules = QuotaRules(default_key=QuotaLimits(requests_per_min=1, tokens_per_min=100))
    await q.refuse_spent(ALICE)  # the next window
    await q.admit(ALICE, 10)
    tokens = Quotas(QuotaRules(default_key=QuotaLimits(requests_per_min=5, tokens_per_min=100)), clock=clock)
    await tokens.admit(BOB, 95)
    with pytest.raises(QuotaExceeded, match="tokens per minute"):
        await tokens.admit(BOB, 95)
    await tokens.refuse_spent(BOB)  # a full token limit: the next request is read and asked again



class _ReplyLost(MemoryQuotaBackend):
    """A store that pauses (Redis, the workers' hub: its calls named by an op) whose reply to a charge waits for
    `reply` when one is set: a charge applied whose caller then hears an error (a timeout) in its place."""

    pauses = True

    def __init__(self) -> None:
        super().__init__()
        self.reply: asyncio.Future[BaseException | None] | None = None

    async def consume(self, counters: Sequence[Counter], op: str | None = None) -> Consumed:
        got = await super().consume(counters, op)
        if self.reply is not None:
            error = await self.reply
            if error is not None:
                raise error
        return got


async def test_a_full_requests_per_minute_given_back_is_read_again() -> None:
    """(review RV4 of brief ATK9) A count found full does not always stay full to its window's end: a charge whose
    reply was lost is released (Quotas._charging; the workers' hub takes back what a worker that died held too).
    refuse_spent asks the store: the 429 unread while the count is full, the request read and admitted once the
    count has room again. Before, the memory of admit's refusal refused it unread to the end of the minute."""
    store = _ReplyLost()
    q = Quotas(QuotaRules(default_key=QuotaLimits(requests_per_min=1)), store, clock=Clock(1_000_040.0))
    reply = store.reply = asyncio.get_running_loop().create_future()
    first = asyncio.create_task(q.admit(ALICE, 10))
    await asyncio.sleep(0)  # charged: the minute's one request, its reply not yet heard
    store.reply = None
    with pytest.raises(QuotaExceeded):
        await q.admit(ALICE, 10)
    with pytest.raises(QuotaExceeded, match="key requests per minute"):  # full in the store: refused unread
        await q.refuse_spent(ALICE)
    reply.set_result(TimeoutError("the store's reply was lost"))
    with pytest.raises(TimeoutError):
        await first  # released: the minute has room again
    assert await store.value(next(iter(q._spent))) == 0
    await q.refuse_spent(ALICE)  # read, as admit serves it
    await q.admit(ALICE, 10)


async def test_spent_windows_are_forgotten_as_they_end() -> None:
    """(review RV4) What refuse_spent keeps of the windows found full ends with them: before, each stayed until
    SPENT_KEPT (10,000) were kept."""
    clock = Clock(1_000_040.0)
    q = Quotas(QuotaRules(default_key=QuotaLimits(requests_per_min=1)), clock=clock)
    for who in (ALICE, BOB):
        await q.admit(who, 10)
        with pytest.raises(QuotaExceeded):
            await q.admit(who, 10)
    assert len(q._spent) == 2
    clock.t += 40  # the next minute
    await q.refuse_spent(Principal("acme", "k-carol", Scopes()))
    assert q._spent == {}


async def test_usage_past_what_was_reserved_is_carried_into_the_next_windows() -> None:
    """Brief TOKEST (ATK9): a burst at a minute's start of prompts estimated at a tenth of their tokens (100 reserved,
    1,000 used each) was admitted to the limit and settled in that minute only: the excess dropped with the window,
    and the next minute's limit was whole again (ten times the tokens per minute, every minute). Now the excess past
    the window's limit is carried into the next windows, each filled up to its limit: the tenant's next nine minutes
    are spent; the tenth has what is left."""
    clock = Clock(6_000_000.0)  # a window's start
    q = Quotas(QuotaRules(default_tenant=QuotaLimits(tokens_per_min=1000)), clock=clock)
    burst = [await q.admit(ALICE, 100) for _ in range(10)]
    for r in burst:
        await q.settle(r, 1000)  # 10,000 used on 1,000 reserved
    assert await q.tokens_this_minute(ALICE) == 1000
    for minute in range(1, 10):
        clock.t = 6_000_000.0 + 60 * minute + 1
        assert await q.tokens_this_minute(ALICE) == 1000, minute
        with pytest.raises(QuotaExceeded):
            await q.admit(ALICE, 1)
    clock.t = 6_000_000.0 + 600 + 1  # 10,000 used: the tenth minute after is the first with room
    assert await q.tokens_this_minute(ALICE) == 0
    await q.admit(ALICE, 1000)


async def test_a_settlement_after_its_window_ended_charges_the_excess_now() -> None:
    """A request reserved in one minute and settled in a later one (a long answer): what it used past its
    reservation was added to its ended window, which no admission reads again; it is charged to the current one."""
    clock = Clock(6_000_000.0)
    q = Quotas(QuotaRules(default_tenant=QuotaLimits(tokens_per_min=1000)), clock=clock)
    r = await q.admit(ALICE, 100)
    clock.t += 90  # the next minute, 30 s in
    await q.settle(r, 700)
    assert await q.tokens_this_minute(ALICE) == 600
    with pytest.raises(QuotaExceeded):
        await q.admit(ALICE, 500)


async def test_a_settlement_within_its_reservation_carries_nothing() -> None:
    clock = Clock(6_000_000.0)
    q = Quotas(QuotaRules(default_tenant=QuotaLimits(tokens_per_min=1000)), clock=clock)
    r = await q.admit(ALICE, 900)
    await q.settle(r, 950)  # 50 past what was reserved, within the limit: charged in its window, nothing carried
    assert await q.tokens_this_minute(ALICE) == 950
    clock.t += 60
    assert await q.tokens_this_minute(ALICE) == 0
