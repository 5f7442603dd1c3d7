"""Which tenant holds the most of a bounded store, kept as each tenant's holding moves: the one rule by which such a
store stays fair past its size, "the tenant holding the most loses its oldest" (a tenant within its share keeps its
own, whatever a noisy neighbour writes). Used by the firewall's score cache (security/firewall/score_cache.py) and
the decision log (gateway/decisions.py `Latest`), which count entries (O(1) a move), and by gateway/fair_lru.py,
which counts bytes (O(log n) a move, n the tenants' distinct holdings); a module of no layer, so that both layers
may import it. Found by a walk of every tenant on each eviction it cost 0.95 ms a missed text under the score
cache's lock with 4,096 tenants (review RV1, 85c36f29), 115 us an add to a full decision log of 4,000 tenants."""

from __future__ import annotations

import heapq


class MostHeld:
    """Each tenant's holding as told by `moved`; `most()`: the tenant holding the most, of those holding as much the
    first to come to it. `by_one`: every move is by one (a count of entries); otherwise by any amount (bytes)."""

    def __init__(self, *, by_one: bool = True) -> None:
        self._by_one = by_one
        self._holding: dict[int, dict[str, None]] = {}  # n: the tenants holding n, in the order they came to n
        self._most = 0  # the largest n of _holding (0: none holds any)
        self._amounts: list[int] = []  # (not by_one) every n of _holding, negated, as a heap; some gone since

    def moved(self, tenant: str, was: int, now: int) -> None:
        """`tenant` held `was` and holds `now` (one more or one fewer where `by_one`)."""
        if min(was, now) < 0 or (self._by_one and abs(now - was) != 1):
            raise ValueError(f"a tenant's count moves by one at a time, not from {was} to {now}")
        if was == now:
            return
        if was:
            tenants = self._holding[was]
            del tenants[tenant]
            if not tenants:
                del self._holding[was]
        if now:
            if now not in self._holding:
                self._holding[now] = {}
                if not self._by_one:
                    self._push(now)
            self._holding[now][tenant] = None
        if now > self._most:
            self._most = now
        elif was == self._most and was not in self._holding:
            self._most = now if self._by_one else self._largest()  # by one: no other holds more than `now`

    def _push(self, amount: int) -> None:
        """`amount` onto the heap, rebuilt from the holdings once it is mostly past ones (bounded: amortized O(1))."""
        heapq.heappush(self._amounts, -amount)
        if len(self._amounts) > 2 * len(self._holding) + 16:
            self._amounts = [-n for n in self._holding]
            heapq.heapify(self._amounts)

    def _largest(self) -> int:
        """The largest holding, from the heap (past ones dropped)."""
        while self._amounts and -self._amounts[0] not in self._holding:
            heapq.heappop(self._amounts)
        return -self._amounts[0] if self._amounts else 0

    def most(self) -> str | None:
        """The tenant holding the most; None when none holds any."""
        return next(iter(self._holding[self._most])) if self._most else None
