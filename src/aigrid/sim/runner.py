"""One simulation run: one routing policy, one grid, one list of arrivals, virtual time.

Life of a request: it arrives at its gateway, which builds a GridView from late telemetry and asks the
router (core.schedule or a baseline) for a Decision. The request travels half a round trip to the chosen
engine; the first token and the last one travel half a round trip back. A connection to a site that is down
fails after a round trip, one across a cut-off region after the connect timeout; the gateway then opens its
circuit breaker for that endpoint and routes again with it excluded (up to max_attempts). A request lost in
an outage is re-routed the same way, mid-stream ones included; its first-token time stays the first one.
Agent sessions (Arrivals.agents, see sim/agents.py) chain further model calls after a call completes.

Urgency (core/urgency.py): with `admission` rules, a call whose decision says "wait" (every eligible
endpoint busy for its class) waits in its gateway's admission queue (sim/admission.py) and is routed again
as capacity frees; one that waits too long or overflows the queue is shed (SHED), one whose deadline cannot
be met is refused before reaching an engine (LATE). `classes=False` routes every call as standard with no
deadline (first come, first served).
"""

from __future__ import annotations

import copy
import random
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from math import isnan, log1p

import numpy as np

from aigrid.core.fair_queue import Waiting
from aigrid.core.geo import FIBRE_KM_PER_MS, distance_km
from aigrid.core.types import Decision, GeoPoint, Policy, RequestInfo
from aigrid.core.urgency import DEFAULT_LEVEL, LATE, SEND, WAIT, AdmissionRules, verdict
from aigrid.engines.engine_model import Engine, Job
from aigrid.sim.admission import Admission
from aigrid.sim.agents import AgentPlan
from aigrid.sim.clock import EventLoop
from aigrid.sim.gateway import Gateways, Telemetry
from aigrid.sim.grid import Grid
from aigrid.sim.network import Network
from aigrid.sim.regional import RegionalView
from aigrid.sim.routers import Router
from aigrid.sim.workload import prefix_key

PENDING, OK, REJECTED, FAILED, SHED, REFUSED_LATE = 0, 1, 2, 3, 4, 5
NOT_SERVED = (REJECTED, FAILED, SHED, REFUSED_LATE)


@dataclass(frozen=True)
class Arrivals:
    """What the run replays: arrival times, the RequestInfo of each, its output length, gateway, jitter.

    With agent sessions, t holds the arrivals (first calls) and the other fields cover every model call."""

    t: np.ndarray
    request: Callable[[int], RequestInfo]
    output: np.ndarray
    gateway: np.ndarray
    jitter_u: np.ndarray
    jurisdiction: Callable[[int], str] = lambda i: ""
    """The client's own jurisdiction (used only to decide who is cut off by a partition)."""
    agents: AgentPlan | None = None
    prefix: np.ndarray | None = None
    """Per request (model call) the shared prefix it opens with (-1: none) and that prefix's tokens; None
    when no tenant shares one (sim/workload.py, with_prefixes)."""
    prefix_tokens: np.ndarray | None = None


@dataclass
class RunResult:
    ttft_s: np.ndarray
    e2e_s: np.ndarray
    tpot_s: np.ndarray
    endpoint: np.ndarray
    status: np.ndarray
    attempts: np.ndarray
    cost_usd: np.ndarray
    violation: np.ndarray
    rtt_s: np.ndarray
    utilization: np.ndarray
    """Per endpoint: served work at peak efficiency / elapsed time (see EngineStats.work_s)."""
    events: int
    end_s: float
    decisions: list[Decision] | None
    sent_s: np.ndarray | None = None
    """Per call: when it left the client (its arrival; for a follow-up call of an agent session, later)."""
    session_e2e_s: np.ndarray | None = None
    """Per arrival, with agent sessions: arrival to final answer at the client (NaN: unfinished or none)."""
    agents: AgentPlan | None = None
    predicted_ms: np.ndarray | None = None
    """Per call: the chosen candidate's predicted TTFT at its last decision (NaN for baselines)."""
    floor_s: np.ndarray | None = None
    """Per call: the physical floor, the nearest allowed site's round trip plus a lone prefill there."""
    waited: np.ndarray | None = None
    """Per call: it waited in its gateway's admission queue at least once (deferred)."""


NAN = float("nan")


def _filled(code: str, value: int | float, n: int) -> array:
    # int | float, not float: compiled (mypyc), a float parameter would turn -1 into -1.0, refused by array('i')
    return array(code, [value]) * n


def _own(router: Router) -> Router:
    """A gateway's own router: a copy (round robin's counter is per gateway); a frozen dataclass is shared, as
    its shallow copy would differ from it only in identity (compiled, core/baselines.py's cannot be copied)."""
    params = getattr(type(router), "__dataclass_params__", None)
    return router if params is not None and params.frozen else copy.copy(router)


def _doubles(values: np.ndarray) -> array:
    """An exact float64 copy as array.array("d")."""
    return array("d", np.asarray(values, dtype=np.float64).tobytes())


class Simulation:
    def __init__(self, grid: Grid, arrivals: Arrivals, router: Router, policy: Policy, network: Network,
                 *, gateways: int = 1, telemetry_interval_s: float = 1.0, telemetry_lag_s: float = 1.0,
                 candidates: int = 32, local_accounting: bool = True, circuit_cooldown_s: float = 30.0,
                 connect_timeout_s: float = 1.0, max_attempts: int = 3, seed: int = 0,
                 pinned_sites: frozenset[str] = frozenset(), keep_decisions: bool = False,
                 regional: RegionalView | None = None, shared_sync_s: float = 0.1,
                 failure_threshold: int = 1, admission: AdmissionRules | None = None,
                 classes: bool = True, calibrate: bool = True) -> None:
        self.grid, self.arr, self.policy, self.net = grid, arrivals, policy, network
        self.rtt_terms = (network.overhead_ms, network.route_factor, FIBRE_KM_PER_MS, network.jitter_ms)
        """Network.rtt_ms's terms, read once: it is written out in _dispatch (the same operations)."""
        self.routers = [_own(router) for _ in range(max(gateways, 1))]
        """One router per gateway, as each live gateway process holds its own: a baseline's state (round
        robin's counter) is per gateway, not one counter that all the simulated gateways would share."""
        self.loop = EventLoop()
        self.rng = random.Random(seed)
        # Per-call state is kept in the standard library's typed arrays, not numpy's, while the run reads and
        # writes it one element at a time: an element of a numpy array is a numpy scalar, with numpy's slower
        # arithmetic (the same values); array.array gives plain floats and ints and stores them as compactly
        # (Python lists cost about 30 bytes more per element: 400 MB more per run of planet's million).
        # run() hands numpy arrays of the same dtypes to RunResult.
        n = len(arrivals.t)
        self.agents = arrivals.agents
        self.times = _doubles(arrivals.t)
        self.gateway_of = array("q", np.asarray(arrivals.gateway).astype(np.int64).tobytes())
        self.jitter_u = _doubles(arrivals.jitter_u)
        self.sent = _doubles(arrivals.t)
        self.session_e2e = _filled("d", NAN, n)
        self.leg = _filled("d", 0.0, n)
        """Per session: RTT of its latest call that crossed the client-site network."""
        if self.agents is not None:
            n = self.agents.calls
            self.sent += _filled("d", NAN, n - len(self.sent))
        self.engines = [Engine(i, perf, self.loop, self._first, self._done, self._changed)
                        for i, perf in enumerate(grid.perf)]
        self.telemetry = Telemetry(self.loop, len(self.engines), lambda i: self.engines[i].state(),
                                   telemetry_interval_s, telemetry_lag_s)
        self.gw = Gateways(grid, self.telemetry, gateways, local_accounting, circuit_cooldown_s, shared_sync_s,
                           failure_threshold, calibrate)
        if regional is None:
            regional = RegionalView(grid, candidates, pinned_sites, network)
        elif not regional.matches(grid, candidates, pinned_sites, network):
            raise ValueError("the regional view was built for another grid, candidate count or network")
        self.regional = regional
        self.ep_index = {ep.id: i for i, ep in enumerate(grid.endpoints)}
        self.connect_timeout_s = connect_timeout_s
        self.max_attempts = max_attempts
        self.cut: list[tuple[frozenset[str], set[str]]] = []
        """Active partitions: (jurisdictions inside, site ids inside)."""
        self.ttft = _filled("d", NAN, n)
        self.e2e = _filled("d", NAN, n)
        self.tpot = _filled("d", NAN, n)
        self.first_at = _filled("d", NAN, n)
        self.chosen = _filled("i", -1, n)
        self.status = _filled("b", 0, n)
        self.attempts = _filled("b", 0, n)
        self.cost = _filled("d", 0.0, n)
        self.violation = _filled("b", 0, n)
        self.rtt = _filled("d", 0.0, n)
        self.tries: dict[int, frozenset[str]] = {}
        self.prompt = _filled("q", 0, n)
        self.stage = _filled("b", 0, n)
        """Per call, where the deciding gateway's ledger has it: 0 not in it, 1 pending, 2 decoding."""
        self.model_ms = _filled("d", 0.0, n)
        self.model_own_ms = _filled("d", 0.0, n)
        self.oneway = [0.0] * n
        """Per call: the trip to the engine as its gateway reckoned it when sending (half the predicted RTT)."""
        self.predicted = _filled("d", NAN, n)
        """The chosen candidate's point prediction of TTFT (ms) at the last decision."""
        self.floor = _filled("d", NAN, n)
        """The physical floor (s): the nearest allowed site's round trip plus a lone prefill there."""
        self.decisions: list[Decision] | None = [] if keep_decisions else None
        self.outputs = array("q", np.asarray(arrivals.output).astype(np.int64).tobytes())
        self.classes = classes
        self.waited = _filled("b", 0, n)
        self.holder: dict[int, tuple[int, str]] = {}
        """Per call counted in its tenant's in-flight requests: (the gateway counting it, the tenant), kept so
        that releasing it does not build the call's RequestInfo again."""
        self.admission = None if admission is None else Admission(
            self.loop, gateways, admission, shared_sync_s if shared_sync_s > 0 else telemetry_interval_s,
            self._retry_waiting, self._drop, policy.ttft_slo_ms)

    # ---- driving -----------------------------------------------------------------------------------
    def run(self, on_tick: Callable[[float], None] | None = None) -> RunResult:
        if self.times:
            self.loop.at(self.times[0], self._arrive, 0)
        self.telemetry.start()
        self.gw.start(self.loop)
        horizon = self.times[-1] if self.times else 0.0
        self.loop.run(until=horizon, on_tick=on_tick)
        self.telemetry.stopped = True
        self.loop.run(on_tick=on_tick)
        end = max(self.loop.now, 1e-9)
        for e in self.engines:
            e.advance(end)
        utilization = np.array([e.stats.work_s / end for e in self.engines])
        f64 = np.float64
        return RunResult(np.array(self.ttft, f64), np.array(self.e2e, f64), np.array(self.tpot, f64),
                         np.array(self.chosen, np.int32), np.array(self.status, np.int8),
                         np.array(self.attempts, np.int8), np.array(self.cost, f64), np.array(self.violation, bool),
                         np.array(self.rtt, f64), utilization, self.loop.events, end, self.decisions,
                         np.array(self.sent, f64),
                         np.array(self.session_e2e, f64) if self.agents is not None else None, self.agents,
                         np.array(self.predicted, f64), np.array(self.floor, f64), np.array(self.waited, bool))

    def _arrive(self, i: int) -> None:
        if i + 1 < len(self.times):
            self.loop.at(self.times[i + 1], self._arrive, i + 1)
        self._route(i)

    def _route(self, i: int) -> None:
        """A new call at its gateway: behind the ones already waiting there, else routed now."""
        g = self.gateway_of[i]
        if self.admission is not None and self.admission.busy(g):
            item = self._wait(i, self._request(i, frozenset()))
            self.admission.drain(g)
            if item.gone and self.status[i] != SHED:
                self.waited[i] = False  # it took its turn at once: not deferred
        else:
            self._dispatch(i, frozenset())

    def _request(self, i: int, exclude: frozenset[str]) -> RequestInfo:
        req = self.arr.request(i)
        if exclude:
            req = replace(req, exclude_endpoints=exclude)  # keeps every other field (right-sizing's too)
        if not self.classes:
            if req.priority != DEFAULT_LEVEL or req.deadline_ms is not None:
                req = replace(req, priority=DEFAULT_LEVEL, deadline_ms=None)
        elif req.deadline_ms is not None:
            req = replace(req, deadline_ms=req.deadline_ms - (self.loop.now - float(self.sent[i])) * 1000.0)
        return req

    def _wait(self, i: int, req: RequestInfo) -> Waiting[int]:
        assert self.admission is not None
        self.waited[i] = True
        deadline = self.arr.request(i).deadline_ms if self.classes else None
        return self.admission.wait(i, self.gateway_of[i], req.tenant, req.priority, float(self.sent[i]),
                                   deadline)

    def _retry_waiting(self, i: int) -> bool:
        return self._dispatch(i, self.tries.get(i, frozenset()), waiting=True)

    def _drop(self, i: int, why: str) -> None:
        """Call i leaves an admission queue unserved: past its deadline (refused) or shed (429)."""
        deadline = self.arr.request(i).deadline_ms if self.classes else None
        late = deadline is not None and (self.loop.now - float(self.sent[i])) * 1000.0 >= deadline
        self.status[i] = REFUSED_LATE if late and why == "expired" else SHED
        self._release(i)

    def _release(self, i: int) -> None:
        held = self.holder.pop(i, None)
        if held is not None and self.admission is not None:
            self.admission.hold(held[0], held[1], -1)

    def _dispatch(self, i: int, exclude: frozenset[str], waiting: bool = False) -> bool:
        """Route call i; False when it must (keep) wait(ing) at its gateway, True when it left: sent,
        refused or rejected."""
        req = self._request(i, exclude)
        g = self.gateway_of[i]
        where = req.client_location or GeoPoint(0.0, 0.0)
        now = self.loop.now
        tier = 0
        models = tuple(sorted(req.quality)) if req.quality else req.model  # right-sized: every model it may use
        while True:
            idx, eps, distances = self.regional.scored(where, models, req.allowed_jurisdictions, tier)
            view = self.gw.view(g, idx, eps, now, None if req.client_location is None else distances)
            decision = self.routers[g](req, view, self.policy, self.rng)
            if decision.ranked or not self.regional.can_widen(models, tier):  # decision.chosen is not None
                break
            tier += 1
        if self.decisions is not None:
            self.decisions.append(decision)
        # decision.chosen and, below, prediction.ttft_ms written out: compiled, no property's Python frame
        best = decision.ranked[0] if decision.ranked else None
        adm = self.admission  # without one, no SLO to hold a request for (verdict's slo_ms None)
        what = verdict(decision, None) if adm is None else verdict(
            decision, self.policy.ttft_slo_ms, (now - float(self.sent[i])) * 1000.0 if waiting else 0.0,
            adm.rules.engine_queue_share)
        if best is None or what != SEND:
            if what == WAIT and self.admission is not None:
                if not waiting:
                    self._wait(i, req)
                return False
            self.status[i] = REFUSED_LATE if what == LATE else REJECTED
            self._release(i)
            return True
        k = self.ep_index[best.endpoint_id]
        self.prompt[i] = req.prompt_tokens
        oneway = best.prediction.rtt_ms / 2000.0  # what the gateway reckons the trip to the engine takes
        self.oneway[i] = oneway
        self.gw.record_send(g, k, req.prompt_tokens, i, now, now + oneway)
        self.stage[i] = 1
        self.model_ms[i] = best.prediction.model_ahead_ms
        self.model_own_ms[i] = best.prediction.model_own_ms
        if best.scores:  # baselines predict nothing
            self.predicted[i] = best.prediction.rtt_ms + best.prediction.queue_ms + best.prediction.prefill_ms
        if not exclude:
            self.floor[i] = self.regional.floor_s(req.client_location, models, req.allowed_jurisdictions, tier,
                                                  req.prompt_tokens)
        self.chosen[i] = k
        if self.admission is not None and i not in self.holder:
            self.holder[i] = (g, req.tenant)
            self.admission.hold(g, req.tenant)
        self.attempts[i] += 1
        self.tries[i] = exclude | {best.endpoint_id}
        allowed = req.allowed_jurisdictions
        if allowed is not None and best.jurisdiction not in allowed:
            self.violation[i] = True
        self.cost[i] = best.cost_usd
        dist = best.prediction.distance_km  # the router's own distance_km(client, site), computed once
        if dist is None:
            client = req.client_location
            dist = 0.0 if client is None else distance_km(client, self.grid.sites[best.site_id].location)
        # self.net.rtt_ms(dist, u) / 1000.0 written out, the same operations in the same order (no Python frames)
        overhead, factor, fibre, jitter = self.rtt_terms
        rtt = (overhead + factor * 2.0 * dist / fibre - jitter * log1p(-self.jitter_u[i])) / 1000.0
        self.rtt[i] = rtt
        if self.agents is not None:
            self.leg[self.agents.session[i]] = rtt
        if self.cut and self._crosses_cut(i, best.site_id):
            self.loop.after(self.connect_timeout_s, self._failover, (i, k))
        else:
            self.loop.after(rtt / 2, self._reach, (i, k))
        return True

    def _reach(self, arg: tuple[int, int]) -> None:
        i, k = arg
        engine = self.engines[k]
        if not engine.up:
            self.loop.after(self.rtt[i] / 2, self._failover, (i, k))
            return
        pre, tokens = self.arr.prefix, self.arr.prefix_tokens
        engine.submit(Job(i, self.prompt[i], self.outputs[i], self.loop.now,
                          *((-1, 0) if pre is None or tokens is None else (int(pre[i]), int(tokens[i])))))

    def _failover(self, arg: tuple[int, int]) -> None:
        i, k = arg
        g = self.gateway_of[i]
        self._unbook(i, k)
        self.gw.record_failure(g, k, self.loop.now)
        if self.attempts[i] >= self.max_attempts:
            self.status[i] = FAILED
            self._release(i)
            return
        self._dispatch(i, self.tries.get(i, frozenset()))

    def _first(self, job: Job, now: float) -> None:
        i = job.rid
        if isnan(self.ttft[i]):  # math.isnan: numpy's costs ~6x as much on one element
            self.ttft[i] = now + self.rtt[i] / 2 - self.sent[i]
            self.first_at[i] = now
        if self.stage[i] == 1:  # the gateway sees the first token half a round trip later
            self.loop.after(self.rtt[i] / 2, self._seen_first, (i, int(self.chosen[i]), now - job.enqueued))

    def _seen_first(self, arg: tuple[int, int, float]) -> None:
        i, k, engine_s = arg
        if self.stage[i] != 1 or self.chosen[i] != k:
            return
        self.stage[i] = 2
        now = self.loop.now
        pre = self.arr.prefix
        if pre is not None and pre[i] >= 0:
            self.gw.remember_prefix(self.gateway_of[i], prefix_key(int(pre[i])), k)
        self.gw.record_first_token(self.gateway_of[i], k, int(self.prompt[i]),
                                   float(self.model_ms[i]), float(self.model_own_ms[i]), engine_s * 1000.0,
                                   i, now, now - self.oneway[i])

    def _seen_done(self, arg: tuple[int, int]) -> None:
        self._unbook(*arg)
        self._release(arg[0])
        if self.admission is not None:
            g = self.gateway_of[arg[0]]
            if self.admission.busy(g):
                self.admission.drain(g)

    def _unbook(self, i: int, k: int) -> None:
        """Take call i off its gateway's ledger for endpoint k (finished, failed or lost)."""
        if self.stage[i] and self.chosen[i] == k:
            self.gw.record_finished(self.gateway_of[i], k, int(self.prompt[i]),
                                    self.stage[i] == 2, i, self.loop.now)
            self.stage[i] = 0

    def _done(self, job: Job, now: float) -> None:
        i = job.rid
        if self.stage[i]:
            self.loop.after(self.rtt[i] / 2, self._seen_done, (i, int(self.chosen[i])))
        self.e2e[i] = now + self.rtt[i] / 2 - self.sent[i]
        if job.output > 1:
            self.tpot[i] = (now - job.first_token) / (job.output - 1)
        self.status[i] = OK
        self.tries.pop(i, None)
        if self.agents is not None:
            self._next_step(i, now)

    # ---- agent sessions ----------------------------------------------------------------------------
    def _next_step(self, i: int, now: float) -> None:
        plan = self.agents
        assert plan is not None
        s, j = int(plan.session[i]), int(plan.next_call[i])
        if j < 0:
            if plan.steps[s] > 0:  # the final answer travels back over the session's latest network leg
                self.session_e2e[s] = now + self.leg[s] / 2 - self.times[s]
            return
        if plan.site_loop[s]:
            self.loop.after(float(plan.tool_s[s]), self._site_call, (j, int(self.chosen[i]), i))
        else:  # back to the client, the tool runs there, the next call is routed afresh
            self.loop.after(self.rtt[i] / 2 + float(plan.tool_s[s]), self._client_call, j)

    def _client_call(self, j: int) -> None:
        self.sent[j] = self.loop.now
        self._route(j)

    def _site_call(self, arg: tuple[int, int, int]) -> None:
        j, k, prev = arg
        self.sent[j] = self.loop.now
        self.prompt[j] = self.arr.request(j).prompt_tokens
        self.chosen[j], self.cost[j], self.violation[j] = k, self.cost[prev], self.violation[prev]
        self.tries[j] = frozenset({self.grid.endpoints[k].id})
        self._reach((j, k))

    def _changed(self, index: int) -> None:
        self.telemetry.changed(index)

    # ---- faults ------------------------------------------------------------------------------------
    def take_down(self, indices: Sequence[int]) -> None:
        for k in indices:
            for job in self.engines[k].fail():
                self.loop.after(self.rtt[job.rid] / 2, self._failover, (job.rid, k))

    def bring_up(self, indices: Sequence[int]) -> None:
        for k in indices:
            self.engines[k].recover()

    def _crosses_cut(self, i: int, site_id: str) -> bool:
        client = self.arr.jurisdiction(i)
        return any((client in inside_j) != (site_id in inside_sites) for inside_j, inside_sites in self.cut)
