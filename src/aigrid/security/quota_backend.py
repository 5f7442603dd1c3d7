"""Quota counters: the storage contract and the in-process backend.

A quota check is a list of fixed-window counters that must all have room; a backend admits them all at
once (incrementing every counter) or none of them, so concurrent requests never push a counter past its
limit and a refused request leaves no trace. The Redis backend (quotas_redis.py) keeps the same contract
across gateways.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


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


class QuotaBackend(Protocol):
    async def consume(self, counters: Sequence[Counter]) -> Consumed:
        """Add every amount if all stay within limits and return (None, the counters' new values: what the
        rate-limit headers report as used); else add nothing and return (the index of the first counter that
        is full, [])."""
        ...

    async def adjust(self, counters: Sequence[Counter]) -> None:
        """Add (possibly negative) amounts unconditionally: settling a reservation with the real usage."""
        ...

    async def value(self, key: str) -> int: ...


class MemoryQuotaBackend:
    """One process. Check-and-add runs without an await in between, so it is atomic under asyncio."""

    pauses = False
    """Its calls never await: a cancel cannot land between a charge and its caller (gateway/guard.py runs the calls
    of a store that pauses, Redis or the workers' hub, shielded; this one as a plain call, on every request)."""

    def __init__(self, max_counters: int = 100_000) -> None:
        self._values: dict[str, tuple[int, float]] = {}
        self._max = max_counters
        self._next_pass = max_counters
        """The size at which ended windows are next looked for: twice what a pass left when most were live (a
        counter of a live window is never dropped: that would give its quota back), so a table of live counters
        past `max_counters` (a day's budget of each of many JWT users) is gone through once each time it doubles,
        not on every request (32 ms each at 100,000 before)."""

    async def consume(self, counters: Sequence[Counter]) -> Consumed:
        for i, c in enumerate(counters):
            if self._get(c.key) + c.amount > c.limit:
                return i, []
        self._add(counters)
        return None, [self._get(c.key) for c in counters]

    async def adjust(self, counters: Sequence[Counter]) -> None:
        self._add(counters)

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
