"""Verify a placement in the simulator and refine its sizes until it passes every check at the lowest size.

A check passes when every tenant has at least slo.attainment of its requests served within the TTFT and
TPOT SLO and no request ran outside its allowed jurisdictions. Refinement, one round = every check once:
- a failing check: each site where more than (1 - attainment) of what it served missed the SLO gets more
  replicas (its share of misses, between 20% and 50%, at least one); if it missed while lightly used
  (utilisation under LATENCY_UTIL), the problem is prefill time, not capacity, and it moves to the next
  faster hardware offered instead; when misses are spread too thin for any site to cross that share, the
  site with the most misses grows. Only the failing checks run again, until they pass; then the others
  are confirmed on the final sizes (adding capacity can still move traffic). Growth keeps each site's
  limit, the one the screen sized it within (supply.device_cap, carried as PlannedSite.max_devices): a
  site grows at most to it, does not move to faster hardware its replicas would not fit on, and a site
  that must grow while at its limit ends refinement: the placement fails as infeasible there (the
  verdict's reason and the progress log name the site);
- a passing placement: every site whose busiest check left it under TRIM_UTIL even with one replica fewer
  loses one, and all checks run again; if trimming them together breaks a check, or no site is that idle,
  every site is tried one at a time from then on (the least used first, whatever its utilisation), and a
  site whose own trim breaks a check is never trimmed again. So each placement, the plan's and the naive
  ones alike, ends at a size where no single replica can go without failing a check;
- then, for the proposals only (refine(moves=True); the naive shapes keep the rules above), the hardware
  move (plan/moves.py): each site, the dearest first, on each cheaper offered hardware option within its
  limit, the cheapest candidate first; the first that passes every check on every sample is kept and trimming runs again
  (TRIMS_AFTER_MOVE rounds), all within verify.move_trials runs of the checks per placement. A candidate runs
  in three batches and stops at the first that fails: the one check most likely to fail (the one that failed
  the most earlier candidates of this placement, else the one closest to failing before), then the rest of
  the third of the checks in that order, then the others. When every single-site move has been tried and
  failed, the two-site moves follow (moves.pair_moves, screened by the pooled model: moves.screened), within
  verify.pair_trials candidates per placement; a kept one is trimmed again (TRIMS_AFTER_MOVE rounds, counted
  against verify.pair_trials) and the next two-site move is tried. A candidate that drops a site is checked
  at the same hours with every site up and each of its own sites down.
With verify.samples = N every check runs on N arrival samples (checks.scenario_for) and stands for the worst
of them (worst_sample): it passes only if every sample passes, and refinement reads the worst sample's
misses and, per site, the highest utilisation of any sample.
The cheapest placement that passed is kept. A failure no site explains (requests rejected or sent nowhere
allowed) cannot be fixed by sizes: the verdict says so.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from aigrid.plan.checks import Check, checks_for, scenario_for
from aigrid.plan.chunks import chunk_for
from aigrid.plan.demand import Demand
from aigrid.plan.moves import dearest_first, pair_moves, screened, site_moves
from aigrid.plan.placement import Placement, cap_of, chunk_of, price_of
from aigrid.plan.runs import Backend, Outcome
from aigrid.plan.traffic import Traffic
from aigrid.sim.hardware import HARDWARE

TRIM_UTIL = 0.6
LATENCY_UTIL = 0.25
TRIMS_AFTER_MOVE = 2
"""Trim rounds after each hardware move kept (they count against verify.move_trials)."""


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


def _worst_tenant(outcome: Outcome) -> float:
    return min((t["attainment"] for t in outcome["tenants"].values()), default=1.0)


def worst_sample(samples: list[Outcome], attainment: float) -> Outcome:
    """One check's outcome from its arrival samples (in sample order): the worst one, a failing sample before
    any passing one, then the lowest share of its worst tenant within the SLO, then the most not served (ties:
    the first sample). With more than one sample it also says which (`sample`), of how many (`samples`) and how
    many passed (`samples_passed`), and each site's utilisation is the highest of any sample (what trimming
    reads). One sample is returned as it is."""
    if len(samples) == 1:
        return samples[0]
    k = min(range(len(samples)), key=lambda i: (passes(samples[i], attainment), _worst_tenant(samples[i]),
                                                 -samples[i]["rejected"], i))
    worst = dict(samples[k])
    worst["sites"] = {sid: {**s, "utilization": max(o["sites"].get(sid, {}).get("utilization", 0.0)
                                                    for o in samples)} for sid, s in worst["sites"].items()}
    worst.update(sample=k, samples=len(samples), samples_passed=sum(passes(o, attainment) for o in samples))
    return worst


def _culprits(outcomes: list[Outcome], attainment: float) -> dict[str, tuple[float, float]]:
    """Site -> (highest utilisation, highest share missing the SLO) among the failing checks in which it
    missed the SLO too often."""
    out: dict[str, tuple[float, float]] = {}
    for o in outcomes:
        if passes(o, attainment):
            continue
        for sid, s in o["sites"].items():
            bad = s["bad"] / s["served"] if s["served"] else 0.0
            if sid != o["check"]["failed"] and bad > 1.0 - attainment:
                u, b = out.get(sid, (0.0, 0.0))
                out[sid] = (max(u, s["utilization"]), max(b, bad))
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
                 on_run: Callable[[], None] | None = None, on_plan: Callable[[int], None] | None = None,
                 note: Callable[[str], None] | None = None,
                 utilisation: Callable[[Placement], float | None] | None = None) -> None:
        """`utilisation`: the analytical screen of two-site moves (moves.pool_utilisation with the planner's
        pooled model); None: every two-site candidate may run, the cheapest first."""
        self.demand, self.traffic, self.backend = demand, traffic, backend
        self.utilisation = utilisation
        self.on_run, self.on_plan = on_run, on_plan
        self.note = note or (lambda line: None)
        self.attainment = demand.slo.attainment
        self.samples = demand.verify.samples
        self.runs = 0

    def checks(self, placement: Placement, site_load: dict[str, np.ndarray], also: Sequence[int] = ()) -> list[Check]:
        return checks_for(placement, self.traffic, site_load, self.demand.verify.peak_windows, also)

    def run(self, placement: Placement, checks: list[Check]) -> list[Outcome]:
        """Each check on each of its arrival samples (one run each, all in one batch for the backend), then one
        outcome per check: the worst of its samples."""
        n = self.samples
        jobs = [{"scenario": scenario_for(self.demand, self.traffic, placement, c, k).model_dump(),
                 "check": {"hour": c.hour, "failed": c.failed, "label": c.label}} for c in checks for k in range(n)]
        if self.on_plan:
            self.on_plan(len(jobs))
        self.runs += len(jobs)
        runs = self.backend.map(jobs, self.on_run)
        out = [worst_sample(runs[i:i + n], self.attainment) for i in range(0, len(runs), n)]
        bad = sum(not passes(o, self.attainment) for o in out)
        self.note(f"{placement.label}: {len(placement.sites)} sites, {placement.devices} devices, "
                  f"${placement.usd_per_hour:.2f}/h: {len(out) - bad} of {len(out)} checks pass"
                  f"{f' on all {n} arrival samples' if n > 1 else ''}")
        return out

    def _faster(self, hardware: str) -> str | None:
        offered = sorted((h for h in self.demand.supply.hardware if h == hardware or chunk_for(self.demand, h)),
                         key=lambda h: -HARDWARE[h].bf16_tflops)
        i = offered.index(hardware) if hardware in offered else len(offered)
        return offered[i - 1] if i > 0 else None

    def refine(self, placement: Placement, site_load: dict[str, np.ndarray], max_rounds: int | None = None,
               also_hours: Sequence[int] = (), moves: bool = False) -> Verdict:
        """Grow until every check passes (re-running only the failing checks, then confirming the rest on the
        final sizes), then trim; every claim in the verdict was simulated on the verdict's own placement.
        The checks are at the placement's own peak hours and at `also_hours` (a naive placement is checked
        at the plan's hours too). With `moves`, a passing placement whose trimming has ended then tries the
        hardware moves (plan/moves.py: a site to cheaper hardware) and trims again after each one kept, within
        verify.move_trials runs of the checks."""
        budget = max_rounds or self.demand.verify.max_rounds
        checks = self.checks(placement, site_load, also_hours)
        current = placement
        latest: dict[int, tuple[object, Outcome]] = {}
        best: Verdict | None = None
        history: list[tuple[float, bool]] = []
        no_trim: set[str] = set()
        one_at_a_time = False
        rounds = 0
        trials = self.demand.verify.move_trials if moves else 0  # the hardware moves' runs of the checks left
        pairs = self.demand.verify.pair_trials if trials > 0 else 0  # the two-site moves' runs of the checks left
        moved_sites: set[str] = set()
        tried: set[object] = set()  # the two-site candidates simulated (placement keys)
        failed_trials: Counter[Check] = Counter()  # per check: the move candidates it failed
        after_move: int | None = None  # the round the latest accepted move ended at
        by_pair = False  # the latest accepted move was a two-site one (its trims count against `pairs`)
        stop = ""  # why growing stopped: a site that must grow is at its limit
        while True:
            while rounds < budget:
                key = current.key()
                failing = [i for i, (k, o) in latest.items() if not passes(o, self.attainment)]
                todo = failing or [i for i in range(len(checks)) if i not in latest or latest[i][0] != key]
                if not todo and best is not None and best.placement.key() == key:
                    seen = [o for _, o in latest.values()]
                    trimmed = self._trim(current, seen, no_trim, one_at_a_time)
                    if trimmed is None and not one_at_a_time:  # no site left below TRIM_UTIL: try each alone
                        one_at_a_time = True
                        trimmed = self._trim(current, seen, no_trim, one_at_a_time)
                    if trimmed is None:
                        break
                    current, trims = trimmed
                    outcomes = self.run(current, checks)
                    rounds += 1
                    ok = all(passes(o, self.attainment) for o in outcomes)
                    history.append((current.usd_per_hour, ok))
                    if ok:
                        latest = {i: (current.key(), o) for i, o in enumerate(outcomes)}
                        best = Verdict(current, outcomes, True, rounds=rounds)
                    else:
                        culprits = _culprits(outcomes, self.attainment)
                        if len(trims) > 1 and not one_at_a_time:
                            one_at_a_time = True  # trimming together broke it: try the sites one by one
                        else:
                            no_trim.update([s for s in trims if s in culprits] or trims)
                        current = best.placement
                    continue
                outcomes = self.run(current, [checks[i] for i in todo])
                rounds += 1
                for i, o in zip(todo, outcomes, strict=True):
                    latest[i] = (key, o)
                fresh = all(k == key for k, _ in latest.values()) and len(latest) == len(checks)
                ok = all(passes(o, self.attainment) for _, o in latest.values())
                if fresh:
                    history.append((current.usd_per_hour, ok))
                if ok and fresh:
                    best = Verdict(current, [latest[i][1] for i in range(len(checks))], True, rounds=rounds)
                    continue
                if ok:
                    continue  # every check passes, some on smaller sizes: confirm them on these
                grown = self._grow(current, [o for _, o in latest.values()])
                if isinstance(grown, str):
                    if grown:
                        stop = grown
                        self.note(f"{current.label}: {grown}")
                    break
                current = grown
            if after_move is not None:  # the trims after a move count as its trials
                if by_pair:
                    pairs -= rounds - after_move
                else:
                    trials -= rounds - after_move
            if best is None or (trials <= 0 and pairs <= 0):
                break
            moved, used = None, 0
            if trials > 0:
                moved, used = self._move(best, checks, trials, moved_sites, history, failed_trials)
                rounds += used
                trials -= used
            by_pair = False
            if moved is None and pairs > 0 and all(s.id in moved_sites for s in best.placement.sites):
                # every single-site move was tried and failed: two sites at once
                moved, used, checks = self._pair_move(best, checks, pairs, tried, history, failed_trials)
                rounds += used
                pairs -= used
                by_pair = True
            if moved is None:
                break
            best, current = moved, moved.placement  # then trim again, within what is left of the trials
            latest = {i: (current.key(), o) for i, o in enumerate(moved.outcomes)}
            no_trim, one_at_a_time = set(), False
            after_move, budget = rounds, rounds + min(TRIMS_AFTER_MOVE, pairs if by_pair else trials)
        if best is not None:
            best.history = history
            return best
        outcomes = [o for _, o in latest.values()]
        why = _why(outcomes, self.attainment)
        reason = f"{stop} ({why})" if stop and why else stop or why or "no site explains the misses"
        return Verdict(current, outcomes, False, reason, rounds=rounds, history=history)

    def _move(self, best: Verdict, checks: list[Check], trials: int, moved_sites: set[str],
              history: list[tuple[float, bool]], failed_trials: Counter[Check]) -> tuple[Verdict | None, int]:
        """The first candidate of plan/moves.py (sites dearest first, each site's cheapest option first) that
        passes every check, within `trials` runs of the checks; (verdict or None, trials used). A site whose
        candidates all failed, or whose move was kept, is not tried again."""
        used = 0
        placement = best.placement
        for sid in dearest_first(placement):
            if sid in moved_sites:
                continue
            for candidate in site_moves(self.demand, self.traffic, placement, sid):
                if used >= trials:
                    return None, used
                used += 1
                site = candidate.site(sid)
                self.note(f"{placement.label}: try {sid} on {site.devices} x {site.hardware} "
                          f"(${candidate.usd_per_hour:.2f}/h, was ${placement.usd_per_hour:.2f}/h)")
                outcomes = self._trial(candidate, checks, best.outcomes, failed_trials)
                history.append((candidate.usd_per_hour, outcomes is not None))
                if outcomes is not None:
                    moved_sites.add(sid)
                    return Verdict(candidate, outcomes, True, rounds=best.rounds + used), used
            moved_sites.add(sid)
        return None, used

    def _pair_move(self, best: Verdict, checks: list[Check], pairs: int, tried: set[object],
                   history: list[tuple[float, bool]],
                   failed_trials: Counter[Check]) -> tuple[Verdict | None, int, list[Check]]:
        """The first two-site move (plan/moves.py, pair_moves) that the analytical screen lets through
        (moves.screened: the pooled model's utilisation at most moves.POOL_LIMIT, the coolest first) and that
        passes every check on every sample, within `pairs` runs of the checks; (verdict or None, candidates
        simulated, the checks of the verdict's placement). A candidate's checks are `checks` at the same hours,
        every site up and each of its own sites down (a dropped site's failure checks go with it); each runs in
        _trial's batches, so one that fails its first check costs that check's runs (one per sample)."""
        placement = best.placement
        before = dict(zip(checks, best.outcomes, strict=True))
        found = pair_moves(self.demand, self.traffic, placement)
        order = [c for c in screened(found, self.utilisation) if c[1].key() not in tried]
        self.note(f"{placement.label}: every single-site move failed; {len(found)} two-site moves cost less, "
                  f"{len(order)} pass the screen, at most {pairs} simulated")
        used = 0
        for what, candidate, util in order:
            if used >= pairs:
                break
            used += 1
            tried.add(candidate.key())
            ids = {s.id for s in candidate.sites}
            mine = [c for c in checks if c.failed is None or c.failed in ids]
            self.note(f"{placement.label}: try {what} (${candidate.usd_per_hour:.2f}/h, was "
                      f"${placement.usd_per_hour:.2f}/h{'' if util is None else f'; pool utilisation {util:.2f}'})")
            outcomes = self._trial(candidate, mine, [before[c] for c in mine], failed_trials)
            history.append((candidate.usd_per_hour, outcomes is not None))
            if outcomes is not None:
                return Verdict(candidate, outcomes, True, rounds=best.rounds + used), used, mine
        return None, used, checks

    def _trial(self, candidate: Placement, checks: list[Check], before: list[Outcome],
               failed_trials: Counter[Check]) -> list[Outcome] | None:
        """Every check of `candidate` (aligned with `checks`), or None at the first failing batch. The checks
        most likely to fail run first: those that failed the most earlier candidates (`failed_trials`, counted
        here), then those closest to failing before (the worst tenant's lowest share). Batches: that one check
        alone, then the rest of the first third, then the others; a candidate that fails its first check costs
        one check's runs, one that fails within the third about a third of them."""
        order = sorted(range(len(checks)), key=lambda i: (-failed_trials[checks[i]], _worst_tenant(before[i]), i))
        third = max(1, len(order) // 3)
        got: dict[int, Outcome] = {}
        for stage in (order[:1], order[1:third], order[third:]):
            if not stage:
                continue
            outcomes = self.run(candidate, [checks[i] for i in stage])
            got.update(zip(stage, outcomes, strict=True))
            failed = [checks[i] for i, o in zip(stage, outcomes, strict=True) if not passes(o, self.attainment)]
            if failed:
                failed_trials.update(failed)
                return None
        return [got[i] for i in range(len(checks))]

    def _grow(self, current: Placement, outcomes: list[Outcome]) -> Placement | str:
        """The next sizes (module docstring), each site within its limit (PlannedSite.max_devices, the screen's):
        a site grows at most to it, and one that must grow but is there already makes the placement infeasible;
        a faster hardware the site's replicas do not fit on is not taken (it grows where it is). Else why it
        cannot grow (str)."""
        culprits = _culprits(outcomes, self.attainment)
        if not culprits:  # misses spread thin: grow the site with the most of them, if any site has some
            counts: dict[str, tuple[int, float]] = {}
            for o in outcomes:
                if passes(o, self.attainment):
                    continue
                for sid, st in o["sites"].items():
                    if sid != o["check"]["failed"] and st["bad"] > counts.get(sid, (0, 0.0))[0]:
                        counts[sid] = (st["bad"], st["utilization"])
            if not counts:
                return ""
            sid = max(counts, key=lambda k: counts[k][0])
            culprits = {sid: (counts[sid][1], 0.2)}
        full: list[str] = []
        for sid, (util, bad) in culprits.items():
            site = current.site(sid)
            faster = self._faster(site.hardware) if util < LATENCY_UTIL else None
            if faster is not None:
                price, gpus = price_of(self.demand, faster)
                if sum(n for _, n in site.replicas) * gpus <= cap_of(self.demand, site, faster):
                    current = current.rehoused(sid, faster, price, gpus, chunk_of(self.demand, faster))
                    continue
            n = max(r for _, r in site.replicas)
            # every model of the site gets `step` more replicas, as far as the site's limit allows (the screen's)
            cap = cap_of(self.demand, site, site.hardware)
            room = (cap // site.gpus_per_replica - sum(r for _, r in site.replicas)) // len(site.replicas)
            step = min(max(1, math.ceil(n * min(0.5, max(0.2, bad)))), room)
            if step <= 0:
                full.append(f"{sid} cannot grow past {site.devices} x {site.hardware}: the site may hold {cap} "
                            "(supply.max_gpus_per_site and supply.limits)")
                continue
            current = current.scaled(sid, step)
        if full:  # a site that must grow is at its limit: no size of this placement passes
            return "infeasible at its limits: " + "; ".join(full)
        return current

    def _trim(self, current: Placement, outcomes: list[Outcome], no_trim: set[str],
              one_at_a_time: bool = False) -> tuple[Placement, list[str]] | None:
        trims: list[str] = []
        slack: dict[str, float] = {}
        for s in current.sites:
            n = sum(r for _, r in s.replicas)
            if s.id in no_trim or n <= len(s.replicas):
                continue
            util = max(o["sites"].get(s.id, {}).get("utilization", 0.0) for o in outcomes)
            if one_at_a_time or util * n / (n - 1) < TRIM_UTIL:
                trims.append(s.id)
                slack[s.id] = util * n / (n - 1)
        if not trims:
            return None
        if one_at_a_time:
            trims = [min(trims, key=lambda sid: slack[sid])]
        for sid in trims:
            current = current.scaled(sid, -1)
        return current, trims
