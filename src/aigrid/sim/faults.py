"""Faults on the virtual clock: a site outage, a region cut off from the rest of the world.

(Overload spikes change the traffic itself and live in workload.py.) An outage takes every engine of the
chosen sites down at `at_s`: their requests are lost and re-routed by the gateways, new connections fail
until `until_s`. A partition cuts the chosen region off: requests from inside to outside and from outside
to inside time out; traffic that stays on one side is unaffected.
"""

from __future__ import annotations

from aigrid.sim.geography import continent_of, jurisdiction_of, load_cities
from aigrid.sim.grid import Grid
from aigrid.sim.runner import Simulation
from aigrid.sim.scenario import Fault


def target_sites(fault: Fault, grid: Grid) -> set[str]:
    chosen = set(fault.sites or ())
    jurs, conts = set(fault.jurisdictions or ()), set(fault.continents or ())
    for site in grid.sites.values():
        if site.jurisdiction in jurs or continent_of(site.jurisdiction) in conts:
            chosen.add(site.id)
    return chosen


def inside_jurisdictions(fault: Fault, grid: Grid) -> frozenset[str]:
    jurs = set(fault.jurisdictions or ())
    jurs |= {grid.sites[s].jurisdiction for s in fault.sites or () if s in grid.sites}
    if fault.continents:
        cities = load_cities()
        jurs |= {jurisdiction_of(c) for c, k in zip(cities.country, cities.continent, strict=True)
                 if k in fault.continents}
    return frozenset(jurs)


def schedule_faults(sim: Simulation, faults: list[Fault], grid: Grid) -> None:
    for fault in faults:
        if fault.kind == "spike":
            continue
        sites = target_sites(fault, grid)
        if fault.kind == "outage":
            idx = [i for i, ep in enumerate(grid.endpoints) if ep.site_id in sites]
            sim.loop.at(fault.at_s, sim.take_down, idx)
            if fault.until_s is not None:
                sim.loop.at(fault.until_s, sim.bring_up, idx)
        else:
            entry = (inside_jurisdictions(fault, grid), sites)
            sim.loop.at(fault.at_s, sim.cut.append, entry)
            if fault.until_s is not None:
                sim.loop.at(fault.until_s, sim.cut.remove, entry)
