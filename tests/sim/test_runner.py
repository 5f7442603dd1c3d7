"""The simulation's wiring of routers to gateways (sim/runner.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aigrid.core.baselines import RoundRobin
from aigrid.core.types import Policy
from aigrid.sim.experiment import arrivals_from
from aigrid.sim.geography import load_cities
from aigrid.sim.grid import build_grid
from aigrid.sim.network import Network
from aigrid.sim.runner import Simulation
from aigrid.sim.scenario import load_scenario
from aigrid.sim.workload import build_workload

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "sim"


def test_each_gateway_keeps_its_own_round_robin_counter() -> None:
    """As each live gateway process holds its own router: sixteen gateways running round robin do not
    share one counter that alternates perfectly across all of them."""
    sc = load_scenario(EXAMPLES / "one-region.yaml").model_copy(update={"duration_s": 20, "requests": 300})
    sc = sc.model_copy(update={"gateway": sc.gateway.model_copy(update={"count": 4})})
    cities = load_cities()
    w = build_workload(sc, cities)
    arrivals, grid = arrivals_from(sc, w, cities), build_grid(sc, cities)
    router = RoundRobin()
    sim = Simulation(grid, arrivals, router, Policy("round-robin", {}), Network(**sc.network.model_dump()),
                     gateways=4, seed=sc.seed)
    sim.run()
    assert router.counter == 0  # the argument is a template, copied per gateway
    assert len({id(r) for r in sim.routers}) == 4
    # At this light load every call is routed once, by the router of the gateway it arrived at.
    per_gateway = np.bincount(np.asarray(arrivals.gateway, dtype=int), minlength=4).tolist()
    assert [r.counter for r in sim.routers] == per_gateway
    assert min(per_gateway) > 0
