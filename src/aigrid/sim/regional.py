"""The regional view: which endpoints a simulated gateway scores for a request, and that request's floor.

A gateway scores the `k` nearest endpoints serving the model (for a request with a residency rule: the
nearest allowed ones plus the two nearest not allowed, so that the residency filter is always exercised),
plus the central region's endpoints. With a small grid that is simply every endpoint. When none of them can
serve (the whole region is down) it asks again with a view WIDEN times wider, and so on.

Both depend only on the grid and the request's place, model and residency, never on the policy or the
moment: one RegionalView per grid serves every run of an experiment, and `prewarm` fills it for the
workload's places before the runs start (before they fork into worker processes, which then share it).
"""

from __future__ import annotations

from collections.abc import Iterable
from math import ceil

import numpy as np

from aigrid.core.geo import EARTH_RADIUS_KM, distance_km
from aigrid.core.types import Endpoint, GeoPoint
from aigrid.sim.grid import Grid
from aigrid.sim.network import Network, distances_km

WIDEN = 8
BATCH = 512
"""Places per batch of the prewarm's nearest-endpoint search (a 512 x endpoints array of cosines)."""
COS_MARGIN = 1e-9
"""Slack on the cosine bound of that search, many orders above its rounding error (about 1e-16)."""
CELL_DEG = 5.0
"""The prewarm batches places by cells of CELL_DEG degrees of latitude and longitude."""
ANGLE_SLACK = 1e-6
"""Slack (radians) on the angular bound of the endpoints a batch searches, far above the rounding error of
its arccos (about 1e-8 near 0)."""
Models = str | tuple[str, ...]
"""The model a request names, or the models a right-sized request may use."""
Key = tuple[GeoPoint, Models, frozenset[str] | None, int]
"""(client place, model(s), allowed jurisdictions, tier)."""
FloorTerms = tuple[tuple[float, float, float, int], ...]
"""Per allowed candidate: (round trip ms, prefill ms per token, ms per prefill step, tokens per step)."""


PlaceKey = tuple[float, float, Models, frozenset[str] | None, int]
"""(latitude, longitude, model(s), allowed jurisdictions, tier): a Key with the place's coordinates."""


def _k_smallest(d: np.ndarray, k: int) -> np.ndarray:
    if len(d) <= k:
        return np.argsort(d, kind="stable")
    part = np.argpartition(d, k - 1)[:k]
    return part[np.argsort(d[part], kind="stable")]


class RegionalView:
    def __init__(self, grid: Grid, k: int, pinned: frozenset[str], net: Network) -> None:
        self.grid = grid
        self.k = k
        self.net = net
        models = sorted({ep.model for ep in grid.endpoints})
        self.by_model: dict[str, np.ndarray] = {
            m: np.array([i for i, ep in enumerate(grid.endpoints) if ep.model == m], dtype=np.int64) for m in models
        }
        self.jurisdiction = np.array([grid.sites[ep.site_id].jurisdiction for ep in grid.endpoints])
        self.pinned = np.array([i for i, ep in enumerate(grid.endpoints) if ep.site_id in pinned], dtype=np.int64)
        self._candidates: dict[Key, tuple[tuple[int, ...], tuple[Endpoint, ...]]] = {}
        self._floors: dict[Key, FloorTerms] = {}
        self._scored: dict[PlaceKey, tuple[tuple[int, ...], tuple[Endpoint, ...], dict[str, float]]] = {}
        self._floor_hits: dict[PlaceKey, FloorTerms] = {}
        """floor_s's answers so far, keyed by the place's coordinates (the same entries as `_floors`)."""
        self._units: dict[str, np.ndarray] = {}
        """Per model: its endpoints' 3-D unit vectors (3 x endpoints), for the batched search."""

    def matches(self, grid: Grid, k: int, pinned: frozenset[str], net: Network) -> bool:
        """True when this view answers for a simulation with these settings."""
        return grid is self.grid and k == self.k and net == self.net and \
            set(self.pinned.tolist()) == {i for i, ep in enumerate(grid.endpoints) if ep.site_id in pinned}

    def candidates(self, where: GeoPoint, model: Models, allowed: frozenset[str] | None,
                   tier: int = 0) -> tuple[tuple[int, ...], tuple[Endpoint, ...]]:
        """The endpoints a gateway scores (indices and endpoints, by index). Tier 0 is the regional view (k
        nearest); each further tier looks WIDEN times further afield. A right-sized request (several models)
        sees each model's regional view."""
        key = (where, model, allowed, tier)
        hit = self._candidates.get(key)
        if hit is None:
            if isinstance(model, tuple):
                idx = tuple(sorted({i for m in model for i in self.candidates(where, m, allowed, tier)[0]}))
                hit = self._candidates[key] = idx, tuple(self.grid.endpoints[i] for i in idx)
            else:
                hit = self._candidates[key] = self._nearest(where, model, allowed, self.k * WIDEN**tier)
        return hit

    def scored(self, where: GeoPoint, model: Models, allowed: frozenset[str] | None,
               tier: int = 0) -> tuple[tuple[int, ...], tuple[Endpoint, ...], dict[str, float]]:
        """`candidates`, with the distance from `where` to each candidate's site by endpoint id (the core's
        GridView.distances_km: core.geo.distance_km, as the core would compute it once per candidate of every
        decision). Filled as runs ask (in each worker process: nothing is computed for places never routed)."""
        # keyed by the coordinates, as GeoPoint compares and hashes (its generated __hash__ and __eq__ are
        # Python frames, once per decision)
        key = (where.lat, where.lon, model, allowed, tier)
        hit = self._scored.get(key)
        if hit is None:
            idx, eps = self.candidates(where, model, allowed, tier)
            sites = self.grid.sites
            hit = self._scored[key] = idx, eps, {ep.id: distance_km(where, sites[ep.site_id].location) for ep in eps}
        return hit

    def can_widen(self, model: Models, tier: int) -> bool:
        models = model if isinstance(model, tuple) else (model,)
        return any(len(self.by_model.get(m, ())) > self.k * WIDEN**tier for m in models)

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

    def floor_s(self, where: GeoPoint | None, model: Models, allowed: frozenset[str] | None, tier: int,
                prompt_tokens: int) -> float:
        """The physical floor of one request's TTFT among the endpoints its gateway scores: the smallest
        modelled round trip plus a lone prefill of the prompt (no queue, nothing else running), over the
        allowed jurisdictions."""
        hit_key = (0.0, 0.0, model, allowed, tier) if where is None else (where.lat, where.lon, model, allowed, tier)
        terms = self._floor_hits.get(hit_key)  # `_floors`' entry, found without hashing a GeoPoint in Python
        if terms is None:
            key = (where or GeoPoint(0.0, 0.0), model, allowed, tier)
            terms = self._floors.get(key)
            if terms is None:
                terms = self._floors[key] = self._floor_terms(where, key[0], model, allowed, tier)
            self._floor_hits[hit_key] = terms
        if not terms:
            return float("nan")
        # a few candidates: plain floats beat numpy's per-call overhead, and give the same IEEE results; the
        # loop keeps the first smallest as min() over a generator would, without resuming a generator per term
        best: float | None = None
        for rtt, pf_tok, step, chunk in terms:
            floor = rtt + prompt_tokens * pf_tok + ceil(prompt_tokens / chunk) * step
            if best is None or floor < best:
                best = floor
        return best / 1000.0  # type: ignore[operator]  # terms is not empty

    def _floor_terms(self, where: GeoPoint | None, at: GeoPoint, model: Models, allowed: frozenset[str] | None,
                     tier: int) -> FloorTerms:
        idx, _ = self.candidates(at, model, allowed, tier)
        ok = [i for i in idx if allowed is None or self.jurisdiction[i] in allowed] or list(idx)
        d = distances_km(self.grid.lat[ok], self.grid.lon[ok], at.lat, at.lon)
        rtt: np.ndarray = np.zeros(len(ok)) if where is None else np.asarray(self.net.base_rtt_ms(d))
        perf = [self.grid.perf[i] for i in ok]
        return tuple((float(r), p.pf_tok_ms, p.w_ms + p.pf_step_ms, p.chunk_tokens)
                     for r, p in zip(rtt, perf, strict=True))

    def prewarm(self, places: Iterable[tuple[GeoPoint | None, str, frozenset[str] | None]]) -> None:
        """Compute the tier-0 candidates and floors of these (place, model, allowed) now: the places without
        a residency rule in batches (`_nearest_batch`, which also gives their floors), the others one by
        one."""
        places = list(dict.fromkeys(places))
        batch: dict[str, list[GeoPoint]] = {}
        for where, model, allowed in places:
            at = where or GeoPoint(0.0, 0.0)
            if (at, model, allowed, 0) in self._candidates:
                continue
            if allowed is None and len(self.by_model.get(model, ())) > self.k:
                batch.setdefault(model, []).append(at)
            else:
                self.candidates(at, model, allowed, 0)
        floors: dict[tuple[GeoPoint, str], FloorTerms] = {}
        for model, points in batch.items():
            cells: dict[tuple[int, int], list[GeoPoint]] = {}
            for at in points:  # nearby places together: each batch searches only the endpoints near it
                cells.setdefault((int((at.lat + 90.0) // CELL_DEG), int((at.lon + 180.0) // CELL_DEG)), []).append(at)
            for near in cells.values():
                for start in range(0, len(near), BATCH):
                    self._nearest_batch(model, near[start:start + BATCH], floors)
        for where, model, allowed in places:
            at = where or GeoPoint(0.0, 0.0)
            key = (at, model, allowed, 0)
            if key not in self._floors:
                terms = floors.get((at, model)) if where is not None and allowed is None else None
                self._floors[key] = self._floor_terms(where, at, model, allowed, 0) if terms is None else terms

    def _nearest_batch(self, model: str, points: list[GeoPoint],
                       floors: dict[tuple[GeoPoint, str], FloorTerms]) -> None:
        """`_nearest(point, model, None, k)` for many points at once, with the very same result, and each
        point's floor terms (`_floor_terms(point, point, model, None, 0)`'s, the same floats) into `floors`
        where no endpoint is pinned.

        The batch's places lie near each other (prewarm batches them by cells of CELL_DEG degrees), so
        only the endpoints near the batch are searched: within 2 rho + r of its centre (below). Among those,
        a cheap bound first: the cosine of the angle to each (3-D unit vectors, one array operation each
        for the batch) keeps, per point, those within the k-th largest cosine plus a margin far above
        rounding error: a superset of the k nearest. The exact haversine distances (`distances_km`'s
        operations, element by element the same floats) then rank that superset, for every pair of the
        batch at once. The k nearest of the superset are those of all endpoints; only when the k-th and
        (k+1)-th distances tie exactly could the choice among them differ from a full search, and then the
        full search decides."""
        every = self.by_model[model]
        k = self.k
        units = self._units.get(model)
        if units is None:
            units = self._units[model] = np.stack(_unit(self.grid.lat[every], self.grid.lon[every]))
        lat, lon = self.grid.lat, self.grid.lon
        plat = np.array([p.lat for p in points])
        plon = np.array([p.lon for p in points])
        px, py, pz = _unit(plat, plon)
        # the endpoints any point's k nearest can be among: within 2 rho + r of the batch's centre c, where
        # rho is the batch's angular radius about c and r the angle from c to its own k-th nearest (a
        # point's k nearest lie within rho + r of it, as c's k nearest do)
        eps, unit = every, units
        cx, cy, cz = float(px.mean()), float(py.mean()), float(pz.mean())
        norm = (cx * cx + cy * cy + cz * cz) ** 0.5
        if norm > 0.5:
            cx, cy, cz = cx / norm, cy / norm, cz / norm
            rho = float(np.arccos(np.clip((px * cx + py * cy + pz * cz).min(), -1.0, 1.0)))
            to_c = units[0] * cx + units[1] * cy + units[2] * cz
            r = float(np.arccos(np.clip(np.partition(to_c, len(every) - k)[len(every) - k], -1.0, 1.0)))
            reach = 2.0 * rho + r + ANGLE_SLACK
            if reach < np.pi:
                keep = to_c >= np.cos(reach)
                eps, unit = every[keep], units[:, keep]
        cos = px[:, None] * unit[0]
        cos += py[:, None] * unit[1]
        cos += pz[:, None] * unit[2]
        kth = np.partition(cos, len(eps) - k, axis=1)[:, len(eps) - k]
        rows, cols = np.nonzero(cos >= (kth - COS_MARGIN)[:, None])
        # distances_km(lat[sub], lon[sub], at.lat, at.lon) for every point's superset `sub` at once: the
        # point's own terms as that function computes them (numpy scalars), the rest element by element
        p1 = np.array([np.radians(p.lat) for p in points])
        c1 = np.array([np.cos(x) for x in p1])
        sub = eps[cols]
        p2 = np.radians(lat[sub])
        dphi = p2 - p1[rows]
        dlmb = np.radians(lon[sub] - plon[rows])
        h = np.sin(dphi / 2) ** 2 + c1[rows] * np.cos(p2) * np.sin(dlmb / 2) ** 2
        d = 2 * EARTH_RADIUS_KM * np.arcsin(np.minimum(1.0, np.sqrt(h)))
        order = np.lexsort((d, rows))  # by point, then distance (stable: ties keep the endpoints' order)
        rows, sub, d = rows[order], sub[order], d[order]
        first = np.searchsorted(rows, np.arange(len(points) + 1))
        rtt = np.asarray(self.net.base_rtt_ms(d))
        perf = self.grid.perf
        pinned = self.pinned[np.isin(self.pinned, every)] if len(self.pinned) else None
        endpoints = self.grid.endpoints
        subs, ds, rtts = sub.tolist(), d.tolist(), rtt.tolist()
        for row, at in enumerate(points):
            a, b = int(first[row]), int(first[row + 1])
            if b - a > k and ds[a + k - 1] == ds[a + k]:  # an exact tie at the boundary: the full search
                self.candidates(at, model, None, 0)
                continue
            near = sorted(zip(subs[a:a + k], rtts[a:a + k], strict=True))
            if pinned is None:
                idx = tuple(i for i, _ in near)
                floors[(at, model)] = tuple((r, perf[i].pf_tok_ms, perf[i].w_ms + perf[i].pf_step_ms,
                                             perf[i].chunk_tokens) for i, r in near)
            else:
                idx = tuple(sorted({i for i, _ in near} | set(pinned.tolist())))
            self._candidates[(at, model, None, 0)] = idx, tuple(endpoints[i] for i in idx)


def _unit(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    phi, lmb = np.radians(lat), np.radians(lon)
    return np.cos(phi) * np.cos(lmb), np.cos(phi) * np.sin(lmb), np.sin(phi)
