"""The whole plan: screen analytically, verify and refine the best proposals in the simulator, compare.

plan() is what `aigrid plan` runs; it is also the API for scripts and tests:

    from aigrid.plan.planner import plan
    result = plan(load_demand("examples/plan/global.yaml"), backend=LocalBackend(), compare=True)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from aigrid.plan.demand import Demand
from aigrid.plan.naive import naive_shapes, structural_problem
from aigrid.plan.placement import Placement, from_sizing
from aigrid.plan.runs import Backend
from aigrid.plan.screen import Screen, Sizing
from aigrid.plan.supply import Candidates, candidate_sites
from aigrid.plan.traffic import Traffic, build_traffic
from aigrid.plan.verify import Verdict, Verifier
from aigrid.sim.geography import load_cities

RHOS = (0.45, 0.55, 0.65)
"""Target utilisations the screen sizes proposals at (each gives its own site set); the simulator refines."""
NAIVE_RHO = 0.55


@dataclass
class Events:
    """Progress callbacks: a phase started (label, total steps or None), a step of it finished."""

    phase: Callable[[str, int | None], None] = lambda label, total: None
    step: Callable[[], None] = lambda: None
    more: Callable[[int], None] = lambda n: None


@dataclass
class Naive:
    label: str
    verdict: Verdict | None
    structural: str | None
    """Why no size of this shape can meet the checks, when known before simulating."""


@dataclass
class PlanResult:
    demand: Demand
    traffic: Traffic
    candidates: Candidates
    best: Verdict | None
    proposals: list[Verdict]
    naive: list[Naive] = field(default_factory=list)
    screen_s: float = 0.0
    verify_s: float = 0.0
    runs: int = 0
    backend: str = "local"


def _site_load(placement: Placement, sizing: Sizing) -> dict[str, np.ndarray]:
    return {s.id: sizing.load[k] for k, s in enumerate(placement.sites) if k < len(sizing.load)}


def plan(demand: Demand, *, backend: Backend, compare: bool = False, start_sites: list[str] | None = None,
         events: Events | None = None, source: str = "<demand>") -> PlanResult:
    ev = events or Events()
    t0 = time.perf_counter()
    cities = load_cities()
    cands = candidate_sites(demand, cities, source)
    traffic = build_traffic(demand, cities, demand.verify.window_s)
    ev.phase(f"screening {len(cands):,} candidate sites", len(RHOS))
    screen = Screen(demand, traffic, cands)
    start = [cands.index(s) for s in start_sites or [] if s in cands.id] or None
    sizings: dict[tuple[object, ...], Sizing] = {}
    for rho in RHOS:
        z = screen.search(rho, start=start)
        sizings.setdefault((z.sites, z.hardware, tuple(tuple(sorted(r.items())) for r in z.replicas)), z)
        ev.step()
    ranked = sorted(sizings.values(), key=lambda z: z.score)[: demand.verify.proposals]
    screen_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    ev.phase("simulator runs (peak + every single-site failure)", 0)
    verifier = Verifier(demand, traffic, backend, on_run=ev.step, on_plan=ev.more)
    proposals = []
    for k, z in enumerate(ranked):
        p = from_sizing(f"plan-{k + 1}", demand, cands, z)
        proposals.append(verifier.refine(p, _site_load(p, z)))
    passing = [v for v in proposals if v.passed]
    best = min(passing, key=lambda v: v.placement.usd_per_hour) if passing else None
    if best is not None:
        best.placement = Placement("plan", best.placement.sites)
    naive: list[Naive] = []
    if compare:
        for label, (p, z) in naive_shapes(demand, screen, cands, NAIVE_RHO).items():
            problem = structural_problem(z, label)
            if problem is not None:
                naive.append(Naive(label, None, problem))
                continue
            naive.append(Naive(label, verifier.refine(p, _site_load(p, z)), None))
    return PlanResult(demand, traffic, cands, best, proposals, naive, screen_s, time.perf_counter() - t1,
                      verifier.runs, backend.name)
