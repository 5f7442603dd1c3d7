"""Candidate sites from the demand's supply: named cities, the N most populous cities, or a provider's regions.

Each candidate carries its place (GeoNames), jurisdiction (EU for the 27 member states, else the country
code), continent, and the most devices it may hold per hardware profile (max_gpus, power limit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from aigrid.plan.demand import Demand, DemandError, SiteLimit, Supply
from aigrid.plan.providers import PROVIDERS
from aigrid.sim.geography import Cities, jurisdiction_of
from aigrid.sim.hardware import HARDWARE
from aigrid.spec.near import did_you_mean


@dataclass(frozen=True)
class Candidates:
    """Column arrays over candidate sites."""

    id: tuple[str, ...]
    city: tuple[str, ...]
    country: tuple[str, ...]
    jurisdiction: tuple[str, ...]
    continent: tuple[str, ...]
    lat: np.ndarray
    lon: np.ndarray
    max_devices: np.ndarray
    """[site, hardware option] most devices the site may hold of that profile."""
    hardware: tuple[str, ...]
    """Hardware options, in the column order of max_devices."""

    def __len__(self) -> int:
        return len(self.id)

    def index(self, site_id: str) -> int:
        return self.id.index(site_id)


def device_cap(supply: Supply, limit: SiteLimit | None, hardware: str) -> int:
    """The most devices of `hardware` a site may hold: supply.max_gpus_per_site, and the site's limit (by site id
    or city) of max_gpus and of max_power_kw over the profile's peak power (sim/hardware.py). The one rule: the
    screen sizes within it (Candidates.max_devices), and so do refinement's steps (PlannedSite.max_devices)."""
    cap = supply.max_gpus_per_site
    if limit is not None and limit.max_gpus is not None:
        cap = min(cap, limit.max_gpus)
    if limit is not None and limit.max_power_kw is not None:
        cap = min(cap, int(limit.max_power_kw * 1000 // HARDWARE[hardware].peak_w))
    return cap


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.casefold()).strip("-") or "site"


def candidate_sites(demand: Demand, cities: Cities, source: str = "<demand>") -> Candidates:
    spec = demand.supply.candidates
    rows: list[tuple[str, int]] = []  # (site id, city index)
    missing: list[str] = []
    if spec.provider is not None:
        for region, city in PROVIDERS[spec.provider].items():
            rows.append((region, cities.find(city)))
    elif spec.cities is not None:
        for name in spec.cities:
            try:
                i = cities.find(name)
            except KeyError:
                missing.append(name)
                continue
            rows.append((f"{slug(name)}-{cities.country[i].lower()}", i))
    else:
        assert spec.top is not None
        idx = cities.select(spec.continents)[: spec.top]
        rows = [(f"{slug(cities.name[i])}-{cities.country[i].lower()}-{k}", int(i)) for k, i in enumerate(idx)]
    if missing:
        raise DemandError(source, [f"supply.candidates.cities: no city named {m!r} in GeoNames{cities.close_hint(m)}"
                                     for m in missing])
    seen: set[str] = set()
    dup = [r for r, _ in rows if r in seen or seen.add(r)]  # type: ignore[func-returns-value]
    if dup:
        raise DemandError(source, [f"supply.candidates: duplicate candidate sites {', '.join(sorted(set(dup)))}"])
    if not rows:
        raise DemandError(source, ["supply.candidates: no candidate site"])
    hw = tuple(sorted(demand.supply.hardware))
    limits = demand.supply.limits
    known = {r for r, _ in rows} | {cities.name[i] for _, i in rows}
    unknown = sorted(set(limits) - known)
    if unknown:  # each by its key, the nearest named (it said `supply.limits: ['Pariss'] are neither ...`)
        listed = f" (candidates: {', '.join(sorted(known))})" if len(known) <= 24 else ""
        raise DemandError(source, [f"supply.limits.{u}: neither a candidate site id nor a candidate's city"
                                   f"{did_you_mean(u, known) if k == 0 else ''}{listed}"
                                   for k, u in enumerate(unknown)])
    max_dev = np.array([[device_cap(demand.supply, limits.get(rid) or limits.get(cities.name[i]), h) for h in hw]
                        for rid, i in rows], dtype=np.int64).reshape(len(rows), len(hw))
    ii = [i for _, i in rows]
    return Candidates(
        id=tuple(r for r, _ in rows), city=tuple(cities.name[i] for i in ii),
        country=tuple(cities.country[i] for i in ii), jurisdiction=tuple(jurisdiction_of(cities.country[i]) for i in ii),
        continent=tuple(cities.continent[i] for i in ii), lat=cities.lat[ii].copy(), lon=cities.lon[ii].copy(),
        max_devices=max_dev, hardware=hw)
