"""The hardware move of refinement: a site of a passing placement moved to cheaper hardware of the supply.

Refinement (plan/verify.py) grows sites, moves a lightly used slow site to faster hardware and trims
replicas; none of those makes a site's replicas cheaper. This move does. Once a placement passes every check
and trimming has ended, each site (the dearest first) is tried on each hardware option of the supply that is
cheaper per replica and offered (its prefill chunk holds the TPOT SLO, plan/chunks.py), the cheapest
candidate first:
- sized by the engine model's capacity (capacity_rps of the site's models' request mix, sim/hardware.py) so
  the site keeps its throughput, when that many replicas cost less than the site does now;
- otherwise with as many replicas as cost less than the site does now (the most throughput the saving
  buys: one H100 at $2.50 becomes one RTX PRO 6000 at $1.40, about half its capacity).
A candidate with more devices than the site may hold of that hardware (supply.device_cap: max_gpus_per_site,
the site's max_gpus and max_power_kw, the limits the screen sized it within) is not tried.
One hardware per site: all of a site's replicas move together, each with the option's price and chunk, which
the emitted grid.yaml, emulators and check scenarios carry (plan/gridspec.py). The simulator judges each
candidate on every check and every arrival sample; verify.py keeps the first (cheapest) that passes at a
site, then goes on to the next site and trims again, within verify.move_trials runs of the checks per
placement (the demand's field, `aigrid plan --move-trials`).

Two-site moves (pair_moves), the next step once every single-site move of a placement has failed: drop a site
and grow one or two others by a replica; two sites on cheaper hardware together; a site one replica fewer while
another moves to cheaper hardware with enough replicas to take the removed one's work (each count that still
costs less). Only candidates cheaper than the placement are listed. The analytical screen judges them before
the simulator (screened): the pooled model's utilisation of the candidate's pool (PooledModel.utilisation, the
hottest it runs at any hour with every site up or one down) must be at most POOL_LIMIT, the hottest the screen
sizes pools at; those go to the simulator the coolest first, within verify.pair_trials candidates per
placement, each run in the same batches as a single-site candidate (a failure at its first check costs that
check's runs, one per sample).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from itertools import combinations

import numpy as np

from aigrid.plan.chunks import chunk_for
from aigrid.plan.demand import Demand
from aigrid.plan.placement import Placement, PlannedSite, cap_of, chunk_of, price_of
from aigrid.plan.pooled import PooledModel
from aigrid.plan.traffic import Traffic
from aigrid.sim.hardware import engine_perf

POOL_LIMIT = 0.6
"""The hottest pool utilisation at which a two-site candidate is simulated: the highest the screen sizes pools
at (planner.POOLED_RHOS); a candidate the pooled model puts hotter is not run (it costs no simulator run)."""


def replica_rps(demand: Demand, traffic: Traffic, hardware: str, gpus: int, chunk: int, model: str) -> float:
    """Requests/s one replica of `model` on `hardware` serves at a full batch, of that model's flows' request
    mix (each flow weighted by its requests over the day)."""
    m = next(x for x in demand.models if x.name == model)
    perf = engine_perf(hardware, m.params_b, m.kv_bytes_per_token, gpus, chunk)
    weight = traffic.rate.sum(axis=(1, 2))
    mine = [(float(w), f) for w, f in zip(weight, traffic.flows, strict=True) if f.model == model and w > 0]
    if not mine:
        return perf.capacity_rps(1.0, 1.0)
    seconds = sum(w / perf.capacity_rps(f.prompt_mean, f.output_mean) for w, f in mine)
    return sum(w for w, _ in mine) / seconds


def _sized(site: PlannedSite, replicas: list[tuple[str, int]], usd_per_replica: float) -> tuple[tuple[str, int], ...]:
    """`replicas`, or if they cost no less than the site does now, fewer (the largest count first, at least one
    each) until they do; () when one replica of each model already costs as much."""
    reps = dict(replicas)
    while sum(reps.values()) * usd_per_replica >= site.usd_per_hour - 1e-9:
        top = max(reps, key=lambda k: reps[k])
        if reps[top] <= 1:
            return ()
        reps[top] -= 1
    return tuple(sorted(reps.items()))


def site_moves(demand: Demand, traffic: Traffic, placement: Placement, site_id: str) -> list[Placement]:
    """`placement` with site `site_id` on each cheaper offered hardware option, the cheapest first."""
    site = placement.site(site_id)
    out: list[tuple[float, Placement]] = []
    for hw in demand.supply.hardware:
        if hw == site.hardware or chunk_for(demand, hw) is None:
            continue
        price, gpus = price_of(demand, hw)
        if price * gpus >= site.usd_per_device_hour * site.gpus_per_replica - 1e-9:
            continue
        chunk = chunk_of(demand, hw)
        keep = [(model, max(1, math.ceil(n * replica_rps(demand, traffic, site.hardware, site.gpus_per_replica,
                                                          site.chunk_tokens, model)
                                         / replica_rps(demand, traffic, hw, gpus, chunk, model) - 1e-9)))
                for model, n in site.replicas]
        replicas = _sized(site, keep, price * gpus)
        if not replicas or sum(n for _, n in replicas) * gpus > cap_of(demand, site, hw):
            continue  # nothing cheaper, or more devices than the site may hold of `hw`: not tried
        moved = replace(site, hardware=hw, usd_per_device_hour=price, gpus_per_replica=gpus, chunk_tokens=chunk,
                        replicas=replicas)
        p = replace(placement, sites=tuple(moved if s.id == site_id else s for s in placement.sites))
        out.append((p.usd_per_hour, p))
    return [p for _, p in sorted(out, key=lambda cp: cp[0])]


def dearest_first(placement: Placement) -> list[str]:
    """Site ids, the dearest first (ties: as placed)."""
    order = np.argsort([-s.usd_per_hour for s in placement.sites], kind="stable")
    return [placement.sites[int(i)].id for i in order]


def _grown(demand: Demand, placement: Placement, site_id: str) -> Placement | None:
    """`placement` with one more replica of every model at `site_id`; None past the site's limit."""
    site = placement.site(site_id)
    if (sum(n for _, n in site.replicas) + len(site.replicas)) * site.gpus_per_replica > cap_of(demand, site,
                                                                                                 site.hardware):
        return None
    return placement.scaled(site_id, 1)


def pair_moves(demand: Demand, traffic: Traffic, placement: Placement) -> list[tuple[str, Placement]]:
    """Two-site moves of `placement` that cost less than it, each as (what it does, the placement):
    - drop a site and grow one or two others by one replica of every model (their own hardware);
    - two sites on cheaper hardware together (each one of its site_moves candidates);
    - a site with more than one replica of every model loses one, and another site moves to a cheaper option
      with site_moves' count or more replicas (the cheaper hardware taking the removed replica's work), every
      count that keeps the placement cheaper.
    Every site keeps its limit (cap_of); a placement is listed once (its first description)."""
    ids = [s.id for s in placement.sites]
    out: dict[object, tuple[str, Placement]] = {}

    def add(what: str, p: Placement | None) -> None:
        if p is not None and p.usd_per_hour < placement.usd_per_hour - 1e-9:
            out.setdefault(p.key(), (what, p))

    if len(ids) > 2:  # at least two sites left, so that one can fail
        for a in ids:
            rest = replace(placement, sites=tuple(s for s in placement.sites if s.id != a))
            others = [x for x in ids if x != a]
            for group in [(b,) for b in others] + list(combinations(others, 2)):
                p: Placement | None = rest
                for b in group:
                    p = _grown(demand, p, b) if p is not None else None
                add(f"drop {a}, grow {' and '.join(group)}", p)
    for a, b in combinations(ids, 2):
        for ma in site_moves(demand, traffic, placement, a):
            for mb in site_moves(demand, traffic, ma, b):
                add(f"{a} on {_on(ma, a)} and {b} on {_on(mb, b)}", mb)
    for a in ids:
        site = placement.site(a)
        if any(n < 2 for _, n in site.replicas):
            continue
        shrunk = placement.scaled(a, -1)
        for b in ids:
            if b == a:
                continue
            for mb in site_moves(demand, traffic, shrunk, b):
                q: Placement | None = mb
                while q is not None and q.usd_per_hour < placement.usd_per_hour - 1e-9:
                    add(f"{a} one replica fewer, {b} on {_on(q, b)}", q)
                    q = _grown(demand, q, b)
    return list(out.values())


def _on(placement: Placement, site_id: str) -> str:
    s = placement.site(site_id)
    return f"{s.devices} x {s.hardware}"


def pool_utilisation(pooled: PooledModel, placement: Placement) -> float | None:
    """The pooled model's utilisation of `placement` (PooledModel.utilisation: the hottest its pool runs at any
    hour, every site up or one down); None when a site is not one of the screen's candidates or its hardware
    not one of the screen's options (then the screen cannot judge it)."""
    cands, hw = pooled.screen.cands, list(pooled.screen.hw)
    if any(s.id not in cands.id or s.hardware not in hw for s in placement.sites):
        return None
    return pooled.utilisation([cands.index(s.id) for s in placement.sites], [hw.index(s.hardware)
                                                                              for s in placement.sites],
                              [dict(s.replicas) for s in placement.sites])


def screened(candidates: list[tuple[str, Placement]], utilisation: Callable[[Placement], float | None] | None,
             limit: float = POOL_LIMIT) -> list[tuple[str, Placement, float | None]]:
    """The candidates the analytical screen lets through, in the order to simulate them: those whose pool
    utilisation (`utilisation`, the pooled model's) is at most `limit`, the coolest first (the likeliest to
    pass), then the cheapest; candidates the screen cannot judge (None) after them, the cheapest first. Without
    a screen, every candidate, the cheapest first."""
    rows = [(what, p, utilisation(p) if utilisation is not None else None) for what, p in candidates]
    judged = sorted((r for r in rows if r[2] is not None and r[2] <= limit),
                    key=lambda r: (r[2], r[1].usd_per_hour))
    unjudged = sorted((r for r in rows if r[2] is None), key=lambda r: r[1].usd_per_hour)
    return judged + unjudged
