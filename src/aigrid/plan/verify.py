"""Verify a placement in the simulator and refine its sizes until it passes every check at the lowest size.

A check passes when every tenant has at least slo.attainment of its requests served within the TTFT and
TPOT SLO and no request ran outside its allowed jurisdictions. Refinement, one round = every check once:
- a failing check: each site where more than (1 - attainment) of what it served missed the SLO gets more
  replicas (20%, at least one); if it missed while lightly used (utilisation under LATENCY_UTIL), the
  problem is prefill time, not capacity, and it moves to the next faster hardware offered instead;
- a passing round: every site whose busiest check left it under TRIM_UTIL even with one replica fewer
  loses one; if that breaks a check, the sites that broke it are restored and never trimmed again.
The cheapest placement that passed is kept. A failure no site explains (requests rejected or sent nowhere
allowed) cannot be fixed by sizes: the verdict says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from aigrid.plan.checks import Check, checks_for, scenario_for
from aigrid.plan.demand import Demand
from aigrid.plan.placement import Placement, price_of
from aigrid.plan.runs import Backend, Outcome
from aigrid.plan.traffic import Traffic
from aigrid.sim.hardware import HARDWARE

TRIM_UTIL = 0.6
LATENCY_UTIL = 0.25


@dataclass
class Verdict:
    placement: Placement
    outcomes: list[Outcome]
    passed: bool
    reason: str = ""
    rounds: int = 0
    history: list[tuple[float, bool]] = field(default_factory=list)
    """(usd per hour, passed) of every round."""


def passes(outcome: Outcome, attainment: float) -> bool:
    return outcome["residency_violations"] == 0 and all(
        t["attainment"] >= attainment for t in outcome["tenants"].values())


def _culprits(outcomes: list[Outcome], attainment: float) -> dict[str, float]:
    """Site -> its highest utilisation among the failing checks in which it missed the SLO too often."""
    out: dict[str, float] = {}
    for o in outcomes:
        if passes(o, attainment):
            continue
        for sid, s in o["sites"].items():
            if sid != o["check"]["failed"] and s["served"] and s["bad"] / s["served"] > 1.0 - attainment:
                out[sid] = max(out.get(sid, 0.0), s["utilization"])
    return out


def _why(outcomes: list[Outcome], attainment: float) -> str:
    bad = [o for o in outcomes if not passes(o, attainment)]
    if not bad:
        return ""
    o = bad[0]
    worst = min(o["tenants"].items(), key=lambda kv: kv[1]["attainment"])
    where = "all sites up" if o["check"]["failed"] is None else f"{o['check']['failed']} down"
    return (f"{o['check']['hour']:02d}:00 UTC, {where}: tenant {worst[0]} gets {worst[1]['attainment']:.1%} "
            f"within the SLO ({o['rejected']} requests not served, {o['residency_violations']} residency violations)")


class Verifier:
    def __init__(self, demand: Demand, traffic: Traffic, backend: Backend,
                 on_run: Callable[[], None] | None = None, on_plan: Callable[[int], None] | None = None) -> None:
        self.demand, self.traffic, self.backend = demand, traffic, backend
        self.on_run, self.on_plan = on_run, on_plan
        self.attainment = demand.slo.attainment
        self.runs = 0

    def checks(self, placement: Placement, site_load: dict[str, np.ndarray]) -> list[Check]:
        return checks_for(placement, self.traffic, site_load, self.demand.verify.peak_windows)

    def run(self, placement: Placement, checks: list[Check]) -> list[Outcome]:
        jobs = [{"scenario": scenario_for(self.demand, self.traffic, placement, c).model_dump(),
                 "check": {"hour": c.hour, "failed": c.failed, "label": c.label}} for c in checks]
        if self.on_plan:
            self.on_plan(len(jobs))
        self.runs += len(jobs)
        return self.backend.map(jobs, self.on_run)

    def _faster(self, hardware: str) -> str | None:
        offered = sorted(self.demand.supply.hardware, key=lambda h: -HARDWARE[h].bf16_tflops)
        i = offered.index(hardware) if hardware in offered else len(offered)
        return offered[i - 1] if i > 0 else None

    def refine(self, placement: Placement, site_load: dict[str, np.ndarray], max_rounds: int | None = None,
               grow_only: bool = False) -> Verdict:
        rounds = max_rounds or self.demand.verify.max_rounds
        checks = self.checks(placement, site_load)
        current, best, history = placement, None, []
        no_trim: set[str] = set()
        last_trim: list[str] = []
        outcomes: list[Outcome] = []
        for k in range(rounds):
            outcomes = self.run(current, checks)
            ok = all(passes(o, self.attainment) for o in outcomes)
            history.append((current.usd_per_hour, ok))
            if ok:
                if best is None or current.usd_per_hour <= best.placement.usd_per_hour:
                    best = Verdict(current, outcomes, True, rounds=k + 1)
                if grow_only:
                    break
                peak_util = {s.id: max(o["sites"].get(s.id, {}).get("utilization", 0.0) for o in outcomes)
                             for s in current.sites}
                last_trim = []
                for s in current.sites:
                    n = sum(r for _, r in s.replicas)
                    if s.id in no_trim or n <= len(s.replicas):
                        continue
                    if peak_util[s.id] * n / (n - 1) < TRIM_UTIL:
                        last_trim.append(s.id)
                if not last_trim:
                    break
                for sid in last_trim:
                    current = current.scaled(sid, -1)
                continue
            culprits = _culprits(outcomes, self.attainment)
            if last_trim and best is not None:
                broke = [s for s in last_trim if s in culprits] or last_trim
                no_trim.update(broke)
                current = best.placement
                for sid in last_trim:
                    if sid not in broke:
                        current = current.scaled(sid, -1)
                last_trim = []
                continue
            if not culprits:
                break
            for sid, util in culprits.items():
                site = current.site(sid)
                faster = self._faster(site.hardware) if util < LATENCY_UTIL else None
                if faster is not None:
                    price, gpus = price_of(self.demand, faster)
                    current = current.rehoused(sid, faster, price, gpus)
                else:
                    n = max(r for _, r in site.replicas)
                    current = current.scaled(sid, max(1, math.ceil(0.2 * n)))
        if best is not None:
            best.history = history
            return best
        return Verdict(current, outcomes, False, _why(outcomes, self.attainment) or "no site explains the misses",
                       rounds=len(history), history=history)
