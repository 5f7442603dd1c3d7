"""Pooled sizing: load-aware routing shares the capacity of every site a user can reach within the SLO.

The screen's first model (Screen.size) sends users to their nearest site and sizes each site on its own
for its users plus its share of a failed neighbour's; each site then rounds up to whole replicas at a
conservative utilisation, so a placement of many small sites looks expensive. aigrid's routing does not
work that way: a request goes to any candidate predicted to meet the SLO, so sites within reach of the same
users form one pool, and losing one of k equal sites costs 1/k of the pool, not a zone's worth (the
simulator shows it: six single-H100 sites in Europe carry the global demand that one region in two zones
needs ten for, docs/planning.md). This model sizes that pool:

- reach: a flow's users at point p can use open site s on hardware h when s is in an allowed jurisdiction
  and the modelled RTT plus the prefill of the flow's 95th-percentile prompt on h (in h's prefill chunks,
  on an engine decoding a half-full batch) fits in (1 - QUEUE_SHARE)
  of the TTFT SLO (the screen's rule);
- groups: demand points with the same set of reachable open sites; work in replica-seconds per second;
- capacity (Hall's condition for a flow from groups to sites, on the sets that matter): for every hour,
  every single-site failure (and none) and every set U among the groups' reach sets and all open sites,
  the work of the groups that can only reach sites in U (or the failed one) fits in rho x the replicas of
  U that are still up. The router reserves nothing for the users who have no other choice, so the users
  whose nearest site is in U count there too: an EU-only tenant's two EU sites also carry the other
  Europeans (with the Frankfurt site down, the simulator showed one Zaragoza H100 missing the SLO under
  both);
- sizes: the fewest replicas (cheapest, one hardware for the whole pool) meeting those constraints, at least
  one per site: a greedy cover adds the replica that closes most of the shortfall per dollar, then removes
  every replica it can spare.

Demand with no reachable site, or whose only reachable site fails, costs the screen's penalties. Which
placement wins is still the simulator's call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from aigrid.plan.screen import PENALTY_UNCOVERED, PENALTY_UNPROTECTED, Sizing

if TYPE_CHECKING:
    from aigrid.plan.screen import Screen

MAX_SITES = 62
"""Reach sets are bit masks in int64 (one bit per open site, the sign bit unused); larger placements are not
sized by this model."""
RTT_TIE_USD_PER_MS = 1e-4
"""$/h added per ms of demand-weighted RTT: among placements of equal cost, the one nearer its users."""


class PooledModel:
    """Screen.search's `size` for the pooled model: PooledModel(screen)(open_sites, rho) -> Sizing."""

    def __init__(self, screen: Screen) -> None:
        self.screen = screen
        # per flow: its residency class, the points where it has users, their hourly rates and peaks
        self.flows: list[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]] = []
        for ci, (members, _) in enumerate(screen.classes):
            for f in members:
                pts = np.flatnonzero(screen.peak[f] > 0)
                self.flows.append((int(f), ci, pts, screen.traffic.rate[f, pts], screen.peak[f, pts]))
        self._columns: dict[int, np.ndarray] = {}
        """Candidate -> RTT from every demand point, contiguous (a column of screen.rtt is strided)."""

    def _rtt(self, S: np.ndarray) -> np.ndarray:
        """[open site, point] RTTs."""
        cols = self._columns
        for s in S.tolist():
            if s not in cols:
                cols[s] = np.ascontiguousarray(self.screen.rtt[:, s])
        return np.stack([cols[s] for s in S.tolist()])

    def __call__(self, open_sites: list[int] | np.ndarray, rho: float) -> Sizing:
        screen = self.screen
        S = np.array(sorted({int(s) for s in open_sites}), dtype=np.int64)
        H = screen.traffic.rate.shape[2]
        total_peak = float(screen.peak.sum())
        if len(S) == 0 or len(S) > MAX_SITES:
            return Sizing((), (), (), 0.0, PENALTY_UNCOVERED * total_peak, np.zeros((0, H)), total_peak, total_peak)
        best: Sizing | None = None
        for j in range(len(screen.hw)):
            if not screen.useful[j]:  # no TPOT, or no user's prompt prefills in time: it would cover nobody
                continue
            z = self._size_on(S, j, rho)
            if best is None or z.score < best.score:
                best = z
        if best is None:  # no hardware is useful: the nearest-site model reports it with its penalty
            return screen.size(S, rho)
        return best

    def _size_on(self, S: np.ndarray, j: int, rho: float) -> Sizing:
        screen = self.screen
        n, H = len(S), screen.traffic.rate.shape[2]
        bits = np.int64(1) << np.arange(n, dtype=np.int64)
        uncovered = unprotected = 0.0
        load = np.zeros((n, H))  # requests/s each site serves with every site up, users at their nearest
        rtt_sum = 0.0
        work: dict[int, dict[int, np.ndarray]] = {}  # model -> reach mask -> replica-s/s per hour
        allowed_open = [allowed[S] for _, allowed in screen.classes]
        rtt = self._rtt(S)
        for f, ci, pts, rate, peak in self.flows:
            r = np.where(allowed_open[ci][None, :], rtt[:, pts].T, np.inf)
            reach = r <= screen.slo_net - screen.pf95[f, j]
            mask = reach.astype(np.int64) @ bits
            live = mask != 0
            uncovered += float(peak[~live].sum())
            if not live.any():
                continue
            first = np.argmin(r[live], axis=1)
            load += _onehot(first, n).T @ rate[live]
            rtt_sum += float((peak[live] * r[live][np.arange(len(first)), first]).sum())
            unprotected += float(peak[live & ((mask & (mask - 1)) == 0)].sum())
            groups = work.setdefault(int(screen.flow_model[f]), {})
            keys, inv = _groups(mask[live], first)
            sums = _onehot(inv, len(keys)).T @ (rate[live] * screen.c[f, j])
            for k, key in enumerate(keys):
                groups[key] = groups.get(key, 0.0) + sums[k]
        price = float(screen.price[j])
        cap = screen.cands.max_devices[S, j] // int(screen.gpus[j])
        replicas: list[dict[str, int]] = [{} for _ in range(n)]
        short = 0.0
        for mi, groups in sorted(work.items()):
            reps, missing = _cover(groups, n, rho, cap - np.array([sum(x.values()) for x in replicas]))
            short += missing
            for k in range(n):
                if reps[k] > 0:
                    replicas[k][screen.models[mi]] = int(reps[k])
        keep = [k for k in range(n) if replicas[k]]
        cost = sum(sum(replicas[k].values()) for k in keep) * price
        weight = float(screen.peak.sum()) - uncovered
        penalty = (PENALTY_UNCOVERED * (uncovered + short / max(float(screen.c[:, j].mean()), 1e-12))
                   + PENALTY_UNPROTECTED * unprotected + RTT_TIE_USD_PER_MS * rtt_sum / max(weight, 1e-12))
        kept = np.array(keep, dtype=np.int64)
        return Sizing(tuple(int(S[k]) for k in keep), tuple(screen.hw[j] for _ in keep),
                      tuple(replicas[k] for k in keep), float(cost), float(penalty),
                      load[kept] if len(kept) else np.zeros((0, H)), uncovered, unprotected)


def _groups(mask: np.ndarray, nearest: np.ndarray) -> tuple[list[tuple[int, int]], np.ndarray]:
    """The distinct (reach mask, nearest site) pairs of a flow's points, and each point's pair index."""
    keys, inv = np.unique(np.stack([mask, nearest], axis=1), axis=0, return_inverse=True)
    return [(int(m), int(k)) for m, k in keys], inv.ravel()


def _onehot(index: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((len(index), n))
    out[np.arange(len(index)), index] = 1.0
    return out


def _cover(groups: dict[tuple[int, int], np.ndarray], n: int, rho: float,
           cap: np.ndarray) -> tuple[np.ndarray, float]:
    """Replicas per site (0 where no group reaches it) meeting every pooled constraint, and the shortfall
    (replica-s/s) that the sites' limits leave uncovered. A group is (reach mask, nearest site)."""
    keys = list(groups)
    demand = np.array([groups[k] for k in keys])  # [group, hour]
    masks = np.array([m for m, _ in keys], dtype=np.int64)
    nearest = np.array([1 << k for _, k in keys], dtype=np.int64)
    used = int(np.bitwise_or.reduce(masks)) if len(masks) else 0
    sets = sorted({m for m, _ in keys} | {used})
    rows: list[np.ndarray] = []
    need: list[float] = []
    site_bits = np.int64(1) << np.arange(n, dtype=np.int64)
    for fail in [-1, *range(n)]:
        down = 0 if fail < 0 else int(site_bits[fail])
        for u in sets:
            up = u & ~down
            if up == 0:
                continue  # demand that reaches only the failed site: counted as unprotected
            inside = (masks & ~(u | down)) == 0
            inside &= (masks & ~down) != 0
            inside |= (nearest & up) != 0  # users who could go elsewhere but whose nearest site is in U
            if not inside.any():
                continue
            w = float(demand[inside].sum(axis=0).max()) / rho
            if w <= 0:
                continue
            rows.append(((up & site_bits) != 0).astype(float))
            need.append(w)
    reps = np.where((used & site_bits) != 0, 1, 0).astype(np.int64)
    reps = np.minimum(reps, np.maximum(cap, 0))
    if not rows:
        return reps, 0.0
    A, b = np.array(rows), np.array(need)
    room = np.maximum(cap, 0) - reps
    while True:
        gap = b - A @ reps
        if (gap <= 1e-9).all():
            break
        gain = A[gap > 1e-9].T @ np.minimum(gap[gap > 1e-9], 1.0)
        gain[room <= 0] = 0.0
        if gain.max() <= 0:
            break
        k = int(np.argmax(gain))
        reps[k] += 1
        room[k] -= 1
    for k in np.argsort(-reps, kind="stable"):  # spare replicas: drop while every constraint holds
        while reps[k] > 1:
            reps[k] -= 1
            if (A @ reps < b - 1e-9).any():
                reps[k] += 1
                break
    short = float(np.maximum(b - A @ reps, 0.0).max())
    return reps, short
