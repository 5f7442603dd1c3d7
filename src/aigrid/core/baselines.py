"""Baseline routers to compare the five-axis scheduler against, with the same signature as schedule().

Each one applies exactly the scheduler's hard filters (model, residency, tenant sites, context, retry exclusions,
health, capacity) and then ranks the survivors by one simple key instead of five weighted axes:

- centralized: only the endpoints of one named region (the site ids given), least outstanding first;
- nearest: smallest great-circle distance to the client (a GeoDNS / anycast setup);
- round robin: the next endpoint in a fixed order; the counter lives in the router object, not a global;
- least loaded: fewest outstanding requests (running + waiting) per batch slot;
- lowest recent latency: the smallest recently measured TTFT, the way LiteLLM's latency-based routing
  picks deployments; an endpoint with no measurement yet counts as 0 (tried first), and there is no
  prediction of distance or queueing;
- power of two choices: two eligible endpoints drawn at random, the one with fewer outstanding per slot;
- llm-d-style: the Gateway API Inference Extension's scorer mix at the weights of llm-d's
  inference-scheduling guide (prefix-cache 3, kv-cache-utilization 2, queue 2): queue = min-max normalised
  waiting requests, kv = 1 - KV-cache use, prefix = the share of the prompt cached there (the tokens
  core.predict.warm_cache credits the endpoint that last served its prefix or session, over the prompt's);
  the max-score picker breaks ties at random;
- Dynamo-style KV router: cost = overlap_weight x prefill blocks (this prompt's uncached blocks, the
  cached ones from core.predict.warm_cache as Dynamo's KV events would report them, plus the
  prefill blocks pending there) + decode blocks (active blocks there plus this request's), 16-token blocks,
  lowest cost wins; with temperature > 0, sampled from softmax(-normalised cost / temperature).
None of them models the network: that is the peers' published design, reproduced as such.

Ties are broken with the injected rng. Pure: no I/O, no clock, no global random.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from math import exp

from aigrid.core.context import NOTHING_CROWDED, build_context
from aigrid.core.geo import distance_km, rtt_ms
from aigrid.core.plugins import Filter
from aigrid.core.predict import warm_cache
from aigrid.core.registry import FILTERS
from aigrid.core.scorers.cost import request_cost_usd
from aigrid.core.types import (
    UNKNOWN_STATE,
    Candidate,
    Decision,
    Endpoint,
    GridView,
    Policy,
    Prediction,
    Rejection,
    RequestInfo,
    Rng,
    Site,
    build_decision,
    new_record,
)

HARD_FILTERS: tuple[Filter, ...] = tuple(make() for make in FILTERS.values())

Key = Callable[[RequestInfo, GridView, Endpoint], float]
Router = Callable[[RequestInfo, GridView, Policy, Rng], Decision]
"""What schedule() and every baseline are: the simulator and the gateway call either the same way."""


def eligible(request: RequestInfo, view: GridView, policy: Policy,
             filters: Sequence[Filter] = HARD_FILTERS) -> tuple[list[Endpoint], list[Rejection]]:
    """Split the view's endpoints into those passing every hard filter and rejections with reasons."""
    ctx = build_context(request, view, policy, NOTHING_CROWDED, -1.0)  # Context(request, view, policy), no __init__
    # each filter's name and bound check once per decision, not looked up once per endpoint (as the scheduler)
    checks = [(f.name, f.check) for f in filters if f.applies(ctx)]
    ok: list[Endpoint] = []
    rejected: list[Rejection] = []
    for ep in view.endpoints:
        for name, check in checks:
            verdict = check(ctx, ep)
            if not verdict.ok:
                rejected.append(Rejection(ep.id, ep.site_id, name, verdict.reason))
                break
        else:
            ok.append(ep)
    return ok, rejected


def _client_distance(request: RequestInfo, view: GridView, ep: Endpoint) -> float | None:
    loc = request.client_location
    return None if loc is None else distance_km(loc, view.sites[ep.site_id].location)


def _outstanding(request: RequestInfo, view: GridView, ep: Endpoint) -> float:
    s = view.states.get(ep.id, UNKNOWN_STATE)  # view.state(ep.id) without its Python frame
    return (s.running + s.waiting) / max(ep.max_concurrency, 1)


def _recent_ttft(request: RequestInfo, view: GridView, ep: Endpoint) -> float:
    ttft = view.states.get(ep.id, UNKNOWN_STATE).ttft_s  # view.state(ep.id)
    return 0.0 if ttft is None else ttft


def _decide(name: str, request: RequestInfo, view: GridView, ranked_eps: Sequence[tuple[float, Endpoint]],
            rejected: list[Rejection], rng: Rng, why: str,
            distances: Mapping[str, float | None] | None = None) -> Decision:
    """Rank by key (lower first); equal best keys are broken at random with the injected rng. `distances`:
    the client's distance to each endpoint, when the router has computed them already."""
    if distances is None and request.client_location is not None:
        distances = view.distances_km  # the caller's, where it computed them (None: computed below)
    ranked = sorted(ranked_eps, key=lambda ke: (ke[0], ke[1].id))
    if len(ranked) > 1:
        best = [ke for ke in ranked if ke[0] == ranked[0][0]]
        if len(best) > 1:
            pick = best[min(int(rng.random() * len(best)), len(best) - 1)]
            ranked = [pick, *(ke for ke in ranked if ke is not pick)]
    sites = view.sites
    cands = tuple(_candidate(request, sites, ep, -key, name,
                             _client_distance(request, view, ep) if distances is None else distances[ep.id])
                  for key, ep in ranked)
    if cands:
        reason = f"{name}: chose {cands[0].endpoint_id} at {cands[0].site_id} ({why} {ranked[0][0]:.3g})"
    else:
        reason = f"{name}: no eligible endpoint ({len(rejected)} rejected)"
    return build_decision(request.id, name, cands, tuple(rejected), reason, None, None)  # Decision(...), no __init__


def _candidate(request: RequestInfo, sites: Mapping[str, Site], ep: Endpoint, total: float, name: str,
               dist: float | None) -> Candidate:
    site = sites[ep.site_id]
    # no prediction of queue or prefill (the baselines make none); the round trip is physics, and a gateway
    # that emulates distance waits it for a baseline's choice as for any other
    # Prediction(rtt, 0.0, 0.0, dist) and Candidate(...) with every field, in order
    prediction = new_record(Prediction, (0.0 if dist is None else rtt_ms(dist), 0.0, 0.0, dist, False, 1.0, 0.0,
                                         0.0, None, None))
    return new_record(Candidate, (ep.id, site.id, site.jurisdiction, ep.model, {}, total, prediction,
                                  request_cost_usd(request, ep), (("router", "baseline {}", (name,)),)))


@dataclass(frozen=True, slots=True)
class KeyRouter:
    """Route to the eligible endpoint with the smallest key."""

    name: str
    key: Key
    why: str

    def __call__(self, request: RequestInfo, view: GridView, policy: Policy, rng: Rng) -> Decision:
        ok, rejected = eligible(request, view, policy)
        return _decide(self.name, request, view, [(self.key(request, view, ep), ep) for ep in ok],
                       rejected, rng, self.why)


@dataclass(frozen=True, slots=True)
class Nearest:
    """Smallest great-circle distance to the client first (0 for every endpoint when it is unknown); each
    distance is computed once, for the ranking and for the candidate's prediction."""

    name: str = "nearest"

    def __call__(self, request: RequestInfo, view: GridView, policy: Policy, rng: Rng) -> Decision:
        ok, rejected = eligible(request, view, policy)
        loc, sites = request.client_location, view.sites  # _client_distance's, read once per decision
        known = view.distances_km if loc is not None else None  # the caller's, where it has them
        distances: Mapping[str, float | None]
        if known is not None:
            distances = known
            keyed = [(known[ep.id], ep) for ep in ok]
        else:
            distances = {ep.id: None if loc is None else distance_km(loc, sites[ep.site_id].location) for ep in ok}
            keyed = [(0.0 if d is None else d, ep) for ep, d in zip(ok, distances.values(), strict=True)]
        return _decide(self.name, request, view, keyed, rejected, rng, "distance km", distances)


def nearest() -> Nearest:
    return Nearest()


def least_loaded() -> KeyRouter:
    return KeyRouter("least-loaded", _outstanding, "outstanding per slot")


def lowest_latency() -> KeyRouter:
    return KeyRouter("lowest-latency", _recent_ttft, "recent TTFT s")


@dataclass(frozen=True, slots=True)
class Centralized:
    """Everything goes to one region (a set of site ids); inside it, least outstanding first."""

    site_ids: frozenset[str]
    name: str = "centralized"

    def __call__(self, request: RequestInfo, view: GridView, policy: Policy, rng: Rng) -> Decision:
        ok, rejected = eligible(request, view, policy)
        here = []
        for ep in ok:
            if ep.site_id in self.site_ids:
                here.append((_outstanding(request, view, ep), ep))
            else:
                rejected.append(Rejection(ep.id, ep.site_id, "centralized", "outside the central region"))
        return _decide(self.name, request, view, here, rejected, rng, "outstanding per slot")


@dataclass(slots=True)
class RoundRobin:
    """The next eligible endpoint in id order after the last one chosen. The counter is explicit state."""

    name: str = "round-robin"
    counter: int = field(default=0)

    def __call__(self, request: RequestInfo, view: GridView, policy: Policy, rng: Rng) -> Decision:
        ok, rejected = eligible(request, view, policy)
        ok.sort(key=lambda ep: ep.id)
        n = len(ok)
        start = self.counter % n if n else 0
        self.counter += 1
        ranked = [(float((k - start) % n), ep) for k, ep in enumerate(ok)]
        return _decide(self.name, request, view, ranked, rejected, rng, "position")


@dataclass(frozen=True, slots=True)
class PowerOfTwo:
    """Sample two eligible endpoints (injected rng), keep the one with fewer outstanding per slot."""

    name: str = "power-of-two"

    def __call__(self, request: RequestInfo, view: GridView, policy: Policy, rng: Rng) -> Decision:
        ok, rejected = eligible(request, view, policy)
        ok.sort(key=lambda ep: ep.id)
        if len(ok) > 2:
            a = min(int(rng.random() * len(ok)), len(ok) - 1)
            b = min(int(rng.random() * (len(ok) - 1)), len(ok) - 2)
            b += b >= a
            ok = [ok[a], ok[b]]
        return _decide(self.name, request, view, [(_outstanding(request, view, ep), ep) for ep in ok],
                       rejected, rng, "outstanding per slot")


LLMD_WEIGHTS = {"prefix": 3.0, "kv": 2.0, "queue": 2.0}


@dataclass(frozen=True, slots=True)
class LlmdScorers:
    """llm-d's default scorer mix (see the module docstring); higher score first."""

    name: str = "llm-d"

    def __call__(self, request: RequestInfo, view: GridView, policy: Policy, rng: Rng) -> Decision:
        ok, rejected = eligible(request, view, policy)
        queues = [view.state(ep.id).waiting for ep in ok]
        lo, hi = (min(queues), max(queues)) if queues else (0, 0)
        keyed = []
        cache = warm_cache(request, view.prefix_owner)
        prompt = max(request.prompt_tokens, 1)
        for ep, q in zip(ok, queues, strict=True):
            st = view.state(ep.id)
            queue = 1.0 if hi == lo else (hi - q) / (hi - lo)
            kv = 1.0 - (st.kv_usage if st.kv_usage is not None else 0.0)
            prefix = cache.get(ep.id, 0.0) / prompt  # the matched share of the prompt, as llm-d's prefix scorer
            w = LLMD_WEIGHTS
            score = (w["prefix"] * prefix + w["kv"] * kv + w["queue"] * queue) / sum(w.values())
            keyed.append((-score, ep))
        return _decide(self.name, request, view, keyed, rejected, rng, "negative score")


BLOCK_TOKENS = 16


@dataclass(frozen=True, slots=True)
class DynamoKvRouter:
    """Dynamo's KV-router cost (see the module docstring). The active blocks per worker come from the
    gateways' ledger (Dynamo's router tracks its own active sequences the same way)."""

    name: str = "dynamo"
    overlap_weight: float = 1.0
    temperature: float = 0.0

    def __call__(self, request: RequestInfo, view: GridView, policy: Policy, rng: Rng) -> Decision:
        ok, rejected = eligible(request, view, policy)
        blocks = request.prompt_tokens / BLOCK_TOKENS
        cache = warm_cache(request, view.prefix_owner)  # the overlap Dynamo's KV events report, in tokens
        keyed = []
        for ep in ok:
            st = view.state(ep.id)
            cached = cache.get(ep.id, 0.0) / BLOCK_TOKENS
            prefill = blocks - cached + st.pending_prompt_tokens / BLOCK_TOKENS
            active = st.decoding * (blocks + request.max_output_tokens / BLOCK_TOKENS) + blocks
            keyed.append((self.overlap_weight * prefill + active, ep))
        if self.temperature > 0 and len(keyed) > 1:
            keyed = _softmax_order(keyed, self.temperature, rng)
        return _decide(self.name, request, view, keyed, rejected, rng, "cost in blocks")


def _softmax_order(keyed: list[tuple[float, Endpoint]], temperature: float,
                   rng: Rng) -> list[tuple[float, Endpoint]]:
    """Sample one endpoint from softmax(-normalised cost / temperature) and put it first (cost 0 -> lowest)."""
    costs = [c for c, _ in keyed]
    lo, hi = min(costs), max(costs)
    span = (hi - lo) or 1.0
    weights = [exp(-((c - lo) / span) / temperature) for c in costs]
    u, acc = rng.random() * sum(weights), 0.0
    pick = len(keyed) - 1
    for k, w in enumerate(weights):
        acc += w
        if u <= acc:
            pick = k
            break
    return [(lo - 1.0 if k == pick else c, ep) for k, (c, ep) in enumerate(keyed)]


BASELINES: dict[str, Callable[[], Router]] = {
    "nearest": nearest,
    "round-robin": RoundRobin,
    "least-loaded": least_loaded,
    "lowest-latency": lowest_latency,
    "power-of-two": PowerOfTwo,
    "llm-d": LlmdScorers,
    "dynamo": DynamoKvRouter,
    "dynamo-softmax": lambda: DynamoKvRouter("dynamo-softmax", temperature=0.5),
}
"""Baselines that need no settings (centralized needs its region: Centralized(frozenset({...})))."""
