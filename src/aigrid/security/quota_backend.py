"""Quota counters: the storage contract and the in-process backend.

A quota check is a list of fixed-window counters that must all have room; a backend admits them all at
once (incrementing every counter) or none of them, so concurrent requests never push a counter past its
limit and a refused request leaves no trace. The Redis backend (quotas_redis.py) keeps the same contract
across gateways.

A call may name an `op`: the key its store records it under for a while (MEMORY_OP_TTL_S here,
quotas_redis.OP_TTL_S in Redis), so that the same call repeated (a retry after a timeout that came after the store had applied it) is answered as the first was and applies
nothing more, and `release(op)` takes back exactly what that call applied, or, where it has not arrived yet,
keeps it from applying when it does. A refused charge applied nothing and is not recorded: asked again, it is
weighed afresh (a 429 costs the store no record).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

MEMORY_OP_TTL_S = 30.0
"""How long the in-process store remembers a call by its op: a repeat or a release within it is exact (a call held
up longer than this inside the store, after its caller gave up and released it, would then apply). It is asked by op
only as the workers' hub (a gateway's own store never pauses nor fails: its Quotas names no op): a worker's call and its release come within the hub's 5 s call timeout
each, and the hub's ops cost its memory (about 400 bytes each, 30 s each)."""


@dataclass(frozen=True, slots=True)
class Counter:
    key: str
    """Already includes the window index, so each window is its own counter."""
    amount: int
    limit: int
    expires_at: float
    """End of the window, on the gateway's clock."""
    ttl_s: float
    """Seconds from now to the end of the window (what Redis expiry uses, so clocks need not agree)."""


Consumed = tuple[int | None, list[int]]
"""(None, every counter's value after the amounts were added), or (the index of the first full counter, [])."""


class _Answer(NamedTuple):
    full: int | None
    short: int
    values: list[int]


RELEASED = _Answer(-1, 0, [])
"""What a store records for a released op."""


class Released(RuntimeError):
    """A call arrived at the store after its op was released (its caller gave up on it): nothing was applied."""


class QuotaBackend(Protocol):
    async def consume(self, counters: Sequence[Counter], op: str | None = None) -> Consumed:
        """Add every amount if all stay within limits and return (None, the counters' new values: what the
        rate-limit headers report as used); else add nothing and return (the index of the first counter that
        is full, [])."""
        ...

    async def grow(self, counters: Sequence[Counter], give: int, op: str | None = None) -> int | None:
        """Read and charge in one step: `short`, the most any counter would be over its limit with its amount
        added (0 when all have room); above `give`, add nothing and return None, else add each amount less `short`
        (where that is above 0) and return `short`."""
        ...

    async def adjust(self, counters: Sequence[Counter], op: str | None = None) -> None:
        """Add (possibly negative) amounts unconditionally: settling a reservation with the real usage."""
        ...

    async def release(self, op: str, counters: Sequence[Counter]) -> None:
        """Take back what the call recorded as `op` applied to `counters` (nothing, if it was refused or has not
        arrived: then it never applies)."""
        ...

    async def value(self, key: str) -> int: ...


class MemoryQuotaBackend:
    """One process. Check-and-add runs without an await in between, so it is atomic under asyncio."""

    pauses = False
    """Its calls never await: a cancel cannot land between a charge and its caller (gateway/guard.py runs the calls
    of a store that pauses, Redis or the workers' hub, shielded; this one as a plain call, on every request)."""

    def __init__(self, max_counters: int = 100_000, op_ttl_s: float = MEMORY_OP_TTL_S) -> None:
        self._op_ttl_s = op_ttl_s
        self._values: dict[str, tuple[int, float]] = {}
        self._max = max_counters
        self._next_pass = max_counters
        """The size at which ended windows are next looked for: twice what a pass left when most were live (a
        counter of a live window is never dropped: that would give its quota back), so a table of live counters
        past `max_counters` (a day's budget of each of many JWT users) is gone through once each time it doubles,
        not on every request (32 ms each at 100,000 before)."""
        self._ops: dict[str, tuple[_Answer, list[int], float]] = {}
        """Calls by op (`op_ttl_s`): (the answer, the amounts applied, when it expires); a released one's answer is
        RELEASED."""
        self._op_order: deque[tuple[float, str]] = deque()

    async def consume(self, counters: Sequence[Counter], op: str | None = None) -> Consumed:
        full, _, values = self._charge(counters, 0, op)
        return full, values

    async def grow(self, counters: Sequence[Counter], give: int, op: str | None = None) -> int | None:
        full, short, _ = self._charge(counters, give, op)
        return None if full is not None else short

    async def adjust(self, counters: Sequence[Counter], op: str | None = None) -> None:
        if self._seen(op) is None:
            self._add(counters)
            self._record(op, _Answer(None, 0, []), [])

    async def release(self, op: str, counters: Sequence[Counter]) -> None:
        applied = self.applied(op) or []
        self.take_back(op, [Counter(c.key, a, c.limit, c.expires_at, c.ttl_s)
                            for c, a in zip(counters, applied, strict=False)])

    def applied(self, op: str) -> list[int] | None:
        """What the call recorded as `op` applied to each of its counters (None: not recorded, or released)."""
        seen = self._seen(op)
        return None if seen is None or seen[0] is RELEASED else seen[1]

    def take_back(self, op: str, counters: Sequence[Counter]) -> None:
        """Take back each counter's amount, what `op` applied as its caller kept it (its record may be gone: a
        reservation held past MEMORY_OP_TTL_S), where its window is still held, unless `op` was released already; `op`
        is then recorded as released (a copy arriving later applies nothing)."""
        seen = self._seen(op)
        if seen is None or seen[0] is not RELEASED:
            self._add([Counter(c.key, -c.amount, c.limit, c.expires_at, c.ttl_s)
                       for c in counters if c.amount and c.key in self._values])
        self._record(op, RELEASED, [])

    def _charge(self, counters: Sequence[Counter], give: int, op: str | None) -> _Answer:
        """(None, short, the new values) or (the first full counter's index, 0, []); a repeated op, its first answer."""
        seen = self._seen(op)
        if seen is not None:
            if seen[0] is RELEASED:
                raise Released(f"quota call {op} arrived after it was released")
            return seen[0]
        short = 0
        for i, c in enumerate(counters):
            over = self._get(c.key) + c.amount - c.limit
            if over > give:  # refused: nothing applied, nothing recorded (a repeat is asked afresh)
                return _Answer(i, 0, [])
            short = max(short, over)
        applied = [max(0, c.amount - short) for c in counters]
        self._add([Counter(c.key, a, c.limit, c.expires_at, c.ttl_s) for c, a in zip(counters, applied, strict=True)])
        answer = _Answer(None, short, [self._get(c.key) for c in counters])
        self._record(op, answer, applied)
        return answer

    def _seen(self, op: str | None) -> tuple[_Answer, list[int]] | None:
        if op is None:
            return None
        now = time.monotonic()
        while self._op_order and self._op_order[0][0] <= now:  # recorded in expiry order (one TTL for all)
            expires, old = self._op_order.popleft()
            if (held := self._ops.get(old)) is not None and held[2] == expires:  # not one recorded again since
                del self._ops[old]
        held = self._ops.get(op)
        return None if held is None else (held[0], held[1])

    def _record(self, op: str | None, answer: _Answer, applied: list[int]) -> None:
        if op is not None:
            expires = time.monotonic() + self._op_ttl_s
            self._ops[op] = (answer, applied, expires)
            self._op_order.append((expires, op))

    async def value(self, key: str) -> int:
        return self._get(key)

    def _get(self, key: str) -> int:
        entry = self._values.get(key)
        return entry[0] if entry is not None else 0

    def _add(self, counters: Sequence[Counter]) -> None:
        for c in counters:
            value, _ = self._values.get(c.key, (0, c.expires_at))
            self._values[c.key] = (value + c.amount, c.expires_at)
        if len(self._values) > self._next_pass:
            self.expire(min(c.expires_at for c in counters) - 1.0)
            self._next_pass = max(self._max, 2 * len(self._values))

    def expire(self, now: float) -> None:
        """Forget windows that ended before now."""
        self._values = {k: v for k, v in self._values.items() if v[1] > now}
