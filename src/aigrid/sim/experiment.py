"""A scenario's experiment: the same traffic replayed once per policy (and per load factor of a sweep).

Every policy sees identical arrivals, sizes, cities and network jitter draws; only the routing differs.
replay_run() runs a given list of (time, RequestInfo) and returns the run with each Decision, for parity
checks against the live gateway on engine emulators (tests/parity).
"""

from __future__ import annotations

import gc
import time
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from aigrid.core.types import Decision, GeoPoint, RequestInfo, build_request_info
from aigrid.sim.agents import plan_agents
from aigrid.sim.faults import schedule_faults
from aigrid.sim.geography import Cities, jurisdiction_of, load_cities
from aigrid.sim.grid import Grid, build_grid, check_references
from aigrid.sim.metrics import PolicyMetrics, summarize
from aigrid.sim.network import Network
from aigrid.sim.parallel import Task, Tick, default_workers, run_all
from aigrid.sim.regional import RegionalView
from aigrid.sim.right_size import tenant_prompts
from aigrid.sim.routers import Router, is_aigrid, make_router
from aigrid.sim.runner import Arrivals, RunResult, Simulation
from aigrid.sim.scenario import FCFS, Scenario, policy_name
from aigrid.sim.workload import Workload, build_workload, prefix_key

Progress = Callable[[str, float], None]
"""progress(label, fraction of virtual time done)."""


@dataclass
class PolicyRun:
    label: str
    grid: Grid
    result: RunResult
    metrics: PolicyMetrics
    wall_s: float
    cpu_s: float = 0.0
    """CPU seconds of the run (its process's own time: on a busy machine, steadier than wall_s)."""


@dataclass
class Experiment:
    scenario: Scenario
    workload: Workload
    runs: list[PolicyRun]
    sweep: dict[str, list[tuple[float, PolicyMetrics]]]
    wall_s: float
    events: int


NO_EXCLUSIONS: frozenset[str] = frozenset()
"""RequestInfo.exclude_endpoints' default."""


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
    sized = [tenant_prompts(sc, k) for k in range(len(tenants))]
    # read one element at a time below, once per routing: array.array gives plain ints, at a fraction of the
    # cost of indexing a numpy array (a numpy scalar, then int()); the same values
    rows, city, tenant, prompt, output = (array("q", np.asarray(a, dtype=np.int64).tobytes())
                                          for a in (row, w.city, w.tenant, w.prompt, w.output))

    def request(i: int) -> RequestInfo:
        r = rows[i]
        c = city[r]
        p = points.get(c)
        if p is None:
            p = points[c] = GeoPoint(float(cities.lat[c]), float(cities.lon[c]))
        k = tenant[r]
        prefix_hash: str | None = None
        prefix_tokens: int | None = None
        if w.prefix is not None and w.prefix[r] >= 0:
            assert w.prefix_tokens is not None
            prefix_hash, prefix_tokens = prefix_key(int(w.prefix[r])), int(w.prefix_tokens[r])
        quality: Mapping[str, float] | None = None
        max_quality_drop = 1.0  # RequestInfo's default
        prompts = sized[k]
        if prompts is not None:
            assert w.pick_u is not None
            q = int(prompts.pick(w.pick_u[r]))  # this request's labelled prompt: its estimate, as the gateway's
            quality, max_quality_drop = prompts.quality[q], prompts.threshold
        # RequestInfo(id=..., model=..., ...) with every field in order, the others at their defaults, without
        # its generated __init__ (core.types.record_builder: the same record, once per routing)
        return build_request_info(
            str(i) if i == r else f"{r}.{int(plan.step[i])}", models[k], prompt[r], output[r],  # type: ignore[union-attr]
            p, allowed[k], names[k], None, prefix_hash, None, NO_EXCLUSIONS, quality, max_quality_drop, levels[k],
            deadlines[k], prefix_tokens, (), 0)

    gateway = (w.city % sc.gateway.count).astype(np.int32)
    jitter = w.jitter_u if plan is None else np.concatenate([w.jitter_u, plan.extra_jitter_u])
    return Arrivals(w.t, request, w.output[row], gateway[row], jitter,
                    jurisdiction=lambda i: jurisdiction_of(cities.country[int(w.city[row[i]])]), agents=plan,
                    prefix=None if w.prefix is None else w.prefix[row],
                    prefix_tokens=None if w.prefix_tokens is None else w.prefix_tokens[row])


def regional_view(sc: Scenario, grid: Grid, central: frozenset[str]) -> RegionalView:
    """The candidate lists and floors every run of `grid` in this scenario shares."""
    return RegionalView(grid, sc.gateway.candidates, central, Network(**sc.network.model_dump()))


def places(sc: Scenario, w: Workload, cities: Cities) -> list[tuple[GeoPoint, str, frozenset[str] | None]]:
    """Every (client place, model, allowed jurisdictions) the workload's requests have (arrivals_from's)."""
    pairs = np.unique(w.city.astype(np.int64) * len(sc.tenants) + w.tenant)
    per_tenant = []  # (models, allowed) of each tenant, once
    for k, t in enumerate(sc.tenants):
        prompts = tenant_prompts(sc, k)
        per_tenant.append(((t.model,) if prompts is None else prompts.ladder,
                           frozenset(t.jurisdictions) if t.jurisdictions else None))
    lat, lon = cities.lat.tolist(), cities.lon.tolist()  # the same floats, read without numpy scalars
    out = []
    for pair in pairs.tolist():
        c, k = divmod(pair, len(sc.tenants))
        at = GeoPoint(lat[c], lon[c])
        models, allowed = per_tenant[k]
        for model in models:
            out.append((at, model, allowed))
    return out


def simulate(sc: Scenario, grid: Grid, arrivals: Arrivals, router: Router, policy_name: str, policy: object,
             keep_decisions: bool = False, on_tick: Callable[[float], None] | None = None,
             regional: RegionalView | None = None) -> RunResult:
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
        keep_decisions=keep_decisions, regional=regional,
        admission=g.admission.rules() if queued else None, classes=not fcfs and is_aigrid(policy_name),
        calibrate=is_aigrid(policy_name.removesuffix(FCFS)),
    )
    schedule_faults(sim, sc.faults, grid)
    return sim.run(on_tick=on_tick)


def build_grids(sc: Scenario, cities: Cities) -> dict[str | None, Grid]:
    """One grid per site set the policies name (`policy@sites`; None: the scenario's own sites), and the scenario's
    references to sites checked against them all (grid.check_references): ScenarioProblem where a site's city is not
    in GeoNames, a fault names no site, a tenant may run only where no site is. run_experiment's setup, and
    `aigrid spec check`'s of a scenario (so that a file it passes starts)."""
    grids: dict[str | None, Grid] = {}
    for label in sc.policies:
        key = label.partition("@")[2] or None
        if key not in grids:
            grids[key] = build_grid(sc, cities, key)
    check_references(sc, list(grids.values()))
    return grids


def run_experiment(sc: Scenario, progress: Progress | None = None, workers: int | None = None,
                   idle: Callable[[], object] | None = None) -> Experiment:
    """Every policy (and every policy at every sweep load) on identical traffic. The runs are independent:
    with `workers` > 1 (default: one per core, sim/parallel.py) they run side by side in worker processes,
    with the same results as one after the other. `idle`: run_all's (called once a core is free while the
    last runs go on)."""
    started = time.perf_counter()
    cities = load_cities()
    views: dict[str | None, RegionalView] = {}
    workload = build_workload(sc, cities)
    arrivals = arrivals_from(sc, workload, cities)
    central = frozenset({sc.central_site}) if sc.central_site else frozenset()
    loads = [(1.0, workload, arrivals, True)]
    for factor in sc.sweep:
        w = build_workload(sc, cities, load=factor)
        loads.append((factor, w, arrivals_from(sc, w, cities), False))
    grids = build_grids(sc, cities)
    for key, grid in grids.items():
        views[key] = regional_view(sc, grid, central)
        for _, w, _, _ in loads:  # once here, not once per run (or per worker process)
            with collection_paused():  # its lists and floors are long-lived: no repeated full scans
                views[key].prewarm(places(sc, w, cities))
    tasks: list[Task[tuple[RunResult, PolicyMetrics, float, float]]] = []
    labels: list[tuple[float, str, bool]] = []
    for factor, w, arr, main in loads:
        for label in sc.policies:
            key = label.partition("@")[2] or None
            tasks.append(_policy_run(sc, grids[key], w, arr, label, central, views[key], main))
            labels.append((factor, label, main))

    def report(i: int, fraction: float) -> None:
        factor, label, main = labels[i]
        if progress is not None and (main or fraction >= 1.0):
            progress(label if main else f"sweep x{factor:g} {label}", fraction)

    # an aigrid policy's run (scores, predictions, calibration) costs two to three times a baseline's per
    # request (planet at 100,000 requests, scripts/sim_cpu.py, 2026-12-02: balanced 32.3 s of CPU, nearest
    # 13.0 s, least-loaded 13.9 s, setup included)
    cost = [len(arr.t) * (2.5 if is_aigrid(policy_name(label)) else 1.0)
            for _, _, arr, _ in loads for label in sc.policies]
    done = run_all(tasks, default_workers(len(tasks)) if workers is None else workers, report, cost, idle)
    runs: list[PolicyRun] = []
    sweep: dict[str, list[tuple[float, PolicyMetrics]]] = {}
    for (factor, label, main), (result, metrics, wall_s, cpu_s) in zip(labels, done, strict=True):
        if main:
            runs.append(PolicyRun(label, grids[label.partition("@")[2] or None], result, metrics, wall_s, cpu_s))
        else:
            sweep.setdefault(label, []).append((factor, metrics))
    events = sum(result.events for result, *_ in done)
    return Experiment(sc, workload, runs, sweep, time.perf_counter() - started, events)


def _policy_run(sc: Scenario, grid: Grid, w: Workload, arrivals: Arrivals, label: str, central: frozenset[str],
                regional: RegionalView, main: bool) -> Task[tuple[RunResult, PolicyMetrics, float, float]]:
    """One run as a task: (result, its figures, wall and CPU seconds). A sweep run reports no progress until
    done."""
    name = label.partition("@")[0]

    def task(tick: Tick) -> tuple[RunResult, PolicyMetrics, float, float]:
        # no reasons: a run keeps no decisions (replay_run, which does, explains them)
        router, policy = make_router(policy_name(label), central, sc.slo.ttft_ms, explain=False)
        t0, c0 = time.perf_counter(), time.process_time()
        on_tick = (lambda now: tick(now / sc.duration_s)) if main else None
        with collection_paused():
            result = simulate(sc, grid, arrivals, router, name, policy, on_tick=on_tick, regional=regional)
        metrics = summarize(sc, grid, w, result)
        tick(1.0)
        return result, metrics, time.perf_counter() - t0, time.process_time() - c0
    return task


@contextmanager
def collection_paused() -> Iterator[None]:
    """A run without the cyclic garbage collector.

    A run allocates millions of short-lived tuples (events, candidates, calibrations); every 700 of them
    CPython's collector scans the young objects, and from time to time every tracked object: the grid,
    the candidate lists and floors of the regional view (about a million tuples at planet scale) and all
    the run has built so far. Reference counting frees everything a run drops that has no cycle, and a run
    makes no cyclic garbage as it goes: what the collector finds after one is the run's own structure
    (the engines, gateways and event loop, which refer to each other), freed once the run is over. So for
    the run the collector is off (`gc.disable`), and what exists now is moved out of its sight
    (`gc.freeze`, which in a forked worker also spares copying the parent's pages when a later collection
    would write to their headers). Nothing a run decides depends on when memory is freed; afterwards both
    are as they were. (Until 2026-12-04 young collections ran every 50,000 allocations instead: 3% of
    balanced's samples in py-spy at planet's density, docs/simulator.md.)"""
    enabled = gc.isenabled()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        gc.unfreeze()


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
