"""The demand as numbers: flows (one tenant's users in one place), demand points, and hourly request rates.

Users live at GeoNames cities in proportion to population (the simulator's model), or, for a tenant with
a city list, at its cities in proportion to their weights (default: population). Cities are pooled into
demand points (population-weighted centre of a country's cities within one CELL_DEG x CELL_DEG cell); each
city of a city list is a demand point of its own, at the city. The rate of flow f at point p in UTC hour h is

    rate[f, p, h] = c x share(tenant) x pop(p) / pop(tenant) x diurnal(local hour at p) x by_place(p)

where pop is the users' weight (population, or the city list's weights).
with c chosen so that the busiest hour of the day carries traffic.peak_rps x (1 + growth) before the
by_place multipliers (so "+30% in Asia" adds to the peak). A flow is exactly what the simulator replays as
one sub-tenant (`tenant/continent[/country]`): the verification scenarios reproduce these rates window by
window. Request sizes come from the trace each tenant names (the shipped Azure 2023 traces or a trace file).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aigrid.plan.demand import Demand
from aigrid.sim.geography import Cities
from aigrid.sim.user_cities import UserCity, pinned, user_places
from aigrid.sim.workload import diurnal, load_trace

CELL_DEG = 2.0
HOURS = 24


@dataclass(frozen=True)
class Flow:
    name: str
    """tenant/continent, or tenant/continent/country for a country with its own traffic multiplier."""
    tenant: str
    continent: str
    countries: tuple[str, ...]
    model: str
    trace: str
    jurisdictions: frozenset[str] | None
    max_prompt_tokens: int
    prompt_mean: float
    output_mean: float
    prompt_p95: float
    cities: tuple[UserCity, ...] | None = None
    """The flow's cities with their weights when its tenant lists cities (else: every city of its countries)."""


@dataclass(frozen=True)
class Traffic:
    flows: tuple[Flow, ...]
    lat: np.ndarray
    """Per demand point."""
    lon: np.ndarray
    rate: np.ndarray
    """[flow, point, UTC hour] requests per second."""

    def total(self) -> np.ndarray:
        """Requests per second of all flows, per UTC hour."""
        out: np.ndarray = self.rate.sum(axis=(0, 1))
        return out


def _sizes(trace: str, cap: int) -> tuple[float, float, float]:
    t = load_trace(trace)
    prompt = np.minimum(t.prompt, cap)
    return float(prompt.mean()), float(t.output.mean()), float(np.percentile(prompt, 95))


def build_traffic(demand: Demand, cities: Cities, window_s: float = 0.0) -> Traffic:
    """Flows, points and rates; rates are taken at UTC hour h + half a verification window."""
    country = np.array(cities.country)
    continent = np.array(cities.continent)
    _, country_idx = np.unique(country, return_inverse=True)
    key = (country_idx.astype(np.int64) * 1_000_000 + np.floor((cities.lat + 90) / CELL_DEG).astype(np.int64) * 1000
           + np.floor((cities.lon + 180) / CELL_DEG).astype(np.int64))
    cells, point = np.unique(key, return_inverse=True)
    pop = cities.population
    wsum = np.bincount(point, weights=pop, minlength=len(cells))
    lat = np.bincount(point, weights=pop * cities.lat, minlength=len(cells)) / np.maximum(wsum, 1)
    lon = np.bincount(point, weights=pop * cities.lon, minlength=len(cells)) / np.maximum(wsum, 1)

    # Per tenant: its users' cities, their weights, and the demand point each city counts at. A tenant's
    # city list gets points of its own, at the cities themselves.
    own_point: dict[int, int] = {}
    users: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for t in demand.tenants:
        if t.cities is not None:
            idx, weight = user_places(t.cities, cities)
            pts = np.array([own_point.setdefault(int(i), len(cells) + len(own_point)) for i in idx], dtype=np.int64)
        else:
            mine = np.ones(len(pop), dtype=bool)
            if t.continents is not None or t.countries is not None:
                mine = np.isin(continent, t.continents or []) | np.isin(country, t.countries or [])
            idx = np.flatnonzero(mine)
            weight, pts = pop[idx], point[idx]
        users.append((idx, weight, pts))
    listed = np.array(list(own_point), dtype=np.int64)
    lat = np.concatenate([lat, cities.lat[listed]])
    lon = np.concatenate([lon, cities.lon[listed]])
    n_points = len(lat)

    by_place = demand.traffic.by_place
    shares = np.array([t.share for t in demand.tenants])
    shares = shares / shares.sum()
    hours = (np.arange(HOURS) + window_s / 7200.0)[None, :]
    d = demand.traffic.diurnal
    shape = diurnal((hours + lon[:, None] / 15.0) % 24, d.peak_to_trough, d.peak_hour)  # [point, hour]

    flows: list[Flow] = []
    base_rows: list[np.ndarray] = []
    mult_rows: list[float] = []
    for k, (t, (idx, weight, pts)) in enumerate(zip(demand.tenants, users, strict=True)):
        tenant_pop = float(weight.sum())
        if tenant_pop <= 0:
            continue
        p_mean, o_mean, p95 = _sizes(t.trace, t.max_prompt_tokens)
        jur = frozenset(t.jurisdictions) if t.jurisdictions else None
        ctry_of, cont_of = country[idx], continent[idx]
        for cont in sorted(set(cont_of.tolist())):
            in_cont = cont_of == cont
            special = sorted(set(ctry_of[in_cont].tolist()) & set(by_place))
            groups = [(f"{t.name}/{cont}/{c}", [c]) for c in special]
            rest = sorted(set(ctry_of[in_cont].tolist()) - set(special))
            if rest:
                groups.append((f"{t.name}/{cont}", rest))
            for name, ctry in groups:
                sel = in_cont & np.isin(ctry_of, ctry)
                w = np.bincount(pts[sel], weights=weight[sel], minlength=n_points)
                listed_here = tuple(pinned(int(i), float(u), cities) for i, u in zip(idx[sel], weight[sel],
                                                                                      strict=True)) \
                    if t.cities is not None else None
                flows.append(Flow(name, t.name, cont, tuple(ctry), t.model, t.trace, jur, t.max_prompt_tokens,
                                  p_mean, o_mean, p95, listed_here))
                base_rows.append(shares[k] * w / tenant_pop)
                factor = by_place.get(cont, 1.0) * (by_place.get(ctry[0], 1.0) if len(ctry) == 1 and ctry[0] in
                                                    special else 1.0)
                mult_rows.append(factor)
    base = np.array(base_rows)[:, :, None] * shape[None, :, :]  # [flow, point, hour]
    scale = demand.traffic.peak_rps * (1.0 + demand.traffic.growth) / float(base.sum(axis=(0, 1)).max())
    rate = base * scale * np.array(mult_rows)[:, None, None]
    keep = rate.sum(axis=(0, 2)) > 0
    return Traffic(tuple(flows), lat[keep], lon[keep], rate[:, keep, :])
