"""What the simulated gateways see: late telemetry, their own recent sends, their circuit breakers.

Telemetry: every `interval` the engines that changed publish their EndpointState; a batch becomes visible
`lag` seconds later. Several gateways decide at once: each knows only its own sends since the visible
snapshot was taken (local accounting, added to `waiting`), so gateways acting on the same stale view can
herd onto the same endpoint. A gateway whose connection to an endpoint fails opens its own circuit breaker
for `cooldown` seconds.

Regional view: a gateway scores the `candidates` nearest endpoints serving the model (for a request with a
residency rule: the nearest allowed ones plus the two nearest not allowed, so that the residency filter is
always exercised), plus the central region's endpoints. With a small grid that is simply every endpoint.
When none of them can serve (the whole region is down) it asks again with a view 8 times wider, and so on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from aigrid.core.types import Circuit, Endpoint, EndpointState, GeoPoint, GridView
from aigrid.sim.clock import EventLoop
from aigrid.sim.grid import Grid
from aigrid.sim.network import distances_km

CandidateKey = tuple[GeoPoint, str, frozenset[str] | None, int]
WIDEN = 8
CandidateCache = dict[CandidateKey, tuple[tuple[int, ...], tuple[Endpoint, ...]]]
"""Candidate lists depend only on the grid and the request's place, model and residency: runs of the
same grid (one per policy) share one cache."""


def _k_smallest(d: np.ndarray, k: int) -> np.ndarray:
    if len(d) <= k:
        return np.argsort(d, kind="stable")
    part = np.argpartition(d, k - 1)[:k]
    return part[np.argsort(d[part], kind="stable")]


class Telemetry:
    """Engines -> (interval, lag) -> the visible states every gateway reads."""

    def __init__(self, loop: EventLoop, n: int, read: Callable[[int], EndpointState],
                 interval_s: float, lag_s: float) -> None:
        self.loop = loop
        self.read = read
        self.interval_s = interval_s
        self.lag_s = lag_s
        self.visible: list[EndpointState] = [read(i) for i in range(n)]
        self.captured = [0.0] * n
        self.dirty: set[int] = set()
        self.stopped = False

    def changed(self, index: int) -> None:
        self.dirty.add(index)

    def start(self) -> None:
        self.loop.after(self.interval_s, self._publish)

    def _publish(self, _: object) -> None:
        if self.dirty:
            now = self.loop.now
            batch = [(i, self.read(i)) for i in sorted(self.dirty)]
            self.dirty.clear()
            self.loop.after(self.lag_s, self._deliver, (now, batch))
        if not self.stopped:
            self.loop.after(self.interval_s, self._publish)

    def _deliver(self, arg: tuple[float, list[tuple[int, EndpointState]]]) -> None:
        captured, batch = arg
        for i, state in batch:
            self.visible[i] = state
            self.captured[i] = captured


class Gateways:
    def __init__(self, grid: Grid, telemetry: Telemetry, count: int, candidates: int,
                 local_accounting: bool, cooldown_s: float, pinned: frozenset[str] = frozenset(),
                 cache: CandidateCache | None = None) -> None:
        self.grid = grid
        self.telemetry = telemetry
        self.count = count
        self.k = candidates
        self.local_accounting = local_accounting
        self.cooldown_s = cooldown_s
        self.sent: list[dict[int, deque[float]]] = [{} for _ in range(count)]
        self.open_until: list[dict[int, float]] = [{} for _ in range(count)]
        models = sorted({ep.model for ep in grid.endpoints})
        self.by_model: dict[str, np.ndarray] = {
            m: np.array([i for i, ep in enumerate(grid.endpoints) if ep.model == m], dtype=np.int64) for m in models
        }
        self.jurisdiction = np.array([grid.sites[ep.site_id].jurisdiction for ep in grid.endpoints])
        self.pinned = np.array([i for i, ep in enumerate(grid.endpoints) if ep.site_id in pinned], dtype=np.int64)
        self._cache = cache if cache is not None else {}

    def candidates(self, where: GeoPoint, model: str, allowed: frozenset[str] | None,
                   tier: int = 0) -> tuple[tuple[int, ...], tuple[Endpoint, ...]]:
        """The endpoints a gateway scores. Tier 0 is the regional view (k nearest); each further tier
        looks WIDEN times further afield, for when nothing nearby can serve (a region down)."""
        key = (where, model, allowed, tier)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._nearest(where, model, allowed, self.k * WIDEN**tier)
        return hit

    def can_widen(self, model: str, tier: int) -> bool:
        return bool(len(self.by_model.get(model, ())) > self.k * WIDEN**tier)

    def _nearest(self, where: GeoPoint, model: str, allowed: frozenset[str] | None,
                 k: int) -> tuple[tuple[int, ...], tuple[Endpoint, ...]]:
        eps = self.by_model.get(model, np.empty(0, dtype=np.int64))
        if len(eps) <= k:
            chosen = eps
        else:
            d = distances_km(self.grid.lat[eps], self.grid.lon[eps], where.lat, where.lon)
            if allowed is None:
                chosen = eps[_k_smallest(d, k)]
            else:
                ok = np.isin(self.jurisdiction[eps], list(allowed))
                inside, outside = eps[ok], eps[~ok]
                chosen = np.concatenate([inside[_k_smallest(d[ok], k)], outside[_k_smallest(d[~ok], 2)]])
            if len(self.pinned):
                chosen = np.concatenate([chosen, self.pinned[np.isin(self.pinned, eps)]])
        idx = tuple(sorted({int(i) for i in chosen}))
        return idx, tuple(self.grid.endpoints[i] for i in idx)

    def view(self, gateway: int, idx: tuple[int, ...], endpoints: tuple[Endpoint, ...], now: float) -> GridView:
        visible, captured = self.telemetry.visible, self.telemetry.captured
        sent, opened = self.sent[gateway], self.open_until[gateway]
        states: dict[str, EndpointState] = {}
        for i, ep in zip(idx, endpoints, strict=True):
            s = visible[i]
            q = sent.get(i)
            if q:
                cut = captured[i]
                while q and q[0] <= cut:
                    q.popleft()
                if q and self.local_accounting:
                    s = replace(s, waiting=s.waiting + len(q))
            if opened and opened.get(i, -1.0) > now:
                s = replace(s, circuit=Circuit.OPEN, reason="connection failed recently")
            states[ep.id] = s
        return GridView(sites=self.grid.sites, endpoints=endpoints, states=states, models=self.grid.models)

    def record_send(self, gateway: int, index: int, now: float) -> None:
        self.sent[gateway].setdefault(index, deque()).append(now)

    def record_failure(self, gateway: int, index: int, now: float) -> None:
        if self.cooldown_s > 0:
            self.open_until[gateway][index] = now + self.cooldown_s
