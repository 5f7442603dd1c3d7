"""Per-policy figures of one run, as summary.json reports them.

ttft/tpot/e2e percentiles are over served requests. goodput is the fraction of all requests served within
the SLO of their class (slo.by_class, else the scenario's TTFT and TPOT). rejected counts every request not
served: no eligible endpoint (Decision.chosen is None), every attempt failed (`failed`), shed by an
admission queue (`shed`: waited past its class's longest wait or pushed out of a full queue, a 429 live) or
refused because its deadline could not be met (`refused_late`). `deferred` counts requests that waited in
an admission queue at least once. by_class has goodput, TTFT percentiles and these counts per class. mean_utilization is the
mean over endpoints of served work (at
peak efficiency) over elapsed time: the share of capacity in use.

With agent sessions every model call counts as a request (calls never issued because their session ended
unfinished do not), and the agent_* keys of sim/agents.py are added; with right-sized tenants,
right_size_by_tenant (sim/right_size.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from aigrid.core.urgency import class_of
from aigrid.sim.agents import agent_summary
from aigrid.sim.grid import Grid
from aigrid.sim.right_size import right_size_summary
from aigrid.sim.runner import FAILED, NOT_SERVED, OK, PENDING, REFUSED_LATE, SHED, RunResult
from aigrid.sim.scenario import Scenario
from aigrid.sim.workload import Workload

SUMMARY_KEYS = ("requests", "ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms", "tpot_p50_ms", "e2e_p99_ms", "goodput",
                "cost_usd", "residency_violations", "rejected", "mean_utilization", "pred_err_p50", "pred_err_p90",
                "floor_ratio_p50", "floor_ratio_p99")


@dataclass(frozen=True)
class PolicyMetrics:
    requests: int
    ttft_p50_ms: float
    ttft_p90_ms: float
    ttft_p99_ms: float
    tpot_p50_ms: float
    e2e_p99_ms: float
    goodput: float
    cost_usd: float
    residency_violations: int
    rejected: int
    mean_utilization: float
    failed: int
    offered_rps: float
    by_tenant_rejected: dict[str, int]
    pred_err_p50: float = float("nan")
    """Median |observed - predicted| / observed TTFT over requests served on their first attempt without
    waiting in an admission queue (aigrid's policies; the baselines predict nothing: NaN)."""
    pred_err_p90: float = float("nan")
    floor_ratio_p50: float = float("nan")
    """TTFT / physical floor (nearest allowed site's round trip plus a lone prefill there), median and p99."""
    floor_ratio_p99: float = float("nan")
    agent: dict[str, object] = field(default_factory=dict)
    """agent_* figures (sim/agents.py); empty without agent tenants."""
    right_size: dict[str, object] = field(default_factory=dict)
    """right_size_by_tenant (sim/right_size.py); empty without right-sized tenants."""
    shed: int = 0
    refused_late: int = 0
    deferred: int = 0
    by_class: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per urgency class present in the traffic: requests, goodput, ttft_p50_ms, ttft_p99_ms, shed,
    refused_late, deferred, unserved."""

    def summary(self) -> dict[str, object]:
        d = asdict(self)
        extra: dict[str, object] = {}
        if self.shed or self.refused_late or self.deferred or len(self.by_class) > 1:
            extra = {"shed": self.shed, "refused_late": self.refused_late, "deferred": self.deferred,
                     "by_class": self.by_class}
        return {**{k: d[k] for k in SUMMARY_KEYS}, **extra, **self.agent, **self.right_size}


def _pct(x: np.ndarray, q: float) -> float:
    x = x[~np.isnan(x)]
    return round(float(np.percentile(x, q)) * 1000.0, 3) if len(x) else float("nan")


def summarize(sc: Scenario, grid: Grid, w: Workload, r: RunResult) -> PolicyMetrics:
    ok = r.status == OK
    ttft, tpot = r.ttft_s[ok], r.tpot_s[ok]
    plan = r.agents
    tenant = w.tenant if plan is None else w.tenant[plan.session]
    klass = np.array([class_of(t.level) for t in sc.tenants])[tenant] if len(tenant) else np.array([], dtype=str)
    slo = np.array([sc.slo.for_class(class_of(t.level)) for t in sc.tenants]).reshape(-1, 2)[tenant] / 1000.0
    within = ok & (np.nan_to_num(r.ttft_s, nan=np.inf) <= slo[:, 0]) & (np.nan_to_num(r.tpot_s, nan=0.0) <= slo[:, 1])
    n = int((r.status != PENDING).sum()) if plan is not None else len(r.status)
    not_served = np.isin(r.status, NOT_SERVED)
    waited = r.waited if r.waited is not None else np.zeros(len(r.status), dtype=bool)
    by_tenant = {name: int(not_served[tenant == k].sum()) for k, name in enumerate(w.tenant_names)}
    agent = {} if plan is None or r.session_e2e_s is None else \
        agent_summary(sc, w, plan, r.session_e2e_s, r.attempts, r.rtt_s)
    err50 = err90 = fl50 = fl99 = float("nan")
    if r.predicted_ms is not None:
        sel = ok & (r.attempts == 1) & ~np.isnan(r.predicted_ms) & ~waited  # a wait at the gateway is not predicted
        if sel.any():
            obs = r.ttft_s[sel] * 1000.0
            err = np.abs(obs - r.predicted_ms[sel]) / np.maximum(obs, 1e-3)
            err50, err90 = round(float(np.median(err)), 4), round(float(np.percentile(err, 90)), 4)
    if r.floor_s is not None:
        sel = ok & ~np.isnan(r.floor_s) & (r.floor_s > 0)
        if sel.any():
            ratio = r.ttft_s[sel] / r.floor_s[sel]
            fl50, fl99 = round(float(np.median(ratio)), 3), round(float(np.percentile(ratio, 99)), 3)
    return PolicyMetrics(
        requests=n, ttft_p50_ms=_pct(ttft, 50), ttft_p90_ms=_pct(ttft, 90), ttft_p99_ms=_pct(ttft, 99),
        tpot_p50_ms=_pct(tpot, 50), e2e_p99_ms=_pct(r.e2e_s[ok], 99),
        goodput=round(float(within.sum()) / n, 6) if n else 0.0,
        cost_usd=round(float(r.cost_usd[ok].sum()), 6),
        residency_violations=int(r.violation.sum()), rejected=int(not_served.sum()),
        mean_utilization=round(float(r.utilization.mean()), 6) if len(r.utilization) else 0.0,
        failed=int((r.status == FAILED).sum()), offered_rps=round(n / sc.duration_s, 4),
        by_tenant_rejected=by_tenant, pred_err_p50=err50, pred_err_p90=err90, floor_ratio_p50=fl50,
        floor_ratio_p99=fl99, agent=agent,
        right_size=right_size_summary(sc, grid, w, r.status, r.endpoint, r.ttft_s, r.cost_usd),
        shed=int((r.status == SHED).sum()),
        refused_late=int((r.status == REFUSED_LATE).sum()), deferred=int(waited.sum()),
        by_class=_by_class(r, klass, ok, within, not_served, waited),
    )


def _by_class(r: RunResult, klass: np.ndarray, ok: np.ndarray, within: np.ndarray, not_served: np.ndarray,
              waited: np.ndarray) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    issued = r.status != PENDING
    for name in sorted(set(klass.tolist())):
        sel = (klass == name) & issued
        n = int(sel.sum())
        if not n:
            continue
        out[name] = {"requests": n, "goodput": round(float((within & sel).sum()) / n, 6),
                     "ttft_p50_ms": _pct(r.ttft_s[ok & sel], 50), "ttft_p99_ms": _pct(r.ttft_s[ok & sel], 99),
                     "shed": int((sel & (r.status == SHED)).sum()),
                     "refused_late": int((sel & (r.status == REFUSED_LATE)).sum()),
                     "deferred": int((sel & waited).sum()), "unserved": int((sel & not_served).sum())}
    return out
