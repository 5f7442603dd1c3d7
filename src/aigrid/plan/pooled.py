"""Pooled sizing: load-aware routing shares the capacity of every site a user can reach within the SLO.

The screen's first model (Screen.size) sends users to their nearest site and sizes each site on its own
for its users plus its share of a failed neighbour's; each site then rounds up to whole replicas at a
conservative utilisation, so a placement of many small sites looks expensive. aigrid's routing does not
work that way: a request goes to any candidate predicted to meet the SLO, so sites within reach of the same
users form one pool, and losing one of k equal sites costs 1/k of the pool, not a zone's worth (the
simulator shows it: six single-H100 sites in Europe carry the global demand that one region in two zones
needs ten for, docs/planning.md). This model sizes that pool:

- reach: a flow's users at point p can use open site s running hardware h when s is in an allowed
  jurisdiction and the modelled RTT plus the prefill of the flow's 95th-percentile prompt on h (in h's
  prefill chunks, on an engine decoding a half-full batch) fits in (1 - QUEUE_SHARE) of the TTFT SLO (the
  screen's rule). Each site's own hardware counts: the code tenant's long prompts miss the SLO on an RTX PRO
  6000, so its users reach only the H100 sites of a mixed placement while chat users reach them all;
- groups: demand points with the same set of reachable open sites and the same nearest one among them;
  work in replica-seconds per second of one reference option (the best single hardware), a site's replica
  counting as its own option's capacity in that unit (for the flows whose prompts prefill in time on it, the
  least over them: an RTX PRO 6000 holds about half an H100);
- capacity (Hall's condition for a flow from groups to sites, on the sets that matter): for every hour,
  every single-site failure (and none) and every set U among the groups' reach sets and all open sites,
  the work of the groups that can only reach sites in U (or the failed one) fits in rho x the capacity of
  U's replicas that are still up. The router reserves nothing for the users who have no other choice, so
  the users whose nearest site is in U count there too: an EU-only tenant's two EU sites also carry the
  other Europeans (with the Frankfurt site down, the simulator showed one Zaragoza H100 missing the SLO
  under both);
- sizes: the cheapest replicas meeting those constraints, at least one per site: a greedy cover adds the
  replica that closes most of the shortfall per dollar, then removes every replica it can spare (the
  dearest first);
- hardware per site: first one option for the whole pool (each useful option in turn, the lowest cost +
  penalties wins); then, with PooledModel(screen, mix=True) (the demand's `supply.mix_hardware`), a local search moves one
  site at a time to another option, keeping a move when cost + penalties fall, until a round of the sites
  finds none. Where no move lowers the score (one option cheapest at every site), the sizing is the
  single-hardware one. Moves of one site only: two sites moved together are not tried. Off by default:
  measured on the global example, the mixed proposals fail the simulator's checks (the code tenant's work
  pooled on the few H100 sites, RTX PRO 6000 pools at the H100's utilisation) and refine to dearer plans
  than the single-hardware pool's (docs/planning.md, "What-if").

Each set of open sites is sized on atoms, not on every (flow, point): rows of one model that reach the same
sites on every option and meet them in the same RTT order (up to the first site they reach on every option)
behave alike under any hardware per site, so a move is sized on a few hundred atoms instead of thousands of
rows: on the global example the pooled searches take 6 s instead of 13 s with one hardware per pool (the
same placements), and the whole screen about 1.5 times as long as before with hardware per site.

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
CONSTRAINT_CELLS = 1 << 20
"""(failures x sets x groups) handled at once when writing the pooled constraints (memory, not results)."""
CHECK_SUBSET_SITES = 10
"""check_loads enumerates every set of sites still up to this many sites (1,023 sets), the reach sets beyond."""
RTT_TIE_USD_PER_MS = 1e-4
"""$/h added per ms of demand-weighted RTT: among placements of equal cost, the one nearer its users."""


class PooledModel:
    """Screen.search's `size` for the pooled model: PooledModel(screen)(open_sites, rho) -> Sizing."""

    def __init__(self, screen: Screen, mix: bool = False) -> None:
        self.screen = screen
        self.mix = mix
        """Search hardware per site after the single-hardware sizings (False: one hardware per pool)."""
        # One row per (flow, point where it has users), all flows together: the flow's residency class,
        # model, hourly rates, peak and the prefill of its 95th-percentile prompt on each option.
        flow_of, pts_of = [], []
        for members, _ in screen.classes:
            for f in members:
                pts = np.flatnonzero(screen.peak[f] > 0)
                flow_of.append(np.full(len(pts), int(f)))
                pts_of.append(pts)
        flow = np.concatenate(flow_of) if flow_of else np.zeros(0, dtype=np.int64)
        self.pts = np.concatenate(pts_of) if pts_of else np.zeros(0, dtype=np.int64)
        klass = np.empty(len(screen.traffic.flows), dtype=np.int64)
        for ci, (members, _) in enumerate(screen.classes):
            klass[members] = ci
        self.klass = klass[flow]
        self.model = screen.flow_model[flow].astype(np.int64)
        rate = screen.traffic.rate[flow, self.pts]  # [row, hour] requests/s
        self.peak = screen.peak[flow, self.pts]
        self.pf95 = screen.pf95[flow]  # [row, option] ms
        self._columns: dict[int, np.ndarray] = {}
        """Candidate -> RTT from every row's point, contiguous (a column of screen.rtt is strided)."""
        self.options = [j for j in range(len(screen.hw)) if screen.useful[j]]
        """Hardware worth sizing with: it holds TPOT and some flow's prompts prefill in time on it."""
        # unit[jr][model, j]: one replica of j in replica-seconds of jr, for the flows whose prompts prefill in
        # time on j (the least over them: a site's capacity is not overstated); 1 where j == jr.
        self._unit: dict[int, np.ndarray] = {}
        for jr in self.options:
            unit = np.ones((len(screen.models), len(screen.hw)))
            for mi in range(len(screen.models)):
                fm = np.flatnonzero(screen.flow_model == mi)
                for j in range(len(screen.hw)):
                    if j == jr or len(fm) == 0:
                        continue
                    ok = fm[screen.pf95[fm, j] < screen.slo_net]
                    ok = ok if len(ok) else fm
                    unit[mi, j] = float((screen.c[ok, jr] / screen.c[ok, j]).min())
            self._unit[jr] = unit
        self.rate_work = np.hstack([rate, *(rate * screen.c[flow, j:j + 1] for j in self.options)])
        """[row, requests/s per hour | replica-seconds of each option per second per hour]."""

    def _rtt(self, S: np.ndarray) -> np.ndarray:
        """[row, open site] RTTs, inf where the row's flow may not run at the site."""
        cols = self._columns
        for s in S.tolist():
            if s not in cols:
                cols[s] = np.ascontiguousarray(self.screen.rtt[self.pts, s], dtype=np.float64)
        rtt = np.stack([cols[s] for s in S.tolist()], axis=1)
        allowed = np.stack([allowed[S] for _, allowed in self.screen.classes])[self.klass]
        return np.where(allowed, rtt, np.inf)

    def __call__(self, open_sites: list[int] | np.ndarray, rho: float) -> Sizing:
        screen = self.screen
        S = np.array(sorted({int(s) for s in open_sites}), dtype=np.int64)
        H = screen.traffic.rate.shape[2]
        total_peak = float(screen.peak.sum())
        if len(S) == 0 or len(S) > MAX_SITES:
            return Sizing((), (), (), 0.0, PENALTY_UNCOVERED * total_peak, np.zeros((0, H)), total_peak, total_peak)
        if not self.options:  # no hardware is useful: the nearest-site model reports it with its penalty
            return screen.size(S, rho)
        at = _Open(self, S)
        best: Sizing | None = None
        jbest = self.options[0]
        for j in self.options:
            z = self._size(at, np.full(len(S), j), rho, j)
            if best is None or z.score < best.score:
                best, jbest = z, j
        assert best is not None
        if self.mix and len(self.options) > 1 and len(S) > 1:
            best = self._mix(at, rho, jbest, best)
        return best

    def _mix(self, at: _Open, rho: float, jr: int, best: Sizing) -> Sizing:
        """Local search over hardware per site from the best single-hardware sizing: move one site to another
        option and keep the move if the score falls; stop after a round of the sites with no such move."""
        n = len(at.S)
        hw = np.full(n, jr)
        k = last = 0  # the site to try next; the last one moved (a round ends back there)
        while True:
            for j in self.options:
                if j == hw[k]:
                    continue
                trial_hw = hw.copy()
                trial_hw[k] = j
                trial = self._size(at, trial_hw, rho, jr)
                if trial.score < best.score - 1e-9:
                    best, hw, last = trial, trial_hw, k
                    break
            k = (k + 1) % n
            if k == last:
                return best

    def _groups(self, at: _Open, hw: np.ndarray, jr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                                np.ndarray, float, float, float]:
        """The open sites of `at` with option hw[k] at site k, its atoms grouped by (reach mask, nearest site,
        model): each group's mask, nearest site, model, requests/s and work (replica-seconds of option jr) per
        hour; then the peak demand that reaches no site, the peak that reaches only one, and the peak x RTT
        sum to the nearest site. A site whose option is not worth sizing with (no flow prefills in time on it,
        or it misses TPOT) is reached by nobody."""
        screen, S = self.screen, at.S
        n, H, M = len(S), screen.traffic.rate.shape[2], len(screen.models)
        mask = np.zeros(len(at.model), dtype=np.int64)  # [atom] the open sites it reaches, one bit each
        for j in np.unique(hw).tolist():
            if j in at.mask:
                mask |= at.mask[j] & int(at.bits[hw == j].sum())
        live = mask != 0
        # each atom's nearest site in reach: the first in its RTT order whose bit is set
        pos = np.argmax((mask[:, None] >> at.order) & 1, axis=1)
        first = at.order[np.arange(len(mask)), pos]
        uncovered = float(at.peak[~live].sum())
        rtt_sum = float(at.peak_rtt[np.arange(len(mask)), first][live].sum())
        unprotected = float(at.peak[live & ((mask & (mask - 1)) == 0)].sum())
        keys, masks = _group_keys(mask[live], first[live], at.model[live], n, M)
        perm = np.argsort(keys, kind="stable")
        ks = keys[perm]
        starts = np.flatnonzero(np.append(True, ks[1:] != ks[:-1]))
        rate = np.add.reduceat(at.rate[live][perm], starts, axis=0) if len(ks) else np.zeros((0, H))
        work = np.add.reduceat(at.work[jr][live][perm], starts, axis=0) if len(ks) else np.zeros((0, H))
        gk = ks[starts]
        g_model, g_first = gk % M, (gk // M) % 64
        g_mask = gk // M // 64 if masks is None else masks[gk // M // 64]
        return g_mask, g_first, g_model, rate, work, uncovered, unprotected, rtt_sum

    def utilisation(self, sites: list[int], hardware: list[int], replicas: list[dict[str, int]]) -> float:
        """How hot a pool of these sizes runs by this model (candidate indices, option indices of screen.hw,
        {model: replicas} per site): the largest, over every hour with every site up and with each one down
        and over the sets of sites the sizing constrains (_constraints), of the work that must go to a set
        over the capacity of its replicas still up, i.e. the lowest pool utilisation `rho` at which these
        replicas meet every constraint _size sizes to. inf when some demand reaches no site or only one
        (losing it loses them), or a set must carry work with no replica up."""
        order = np.argsort(sites, kind="stable")
        S = np.array([sites[k] for k in order], dtype=np.int64)
        if len(S) == 0 or len(S) > MAX_SITES or len(set(S.tolist())) < len(S):
            return float("inf")
        hw = np.array([hardware[k] for k in order], dtype=np.int64)
        reps = [replicas[k] for k in order]
        used = [j for j in hw.tolist() if j in self.options]
        if not used:
            return float("inf")
        jr = max(set(used), key=lambda j: (used.count(j), -j))  # the most common useful option: the unit of work
        g_mask, g_first, g_model, _, work, uncovered, unprotected, _ = self._groups(_Open(self, S), hw, jr)
        if uncovered > 0 or unprotected > 0:
            return float("inf")
        worst = 0.0
        for mi in np.unique(g_model).tolist():
            sel = g_model == mi
            A, w = _constraints(g_mask[sel], g_first[sel], work[sel], len(S))
            if len(w) == 0:
                continue
            n_reps = np.array([r.get(self.screen.models[mi], 0) for r in reps], dtype=float)
            capacity = A.astype(float) @ (n_reps * self._unit[jr][mi, hw])
            if (capacity <= 0).any():
                return float("inf")
            worst = max(worst, float((w / capacity).max()))
        return worst

    def check_loads(self, sites: list[int], hardware: list[int], replicas: list[dict[str, int]],
                    checks: list[tuple[int, int | None]]) -> list[float]:
        """Per check (UTC hour, index into `sites` of the site down or None): how hot these sizes run at that hour
        with that site down if requests went wherever they reach in time (a fluid): the largest, over the sets U
        of sites still up (every subset up to CHECK_SUBSET_SITES sites, else the groups' reach sets and all), of
        the work of the groups that reach only sites in U over the capacity of U's replicas (Hall's condition;
        the least pool utilisation any routing could give). Unlike utilisation(), one figure per check, and no
        "nearest site" term. The planner does not use it: a screen of the two-site moves that ordered them by these
        loads against bars learnt from the simulator's verdicts did not plan better (docs/planning.md, "A
        calibrated screen"); scripts/plan_without.py --loads prints it beside each check's verdict. inf where some
        demand reaches no site still up."""
        order = np.argsort(sites, kind="stable")
        S = np.array([sites[k] for k in order], dtype=np.int64)
        if len(S) == 0 or len(S) > MAX_SITES or len(set(S.tolist())) < len(S):
            return [float("inf")] * len(checks)
        where = {int(k): i for i, k in enumerate(order)}  # caller's index -> sorted position
        hw = np.array([hardware[k] for k in order], dtype=np.int64)
        reps = [replicas[k] for k in order]
        used = [j for j in hw.tolist() if j in self.options]
        if not used:
            return [float("inf")] * len(checks)
        jr = max(set(used), key=lambda j: (used.count(j), -j))
        g_mask, _, g_model, _, work, uncovered, _, _ = self._groups(_Open(self, S), hw, jr)
        n = len(S)
        everyone = (1 << n) - 1
        out = []
        for hour, down in checks:
            up = everyone & ~(0 if down is None else 1 << where[down])
            if uncovered > 0 or ((g_mask & up) == 0).any():
                out.append(float("inf"))
                continue
            if n <= CHECK_SUBSET_SITES:
                sets = np.array([u for u in range(1, everyone + 1) if u & ~up == 0], dtype=np.int64)
            else:
                sets = np.unique(np.append(g_mask & up, up))
            bits = np.int64(1) << np.arange(n, dtype=np.int64)
            worst = 0.0
            for mi in np.unique(g_model).tolist():
                sel = g_model == mi
                inside = ((g_mask[sel][None, :] & up) & ~sets[:, None]) == 0  # [set, group] reaches only U
                w = inside.astype(float) @ work[sel][:, hour]
                n_reps = np.array([r.get(self.screen.models[mi], 0) for r in reps], dtype=float)
                cap = ((sets[:, None] & bits) != 0).astype(float) @ (n_reps * self._unit[jr][mi, hw])
                live = w > 0
                if (cap[live] <= 0).any():
                    worst = float("inf")
                    break
                if live.any():
                    worst = max(worst, float((w[live] / cap[live]).max()))
            out.append(worst)
        return out

    def _size(self, at: _Open, hw: np.ndarray, rho: float, jr: int) -> Sizing:
        """Sizes the open sites with option hw[k] at site k; work is in replica-seconds of option jr."""
        screen, S = self.screen, at.S
        n, H = len(S), screen.traffic.rate.shape[2]
        g_mask, g_first, g_model, rate, work, uncovered, unprotected, rtt_sum = self._groups(at, hw, jr)
        load = _onehot(g_first, n).T @ rate  # requests/s each site serves with every site up
        price = screen.price[hw]
        cap = screen.cands.max_devices[S, hw] // screen.gpus[hw].astype(np.int64)
        replicas: list[dict[str, int]] = [{} for _ in range(n)]
        short = 0.0
        single = bool((hw == jr).all())
        for mi in np.unique(g_model).tolist():
            sel = g_model == mi
            left = cap - np.array([sum(x.values()) for x in replicas])
            if single:
                reps, missing = _cover_rows(g_mask[sel], g_first[sel], work[sel], n, rho, left)
            else:
                reps, missing = _cover_rows(g_mask[sel], g_first[sel], work[sel], n, rho, left,
                                            self._unit[jr][mi, hw], price)
            short += missing
            for k in np.flatnonzero(reps > 0).tolist():
                replicas[k][screen.models[mi]] = int(reps[k])
        keep = [k for k in range(n) if replicas[k]]
        cost = sum(sum(replicas[k].values()) * float(price[k]) for k in keep)
        weight = float(screen.peak.sum()) - uncovered
        penalty = (PENALTY_UNCOVERED * (uncovered + short / max(float(screen.c[:, jr].mean()), 1e-12))
                   + PENALTY_UNPROTECTED * unprotected + RTT_TIE_USD_PER_MS * rtt_sum / max(weight, 1e-12))
        kept = np.array(keep, dtype=np.int64)
        return Sizing(tuple(int(S[k]) for k in keep), tuple(screen.hw[int(hw[k])] for k in keep),
                      tuple(replicas[k] for k in keep), float(cost), float(penalty),
                      load[kept] if len(kept) else np.zeros((0, H)), uncovered, unprotected)


class _Open:
    """One set of open sites, with the rows (flow, point) merged into atoms: rows of one model that reach the
    same sites on each option and meet them in the same RTT order up to the first site they reach on every
    option (so that whatever hardware each site runs, they reach the same sites and the same one first).
    Per atom: its model, the sites it reaches on each option (bits), a member's sites in RTT order, its
    requests/s and work per option per hour, its peak and peak x RTT to each site."""

    def __init__(self, pm: PooledModel, S: np.ndarray) -> None:
        self.S = S
        n = len(S)
        self.bits = np.int64(1) << np.arange(n, dtype=np.int64)
        r = pm._rtt(S)  # [row, site]
        order = np.argsort(r, axis=1, kind="stable")
        masks = {j: (r <= (pm.screen.slo_net - pm.pf95[:, j])[:, None]).astype(np.int64) @ self.bits
                 for j in pm.options}
        anywhere = np.bitwise_or.reduce(list(masks.values()))
        always = np.bitwise_and.reduce(list(masks.values()))
        listed = ((anywhere[:, None] >> order) & 1) == 1
        sure = ((always[:, None] >> order) & 1) == 1
        stop = np.where(sure.any(axis=1), np.argmax(sure, axis=1), n)
        listed &= np.arange(n)[None, :] <= stop[:, None]
        key = np.column_stack([pm.model, *masks.values(), np.where(listed, order, -1)])
        inv = _rows_inverse(key)
        perm = np.argsort(inv, kind="stable")
        starts = np.flatnonzero(np.append(True, np.diff(inv[perm]) != 0)) if len(inv) else np.zeros(0, dtype=np.int64)
        rep = perm[starts]  # one member of each atom
        self.model = pm.model[rep]
        self.mask = {j: m[rep] for j, m in masks.items()}
        self.order = order[rep]
        H = pm.screen.traffic.rate.shape[2]
        if len(perm):
            sums = np.add.reduceat(pm.rate_work[perm], starts, axis=0)
            peaks = np.add.reduceat(pm.peak[perm, None] * np.column_stack([np.ones(len(perm)), r[perm]]), starts, axis=0)
        else:
            sums, peaks = np.zeros((0, pm.rate_work.shape[1])), np.zeros((0, 1 + n))
        self.rate = sums[:, :H]
        self.work = {j: sums[:, H * (1 + i):H * (2 + i)] for i, j in enumerate(pm.options)}
        self.peak = peaks[:, 0]
        self.peak_rtt = peaks[:, 1:]


def _rows_inverse(key: np.ndarray) -> np.ndarray:
    """For each row of an int64 matrix, the index of its distinct row (a hash of the row, checked exactly;
    np.unique over rows when two rows' hashes collide)."""
    if len(key) == 0:
        return np.zeros(0, dtype=np.int64)
    cols = key.astype(np.uint64)
    h = np.zeros(len(key), dtype=np.uint64)
    for c in range(key.shape[1]):  # FNV-style: xor a column in, multiply, fold the high bits down
        h ^= cols[:, c]
        h *= np.uint64(0x9E3779B97F4A7C15)
        h ^= h >> np.uint64(31)
    _, inv = np.unique(h, return_inverse=True)
    inv = inv.ravel()
    rep = np.empty(int(inv.max()) + 1, dtype=np.int64)
    rep[inv] = np.arange(len(inv))
    if (key == key[rep[inv]]).all():
        return inv
    return np.unique(key, axis=0, return_inverse=True)[1].ravel()


def _group_keys(mask: np.ndarray, first: np.ndarray, model: np.ndarray, n: int,
                models: int) -> tuple[np.ndarray, np.ndarray | None]:
    """One int64 per row naming its group, (reach mask, nearest site, model), ordered by mask, nearest, model:
    key = (mask x 64 + nearest) x models + model. Where that does not fit in 63 bits (placements of more
    than about 55 sites), the mask's rank among the rows' masks stands in for it, and the masks in rank order
    come back too (None otherwise)."""
    if n + 6 + max(models - 1, 1).bit_length() <= 63:
        return (mask * 64 + first) * models + model, None
    masks, rank = np.unique(mask, return_inverse=True)
    return (rank.ravel() * 64 + first) * models + model, masks


def _onehot(index: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((len(index), n))
    out[np.arange(len(index)), index] = 1.0
    return out


def _cover(groups: dict[tuple[int, int], np.ndarray], n: int, rho: float, cap: np.ndarray,
           unit: np.ndarray | None = None, price: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """_cover_rows for groups given as {(reach mask, nearest site): work per hour}."""
    keys = list(groups)
    return _cover_rows(np.array([m for m, _ in keys], dtype=np.int64), np.array([k for _, k in keys], dtype=np.int64),
                       np.array([groups[k] for k in keys]), n, rho, cap, unit, price)


def _constraints(masks: np.ndarray, first: np.ndarray, demand: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The pooled constraints of groups (reach mask, nearest site, work per hour): (A, work), one row each with
    A[row, k] when site k is in the row's set U still up, and the busiest hour's work that must go to U, for
    every failure (none, then each site) and every set U among the groups' reach sets and all sites in use; the
    replicas x capacity of U's sites must hold work / rho."""
    nearest = np.int64(1) << first.astype(np.int64)
    used = int(np.bitwise_or.reduce(masks)) if len(masks) else 0
    sets = np.unique(np.append(masks, used))  # the groups' reach sets and all sites in use
    site_bits = np.int64(1) << np.arange(n, dtype=np.int64)
    downs = np.append(np.int64(0), site_bits)  # every site up, then each one down
    step = max(1, CONSTRAINT_CELLS // max(len(sets) * len(masks), 1))
    A_parts, w_parts = [], []
    for i in range(0, len(downs), step):
        down = downs[i:i + step, None, None]
        up = sets[None, :, None] & ~down  # [failure, set, 1]: U without the failed site
        # [failure, set, group]: the groups that reach only sites in U (or the failed one: those that reach
        # nothing else are unprotected), and those whose nearest site is in U
        inside = ((masks & ~(sets[None, :, None] | down)) == 0) & ((masks & ~down) != 0)
        inside |= (nearest & up) != 0
        w = (inside.astype(float) @ demand).max(axis=2).ravel()  # the busiest hour's work in U
        ok = (up.ravel() != 0) & (w > 0)
        A_parts.append((up.ravel()[ok, None] & site_bits) != 0)
        w_parts.append(w[ok])
    return np.concatenate(A_parts), np.concatenate(w_parts)


def _cover_rows(masks: np.ndarray, first: np.ndarray, demand: np.ndarray, n: int, rho: float, cap: np.ndarray,
                unit: np.ndarray | None = None, price: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Replicas per site (0 where no group reaches it) meeting every pooled constraint, and the shortfall
    (work units) that the sites' limits leave uncovered. Group g reaches the sites in masks[g], its nearest
    is first[g], its work per hour demand[g] is in units of which a replica at site k holds unit[k] (default
    1) and costs price[k] (default the same everywhere)."""
    A, work = _constraints(masks, first, demand, n)
    A, b = A.astype(float), work / rho
    used = int(np.bitwise_or.reduce(masks)) if len(masks) else 0
    site_bits = np.int64(1) << np.arange(n, dtype=np.int64)
    reps = np.where((used & site_bits) != 0, 1, 0).astype(np.int64)
    reps = np.minimum(reps, np.maximum(cap, 0))
    if len(b) == 0:
        return reps, 0.0
    u = np.ones(n) if unit is None else np.asarray(unit, dtype=float)
    room = np.maximum(cap, 0) - reps
    while True:
        gap = b - A @ (reps * u)
        if (gap <= 1e-9).all():
            break
        short = gap > 1e-9
        if unit is None:
            gain = A[short].T @ np.minimum(gap[short], 1.0)
        else:  # a replica at k closes up to unit[k] of each open constraint it is in, per dollar
            gain = (A[short] * np.minimum(gap[short][:, None], u[None, :])).sum(axis=0)
            if price is not None:
                gain = gain / price
        gain[room <= 0] = 0.0
        if gain.max() <= 0:
            break
        k = int(np.argmax(gain))
        reps[k] += 1
        room[k] -= 1
    order = (np.argsort(-reps, kind="stable") if price is None
             else np.lexsort((-reps, -np.asarray(price, dtype=float))))  # the dearest replicas first
    for k in order:  # spare replicas: drop while every constraint holds
        while reps[k] > 1:
            reps[k] -= 1
            if (A @ (reps * u) < b - 1e-9).any():
                reps[k] += 1
                break
    return reps, float(np.maximum(b - A @ (reps * u), 0.0).max())
