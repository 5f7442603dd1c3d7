"""Agent workloads: sessions of model calls and tool runs, with the loop at the client or at the site.

An arrival of an agent tenant (`Tenant.agent`: steps N, tool_ms T, loop) starts a session of N + 1 model
calls separated by N tool runs of T. Every model call goes through the simulated engines (queueing,
batching); nothing here is a latency formula.

- loop=client: the client runs the loop. Each model call is a separate request routed by a gateway; its
  answer travels back to the client (half a round trip), the client runs the tool (T), and the next call
  travels to its site (half a round trip, routed afresh). N + 1 client-site round trips per session.
- loop=site: the loop runs beside the engine chosen for the first call. Routing is decided once; each
  following call is submitted to the same endpoint T after the previous one finished, without the network
  and without the gateway. One round trip per session: the request in, the final answer out.

A session ends when its final answer reaches the client; its e2e is measured from its arrival. A call that
is rejected or fails for good ends its session unfinished (no e2e). `round_trips` counts every dispatch
that crossed the client-site network, failed connection attempts included.

Call indices: a run's arrivals are 0..n-1 (each session's first call); the follow-up calls of an arrival
are numbered contiguously from n, in arrival order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from aigrid.sim.scenario import Scenario
from aigrid.sim.workload import Workload

JITTER_STREAM = 6
"""Sub-seed of the generator that draws the network jitter of follow-up calls (the workload's own
generator is left untouched, so scenarios without agents replay exactly as before)."""


@dataclass(frozen=True)
class AgentPlan:
    n: int
    """Arrivals: calls 0..n-1 are first calls (and ordinary requests)."""
    session: np.ndarray
    """Per call: the arrival that started its session (itself for a first call)."""
    step: np.ndarray
    """Per call: 0 for a first call, k for the call after the k-th tool run."""
    next_call: np.ndarray
    """Per call: the session's next call, -1 after its last."""
    steps: np.ndarray
    """Per arrival: tool steps N of its session (0 for an ordinary request)."""
    tool_s: np.ndarray
    """Per arrival: time of one tool run."""
    site_loop: np.ndarray
    """Per arrival: True when the loop runs at the site."""
    extra_jitter_u: np.ndarray
    """Per follow-up call (index - n): its own network jitter draw (used when it crosses the network)."""

    @property
    def calls(self) -> int:
        return len(self.session)


def plan_agents(sc: Scenario, w: Workload) -> AgentPlan | None:
    """The sessions of a workload, or None when no tenant is an agent."""
    agents = [t.agent for t in sc.tenants]
    if all(a is None for a in agents):
        return None
    tenant = w.tenant.astype(np.int64)
    steps = np.array([a.steps if a else 0 for a in agents], dtype=np.int64)[tenant]
    tool_s = np.array([a.tool_ms / 1000.0 if a else 0.0 for a in agents])[tenant]
    site_loop = np.array([a is not None and a.loop == "site" for a in agents], dtype=bool)[tenant]
    n, extra = len(w), int(steps.sum())
    first_extra = n + np.concatenate([[0], np.cumsum(steps)[:-1]]).astype(np.int64)
    owner = np.repeat(np.arange(n), steps)
    offset = np.arange(extra) - (np.repeat(first_extra, steps) - n)
    next_call = np.full(n + extra, -1, dtype=np.int64)
    next_call[:n] = np.where(steps > 0, first_extra, -1)
    more = offset + 1 < steps[owner]
    next_call[n:][more] = np.arange(n, n + extra)[more] + 1
    rng = np.random.default_rng([sc.seed, JITTER_STREAM])
    return AgentPlan(
        n=n, session=np.concatenate([np.arange(n), owner]),
        step=np.concatenate([np.zeros(n, dtype=np.int64), offset + 1]), next_call=next_call, steps=steps,
        tool_s=tool_s, site_loop=site_loop, extra_jitter_u=rng.random(extra),
    )


def _ms(x: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(x, q)) * 1000.0, 3) if len(x) else None


def _figures(mask: np.ndarray, e2e_s: np.ndarray, trips: np.ndarray, rtt_s: np.ndarray) -> dict[str, object]:
    done = mask & ~np.isnan(e2e_s)
    mean_trips = float(trips[done].mean()) if done.any() else math.nan
    return {
        "sessions": int(mask.sum()), "unfinished": int((mask & ~done).sum()),
        "e2e_p50_ms": _ms(e2e_s[done], 50), "e2e_p99_ms": _ms(e2e_s[done], 99),
        "round_trips": round(mean_trips, 3) if math.isfinite(mean_trips) else None,
        "rtt_p50_ms": _ms(rtt_s[mask], 50),
    }


def agent_summary(sc: Scenario, w: Workload, plan: AgentPlan, session_e2e_s: np.ndarray, attempts: np.ndarray,
                  rtt_s: np.ndarray) -> dict[str, object]:
    """Per policy: agent_sessions, agent_unfinished, agent_e2e_p50_ms, agent_e2e_p99_ms, agent_round_trips
    (client-site round trips per finished session) and agent_rtt_p50_ms (the RTT of sessions' first calls),
    over every agent session; the same per agent tenant under agent_by_tenant."""
    trips = np.bincount(plan.session, weights=attempts.astype(float), minlength=plan.n)[: plan.n]
    rtt = rtt_s[: plan.n]
    out: dict[str, object] = {f"agent_{k}": v
                              for k, v in _figures(plan.steps > 0, session_e2e_s, trips, rtt).items()}
    by_tenant: dict[str, object] = {}
    for k, tenant in enumerate(sc.tenants):
        if tenant.agent is not None:
            a = tenant.agent
            by_tenant[tenant.name] = {"loop": a.loop, "steps": a.steps, "tool_ms": a.tool_ms,
                                      **_figures(w.tenant == k, session_e2e_s, trips, rtt)}
    out["agent_by_tenant"] = by_tenant
    return out
