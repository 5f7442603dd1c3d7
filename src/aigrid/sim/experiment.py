"""A scenario's experiment: the same traffic replayed once per policy (and per load factor of a sweep).

Every policy sees identical arrivals, sizes, cities and network jitter draws; only the routing differs.
replay_run() runs a given list of (time, RequestInfo) and returns the run with each Decision, for parity
checks against the live gateway on engine emulators (tests/parity).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from aigrid.core.types import Decision, GeoPoint, RequestInfo
from aigrid.sim.agents import plan_agents
from aigrid.sim.faults import schedule_faults
from aigrid.sim.gateway import CandidateCache
from aigrid.sim.geography import Cities, jurisdiction_of, load_cities
from aigrid.sim.grid import Grid, build_grid
from aigrid.sim.metrics import PolicyMetrics, summarize
from aigrid.sim.network import Network
from aigrid.sim.routers import Router, is_aigrid, make_router
from aigrid.sim.runner import Arrivals, RunResult, Simulation
from aigrid.sim.scenario import FCFS, Scenario, policy_name
from aigrid.sim.workload import Workload, build_workload

Progress = Callable[[str, float], None]
"""progress(label, fraction of virtual time done)."""


@dataclass
class PolicyRun:
    label: str
    grid: Grid
    result: RunResult
    metrics: PolicyMetrics
    wall_s: float


@dataclass
class Experiment:
    scenario: Scenario
    workload: Workload
    runs: list[PolicyRun]
    sweep: dict[str, list[tuple[float, PolicyMetrics]]]
    wall_s: float
    events: int


def arrivals_from(sc: Scenario, w: Workload, cities: Cities) -> Arrivals:
    points: dict[int, GeoPoint] = {}
    tenants = sc.tenants
    allowed = [frozenset(t.jurisdictions) if t.jurisdictions else None for t in tenants]
    models = [t.model for t in tenants]
    names = [t.name for t in tenants]
    levels = [t.level for t in tenants]
    deadlines = [t.deadline_ms for t in tenants]
    plan = plan_agents(sc, w)
    row = np.arange(len(w)) if plan is None else plan.session  # per model call: its session's workload row

    def request(i: int) -> RequestInfo:
        r = int(row[i])
        c = int(w.city[r])
        p = points.get(c)
        if p is None:
            p = points[c] = GeoPoint(float(cities.lat[c]), float(cities.lon[c]))
        k = int(w.tenant[r])
        return RequestInfo(id=str(i) if i == r else f"{r}.{int(plan.step[i])}",  # type: ignore[union-attr]
                           model=models[k], prompt_tokens=int(w.prompt[r]), max_output_tokens=int(w.output[r]),
                           client_location=p, allowed_jurisdictions=allowed[k], tenant=names[k],
                           priority=levels[k], deadline_ms=deadlines[k])

    gateway = (w.city % sc.gateway.count).astype(np.int32)
    jitter = w.jitter_u if plan is None else np.concatenate([w.jitter_u, plan.extra_jitter_u])
    return Arrivals(w.t, request, w.output[row], gateway[row], jitter,
                    jurisdiction=lambda i: jurisdiction_of(cities.country[int(w.city[row[i]])]), agents=plan)


def simulate(sc: Scenario, grid: Grid, arrivals: Arrivals, router: Router, policy_name: str, policy: object,
             keep_decisions: bool = False, on_tick: Callable[[float], None] | None = None,
             cache: CandidateCache | None = None) -> RunResult:
    """One run. `policy_name` is the label's policy part: aigrid's policies get urgency classes and the
    admission queue (scenario gateway.admission), unless it ends in :fcfs; the baselines get neither."""
    g = sc.gateway
    fcfs = policy_name.endswith(FCFS)
    queued = g.admission.enabled and is_aigrid(policy_name.removesuffix(FCFS)) and not fcfs
    sim = Simulation(
        grid, arrivals, router, policy, Network(**sc.network.model_dump()),  # type: ignore[arg-type]
        gateways=g.count, telemetry_interval_s=g.telemetry_interval_s, telemetry_lag_s=g.telemetry_lag_s,
        candidates=g.candidates, local_accounting=g.local_accounting, circuit_cooldown_s=g.circuit_cooldown_s,
        connect_timeout_s=g.connect_timeout_s, max_attempts=g.max_attempts, seed=sc.seed,
        shared_sync_s=g.shared_state_s, failure_threshold=g.breaker_failures,
        pinned_sites=frozenset({sc.central_site}) if sc.central_site else frozenset(),
        keep_decisions=keep_decisions, candidate_cache=cache,
        admission=g.admission.rules() if queued else None, classes=not fcfs and is_aigrid(policy_name),
    )
    schedule_faults(sim, sc.faults, grid)
    return sim.run(on_tick=on_tick)


def run_experiment(sc: Scenario, progress: Progress | None = None) -> Experiment:
    started = time.perf_counter()
    cities = load_cities()
    grids: dict[str | None, Grid] = {}
    caches: dict[str | None, CandidateCache] = {}
    workload = build_workload(sc, cities)
    arrivals = arrivals_from(sc, workload, cities)
    runs: list[PolicyRun] = []
    events = 0
    for label in sc.policies:
        name, _, site_set = label.partition("@")
        key = site_set or None
        if key not in grids:
            grids[key] = build_grid(sc, cities, key)
            caches[key] = {}
        router, policy = make_router(policy_name(label), frozenset({sc.central_site}) if sc.central_site else frozenset(),
                                     sc.slo.ttft_ms)
        t0 = time.perf_counter()
        tick = None if progress is None else (lambda now, lb=label: progress(lb, now / sc.duration_s))
        result = simulate(sc, grids[key], arrivals, router, name, policy, on_tick=tick, cache=caches[key])
        events += result.events
        metrics = summarize(sc, grids[key], workload, result)
        runs.append(PolicyRun(label, grids[key], result, metrics, time.perf_counter() - t0))
        if progress is not None:
            progress(label, 1.0)
    sweep: dict[str, list[tuple[float, PolicyMetrics]]] = {}
    for factor in sc.sweep:
        w = build_workload(sc, cities, load=factor)
        arr = arrivals_from(sc, w, cities)
        for label in sc.policies:
            name, _, site_set = label.partition("@")
            router, policy = make_router(policy_name(label), frozenset({sc.central_site}) if sc.central_site else frozenset(),
                                     sc.slo.ttft_ms)
            result = simulate(sc, grids[site_set or None], arr, router, name, policy, cache=caches[site_set or None])
            events += result.events
            sweep.setdefault(label, []).append((factor, summarize(sc, grids[site_set or None], w, result)))
            if progress is not None:
                progress(f"sweep x{factor:g} {label}", 1.0)
    return Experiment(sc, workload, runs, sweep, time.perf_counter() - started, events)


def replay_run(sc: Scenario, requests: Sequence[tuple[float, RequestInfo]], policy_name: str,
               site_set: str | None = None) -> RunResult:
    """Run (time, RequestInfo) pairs through the simulated grid (the scenario's faults included); the result's
    arrays are in time order and its `decisions` hold every Decision in the order made (retries after
    failures included). Output lengths are the requests' max_output_tokens; no network jitter."""
    grid = build_grid(sc, load_cities(), site_set)
    requests = sorted(requests, key=lambda tr: tr[0])
    n = len(requests)
    reqs = [r for _, r in requests]
    arrivals = Arrivals(np.array([t for t, _ in requests], dtype=float), reqs.__getitem__,
                        np.array([max(r.max_output_tokens, 1) for r in reqs], dtype=np.int32),
                        np.zeros(n, dtype=np.int32), np.zeros(n))
    router, policy = make_router(policy_name, frozenset({sc.central_site}) if sc.central_site else frozenset())
    return simulate(sc, grid, arrivals, router, policy_name, policy, keep_decisions=True)


def replay(sc: Scenario, requests: Sequence[tuple[float, RequestInfo]], policy_name: str,
           site_set: str | None = None) -> list[Decision]:
    """replay_run's decisions only."""
    result = replay_run(sc, requests, policy_name, site_set)
    assert result.decisions is not None
    return result.decisions
