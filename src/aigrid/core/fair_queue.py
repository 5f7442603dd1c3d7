"""The admission queue's order: strict priority between levels, weighted fair sharing between tenants.

Requests wait here when every eligible endpoint is busy for them (core.urgency.must_wait); the live gateway
(gateway/admission.py) and the simulator (sim/admission.py) hold them in this structure and dispatch them as
capacity frees. Pure and deterministic: every time is an argument.

Order. The highest level with a waiting request goes first (a band per level). Within a level, the tenant
holding the fewest requests in flight per unit of its weight goes next: in flight across every gateway
(the caller's count: its own now, the others' through the shared state), so a tenant that already holds its
share of the grid's slots waits while another catches up. That is max-min fair sharing of the busy slots,
a deficit round robin whose deficit is the tenant's current holding: two tenants of equal weight hammering
one saturated site get one slot each in turn, and gateways that share in-flight counts stay fair to within
what each dispatches in one sync interval. Ties go to the tenant whose head request has waited longest;
each tenant's own requests are first in, first out. A request still waiting when it can no longer meet its
SLO (`stale_at`) moves behind the fresh requests of its level (a band just below it): under overload the
capacity that frees goes first to requests that can still be served in time, instead of a backlog making
every request behind it late too; stale requests go when no fresh one can use the capacity.

Shedding. Past `capacity` waiting requests, the lowest band sheds first: within it, the tenant with the
most waiting per unit of weight loses its newest request. Every request also has an expiry (its deadline,
or the longest its class may wait); `expired(now)` hands back those past it. Nothing leaves silently: every
removal is returned to the caller, who answers it (dispatch, refusal, 429).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(eq=False, slots=True)
class Waiting(Generic[T]):
    """One waiting request; `payload` is the caller's (a future, a simulated request index)."""

    payload: T
    tenant: str
    level: int
    enqueued: float
    expires: float
    seq: int
    stale_at: float = float("inf")
    """When it can no longer meet its SLO: from then on it waits behind the fresh requests of its level."""
    band: float = 0.0
    """Its band: its level, or level - 0.5 once stale."""
    gone: bool = False


@dataclass
class FairQueue(Generic[T]):
    capacity: int = 1000
    weights: Mapping[str, float] = field(default_factory=dict)
    """Tenant -> its share weight (default 1)."""
    _bands: dict[float, dict[str, deque[Waiting[T]]]] = field(default_factory=dict)
    _expiry: list[tuple[float, int, Waiting[T]]] = field(default_factory=list)
    _stale: list[tuple[float, int, Waiting[T]]] = field(default_factory=list)
    """(stale_at, seq, item) of the requests not yet demoted."""
    _seq: int = 0
    _size: int = 0

    def __len__(self) -> int:
        return self._size

    def weight(self, tenant: str) -> float:
        return max(self.weights.get(tenant, 1.0), 1e-9)

    def depth(self, level: int | None = None) -> int:
        bands = self._bands.values() if level is None else [self._bands.get(level, {})]
        return sum(1 for band in bands for q in band.values() for w in q if not w.gone)

    def push(self, payload: T, tenant: str, level: int, now: float, expires: float,
             stale_at: float = float("inf")) -> tuple[Waiting[T], list[Waiting[T]]]:
        """Queue a request; returns it and the requests shed to stay within capacity (possibly itself)."""
        self._seq += 1
        item = Waiting(payload, tenant, level, now, expires, self._seq, stale_at, float(level))
        if stale_at != float("inf"):
            heapq.heappush(self._stale, (stale_at, item.seq, item))
        self._bands.setdefault(item.band, {}).setdefault(tenant, deque()).append(item)
        heapq.heappush(self._expiry, (expires, item.seq, item))
        self._size += 1
        shed: list[Waiting[T]] = []
        while self._size > self.capacity:
            victim = self._victim()
            self.remove(victim)
            shed.append(victim)
        return item, shed

    def order(self, inflight: Callable[[str], float], now: float = float("-inf")) -> list[Waiting[T]]:
        """Each tenant's head request, in the order they should be tried: level first (requests past their
        SLO at `now` behind the fresh ones of their level), then fair share."""
        self._demote(now)
        out: list[Waiting[T]] = []
        for level in sorted(self._bands, reverse=True):
            heads = [h for h in (self._head(q) for q in self._bands[level].values()) if h is not None]
            heads.sort(key=lambda h: (inflight(h.tenant) / self.weight(h.tenant), h.enqueued, h.seq))
            out.extend(heads)
        return out

    def remove(self, item: Waiting[T]) -> None:
        if item.gone:
            return
        item.gone = True
        self._size -= 1
        self._unlink(item)

    def _unlink(self, item: Waiting[T]) -> None:
        band = self._bands.get(item.band)
        q = band.get(item.tenant) if band is not None else None
        if q is not None:
            self._head(q)
            if not q and band is not None:
                del band[item.tenant]
                if not band:
                    del self._bands[item.band]

    def expired(self, now: float) -> list[Waiting[T]]:
        """Remove and return every request whose expiry has passed."""
        out: list[Waiting[T]] = []
        while self._expiry and self._expiry[0][0] <= now:
            _, _, item = heapq.heappop(self._expiry)
            if not item.gone:
                self.remove(item)
                out.append(item)
        return out

    def next_expiry(self) -> float | None:
        while self._expiry and self._expiry[0][2].gone:
            heapq.heappop(self._expiry)
        return self._expiry[0][0] if self._expiry else None

    def items(self) -> list[Waiting[T]]:
        return [w for band in self._bands.values() for q in band.values() for w in q if not w.gone]

    def _demote(self, now: float) -> None:
        """Move the requests past their SLO to the stale band of their level (behind the ones already there)."""
        while self._stale and self._stale[0][0] <= now:
            _, _, item = heapq.heappop(self._stale)
            if item.gone:
                continue
            self._bands[item.band][item.tenant].remove(item)
            self._unlink(item)
            item.band = item.level - 0.5
            self._bands.setdefault(item.band, {}).setdefault(item.tenant, deque()).append(item)

    @staticmethod
    def _head(q: deque[Waiting[T]]) -> Waiting[T] | None:
        while q and q[0].gone:
            q.popleft()
        return q[0] if q else None

    def _victim(self) -> Waiting[T]:
        level = min(self._bands)
        band = self._bands[level]
        tenant = max(band, key=lambda t: (sum(1 for w in band[t] if not w.gone) / self.weight(t), t))
        return next(w for w in reversed(band[tenant]) if not w.gone)
