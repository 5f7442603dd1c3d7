"""Which tenant holds the most entries of a bounded store, kept in O(1) as each tenant's count moves by one: the one
rule by which such a store stays fair past its size, "the tenant holding the most loses its oldest" (a tenant within
its share keeps its own, whatever a noisy neighbour writes). Used by the firewall's score cache
(security/firewall/score_cache.py) and the decision log (gateway/decisions.py `Latest`); a module of no layer, so
that both may import it. Found by a walk of every tenant on each eviction it cost 0.95 ms a missed text under the
score cache's lock with 4,096 tenants (review RV1, 85c36f29)."""

from __future__ import annotations


class MostHeld:
    """Each tenant's count as told by `moved`; `most()`: the tenant holding the most, of those holding as many the
    first to come to that count."""

    def __init__(self) -> None:
        self._holding: dict[int, dict[str, None]] = {}  # n: the tenants holding n, in the order they came to n
        self._most = 0  # the largest n of _holding (0: none holds any)

    def moved(self, tenant: str, was: int, now: int) -> None:
        """`tenant` held `was` entries and holds `now`, one more or one fewer."""
        if abs(now - was) != 1 or min(was, now) < 0:
            raise ValueError(f"a tenant's count moves by one at a time, not from {was} to {now}")
        if was:
            tenants = self._holding[was]
            del tenants[tenant]
            if not tenants:
                del self._holding[was]
                if was == self._most and now < was:
                    self._most = now  # one fewer: `now` is held by this tenant (or no tenant holds any, 0)
        if now:
            self._holding.setdefault(now, {})[tenant] = None
            self._most = max(self._most, now)

    def most(self) -> str | None:
        """The tenant holding the most; None when none holds any."""
        return next(iter(self._holding[self._most])) if self._most else None
