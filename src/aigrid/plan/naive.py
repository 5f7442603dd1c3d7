"""The naive placements `aigrid plan --compare` shows beside the plan, on the same demand and the same checks.

- one-region: everything in the one candidate region that serves every tenant cheapest, as two sites
  (availability zones) in that metro, each able to carry all traffic alone, so that one can be lost; a
  single site could never survive a single-site failure at any size;
- one-region-3az: the same region as three zones (most cloud regions have three), any two of which carry
  all traffic: the N+1 reserve is a third of the capacity instead of half;
- population: every candidate site (at most NAIVE_MAX_SITES, those nearest the most users), each sized
  for the users nearest to it, i.e. capacity proportional to the population it is closest to;
- per-continent: one site per continent with users, the candidate with the lowest demand-weighted RTT
  to that continent's users, sized for the users nearest to it.
Only the geography is naive: sizes come from the same analytical model (with N+1) and the same simulator
refinement as the plan's, so the comparison is the cheapest size of each shape that meets the SLO.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from aigrid.plan.demand import Demand
from aigrid.plan.placement import Placement, from_sizing
from aigrid.plan.screen import Screen, Sizing
from aigrid.plan.supply import Candidates

NAIVE_MAX_SITES = 60


def _continent_sites(screen: Screen, cands: Candidates) -> list[int]:
    traffic = screen.traffic
    peak = screen.peak.sum(axis=0)  # [point]
    conts = np.array([f.continent for f in traffic.flows])
    out = []
    for cont in sorted(set(conts.tolist())):
        w = screen.peak[conts == cont].sum(axis=0)
        if w.sum() <= 1e-9 * max(peak.sum(), 1e-12):
            continue
        mine = [s for s in range(len(cands)) if cands.continent[s] == cont]
        if not mine:
            continue
        cost = (w[:, None] * screen.rtt[:, mine]).sum(axis=0)
        out.append(mine[int(np.argmin(cost))])
    return out


def naive_shapes(demand: Demand, screen: Screen, cands: Candidates, rho: float) -> dict[str, tuple[Placement, Sizing]]:
    shapes: dict[str, tuple[Placement, Sizing]] = {}
    # one region, two zones
    allowed_all = np.ones(len(cands), dtype=bool)
    for _, allowed in screen.classes:
        allowed_all &= allowed
    allowed_sites = np.flatnonzero(allowed_all) if allowed_all.any() else np.arange(len(cands))
    pool = ([int(s) for s in allowed_sites if s in set(screen.shortlist.tolist())]
            or [int(s) for s in allowed_sites])
    best = min((screen.size([s], rho) for s in pool), key=lambda z: z.score)
    one = from_sizing("one-region", demand, cands, best)
    zone = one.sites[0]
    zones = (replace(zone, id=f"{zone.id}-a"), replace(zone, id=f"{zone.id}-b"))
    shapes["one-region"] = (Placement("one-region", zones), replace(
        best, sites=best.sites * 2, hardware=best.hardware * 2, replicas=best.replicas * 2,
        load=np.vstack([best.load / 2, best.load / 2]), unprotected_rps=0.0))
    half = tuple((m, -(-n // 2)) for m, n in zone.replicas)  # any two of three zones carry everything
    three = tuple(replace(zone, id=f"{zone.id}-{z}", replicas=half) for z in "abc")
    shapes["one-region-3az"] = (Placement("one-region-3az", three), replace(
        best, sites=best.sites * 3, hardware=best.hardware * 3, replicas=(dict(half),) * 3,
        load=np.vstack([best.load / 3] * 3), unprotected_rps=0.0))
    # proportional to population
    sites = screen.shortlist[:NAIVE_MAX_SITES] if len(cands) > NAIVE_MAX_SITES else np.arange(len(cands))
    z = screen.size(sites, rho)
    shapes["population"] = (from_sizing("population", demand, cands, z), z)
    # one site per continent
    z = screen.size(_continent_sites(screen, cands), rho)
    shapes["per-continent"] = (from_sizing("per-continent", demand, cands, z), z)
    return shapes


def structural_problem(sizing: Sizing, label: str) -> str | None:
    """Why no size of this shape can meet the SLO in every check, or None."""
    if sizing.uncovered_rps > 0:
        return (f"{label}: {sizing.uncovered_rps:.2f} req/s at peak have no allowed site within reach of the "
                f"TTFT SLO")
    if sizing.unprotected_rps > 0:
        return (f"{label}: {sizing.unprotected_rps:.2f} req/s at peak have only one allowed site in reach, "
                f"so losing that site loses them whatever its size")
    return None
