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
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from aigrid.plan.chunks import chunk_for
from aigrid.plan.demand import Demand
from aigrid.plan.placement import Placement, PlannedSite, cap_of, chunk_of, price_of
from aigrid.plan.traffic import Traffic
from aigrid.sim.hardware import engine_perf


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
