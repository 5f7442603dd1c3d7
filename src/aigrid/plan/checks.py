"""The simulator scenarios that check a placement: the diurnal peak, and each single-site failure.

A check is one simulated window (verify.window_s) starting at a UTC hour, with every site up or with one
site down from the first second to the last: at each of the peak hours, every site up and then each site
down in turn. Its traffic reproduces the analytical rates of that hour: one simulator tenant per flow
(`tenant/continent[/country]`) whose share is the flow's expected request count, users drawn by population
(or a city list's weights) x diurnal weight exactly as traffic.py counts them. Every check of the same
hour replays identical arrivals, so placements are compared on the same requests. With verify.samples = N
each check runs on N arrival samples: sample k draws with seed demand.seed + hour + SAMPLE_SEED_STEP x k, so
sample 0 is the one sample a check had before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from aigrid.plan.demand import Demand
from aigrid.plan.placement import Placement
from aigrid.plan.traffic import Traffic
from aigrid.sim.scenario import Diurnal, Fault, GatewayDef, ModelDef, Scenario, SiteDef, Slo, Tenant

SAMPLE_SEED_STEP = 1000
"""Seed distance between a check's arrival samples (far above the 0-23 of the hours, so no two collide)."""


@dataclass(frozen=True)
class Check:
    hour: int
    failed: str | None
    """Site id that is down for the whole window, or None for the peak check."""

    @property
    def label(self) -> str:
        where = "all sites up" if self.failed is None else f"{self.failed} down"
        return f"{self.hour:02d}:00 UTC, {where}"


def sim_site_id(site: str, model: str, models_at_site: int) -> str:
    return site if models_at_site == 1 else f"{site}+{model}"


def scenario_for(demand: Demand, traffic: Traffic, placement: Placement, check: Check, sample: int = 0) -> Scenario:
    """The check's simulator scenario on arrival sample `sample` (0: the check's first, and its only one when
    verify.samples is 1)."""
    v = demand.verify
    counts = traffic.rate[:, :, check.hour].sum(axis=1) * v.window_s
    tenants = [Tenant(name=f.name, share=float(n), trace=f.trace, model=f.model,
                      countries=None if f.cities else list(f.countries),
                      cities=list(f.cities) if f.cities else None, max_prompt_tokens=f.max_prompt_tokens,
                      jurisdictions=sorted(f.jurisdictions) if f.jurisdictions else None)
               for f, n in zip(traffic.flows, counts, strict=True) if n >= 1.0]
    sites: list[SiteDef] = []
    failed: list[str] = []
    for s in placement.sites:
        for model, n in s.replicas:
            sid = sim_site_id(s.id, model, len(s.replicas))
            sites.append(SiteDef(id=sid, lat=s.lat, lon=s.lon, country=s.country, jurisdiction=s.jurisdiction,
                                 hardware=s.hardware, gpus_per_replica=s.gpus_per_replica, replicas=n, models=[model],
                                 chunk_tokens=s.chunk_tokens))
            if s.id == check.failed:
                failed.append(sid)
    d = demand.traffic.diurnal
    return Scenario(
        name=f"{demand.name}: {placement.label}, {check.label}{f', sample {sample}' if sample else ''}",
        seed=demand.seed + check.hour + SAMPLE_SEED_STEP * sample,
        duration_s=v.window_s, requests=max(int(round(float(sum(t.share for t in tenants)))), 1),
        models=[ModelDef(**m.model_dump()) for m in demand.models], sites=sites, tenants=tenants,
        policies=[v.policy], diurnal=Diurnal(peak_to_trough=d.peak_to_trough, peak_hour=d.peak_hour,
                                             start_utc_hour=float(check.hour)),
        gateway=GatewayDef(count=v.gateways, telemetry_lag_s=v.telemetry_lag_s),
        faults=[Fault(kind="outage", at_s=0.0, sites=failed)] if failed else [],
        slo=Slo(ttft_ms=demand.slo.ttft_ms, tpot_ms=demand.slo.tpot_ms), write_requests_csv=False)


def peak_hours(traffic: Traffic, site_load: np.ndarray, count: int) -> list[int]:
    """The busiest hour of all traffic, then the peak hours of the most loaded sites, up to `count` hours."""
    hours = [int(np.argmax(traffic.total()))]
    if len(site_load):
        order = np.argsort(-site_load.max(axis=1))
        for s in order:
            h = int(np.argmax(site_load[s]))
            if all(min(abs(h - x), 24 - abs(h - x)) > 1 for x in hours):
                hours.append(h)
            if len(hours) >= count:
                break
    return sorted(hours[:count])


def checks_for(placement: Placement, traffic: Traffic, site_load: dict[str, np.ndarray], count: int,
               also: Sequence[int] = ()) -> list[Check]:
    """Peak checks at `count` hours (and at the hours `also`), and at each of those hours one check per site
    with that site down."""
    load = np.array([site_load.get(s.id, traffic.total()) for s in placement.sites]) if placement.sites \
        else np.zeros((0, traffic.rate.shape[2]))
    hours = sorted(set(peak_hours(traffic, load, count)) | {int(h) for h in also})
    return [Check(h, None) for h in hours] + [Check(h, s.id) for h in hours for s in placement.sites]
