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

from aigrid.plan.demand import Demand, DemandError
from aigrid.plan.moves import pool_utilisation
from aigrid.plan.naive import naive_shapes, structural_problem
from aigrid.plan.placement import Placement, from_sizing
from aigrid.plan.pooled import PooledModel
from aigrid.plan.runs import Backend
from aigrid.plan.screen import Screen, Sizing
from aigrid.plan.supply import Candidates, candidate_sites
from aigrid.plan.traffic import Traffic, build_traffic
from aigrid.plan.verify import Verdict, Verifier
from aigrid.sim.geography import load_cities

RHOS = (0.3, 0.4, 0.5)
"""Target utilisations the nearest-site model sizes each site at (each gives its own site set)."""
POOLED_RHOS = (0.4, 0.5, 0.6)
"""Target utilisations of a whole pool (plan/pooled.py): one pool absorbs bursts that sites sized one by one
must each cover, so it runs hotter (on the global demand one region's zone of 5 H100 passes at 0.53 and
fails at 0.66). The simulator refines whatever either model proposes."""
NAIVE_RHO = 0.4


@dataclass
class Events:
    """Progress callbacks: a phase started (label, total steps or None), a step of it finished."""

    phase: Callable[[str, int | None], None] = lambda label, total: None
    step: Callable[[], None] = lambda: None
    more: Callable[[int], None] = lambda n: None
    note: Callable[[str], None] = lambda line: None


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
    from_naive: str | None = None
    """When a naive shape passed every check for less than every proposal, its label: it is the plan."""


def _key(z: Sizing) -> tuple[object, ...]:
    return (z.sites, z.hardware, tuple(tuple(sorted(r.items())) for r in z.replicas))


def _proposals(by_model: list[dict[tuple[object, ...], Sizing]], count: int) -> list[Sizing]:
    """The `count` placements to verify: each model's cheapest in turn (the pooled model's first), so that
    both ways of sizing reach the simulator. Within a model, at equal analytical cost, fewer sites first
    (bigger pools absorb the traces' bursts better)."""
    queues = [sorted(m.values(), key=lambda z: (round(z.score, 6), len(z.sites))) for m in by_model]
    out: list[Sizing] = []
    seen: set[tuple[object, ...]] = set()
    while len(out) < count and any(queues):
        for q in queues:
            while q and _key(q[0]) in seen:
                q.pop(0)
            if q and len(out) < count:
                z = q.pop(0)
                seen.add(_key(z))
                out.append(z)
    return out


def _site_load(placement: Placement, sizing: Sizing) -> dict[str, np.ndarray]:
    return {s.id: sizing.load[k] for k, s in enumerate(placement.sites) if k < len(sizing.load)}


def plan(demand: Demand, *, backend: Backend, compare: bool = False, start_sites: list[str] | None = None,
         events: Events | None = None, source: str = "<demand>") -> PlanResult:
    ev = events or Events()
    t0 = time.perf_counter()
    cities = load_cities()
    cands = candidate_sites(demand, cities, source)
    traffic = build_traffic(demand, cities, demand.verify.window_s)
    most = float(traffic.rate.sum(axis=1).max()) * demand.verify.window_s
    if most < 1.0:  # the checks' scenarios would have no tenant (a pydantic traceback)
        raise DemandError(source, [f"traffic.peak_rps: {demand.traffic.peak_rps:g} rps gives no tenant a whole request "
                                   f"in a verify window of {demand.verify.window_s:g} s (at most {most:.2g}): raise "
                                   "peak_rps or verify.window_s"])
    ev.phase(f"screening {len(cands):,} candidate sites", len(RHOS))
    screen = Screen(demand, traffic, cands)
    start = [cands.index(s) for s in start_sites or [] if s in cands.id] or None
    models: dict[str, dict[tuple[object, ...], Sizing]] = {"pooled": {}, "nearest": {}}
    pooled = PooledModel(screen, mix=demand.supply.mix_hardware)
    for rho, pool_rho in zip(RHOS, POOLED_RHOS, strict=True):
        for name, size, r in (("pooled", pooled, pool_rho), ("nearest", screen.size, rho)):
            base = screen.search(r, start=start, size=size)
            for z in [base, *screen.spread(r, base, size=size)]:
                models[name].setdefault(_key(z), z)
        ev.step()
    ranked = _proposals(list(models.values()), demand.verify.proposals)
    screen_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    ev.phase("simulator runs (peak + every single-site failure)", 0)
    verifier = Verifier(demand, traffic, backend, on_run=ev.step, on_plan=ev.more, note=ev.note,
                        utilisation=lambda p: pool_utilisation(pooled, p))  # the two-site moves' screen
    proposals = []
    for k, z in enumerate(ranked):
        p = from_sizing(f"plan-{k + 1}", demand, cands, z)
        if not p.sites:  # nothing to simulate (a pydantic traceback from the check's scenario)
            raise DemandError(source, [f"supply: no site of the {len(cands):,} candidates can hold the traffic (peak "
                                       f"{float(traffic.total().max()):,.1f} rps) with max_gpus_per_site "
                                       f"{demand.supply.max_gpus_per_site} and the limits: raise them, or offer "
                                       "more candidates or hardware"])
        proposals.append(verifier.refine(p, _site_load(p, z), moves=True))  # naive shapes: no hardware moves
    passing = [v for v in proposals if v.passed]
    best = min(passing, key=lambda v: v.placement.usd_per_hour) if passing else None
    if best is not None:
        best.placement = Placement("plan", best.placement.sites)
    naive: list[Naive] = []
    if compare:
        shapes = sorted(naive_shapes(demand, screen, cands, NAIVE_RHO).items(), key=lambda kv: kv[1][0].usd_per_hour)
        cheapest: Placement | None = None
        # every naive shape must also pass the checks at the plan's hours (the same checks as the plan's)
        plan_hours = sorted({int(o["check"]["hour"]) for o in best.outcomes}) if best is not None else []
        for label, (p, z) in shapes:
            problem = structural_problem(z, label)
            floor = sum(s.usd_per_device_hour * s.gpus_per_replica * len(s.replicas) for s in p.sites)
            if problem is None and cheapest is not None and floor >= cheapest.usd_per_hour:
                problem = _floor_problem(label, floor, cheapest)
            if problem is not None:
                naive.append(Naive(label, None, problem))
                continue
            v = verifier.refine(p, _site_load(p, z), also_hours=plan_hours)
            naive.append(Naive(label, v, None))
            if v.passed and (cheapest is None or v.placement.usd_per_hour < cheapest.usd_per_hour):
                cheapest = v.placement
    adopted = _cheaper_naive(naive, best)
    if adopted is not None:  # a naive shape passed every check the plan did, for less: it is the plan
        best = Verdict(Placement("plan", adopted.placement.sites), adopted.outcomes, True, rounds=adopted.rounds,
                       history=adopted.history)
        ev.note(f"plan: {adopted.placement.label} passed every check for less than the proposals")
    return PlanResult(demand, traffic, cands, best, proposals, naive, screen_s, time.perf_counter() - t1,
                      verifier.runs, backend.name, adopted.placement.label if adopted is not None else None)


def _floor_problem(label: str, floor: float, cheapest: Placement) -> str:
    """Why a naive shape whose floor (one replica at each of its sites) is not below the cheapest naive shape that
    met the SLO is not simulated: it cannot be the cheapest naive placement."""
    than = "more than" if floor > cheapest.usd_per_hour else "as much as"
    return (f"{label}: not simulated: one replica per site already costs ${floor:.2f}/h, {than} "
            f"{cheapest.label} at ${cheapest.usd_per_hour:.2f}/h, which meets the SLO")


def _cheaper_naive(naive: list[Naive], best: Verdict | None) -> Verdict | None:
    """The cheapest naive placement that passed, when it costs less than the best proposal (or none passed).
    It was checked at its own peak hours and at the proposal's, so it passes every check the plan would."""
    passed = [n.verdict for n in naive if n.verdict is not None and n.verdict.passed]
    if not passed:
        return None
    v = min(passed, key=lambda x: x.placement.usd_per_hour)
    if best is not None and v.placement.usd_per_hour >= best.placement.usd_per_hour - 1e-9:
        return None
    return v
