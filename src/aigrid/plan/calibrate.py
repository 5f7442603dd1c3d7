"""The two-site moves' screen, calibrated on the simulator's verdicts of this plan (brief PLN8, issue 16).

The pooled model's utilisation (PooledModel.utilisation) is one figure per placement: the hottest constraint
over every hour and failure. On the global example every two-site candidate the verifier simulated sat at
0.53-0.56 (the binding set did not involve the sites they changed) while the simulator failed some at their
first check and passed others on 13 of 14: the figure could not tell them apart (docs/planning.md, "A
calibrated screen"). This screen judges each check on its own:

- load: per check (its hour, its site down), the pooled model's fluid load of the placement
  (PooledModel.check_loads: the work that must go to each set of sites still up over its replicas' capacity,
  the largest over the sets); a site's slower hardware counts at its own capacity;
- bar: per check, the lowest load at which a placement simulated so far in this plan failed that check
  (every refinement round, trim and move trial records its checks' loads and verdicts, record()); a check
  no placement has failed yet has the bar `limit` (moves.POOL_LIMIT, the hottest pool the screen sizes);
- margin of a candidate: the largest, over its checks, of its load minus that check's bar (below 0: lighter
  than anything that failed there). Candidates run in the order of their margin (the least first; ties: the
  lower mean of their checks' margins, then the cheapest): the likeliest to pass first, by what this plan's own
  simulations said.

It orders candidates; it removes none (moves.screened's limit still decides which may run, and
verify.pair_trials how many).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aigrid.plan.checks import Check
from aigrid.plan.placement import Placement
from aigrid.plan.pooled import PooledModel

Loads = Callable[[Placement, Sequence[Check]], list[float] | None]
"""(placement, checks) -> each check's load, or None where the screen cannot judge the placement."""


def check_loads(pooled: PooledModel, placement: Placement, checks: Sequence[Check]) -> list[float] | None:
    """PooledModel.check_loads of `placement` at `checks`; None when a site is not one of the screen's candidates
    or its hardware not one of its options."""
    cands, hw = pooled.screen.cands, list(pooled.screen.hw)
    if any(s.id not in cands.id or s.hardware not in hw for s in placement.sites):
        return None
    ids = [s.id for s in placement.sites]
    if any(c.failed is not None and c.failed not in ids for c in checks):
        return None
    return pooled.check_loads([cands.index(s.id) for s in placement.sites],
                              [hw.index(s.hardware) for s in placement.sites],
                              [dict(s.replicas) for s in placement.sites],
                              [(c.hour, None if c.failed is None else ids.index(c.failed)) for c in checks])


class Calibration:
    """Each check's bar, from the loads and verdicts of the placements simulated so far."""

    def __init__(self, loads: Loads, limit: float) -> None:
        self.loads, self.limit = loads, limit
        self.failed_at: dict[Check, float] = {}
        """Per check: the lowest load of a placement that failed it."""
        self.passed_at: dict[Check, float] = {}
        """Per check: the highest load of a placement that passed it (reported, not used in the order)."""

    def record(self, placement: Placement, checks: Sequence[Check], passed: Sequence[bool]) -> None:
        loads = self.loads(placement, checks)
        if loads is None:
            return
        for c, u, ok in zip(checks, loads, passed, strict=True):
            if u == float("inf"):
                continue
            if ok:
                self.passed_at[c] = max(self.passed_at.get(c, 0.0), u)
            else:
                self.failed_at[c] = min(self.failed_at.get(c, u), u)

    def bar(self, check: Check) -> float:
        return min(self.failed_at.get(check, self.limit), self.limit)

    def margins(self, placement: Placement, checks: Sequence[Check]) -> list[float] | None:
        """Per check of `checks`, the placement's load there minus the check's bar; None where the screen cannot
        judge it."""
        loads = self.loads(placement, checks)
        if loads is None or not checks:
            return None
        return [u - self.bar(c) for c, u in zip(checks, loads, strict=True)]

    def order(self, rows: list[tuple[str, Placement, float | None]], checks_of: Callable[[Placement], Sequence[Check]]
              ) -> list[tuple[str, Placement, float | None, float | None]]:
        """`rows` (moves.screened's: what, placement, pool utilisation) by margin, the least first (ties: the lower
        mean margin over the checks, then the cheapest); those it cannot judge after them in their order. Each row
        gains its margin (None: not judged)."""
        judged: list[tuple[str, Placement, float | None, float | None]] = []
        unjudged: list[tuple[str, Placement, float | None, float | None]] = []
        mean: dict[int, float] = {}
        for what, p, util in rows:
            m = self.margins(p, checks_of(p))
            if m is None:
                unjudged.append((what, p, util, None))
            else:
                judged.append((what, p, util, max(m)))
                mean[id(p)] = sum(m) / len(m)
        judged.sort(key=lambda r: (r[3], mean[id(r[1])], r[1].usd_per_hour))
        return judged + unjudged
