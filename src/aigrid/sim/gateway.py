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

from collections.abc import Callable, Hashable
from dataclasses import replace

import numpy as np

from aigrid.core.calibration import Calibration, observe
from aigrid.core.types import Circuit, Endpoint, EndpointState, GeoPoint, GridView
from aigrid.sim.clock import EventLoop
from aigrid.sim.grid import Grid
from aigrid.sim.network import Network, distances_km
from aigrid.telemetry.circuit import CircuitBreaker
from aigrid.telemetry.inflight import InflightLedger, Load, merged_state

NO_CALIBRATION = Calibration()
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
    """The simulated gateways: each with its own in-flight ledger, circuit breakers and calibrations (the
    gateway's own classes and pure updates), sharing ledgers every `shared_sync_s` (Redis; 0: not shared)."""

    def __init__(self, grid: Grid, telemetry: Telemetry, count: int, candidates: int,
                 local_accounting: bool, cooldown_s: float, pinned: frozenset[str] = frozenset(),
                 cache: CandidateCache | None = None, shared_sync_s: float = 0.1,
                 failure_threshold: int = 1) -> None:
        self.grid = grid
        self.telemetry = telemetry
        self.count = count
        self.k = candidates
        self.local_accounting = local_accounting
        self.cooldown_s = cooldown_s
        self.failure_threshold = failure_threshold
        self.ledgers = [InflightLedger() for _ in range(count)]
        self.total = InflightLedger()
        """Every gateway's sends together: what the shared state holds once synced."""
        self.synced_total: dict[Hashable, Load] = {}
        self.synced_own: list[dict[Hashable, Load]] = [{} for _ in range(count)]
        self.shared_sync_s = shared_sync_s if count > 1 and local_accounting else 0.0
        self.breakers: list[dict[int, CircuitBreaker]] = [{} for _ in range(count)]
        self.calibrations: list[dict[int, Calibration]] = [{} for _ in range(count)]
        self.slots = [max(ep.max_concurrency, 1) for ep in grid.endpoints]
        models = sorted({ep.model for ep in grid.endpoints})
        self.by_model: dict[str, np.ndarray] = {
            m: np.array([i for i, ep in enumerate(grid.endpoints) if ep.model == m], dtype=np.int64) for m in models
        }
        self.jurisdiction = np.array([grid.sites[ep.site_id].jurisdiction for ep in grid.endpoints])
        self.pinned = np.array([i for i, ep in enumerate(grid.endpoints) if ep.site_id in pinned], dtype=np.int64)
        self._cache = cache if cache is not None else {}
        self._floor_cache: dict[CandidateKey, tuple[np.ndarray, ...]] = {}

    def start(self, loop: EventLoop) -> None:
        if self.shared_sync_s > 0:
            loop.after(self.shared_sync_s, self._sync, loop)

    def _sync(self, loop: EventLoop) -> None:
        """One exchange through the shared state: every gateway learns every other's ledger as of now."""
        self.synced_total = self.total.copy()
        self.synced_own = [ledger.copy() for ledger in self.ledgers]
        if not self.telemetry.stopped or any(True for _ in self.total.items()):
            loop.after(self.shared_sync_s, self._sync, loop)

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

    def floor_s(self, where: GeoPoint | None, model: str, allowed: frozenset[str] | None, tier: int,
                prompt_tokens: int, net: Network) -> float:
        """The physical floor of one request's TTFT among the endpoints its gateway scores: the smallest
        modelled round trip plus a lone prefill of the prompt (no queue, nothing else running), over the
        allowed jurisdictions."""
        key = (where or GeoPoint(0.0, 0.0), model, allowed, tier)
        arrays = self._floor_cache.get(key)
        if arrays is None:
            idx, _ = self.candidates(key[0], model, allowed, tier)
            ok = [i for i in idx if allowed is None or self.jurisdiction[i] in allowed] or list(idx)
            d = distances_km(self.grid.lat[ok], self.grid.lon[ok], key[0].lat, key[0].lon)
            rtt = np.zeros(len(ok)) if where is None else net.base_rtt_ms(d)
            perf = [self.grid.perf[i] for i in ok]
            arrays = self._floor_cache[key] = (
                rtt, np.array([p.pf_tok_ms for p in perf]), np.array([p.w_ms + p.pf_step_ms for p in perf]),
                np.array([p.chunk_tokens for p in perf]))
        rtt, pf_tok, step, chunk = arrays
        if not len(rtt):
            return float("nan")
        ms = rtt + prompt_tokens * pf_tok + np.ceil(prompt_tokens / chunk) * step
        return float(ms.min()) / 1000.0

    def load(self, gateway: int, index: int) -> Load | None:
        """What gateway `gateway` knows is in flight at endpoint `index`: its own ledger now plus the other
        gateways' as of the last exchange."""
        if not self.local_accounting:
            return None
        own = self.ledgers[gateway].get(index)
        if self.shared_sync_s <= 0:
            return own
        synced = self.synced_total.get(index)
        if synced is None:
            return own
        others = Load(synced.pending, synced.pending_tokens, synced.decoding)
        mine_then = self.synced_own[gateway].get(index)
        if mine_then is not None:
            others.add(mine_then, -1)
        if own is not None:
            others.add(own)
        return others

    def view(self, gateway: int, idx: tuple[int, ...], endpoints: tuple[Endpoint, ...], now: float) -> GridView:
        visible = self.telemetry.visible
        breakers, cals = self.breakers[gateway], self.calibrations[gateway]
        states: dict[str, EndpointState] = {}
        for i, ep in zip(idx, endpoints, strict=True):
            s = merged_state(visible[i], self.load(gateway, i), self.slots[i])
            cal = cals.get(i)
            if cal is not None:
                s = replace(s, calibration=cal)
            breaker = breakers.get(i)
            if breaker is not None:
                circuit = breaker.state(now)
                if circuit is not Circuit.CLOSED:
                    s = replace(s, circuit=circuit, reason="connection failed recently")
            states[ep.id] = s
        return GridView(sites=self.grid.sites, endpoints=endpoints, states=states, models=self.grid.models)

    # ---- the gateway's observations (the live gateway's TelemetryStore does the same) -------------------
    def record_send(self, gateway: int, index: int, prompt_tokens: int) -> None:
        if self.local_accounting:
            self.ledgers[gateway].sent(index, prompt_tokens)
            self.total.sent(index, prompt_tokens)

    def record_first_token(self, gateway: int, index: int, prompt_tokens: int, model_ahead_ms: float,
                           model_own_ms: float, observed_engine_ms: float) -> None:
        if self.local_accounting:
            self.ledgers[gateway].first_token(index, prompt_tokens)
            self.total.first_token(index, prompt_tokens)
        cals = self.calibrations[gateway]
        cals[index] = observe(cals.get(index, NO_CALIBRATION), model_ahead_ms, model_own_ms, observed_engine_ms)
        breaker = self.breakers[gateway].get(index)
        if breaker is not None:
            breaker.record_success()

    def record_finished(self, gateway: int, index: int, prompt_tokens: int, had_first_token: bool) -> None:
        if self.local_accounting:
            self.ledgers[gateway].finished(index, prompt_tokens, had_first_token)
            self.total.finished(index, prompt_tokens, had_first_token)

    def record_failure(self, gateway: int, index: int, now: float) -> None:
        if self.cooldown_s > 0:
            breaker = self.breakers[gateway].get(index)
            if breaker is None:
                breaker = self.breakers[gateway][index] = CircuitBreaker(self.failure_threshold, self.cooldown_s)
            breaker.record_failure(now)
