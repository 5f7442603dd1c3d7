"""Quotas: requests/min, tokens/min and token budgets, per tenant and per key -> 429 with Retry-After.

Tokens are reserved at admission (prompt estimate + max output tokens) and settled with the real usage
once the response is done, so a tokens/min limit holds even while responses are still streaming. A request
that makes more than one model call (a tool loop's later turns) grows its reservation before each (extend), in
the windows current then. Counters are fixed windows (a minute, or the budget period) keyed by window index; the
clock is injected.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal, TypeVar, overload

from aigrid.errors import RateLimited
from aigrid.security.principal import Principal
from aigrid.security.quota_backend import MEMORY_OP_TTL_S, Counter, MemoryQuotaBackend, QuotaBackend
from aigrid.security.quota_retry import TryAgain


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    requests_per_min: int | None = None
    tokens_per_min: int | None = None
    token_budget: int | None = None
    budget_period_s: float = 86_400.0


@dataclass(frozen=True, slots=True)
class QuotaRules:
    tenants: Mapping[str, QuotaLimits] = field(default_factory=dict)
    keys: Mapping[str, QuotaLimits] = field(default_factory=dict)
    default_tenant: QuotaLimits = QuotaLimits()
    default_key: QuotaLimits = QuotaLimits()


@dataclass(frozen=True, slots=True)
class Headroom:
    """What is left of one per-minute limit after this request was counted (the tightest of the tenant's and
    the key's): what OpenAI's x-ratelimit-* response headers report."""

    kind: str
    """"requests" or "tokens"."""
    limit: int
    remaining: int
    ends_at: float
    """The window's end on the quotas' clock (time.time() in a gateway), which each family's reset says from: OpenAI's
    the time left until it when the headers are built (rate_limit_headers' `now`), Anthropic's the time itself. A
    duration kept from admission (its `reset_s` until the twenty-ninth session) was stale by however long the request
    took: an answer written 50 s into a window's last 55 s said its limit reset in 5 s, after the window had ended."""


@dataclass(frozen=True, slots=True)
class TokenLimit:
    """One token limit a reservation is charged under: its counter's key without the window index, the limit and
    the window's length (60 s for tokens per minute, the budget's period)."""

    key: str
    limit: int
    window_s: float


@dataclass(frozen=True, slots=True)
class Reservation:
    """Token counters charged at admission and by each extend(), one per limit and window, each holding what was
    charged in that window (a tool loop past a minute boundary holds two windows of its tokens per minute);
    settle() corrects them to the real usage."""

    token_counters: tuple[Counter, ...]
    reserved_tokens: int
    headroom: tuple[Headroom, ...] = ()
    token_limits: tuple[TokenLimit, ...] = ()
    """The token limits admission charged: where extend() charges, in the windows current at the time."""
    op: str = ""
    """Admission's op key (quota_backend.py): extend's and settle's ops are named after it."""


class QuotaExceeded(RateLimited):
    """The quota's own 429: a per-minute limit or a budget full, or a request larger than one. `headroom`: the
    per-minute limit it names (remaining 0, the window's exact time left), which each door says in its own API's
    rate-limit headers (rate_limit_headers; the OpenAI family is in `headers` already); () for a budget."""

    def __init__(self, message: str, headroom: tuple[Headroom, ...], *, headers: dict[str, str] | None = None,
                 retry: bool | None = None) -> None:
        super().__init__(message, headers=headers, retry=retry)
        self.headroom = headroom


log = logging.getLogger("aigrid.quotas")
T = TypeVar("T")
RELEASE_RETRY_MAX = 1000
"""Charges whose release failed, waiting to be released again (Quotas._release_later); one more stays charged (logged,
counted in `Quotas.unreleased`)."""
RELEASE_RETRY_WITHIN_S = MEMORY_OP_TTL_S - 5.0
"""A failed release is tried again only this long after its charge was sent: the store keeps the charge's op 30 s
(quota_backend.MEMORY_OP_TTL_S, quotas_redis.OP_TTL_S) from when it applied it, never earlier than that; a release
after it finds no record and takes nothing back. The margin covers the charge's way to a busy store."""
RELEASE_RETRY_PAUSE_S = 0.25
"""The first pause before a failed release is tried again; doubled after each round that fails, up to
RELEASE_RETRY_PAUSE_MAX_S."""
RELEASE_RETRY_PAUSE_MAX_S = 4.0
CARRY_WINDOWS_MAX = 60
"""The most windows of one limit ahead of the current one that a settlement's excess is carried into (Quotas._carry):
an hour of a tokens-per-minute limit; what is left past them is dropped (logged)."""
SPENT_KEPT = 10_000
"""The most requests-per-minute windows found full that a gateway keeps (Quotas.refuse_spent): each is forgotten as
its window ends, and past this many the oldest go."""


class Quotas:
    def __init__(self, rules: QuotaRules, backend: QuotaBackend | None = None,
                 clock: Callable[[], float] = time.time, prefix: str = "aigrid:q") -> None:
        self.rules = rules
        self.backend: QuotaBackend = backend if backend is not None else MemoryQuotaBackend()
        self.clock = clock
        self.prefix = prefix
        self._named = getattr(self.backend, "pauses", True)
        """Calls are named by an op (quota_backend.py) on a store that pauses (Redis, the hub): one that never pauses
        nor fails (the in-process one) has nothing to repeat or release."""
        self._unreleased = TryAgain[tuple[str, list[Counter]]](
            self._release, lambda waiting, why: self._give_up(waiting[0], why), what="quota release",
            within_s=RELEASE_RETRY_WITHIN_S, max_waiting=RELEASE_RETRY_MAX, pause_s=RELEASE_RETRY_PAUSE_S,
            pause_max_s=RELEASE_RETRY_PAUSE_MAX_S, sent=self._released)
        """Charges that failed and whose release failed too, (op, counters), released again in the background
        (_release_later) within RELEASE_RETRY_WITHIN_S."""
        self.unreleased = 0
        """Failed charges given up unreleased (the store still failing RELEASE_RETRY_WITHIN_S after the charge, more
        than RELEASE_RETRY_MAX waiting, or the gateway stopping): what the store applied of each stays charged for its
        window (each logged)."""
        self.on_unreleased: Callable[[], None] | None = None
        """Called for each given up (the gateway's `aigrid_quota_unreleased` counter)."""
        self._spent: dict[str, tuple[int, str, float]] = {}
        """Requests-per-minute counters (keys with their window's index) that admit found full: (the limit, what it
        limits, the window's end), read by refuse_spent before a request's body is read."""

    async def admit(self, principal: Principal, tokens: int, *, requests_only: bool = False) -> Reservation:
        """Count one request reserving `tokens`; raises RateLimited (429, Retry-After) if any limit is hit.
        `requests_only`: a call that uses no tokens (a file, a batch, a conversation): only requests per minute
        count, so that a spent token budget does not keep a tenant from its files and results."""
        now = self.clock()
        tokens = max(0, tokens)
        counters: list[tuple[Counter, str, str | None]] = []  # (counter, what it limits, its per-minute kind)
        token_counters: list[Counter] = []
        token_limits: list[TokenLimit] = []
        for scope, ident, limits in self._scopes(principal):
            base = self._base(principal, scope, ident)
            if limits.requests_per_min is not None:
                counters.append((_counter(f"{base}:rpm", 1, limits.requests_per_min, 60.0, now),
                                 f"{scope} requests per minute ({limits.requests_per_min})", "requests"))
            if requests_only:
                continue
            if limits.tokens_per_min is not None:
                c = _counter(f"{base}:tpm", tokens, limits.tokens_per_min, 60.0, now)
                counters.append((c, f"{scope} tokens per minute ({limits.tokens_per_min})", "tokens"))
                token_counters.append(c)
                token_limits.append(TokenLimit(f"{base}:tpm", limits.tokens_per_min, 60.0))
            if limits.token_budget is not None:
                c = _counter(f"{base}:budget", tokens, limits.token_budget, limits.budget_period_s, now)
                counters.append((c, f"{scope} token budget ({limits.token_budget} per "
                                    f"{limits.budget_period_s:g} s)", None))
                token_counters.append(c)
                token_limits.append(TokenLimit(f"{base}:budget", limits.token_budget, limits.budget_period_s))
        for counter, what, kind in counters:  # more than the whole limit: no wait makes room for it
            if counter.amount > counter.limit:
                rooms = (Headroom(kind, counter.limit, 0, counter.expires_at),) if kind else ()
                raise QuotaExceeded(f"request too large for the {what}: it reserves {counter.amount} tokens (the "
                                    f"prompt's estimate plus its maximum output); lower max_tokens or shorten the "
                                    f"prompt", rooms, headers=rate_limit_headers(*rooms, now=now), retry=False)
        # the longest wait first: the backend names the first full counter, so Retry-After is the time until
        # every full one has room (a full minute window beside a spent day's budget says the day's end)
        counters.sort(key=lambda c: -c[0].ttl_s)
        op = f"{self.prefix}:{_tagged(principal.tenant)}:op:{_op_id(16)}" if self._named else None
        charged = [c for c, _, _ in counters]
        full, values = await self._charging(op, charged, self.backend.consume(charged, op)) if charged else (None, [])
        if full is not None:
            counter, what, kind = counters[full]
            if kind == "requests":  # full until its window ends: the principal's next requests are refused unread
                self._keep_spent(counter, what)
            raise _refusal(counter.limit, what, kind, counter.expires_at, now)
        tightest: dict[str, Headroom] = {}
        for (counter, _, kind), used in zip(counters, values, strict=False):
            if kind is None:
                continue
            room = Headroom(kind, counter.limit, max(0, counter.limit - used), counter.expires_at)
            held = tightest.get(kind)
            if held is None or (room.remaining, room.limit) < (held.remaining, held.limit):
                tightest[kind] = room
        return Reservation(tuple(token_counters), tokens, tuple(tightest.values()), tuple(token_limits), op or "")

    async def refuse_spent(self, principal: Principal) -> None:
        """admit's 429 at once where admit already found one of the principal's requests-per-minute limits (the
        tenant's, the key's) full in the current window on this gateway and the store still holds it full: called
        before a request's body is read. The store is asked (a read, nothing charged): a count found full does not
        always stay full to its window's end, a charge whose reply failed is released (_charging) and the workers'
        hub takes back what a worker that died held (hub.Reservations); until the thirty-eighth session's review
        (brief RV4) the memory alone refused, for the rest of the minute, requests admit would then serve. The store
        not answering: the request is read, and admit answers. Until the thirty-eighth session (brief ATK9) such a
        tenant's every request was read, parsed, validated and its texts walked before admit's 429: a tenant of 2
        requests a minute, spent, posting 570 KB bodies from 8 clients took another tenant's 60 KB chat requests
        from a median of 382 ms to 5.9 s (one run on a loaded host: docs/security.md)."""
        if not self._spent:
            return
        now = self.clock()
        self._forget_ended(now)
        for scope, ident, limits in self._scopes(principal):
            if limits.requests_per_min is None:
                continue
            key = _counter(f"{self._base(principal, scope, ident)}:rpm", 1,
                           limits.requests_per_min, 60.0, now).key
            spent = self._spent.get(key)
            if spent is None or spent[0] != limits.requests_per_min or spent[2] <= now:
                continue
            try:
                full = await self.backend.value(key) >= spent[0]
            except Exception as e:  # noqa: BLE001 (whatever the store raised: admit asks it again, and answers)
                log.info("quota store did not say whether %s is still full (%r): the request is read", key, e)
                return
            if full:
                raise _refusal(spent[0], spent[1], "requests", spent[2], now)
            self._spent.pop(key, None)  # room again (a request taken back): admit decides

    def _keep_spent(self, counter: Counter, what: str) -> None:
        spent = self._spent
        spent[counter.key] = (counter.limit, what, counter.expires_at)
        self._forget_ended(self.clock())
        while len(spent) > SPENT_KEPT:
            del spent[next(iter(spent))]

    def _forget_ended(self, now: float) -> None:
        """The spent windows that ended, forgotten: kept in the order they were found full, which is the order their
        minute windows end (each window's end is on the minute), so the ended ones are first."""
        spent = self._spent
        while spent and next(iter(spent.values()))[2] <= now:
            del spent[next(iter(spent))]

    async def _charging(self, op: str | None, counters: list[Counter], call: Awaitable[T]) -> T:
        """A charge under `op`; where the store fails (a timeout, which may come after it applied the charge), the
        charge is released (exactly what it applied, or nothing and never) before the error is raised on."""
        if op is None:
            return await call
        sent = time.monotonic()
        try:
            return await call
        except Exception:
            try:
                await self.backend.release(op, counters)
            except Exception:  # the store still failing: released again in the background while its op is kept
                log.warning("quota charge %s failed and could not be released; released again in the background for "
                            "up to %g s after the charge", op, RELEASE_RETRY_WITHIN_S, exc_info=True)
                self._release_later(op, counters, sent)
            raise

    def _release_later(self, op: str, counters: list[Counter], sent: float) -> None:
        """A failed charge whose release failed too: released again in the background (quota_retry.TryAgain: a
        growing pause, RELEASE_RETRY_MAX waiting at most) until the store takes it or RELEASE_RETRY_WITHIN_S after
        the charge was `sent` (its op then forgotten: a release would take nothing back). Logged as it failed
        (_charging), and once at the end (released, or given up and counted)."""
        why = self._unreleased.add((op, counters), sent)
        if why is not None:
            self._give_up(op, f"failed charges: {why}")

    async def _release(self, waiting: tuple[str, list[Counter]], first: float) -> None:
        await self.backend.release(*waiting)  # within RELEASE_RETRY_WITHIN_S of `first`: TryAgain's bound

    @staticmethod
    def _released(waiting: tuple[str, list[Counter]]) -> None:
        log.warning("quota charge %s released on a later try (the store answers again)", waiting[0])

    def _give_up(self, op: str, why: str) -> None:
        self.unreleased += 1
        if self.on_unreleased is not None:
            self.on_unreleased()
        log.error("quota charge %s failed and was not released (%s); what the store applied of it, if anything, stays "
                  "charged for its window", op, why)

    async def aclose(self) -> None:
        """Stop releasing failed charges again (the gateway stops): those still waiting are given up (logged)."""
        await self._unreleased.aclose("the gateway stopped before the store took its release")

    async def extend(self, reservation: Reservation, tokens: int, *, used: int | None = None,
                     give: int = 0) -> tuple[Reservation, int] | None:
        """Reserve a further model call of an admitted request (a tool loop's later turn: `tokens`, its prompt's
        estimate plus its max_tokens) under the token limits admission charged, in the windows current now (a loop
        past a minute boundary charges the new minute, whose tokens per minute it uses now), all or none, no request
        counted. `used`: what the request's finished calls used (the engines' count): the turn is charged only past
        what the reservation already holds unused in each window (an earlier turn's max_tokens it did not write),
        and what they used past the reservation is charged with it (an estimate's error is made up before the next
        call, so a loop never runs past a limit by more than one call's error); None: `tokens` in full. `give`: up
        to this many of `tokens` (the turn's output past a floor) may be left out where a counter has no room for
        all of them. Returns (the grown Reservation, holding what each window was charged, which settle() corrects
        to the real usage once, at the end; how many tokens were left out: the turn's max_tokens is that much
        lower), or None when even that leaves a counter without room (nothing charged). A reservation without
        token counters (no token limits, or one handed away: Exchange.hand_admission) charges nothing."""
        tokens = max(0, tokens)
        held = reservation.reserved_tokens
        if not tokens or not reservation.token_counters:
            return replace(reservation, reserved_tokens=_grown(held, used, tokens)), 0
        unused = 0 if used is None else held - used  # below 0: the engines counted more than was reserved
        now = self.clock()
        windows = [_counter(t.key, 0, t.limit, t.window_s, now) for t in reservation.token_limits]
        needs = [replace(w, amount=tokens - min(unused, sum(c.amount for c in reservation.token_counters
                                                            if c.key == w.key))) for w in windows]
        needs = [c for c in needs if c.amount > 0]
        op = _op_after(reservation.op, self.prefix) if self._named else None
        # one round trip: the store reads the room and charges in one step (no other request between)
        short = await self._charging(op, needs, self.backend.grow(needs, give, op)) if needs else 0
        if short is None:
            return None
        grown = [replace(c, amount=c.amount - short) for c in needs if c.amount > short]
        kept = {c.key: c for c in reservation.token_counters}
        for c in grown:
            was = kept.get(c.key)
            kept[c.key] = c if was is None else replace(was, amount=was.amount + c.amount)
        return replace(reservation, token_counters=tuple(kept.values()), headroom=_after(reservation.headroom, grown),
                       reserved_tokens=_grown(held, used, tokens - short)), short

    def refuse_growth(self, reservation: Reservation, tokens: int, what: str) -> QuotaExceeded:
        """The quota's 429 for `tokens` more (`what` they are, in the message) that extend() found no room for: a
        request larger than a limit (what it holds in the window now and `tokens`: no wait makes room, retry False,
        as admit's "request too large"), else Retry-After the time until the earliest of its token limits' current
        windows ends (the soonest that room may come; which counter was full the store does not say). Until the
        thirty-seventh session's review (brief RV1) Guard.widen's min_tokens 429 said neither: the SDKs retried a
        min_tokens no minute holds."""
        now = self.clock()
        waits = []
        for t in reservation.token_limits:
            index = math.floor(now / t.window_s)
            held = sum(c.amount for c in reservation.token_counters if c.key == f"{t.key}:{index}")
            if held + tokens > t.limit:
                return QuotaExceeded(f"request too large for its token limits: {what} ({tokens:,} tokens) with the "
                                     f"{held:,} it holds pass the limit of {t.limit:,}; ask for fewer", (),
                                     retry=False)
            waits.append((index + 1) * t.window_s - now)
        retry = max(1, math.ceil(min(waits, default=1.0)))
        return QuotaExceeded(f"rate limit reached: the token limits have no room now for {what} ({tokens:,} "
                             f"tokens); retry after {retry} s or ask for fewer", (), headers={"Retry-After": str(retry)})

    async def settle(self, reservation: Reservation, used_tokens: int) -> None:
        """Replace the reserved token count by the tokens actually used: under each limit, the windows charged
        together end holding `used_tokens`. The engines count a request's usage as one sum, not per window, so each
        window is given its share of it in proportion to what was reserved there (its turns' share of the
        reservation; the rounding's remainder to the latest window): a loop that ran across a minute boundary
        leaves each minute about what its turns used, and no window is taken below zero by this request.

        What a window is given past what was reserved there (the engines counted more than the estimate) is charged
        up to the window's limit and the rest carried into the next windows of the limit, each filled up to its limit
        in turn (_carry; a window already over it skipped), at most CARRY_WINDOWS_MAX ahead: a debt the tenant's next
        windows pay. A window that has ended when the settlement comes has its excess carried from the current one.
        Until the thirty-eighth session (brief TOKEST) the excess was added to the window it was reserved in and
        dropped with it: a burst of prompts estimated at a tenth of their tokens (emoji, found by ATK9) took ten times
        the tokens per minute every minute. A window full of other requests' reservations that later settle lower
        carries what this request's own excess overflows it by: at most that excess."""
        used = max(0, used_tokens)
        series: dict[str, list[Counter]] = {}
        for c in reservation.token_counters:  # in charge order: admission's windows, then each extend's
            series.setdefault(c.key.rpartition(":")[0], []).append(c)
        limits = {t.key: t for t in reservation.token_limits}
        now = self.clock()
        fixes: list[Counter] = []
        debts: list[tuple[TokenLimit, Counter]] = []  # (the limit, a window and its excess)
        for key, windows in series.items():
            charged = sum(c.amount for c in windows)
            left = used
            for i, c in enumerate(windows):
                last = i == len(windows) - 1
                share = left if last else (used * c.amount // charged if charged else 0)
                left -= share
                limit = limits.get(key)
                if share > c.amount and limit is not None:
                    debts.append((limit, Counter(c.key, share - c.amount, c.limit, c.expires_at,
                                                 max(0.0, c.expires_at - now))))
                elif share != c.amount:
                    fixes.append(Counter(c.key, share - c.amount, c.limit, c.expires_at, max(0.0, c.expires_at - now)))
        for limit, excess in debts:  # before the settlement's adjust: the workers' hub ends a reservation at it
            await self._carry(reservation, limit, excess, now)
        op = _op_after(reservation.op, self.prefix) if self._named else None
        if not fixes and op is None:
            return  # nothing to correct; a named reservation still says it is settled (the workers' hub: hub.Reservations)
        try:
            await self.backend.adjust(fixes, op)
        except Exception:  # a timeout may come after the store applied it: the same op again applies it once
            if op is None:  # unnamed, a repeat could apply it twice
                raise
            log.warning("quota settlement %s failed; tried once more", op, exc_info=True)
            await self.backend.adjust(fixes, op)

    async def _carry(self, reservation: Reservation, limit: TokenLimit, excess: Counter, now: float) -> None:
        """Charge `excess` (its window's counter, the amount past what was reserved there) up to the limit of its
        window, or of the current one where it has ended, and the rest into the windows after, each up to the limit
        (a window over it already is skipped), at most CARRY_WINDOWS_MAX ahead. Each window is one call of the store's
        grow (read and charge in one step). A store that fails stops the carry (logged): the rest is not charged."""
        index = math.floor(now / limit.window_s)
        start = max(index, math.floor((excess.expires_at - limit.window_s / 2) / limit.window_s))
        owed = excess.amount
        for i in range(start, index + CARRY_WINDOWS_MAX + 1):
            end = (i + 1) * limit.window_s
            window = Counter(f"{limit.key}:{i}", owed, limit.limit, end, end - now)
            op = _op_after(reservation.op, self.prefix) if self._named else None
            try:
                short = await self.backend.grow([window], owed, op)
            except Exception:
                log.warning("quota settlement: %d tokens past the reservation of %s not charged (the store failed)",
                            owed, limit.key, exc_info=True)
                return
            if short is not None:
                owed = short
            if owed <= 0:
                return
        log.warning("quota settlement: %d tokens past the reservation of %s dropped, %d windows ahead full",
                    owed, limit.key, CARRY_WINDOWS_MAX)

    async def tokens_this_minute(self, principal: Principal) -> int:
        """Tokens charged to the principal's tenant in the current one-minute window (0 without a
        tokens-per-minute limit, which is the only case that counts them)."""
        c = _counter(f"{self._base(principal, 'tenant', principal.tenant)}:tpm", 0, 0, 60.0,
                     self.clock())
        return await self.backend.value(c.key)

    def _base(self, principal: Principal, scope: str, ident: str) -> str:
        """The store key of a scope's counters before their kind (`:rpm`, `:tpm`, `:budget`): one scheme for admit,
        refuse_spent and tokens_this_minute."""
        return f"{self.prefix}:{_tagged(principal.tenant)}:{scope}:{ident}"

    def _scopes(self, principal: Principal) -> list[tuple[str, str, QuotaLimits]]:
        tenant = self.rules.tenants.get(principal.tenant, self.rules.default_tenant)
        key = self.rules.keys.get(principal.key_id, self.rules.default_key)
        return [("tenant", principal.tenant, tenant), ("key", principal.key_id, key)]


def _refusal(limit: int, what: str, kind: str | None, ends_at: float, now: float) -> QuotaExceeded:
    """The 429 of a full limit: Retry-After the window's end, and the per-minute limit it names in the rate-limit
    headers (none for a budget)."""
    retry = max(1, math.ceil(ends_at - now))
    rooms = (Headroom(kind, limit, 0, ends_at),) if kind else ()
    # above RETRY_WAIT_MAX_S (a budget's period) the error says x-should-retry: false (errors.py)
    return QuotaExceeded(f"rate limit reached: {what}; retry after {retry} s", rooms,
                         headers={"Retry-After": str(retry), **rate_limit_headers(*rooms, now=now)})


def _tagged(tenant: str) -> str:
    """`{tenant}`, the Redis Cluster hash tag that keeps a tenant's counters and op keys in one slot (its scripts touch
    several at once). A tag runs from a key's first `{` to the next `}`: a tenant whose name is empty or begins with
    `}` had an empty one, so each of its keys was hashed whole, in a slot of its own (a Cluster refuses such a script,
    CROSSSLOT). Such a name, and one beginning with `~`, is written `~` and its UTF-8 hex (as stores_redis.tag), which
    no other name is; every other tenant's keys are as before."""
    if not tenant or tenant[0] in "}~":
        tenant = "~" + tenant.encode().hex()
    return f"{{{tenant}}}"


def _op_after(op: str, prefix: str) -> str:
    """A new op key named after admission's `op`, `{op}.ID` (its slot; the workers' hub reads which reservation a
    further turn or a settlement belongs to: hub.Reservations), or, for a test's Reservation without one, under
    `prefix`."""
    return f"{op}.{_op_id(8)}" if op else f"{prefix}:op:{_op_id(16)}"


def _op_id(digits: int) -> str:
    """A random op id of `digits` hex digits: admission's 16 (64 bits, among the ops a store keeps for 30 s), a further
    turn's or a settlement's 8 after it (among one request's). Each op key is held in Redis for 30 s: the 32 digits of
    a whole uuid4 made every one 16 to 24 bytes longer."""
    return uuid.uuid4().hex[:digits]


def _grown(held: int, used: int | None, tokens: int) -> int:
    """A reservation of `held` grown for a further call of `tokens` after its finished calls used `used`."""
    return held + tokens if used is None else max(held, used + tokens)


def _after(rooms: tuple[Headroom, ...], charged: list[Counter]) -> tuple[Headroom, ...]:
    """Admission's headroom less what an extend() charged in the same window of the same limit: the rate-limit headers
    say the room left after the request's whole reservation. Until the thirty-seventh session's review (brief RV1) they
    said it after admission's only: a request without max_tokens widened to the rest of the minute (Guard.widen) read
    716 tokens remaining of 1,000 where its engine had been sent 972."""
    out = []
    for room in rooms:
        took = max((c.amount for c in charged if c.expires_at == room.ends_at and c.limit == room.limit), default=0)
        out.append(replace(room, remaining=max(0, room.remaining - took)) if room.kind == "tokens" and took else room)
    return tuple(out)


def _counter(key: str, amount: int, limit: int, window_s: float, now: float) -> Counter:
    index = math.floor(now / window_s)
    end = (index + 1) * window_s
    return Counter(f"{key}:{index}", amount, limit, end, end - now)


RateLimitFamily = Literal["openai", "anthropic"]


@overload
def rate_limit_headers(*rooms: Headroom, family: Literal["openai"] = "openai", now: float) -> dict[str, str]: ...


@overload
def rate_limit_headers(*rooms: Headroom, family: Literal["anthropic"], now: float | None = None) -> dict[str, str]: ...


def rate_limit_headers(*rooms: Headroom, family: RateLimitFamily = "openai",
                       now: float | None = None) -> dict[str, str]:
    """The rate-limit response headers of each door's API, which the SDKs' and agents' own throttles read, from the
    per-minute limits' Headroom (the one builder of both families). "openai": x-ratelimit-limit-requests,
    -remaining-tokens, -reset-requests ... (the reset a duration, "1s", "6m0s": the time left until the window's end,
    Headroom.ends_at, at `now`, the quotas' clock when the headers are built; the OpenAI family needs it). "anthropic":
    anthropic-ratelimit-requests-limit, -remaining, -reset (an RFC 3339 time: the window's end, rounded up once to its
    second: the same whenever the headers are built) and the same for tokens (the grid counts input and output
    tokens together, as Anthropic's anthropic-ratelimit-tokens-* do). The overloads make `now` required for the OpenAI
    family at type-check time (mypy): until the twenty-ninth session a call without it type-checked and raised
    TypeError when it ran; the TypeError stays for an untyped caller."""
    out: dict[str, str] = {}
    if family == "anthropic":
        for room in rooms:
            reset = datetime.fromtimestamp(math.ceil(room.ends_at), UTC)  # the window's end, its second
            out[f"anthropic-ratelimit-{room.kind}-limit"] = str(room.limit)
            out[f"anthropic-ratelimit-{room.kind}-remaining"] = str(room.remaining)
            out[f"anthropic-ratelimit-{room.kind}-reset"] = reset.strftime("%Y-%m-%dT%H:%M:%SZ")
        return out
    for room in rooms:
        if now is None:
            raise TypeError("rate_limit_headers: OpenAI's reset is the time left at `now`: pass the quotas' clock")
        out[f"x-ratelimit-limit-{room.kind}"] = str(room.limit)
        out[f"x-ratelimit-remaining-{room.kind}"] = str(room.remaining)
        out[f"x-ratelimit-reset-{room.kind}"] = _duration(room.ends_at - now)
    return out


def _duration(seconds: float) -> str:
    whole = max(0, math.ceil(seconds))
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"
