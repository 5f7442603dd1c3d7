"""Traffic: real request sizes and burstiness, diurnal load by users' local time, spikes, several tenants.

Sizes and inter-arrival gaps come from the Azure LLM inference traces of 2023-11-16 (Patel et al.,
"Splitwise", ISCA 2024; CC-BY 4.0; data/traces/README.md), or from the trace file a tenant names (aigrid.traces:
another Azure trace, BurstGPT, Mooncake, ...). Each tenant replays one trace's gap sequence
(normalised to mean 1, cycled from a random offset, so bursts keep their shape) on an operational clock that
is then stretched by the tenant's intensity: lambda(t) = base x sum over its cities of users x diurnal(local
hour) x spike factor, where users is a city's population, or the weight the tenant's city list gives it
(sim/user_cities.py). Local hour is solar time (UTC + longitude / 15). The prompt and output sizes of the
same trace rows go with the gaps. Each arrival is placed at a city drawn by the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from aigrid.sim.geography import Cities, jurisdiction_of
from aigrid.sim.scenario import SHIPPED_TRACES, Scenario, ScenarioProblem, Tenant
from aigrid.sim.user_cities import user_places
from aigrid.traces import read_trace_cached, trace_dir

SLOT_S = 300.0
PICK_STREAM = 7
"""Sub-seed of the generator that picks right-sized requests' prompts."""
PREFIX_STREAM = 11
"""Sub-seed of the generator that draws shared-prefix tenants' prefixes."""


@dataclass(frozen=True)
class Trace:
    gaps: np.ndarray
    """Inter-arrival gaps normalised to mean 1."""
    prompt: np.ndarray
    output: np.ndarray


@dataclass(frozen=True)
class Workload:
    """Column arrays, one row per request, sorted by arrival time."""

    t: np.ndarray
    tenant: np.ndarray
    city: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    jitter_u: np.ndarray
    tenant_names: tuple[str, ...]
    pick_u: np.ndarray | None = None
    """With right-sized tenants: per request a uniform draw in [0, 1) that picks its labelled prompt
    (sim/right_size.py); NaN for the other tenants' requests. None when no tenant right-sizes."""
    prefix: np.ndarray | None = None
    """With shared-prefix tenants: per request the id of the prefix it opens with (-1: none); its tokens
    are in `prefix_tokens` and already counted in `prompt`. None when no tenant shares a prefix."""
    prefix_tokens: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.t)


@lru_cache(maxsize=4)
def load_trace(kind: str, directory: str | None = None) -> Trace:
    """A tenant's trace: `conv` or `code` (the shipped Azure 2023 traces) or the path of a trace file
    (aigrid.traces), its rows in time order."""
    if kind in SHIPPED_TRACES:
        tf = read_trace_cached((Path(directory) if directory else trace_dir()) / f"azure_llm_2023_{kind}.csv")
    else:
        tf = read_trace_cached(kind)
    gaps = np.diff(tf.t)
    gaps = gaps / gaps.mean()
    return Trace(gaps, tf.prompt[1:], tf.output[1:])


def diurnal(local_hour: np.ndarray, peak_to_trough: float, peak_hour: float) -> np.ndarray:
    """1 + A cos(2 pi (h - peak) / 24) with max/min = peak_to_trough (mean 1)."""
    a = (peak_to_trough - 1.0) / (peak_to_trough + 1.0)
    return 1.0 + a * np.cos(2 * np.pi * (local_hour - peak_hour) / 24.0)


def build_workload(sc: Scenario, cities: Cities, load: float = 1.0) -> Workload:
    rng = np.random.default_rng(sc.seed)
    slot_s = min(SLOT_S, sc.duration_s / 24)
    n_slots = max(int(np.ceil(sc.duration_s / slot_s)), 1)
    edges = np.minimum(np.arange(n_slots + 1) * slot_s, sc.duration_s)
    shares = np.array([t.share for t in sc.tenants])
    shares = shares / shares.sum()
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    origin: list[int] = []
    """Per part: the part whose rows it replays (itself, or an earlier agent tenant with the same traffic)."""
    for k, tenant in enumerate(sc.tenants):
        twin = twin_of(sc, k)
        if twin is not None:
            t, _, city, prompt, out, pick = parts[twin]
            if tenant.agent is not None and tenant.agent.output_tokens is not None:
                out = np.full(len(t), tenant.agent.output_tokens)
            parts.append((t, np.full(len(t), k, dtype=np.int16), city, prompt, out, pick))
            origin.append(twin)
            continue
        idx, users = users_of(tenant, cities)
        weights = _slot_weights(sc, cities, idx, users, edges, spikes=True)
        calm = _slot_weights(sc, cities, idx, users, edges, spikes=False).sum(axis=1)
        cum = np.concatenate([[0.0], np.cumsum(weights.sum(axis=1) * np.diff(edges))])
        expected = sc.requests * load * shares[k]
        trace = load_trace(tenant.trace)
        # Spikes add load on top of the expected count: scale by the spiky over the calm integral.
        total_ops = expected * cum[-1] / float((calm * np.diff(edges)).sum())
        start = int(rng.integers(len(trace.gaps)))
        n_draw = int(total_ops * 1.3 + 50 * np.sqrt(total_ops + 1) + 10)
        rows = (start + np.arange(n_draw)) % len(trace.gaps)
        u = np.cumsum(trace.gaps[rows])
        keep = u < total_ops
        u, rows = u[keep], rows[keep]
        t = np.interp(u / total_ops * cum[-1], cum, edges)
        slot = np.minimum((t // slot_s).astype(np.int64), n_slots - 1)
        city = np.empty(len(t), dtype=np.int64)
        for s in range(n_slots):
            mask = slot == s
            cnt = int(mask.sum())
            if cnt:
                p = weights[s] / weights[s].sum()
                city[mask] = idx[rng.choice(len(idx), size=cnt, p=p)]
        prompt = np.minimum(trace.prompt[rows], tenant.max_prompt_tokens)
        out = trace.output[rows]
        if tenant.agent is not None and tenant.agent.output_tokens is not None:
            out = np.full(len(t), tenant.agent.output_tokens)
        # a generator of its own, so that the workload of scenarios without right-sizing is unchanged
        pick = np.random.default_rng([sc.seed, PICK_STREAM, k]).random(len(t)) if tenant.right_size \
            else np.full(len(t), np.nan)
        parts.append((t, np.full(len(t), k, dtype=np.int16), city, prompt, out, pick))
        origin.append(k)
    t = np.concatenate([p[0] for p in parts])
    order = np.argsort(t, kind="stable")
    jitter_u = rng.random(len(t))
    if origin != list(range(len(parts))):
        jitter_u = _shared_jitter(jitter_u, order, [len(p[0]) for p in parts], origin)
    w = Workload(
        t=t[order], tenant=np.concatenate([p[1] for p in parts])[order],
        city=np.concatenate([p[2] for p in parts])[order],
        prompt=np.concatenate([p[3] for p in parts])[order].astype(np.int32),
        output=np.maximum(np.concatenate([p[4] for p in parts])[order], 1).astype(np.int32),
        jitter_u=jitter_u, tenant_names=tuple(t.name for t in sc.tenants),
        pick_u=np.concatenate([p[5] for p in parts])[order] if any(t.right_size for t in sc.tenants) else None,
    )
    return with_prefixes(sc, w)


def prefix_key(prefix: int) -> str:
    """The key a request with shared prefix `prefix` carries (RequestInfo.prefix_hash, the gateways' map)."""
    return f"prefix-{prefix}"


def with_prefixes(sc: Scenario, w: Workload) -> Workload:
    """`w` with each shared-prefix tenant's requests opening with one of its prefixes (drawn with a generator
    of its own, so that other scenarios' workloads are unchanged); prefix ids are global over tenants."""
    if not any(t.shared_prefix for t in sc.tenants):
        return w
    prefix = np.full(len(w), -1, dtype=np.int64)
    tokens = np.zeros(len(w), dtype=np.int32)
    first = 0
    for k, tenant in enumerate(sc.tenants):
        spec = tenant.shared_prefix
        if spec is None:
            continue
        rows = np.flatnonzero(w.tenant == k)
        draw = np.random.default_rng([sc.seed, PREFIX_STREAM, k]).integers(spec.count, size=len(rows))
        prefix[rows] = first + draw
        tokens[rows] = spec.tokens
        first += spec.count
    return replace(w, prompt=(w.prompt + tokens).astype(np.int32), prefix=prefix, prefix_tokens=tokens)


def users_of(tenant: Tenant, cities: Cities) -> tuple[np.ndarray, np.ndarray]:
    """(city indices, user weights) of a tenant: its city list with their weights, or every city of its
    continents and countries (everywhere when it names none) weighted by population."""
    if tenant.cities is not None:
        try:
            return user_places(tenant.cities, cities)
        except ValueError as e:
            raise ScenarioProblem(f"tenant {tenant.name!r}: {e}") from None
    idx = cities.select(tenant.continents, tenant.countries)
    if len(idx) == 0:
        raise ScenarioProblem(f"tenant {tenant.name!r}: no cities in its continents/countries")
    return idx, cities.population[idx]


def twin_of(sc: Scenario, k: int) -> int | None:
    """An agent tenant that differs from an earlier agent tenant only in name and agent spec replays that
    tenant's sessions (same times, cities, sizes, jitter): loop placements compare on identical traffic.
    Likewise a tenant that differs from an earlier right-sized tenant only in name, model and right_size
    replays its requests and their prompts (`always-large` beside `auto`)."""
    tenant = sc.tenants[k]
    if tenant.agent is not None:
        key = tenant.model_dump(exclude={"name", "agent"})
        for j, other in enumerate(sc.tenants[:k]):
            if other.agent is not None and other.model_dump(exclude={"name", "agent"}) == key:
                return j  # the first match is never itself a replay: its own twin would come earlier
        return None
    sized = {"name", "model", "right_size"}
    key = tenant.model_dump(exclude=sized)
    for j, other in enumerate(sc.tenants[:k]):
        if other.right_size is not None and other.model_dump(exclude=sized) == key and \
                twin_of(sc, j) is None:
            return j
    return None


def _shared_jitter(draws: np.ndarray, order: np.ndarray, sizes: list[int], origin: list[int]) -> np.ndarray:
    """Give each replayed row the jitter draw of the row it replays (rows are in arrival order)."""
    start = np.concatenate([[0], np.cumsum(sizes)])
    source = np.concatenate([start[origin[k]] + np.arange(n) for k, n in enumerate(sizes)])
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    out: np.ndarray = draws[rank[source[order]]]
    return out


def _slot_weights(sc: Scenario, cities: Cities, idx: np.ndarray, users: np.ndarray, edges: np.ndarray,
                  spikes: bool) -> np.ndarray:
    """weights[slot, city] = users (population) x diurnal(local hour at the slot's middle) x spike factor."""
    mid = (edges[:-1] + edges[1:]) / 2
    utc_hour = (sc.diurnal.start_utc_hour + mid / 3600.0) % 24
    local = (utc_hour[:, None] + cities.lon[idx][None, :] / 15.0) % 24
    w = users[None, :] * diurnal(local, sc.diurnal.peak_to_trough, sc.diurnal.peak_hour)
    for f in sc.faults:
        if f.kind != "spike" or not spikes:
            continue
        until = f.until_s if f.until_s is not None else float("inf")
        in_time = (mid >= f.at_s) & (mid < until)
        if f.continents or f.jurisdictions:
            conts, jurs = set(f.continents or ()), set(f.jurisdictions or ())
            where = np.array([cities.continent[i] in conts or jurisdiction_of(cities.country[i]) in jurs
                              for i in idx])
        else:
            where = np.ones(len(idx), dtype=bool)
        w = np.where(in_time[:, None] & where[None, :], w * f.factor, w)
    out: np.ndarray = w
    return out
