"""Turns cumulative engine counters (histogram _sum/_count) into a mean over the last scrape interval."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DeltaMean:
    """Mean of the observations between the previous two updates, from cumulative sum and count."""

    last_sum: float | None = None
    last_count: float | None = None
    value: float | None = None

    def update(self, total: float | None, count: float | None) -> float | None:
        if total is None or count is None:
            return self.value
        if self.last_sum is not None and self.last_count is not None:
            dn = count - self.last_count
            if dn > 0 and total >= self.last_sum:
                self.value = (total - self.last_sum) / dn
            elif dn < 0 or total < self.last_sum:
                self.value = None  # the engine restarted and its counters reset (or lie: a mean below 0)
        self.last_sum, self.last_count = total, count
        return self.value
