"""The simulated grid: core Sites and Endpoints built from a scenario, each endpoint with its EnginePerf.

Each replica at a site is one endpoint (one engine). Generated grids put one site at each of the `count`
most populous cities of the chosen continents, with hardware drawn by share from a seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aigrid.core.types import Endpoint, GeoPoint, ModelInfo, Site
from aigrid.engines.step_cost import EnginePerf
from aigrid.sim.geography import Cities, jurisdiction_of
from aigrid.sim.hardware import HARDWARE, engine_perf
from aigrid.sim.scenario import GeneratedSites, ModelDef, Scenario, ScenarioProblem, SiteDef
from aigrid.spec.near import did_you_mean


@dataclass(frozen=True)
class Grid:
    sites: dict[str, Site]
    endpoints: tuple[Endpoint, ...]
    perf: tuple[EnginePerf, ...]
    models: dict[str, ModelInfo]
    site_index: np.ndarray
    """Endpoint index -> index of its site in `site_order`."""
    site_order: tuple[str, ...]
    lat: np.ndarray
    """Per endpoint: latitude and longitude of its site."""
    lon: np.ndarray


def build_grid(scenario: Scenario, cities: Cities, site_set: str | None = None) -> Grid:
    models = {m.name: m for m in scenario.models}
    if site_set is not None:
        defs = list(scenario.site_sets[site_set])
    else:
        defs = list(scenario.sites)
        if scenario.generate_sites is not None:
            defs += _generated(scenario.generate_sites, cities, scenario.seed)
    sites: dict[str, Site] = {}
    endpoints: list[Endpoint] = []
    perfs: list[EnginePerf] = []
    site_idx: list[int] = []
    lat: list[float] = []
    lon: list[float] = []
    order: list[str] = []
    for d in defs:
        if d.id in sites:
            raise ScenarioProblem(f"duplicate site id {d.id!r}")
        site = _site(d, cities)
        sites[site.id] = site
        order.append(site.id)
        for m in d.models:
            md = models[m]
            try:
                perf = engine_perf(d.hardware, md.params_b, md.kv_bytes_per_token, d.gpus_per_replica,
                                   d.chunk_tokens or scenario.chunk_tokens)
            except ValueError as e:
                raise ScenarioProblem(f"site {d.id!r}: {e}") from None
            for r in range(d.replicas):
                endpoints.append(_endpoint(f"{d.id}/{m}/{r}", site.id, md, perf))
                perfs.append(perf)
                site_idx.append(len(order) - 1)
                lat.append(site.location.lat)
                lon.append(site.location.lon)
    infos = {m.name: ModelInfo(m.name, m.family, m.params_b) for m in scenario.models}
    return Grid(sites, tuple(endpoints), tuple(perfs), infos, np.array(site_idx, dtype=np.int64),
                tuple(order), np.array(lat), np.array(lon))


def _site(d: SiteDef, cities: Cities) -> Site:
    if d.lat is not None and d.lon is not None:
        lat, lon, country = d.lat, d.lon, d.country or "ZZ"
    else:
        assert d.city is not None
        try:
            i = cities.find(d.city)
        except KeyError:
            raise ScenarioProblem(f"site {d.id!r}: no city named {d.city!r} in GeoNames"
                                  f"{cities.close_hint(d.city)}") from None
        lat, lon, country = float(cities.lat[i]), float(cities.lon[i]), d.country or cities.country[i]
    hw = HARDWARE[d.hardware]
    gpus = d.gpus_per_replica * d.replicas
    return Site(d.id, d.city or d.id, GeoPoint(lat, lon), d.jurisdiction or jurisdiction_of(country),
                hardware=d.hardware, idle_power_w=hw.idle_w * gpus, peak_power_w=hw.peak_w * gpus)


def _endpoint(eid: str, site_id: str, md: ModelDef, perf: EnginePerf) -> Endpoint:
    return Endpoint(
        id=eid, site_id=site_id, model=md.name, family=md.family, params_b=md.params_b,
        price_in_per_mtok=perf.price_in_per_mtok, price_out_per_mtok=perf.price_out_per_mtok,
        max_concurrency=perf.max_seqs, prefill_tps=perf.prefill_tps, decode_tps=perf.decode_tps, engine="sim",
    )


def _generated(g: GeneratedSites, cities: Cities, seed: int) -> list[SiteDef]:
    idx = cities.select(g.continents)[: g.count]
    if len(idx) < g.count:
        raise ScenarioProblem(f"only {len(idx)} cities available for {g.count} generated sites")
    names = sorted(g.hardware)
    share = np.array([g.hardware[n] for n in names], dtype=float)
    rng = np.random.default_rng(seed)
    hw = rng.choice(len(names), size=len(idx), p=share / share.sum())
    out = []
    for k, (i, h) in enumerate(zip(idx, hw, strict=True)):
        name = names[int(h)]
        models = [m for m in g.models] if name != "cpu" else g.models[-1:]
        out.append(SiteDef(id=f"s{k:04d}-{cities.country[i].lower()}", lat=float(cities.lat[i]),
                           lon=float(cities.lon[i]), country=cities.country[i], hardware=name,
                           gpus_per_replica=g.gpus_per_replica, replicas=g.replicas, models=models))
    return out


def check_references(scenario: Scenario, grids: list[Grid]) -> None:
    """ScenarioProblem for a fault naming a site no grid has, or a tenant allowed only jurisdictions no site is
    in: the fault would do nothing, the tenant's every request would be rejected, both without a word."""
    ids = sorted({s for g in grids for s in g.sites})
    jurisdictions = sorted({site.jurisdiction for g in grids for site in g.sites.values()})
    for i, f in enumerate(scenario.faults):
        unknown = [s for s in f.sites or () if s not in ids]
        if unknown:
            raise ScenarioProblem(f"faults[{i}].sites: no site {', '.join(map(repr, unknown))}"
                                  f"{did_you_mean(unknown[0], ids)} (sites: {', '.join(ids)})")
    for i, t in enumerate(scenario.tenants):
        if t.jurisdictions and not set(t.jurisdictions) & set(jurisdictions):
            raise ScenarioProblem(f"tenants[{i}].jurisdictions: no site of tenant {t.name!r} is in "
                                  f"{', '.join(t.jurisdictions)} (the sites' jurisdictions: {', '.join(jurisdictions)})")
    kv = max((p.kv_capacity_tokens for g in grids for p in g.perf), default=None)
    for i, t in enumerate(scenario.tenants):
        out = t.agent.output_tokens if t.agent is not None else None
        if kv is not None and out is not None and out > kv:  # 100,000,000 ran for minutes, answering nothing real
            raise ScenarioProblem(f"tenants[{i}].agent.output_tokens: {out:,} tokens cannot fit the KV cache of any "
                                  f"engine (the largest holds {kv:,} tokens, from its hardware's memory and its "
                                  "model's size and kv_bytes_per_token)")
