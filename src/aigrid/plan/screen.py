"""Analytical screening: size a set of open sites in microseconds-per-point arithmetic, and search for the set.

The model (checked afterwards by the simulator, which has the last word):
- reach: a flow's users at point p can use site s when s is in an allowed jurisdiction and the modelled RTT
  (the simulator's network model without jitter) plus the prefill of the flow's 95th-percentile prompt on
  the fastest hardware offered fits in (1 - QUEUE_SHARE) of the TTFT SLO; the prefill is timed in the
  option's chunks on an engine decoding a half-full batch (plan/chunks.py, loaded_prefill_ms);
- routing: users go to the nearest reachable open site (aigrid's policies put most requests there while it
  has headroom); when that site is down, its users spread over every other reachable open site in
  proportion to that site's own peak load (load-aware routing sends them where the headroom is, and sites
  are sized in proportion to their load), so k sites back each other up at about k / (k - 1) capacity;
- hardware: an option runs with the largest prefill chunk whose engine step (a full chunk) fits in 80% of
  the TPOT SLO, and is offered only if one does (otherwise decoding streams miss it whenever prompts
  arrive; plan/chunks.py), and if the site's users reach it within the TTFT budget with its prefill time;
- capacity: a replica of hardware h serves capacity_rps(prompt, output) requests/s of a flow at a full batch
  (sim/hardware.py); a site needs max over hours and single-site failures of its load / rho replicas;
- cost: devices x price per hour; unreachable demand costs a penalty, so the search opens sites to cover it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from aigrid.plan.chunks import DEFAULT_CHUNK, chunk_for, loaded_prefill_ms
from aigrid.plan.demand import Demand
from aigrid.plan.supply import Candidates
from aigrid.plan.traffic import Traffic
from aigrid.sim.hardware import HARDWARE, engine_perf
from aigrid.sim.network import Network, distances_km

QUEUE_SHARE = 0.3
"""Share of the TTFT SLO kept for queueing and network jitter when judging whether a site is in reach."""
PENALTY_UNCOVERED = 1000.0
"""$/h per request/s of peak demand with no reachable open site."""
PENALTY_UNPROTECTED = 100.0
"""$/h per request/s of peak demand that has no second reachable site (lost when its site fails)."""
SHORTLIST = 150


@dataclass(frozen=True)
class Sizing:
    """One placement as the analytical model sizes it."""

    sites: tuple[int, ...]
    """Candidate indices of the sites that carry load."""
    hardware: tuple[str, ...]
    replicas: tuple[dict[str, int], ...]
    """Per site: model -> replicas."""
    cost_usd_h: float
    penalty_usd_h: float
    load: np.ndarray
    """[site, UTC hour] requests/s each site serves with every site up."""
    uncovered_rps: float
    unprotected_rps: float

    @property
    def score(self) -> float:
        return self.cost_usd_h + self.penalty_usd_h


Sizer = Callable[[list[int], float], Sizing]
"""(open candidate indices, target utilisation) -> Sizing: Screen.size, or plan/pooled.py's model."""


class Screen:
    def __init__(self, demand: Demand, traffic: Traffic, cands: Candidates) -> None:
        self.demand, self.traffic, self.cands = demand, traffic, cands
        self.hw = cands.hardware
        opts = demand.supply.hardware
        self.price = np.array([(opts[h].usd_per_hour or HARDWARE[h].usd_per_hour) * opts[h].gpus_per_replica
                               for h in self.hw])
        self.gpus = np.array([opts[h].gpus_per_replica for h in self.hw])
        models = {m.name: m for m in demand.models}
        self.models = sorted({f.model for f in traffic.flows})
        flows = traffic.flows
        self.flow_model = np.array([self.models.index(f.model) for f in flows])
        # The prefill chunk each option's engines run with (plan/chunks.py): the largest whose step with a
        # full chunk fits the TPOT SLO; an option with none (None) is not offered.
        self.chunk = tuple(chunk_for(demand, h, self.models) for h in self.hw)
        self.tpot_ok = np.array([c is not None for c in self.chunk], dtype=bool)
        # c[f, hw]: replica-seconds per request; pf95[f, hw]: prefill of the 95th-percentile prompt on an
        # engine decoding a half-full batch, in the option's chunks, ms.
        self.c = np.zeros((len(flows), len(self.hw)))
        self.pf95 = np.zeros((len(flows), len(self.hw)))
        for j, h in enumerate(self.hw):
            for i, f in enumerate(flows):
                m = models[f.model]
                perf = engine_perf(h, m.params_b, m.kv_bytes_per_token, int(self.gpus[j]),
                                   self.chunk[j] or DEFAULT_CHUNK)
                self.c[i, j] = 1.0 / perf.capacity_rps(f.prompt_mean, f.output_mean)
                self.pf95[i, j] = loaded_prefill_ms(perf, int(f.prompt_p95), f.prompt_mean + f.output_mean / 2)
        slo = demand.slo.ttft_ms * (1.0 - QUEUE_SHARE)
        self.budget = slo - self.pf95.min(axis=1)  # [flow] ms of RTT allowed
        self.slo_net = slo
        # Options worth sizing a placement with: they hold TPOT and some flow's prompts prefill in time on them.
        self.useful = self.tpot_ok & (self.pf95 < slo).any(axis=0)
        net = Network()
        self.rtt = np.empty((len(traffic.lat), len(cands)), dtype=np.float32)
        for s in range(len(cands)):
            self.rtt[:, s] = net.base_rtt_ms(distances_km(traffic.lat, traffic.lon, cands.lat[s], cands.lon[s]))
        # Residency classes: flows with the same allowed jurisdictions share the allowed-site mask.
        keys = sorted({tuple(sorted(f.jurisdictions)) if f.jurisdictions else () for f in flows})
        self.classes = []
        for k in keys:
            members = np.array([i for i, f in enumerate(flows)
                                if (tuple(sorted(f.jurisdictions)) if f.jurisdictions else ()) == k])
            allowed = np.ones(len(cands), dtype=bool) if not k else np.isin(np.array(cands.jurisdiction), k)
            self.classes.append((members, allowed))
        self.peak = traffic.rate.max(axis=2)  # [flow, point]
        self.shortlist = self._shortlist()

    def _shortlist(self) -> np.ndarray:
        n = len(self.cands)
        if n <= SHORTLIST:
            return np.arange(n)
        picked: dict[int, float] = {}
        for members, allowed in self.classes:
            weight = self.peak[members].sum(axis=0)
            top = np.argsort(-weight)[:400]
            ok = np.flatnonzero(allowed)
            if len(ok) == 0:
                continue
            near = ok[np.argsort(self.rtt[np.ix_(top, ok)], axis=1)[:, :3]]
            for row, p in zip(near, top, strict=True):
                for s in row:
                    picked[int(s)] = picked.get(int(s), 0.0) + float(weight[p])
        best = sorted(picked, key=lambda s: -picked[s])[:SHORTLIST]
        return np.array(sorted(best), dtype=np.int64)

    def size(self, open_sites: list[int] | np.ndarray, rho: float) -> Sizing:
        S = np.array(sorted({int(s) for s in open_sites}), dtype=np.int64)
        F, H = len(self.traffic.flows), self.traffic.rate.shape[2]
        total_peak = float(self.peak.sum())
        if len(S) == 0:
            return Sizing((), (), (), 0.0, PENALTY_UNCOVERED * total_peak, np.zeros((0, H)), total_peak, total_peak)
        n = len(S)
        load = np.zeros((F, n, H))
        moved = np.zeros((F, n, n, H))
        uncovered = unprotected = 0.0
        rtt_sum = np.zeros(n)
        rtt_w = np.zeros(n)
        rtt = self.rtt[:, S]
        P = rtt.shape[0]
        cols = np.arange(P)
        nearest: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for members, allowed in self.classes:  # pass 1: every user to the nearest reachable open site
            r = np.where(allowed[S][None, :], rtt, np.inf)
            first = np.argmin(r, axis=1)
            d1 = r[cols, first]
            nearest.append((r, first, d1))
            for f in members:
                reach1 = d1 <= self.budget[f]
                peak = self.peak[f]
                uncovered += float(peak[~reach1].sum())
                onehot = np.zeros((n, P))
                onehot[first[reach1], cols[reach1]] = 1.0
                load[f] = onehot @ self.traffic.rate[f]
                np.add.at(rtt_sum, first[reach1], peak[reach1] * d1[reach1])
                np.add.at(rtt_w, first[reach1], peak[reach1])
        weight = np.maximum(np.einsum("f,fsh->sh", self.c[:, 0], load).max(axis=1), 1e-9)
        for (members, _), (r, first, d1) in zip(self.classes, nearest, strict=True):  # pass 2: N+1
            for f in members:
                reach1 = d1 <= self.budget[f]
                backup = (r <= self.budget[f]) & reach1[:, None]
                backup[cols, first] = False
                share = backup * weight[None, :]
                norm = share.sum(axis=1)
                unprotected += float(self.peak[f][reach1 & (norm <= 0)].sum())
                share /= np.maximum(norm, 1e-300)[:, None]
                rate = self.traffic.rate[f]
                for t in range(n):
                    mine = reach1 & (first == t) & (norm > 0)
                    if mine.any():
                        moved[f, t] = share[mine].T @ rate[mine]
        mean_rtt = rtt_sum / np.maximum(rtt_w, 1e-12)
        hardware: list[str] = []
        replicas: list[dict[str, int]] = []
        keep: list[int] = []
        cost = penalty = 0.0
        for k in range(n):
            if load[:, k, :].sum() <= 0 and moved[:, :, k, :].sum() <= 0:
                continue
            best: tuple[float, str, dict[str, int]] | None = None
            for j, h in enumerate(self.hw):
                flows_here = load[:, k, :].max(axis=1) + moved[:, :, k, :].max(axis=(1, 2)) > 0
                if not self.tpot_ok[j] or np.any(mean_rtt[k] * 1.5 + self.pf95[flows_here, j] > self.slo_net):
                    continue
                reps: dict[str, int] = {}
                for mi, m in enumerate(self.models):
                    fm = self.flow_model == mi
                    base = np.einsum("f,fh->h", self.c[fm, j], load[fm, k, :])
                    extra = np.einsum("f,fth->th", self.c[fm, j], moved[fm, :, k, :])
                    need = max(float(base.max()), float((base[None, :] + extra).max()) if n > 1 else 0.0)
                    if need > 0:
                        reps[m] = max(1, math.ceil(need / rho - 1e-9))
                devices = sum(reps.values()) * int(self.gpus[j])
                if devices > self.cands.max_devices[S[k], j]:
                    continue
                c = devices / self.gpus[j] * self.price[j]
                if best is None or c < best[0]:
                    best = (c, h, reps)
            keep.append(k)
            if best is None:  # nothing fits the site's limits or latency: take the fastest, pay a penalty
                j = int(np.argmin(self.pf95.mean(axis=0)))
                need = float(np.einsum("f,fh->h", self.c[:, j], load[:, k, :]).max())
                reps = {self.models[0]: max(1, math.ceil(need / rho))}
                best = (sum(reps.values()) * self.price[j], self.hw[j], reps)
                penalty += PENALTY_UNCOVERED * float(load[:, k, :].max(axis=1).sum())
            cost += best[0]
            hardware.append(best[1])
            replicas.append(best[2])
        penalty += PENALTY_UNCOVERED * uncovered + PENALTY_UNPROTECTED * unprotected
        kept = np.array(keep, dtype=np.int64)
        site_load = load.sum(axis=0)[kept] if len(kept) else np.zeros((0, H))
        return Sizing(tuple(int(S[k]) for k in keep), tuple(hardware), tuple(replicas), float(cost), float(penalty),
                      site_load, uncovered, unprotected)

    def spread(self, rho: float, base: Sizing, more: int = 3, size: Sizer | None = None) -> list[Sizing]:
        """Placements with 1..`more` sites beyond `base`: each time the site that costs least to add (even if
        it costs more than not adding it), then swaps at that count. More sites share the N+1 reserve
        (k / (k - 1)) and spread failures across time zones, which the nearest-site model undervalues while
        rounding replicas up per site; the simulator decides."""
        size = size or self.size
        out = []
        current = base
        pool = [int(s) for s in self.shortlist]
        for _ in range(more):
            open_ = list(current.sites)
            trials = [size(open_ + [s], rho) for s in pool if s not in open_]
            if not trials:
                break
            current = self._swaps(min(trials, key=lambda z: z.score), rho, pool, 20, size)
            if len(current.sites) <= len(open_):
                break
            out.append(current)
        return out

    def _swaps(self, current: Sizing, rho: float, pool: list[int], max_moves: int, size: Sizer) -> Sizing:
        for _ in range(max_moves):
            better = self._swap(current, rho, pool, size, keep_count=True)
            if better is None:
                break
            current = better
        return current

    def _swap(self, current: Sizing, rho: float, pool: list[int], size: Sizer, keep_count: bool) -> Sizing | None:
        """The first placement that swaps one open site for one of the 6 closed sites nearest it and scores better
        (`keep_count`: one that keeps as many sites), or None: the swap move of `search` and `spread`."""
        open_ = list(current.sites)
        for s in open_:
            near = sorted((x for x in pool if x not in open_), key=lambda x: _km(self.cands, s, x))
            for x in near[:6]:
                trial = size([y for y in open_ if y != s] + [x], rho)
                if trial.score < current.score - 1e-9 and (not keep_count or len(trial.sites) == len(open_)):
                    return trial
        return None

    def search(self, rho: float, start: list[int] | None = None, max_moves: int = 60,
               size: Sizer | None = None) -> Sizing:
        """Greedy opening from `start` (or nothing), then drop and swap moves until none improves; `size`
        sizes each placement tried (default: the nearest-site model, Screen.size)."""
        size = size or self.size
        current = size(start or [], rho)
        pool = [int(s) for s in self.shortlist]
        while True:  # greedy add
            open_ = list(current.sites)
            trials = [size(open_ + [s], rho) for s in pool if s not in open_]
            best = min(trials, key=lambda z: z.score, default=None)
            if best is None or best.score >= current.score - 1e-9:
                break
            current = best
        for _ in range(max_moves):  # local search: first improvement
            improved = False
            open_ = list(current.sites)
            for s in open_:
                trial = size([x for x in open_ if x != s], rho)
                if trial.score < current.score - 1e-9:
                    current, improved = trial, True
                    break
            if not improved:
                better = self._swap(current, rho, pool, size, keep_count=False)
                if better is None:
                    break
                current = better
        return current


def _km(c: Candidates, a: int, b: int) -> float:
    return float(distances_km(c.lat[b:b + 1], c.lon[b:b + 1], float(c.lat[a]), float(c.lon[a]))[0])
