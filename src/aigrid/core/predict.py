"""Predicted time to first token: network round trip + wait for admission + prefill of the work ahead +
this request's own prefill, calibrated on observed outcomes.

Work ahead. A request queues behind every prompt token already sent to the endpoint that has not produced
its first token: the gateways keep that ledger exactly (EndpointState.pending_prompt_tokens: their own sends
at once, other gateways' through the shared state). Requests the engine reports waiting beyond the ledger
(traffic from elsewhere) count with this request's prompt size. This is what engine telemetry shows only a
scrape later, and why a burst of long prompts no longer looks like an idle engine.

Prefill with chunked prefill: an engine packs at most CHUNK_TOKENS prompt tokens into a step, and every step
also carries the running decodes; so T prompt tokens take T / prefill rate plus ceil(T / CHUNK_TOKENS)
decode steps. Running decodes slow each step (DECODE_STEP_GROWTH per decoding request per batch slot).

Admission: an engine with c batch slots serves c requests at once; with n in the system (the larger of the
engine's count and the gateways' ledger) a new arrival waits (n - c + 1) x S / c for a slot (M/M/c), where S
is the mean service time of one request. Near saturation n grows without bound: the knee of TTFT.

The engine keeps working off that backlog while the request travels to it, but it also takes in what other
clients send meanwhile: with the pending prompts placed in time (backlog_tokens) only the share of the
drain that this inflow leaves counts (travel_share); with a count alone, half the round trip comes off the
wait ahead.

Calibration (core.calibration) maps the modelled engine time to the observed one per endpoint (fixed
overhead, slope, p90 ratio). Until it is ready, an engine-reported recent TTFT is blended in.
"""

from __future__ import annotations

from collections.abc import Mapping
from math import ceil

from aigrid.core.geo import distance_km, rtt_ms
from aigrid.core.types import (
    Endpoint,
    EndpointState,
    GeoPoint,
    Prediction,
    PrefillQueue,
    RequestInfo,
    Site,
    new_record,
)

TYPICAL_OUTPUT_TOKENS = 130
"""Median generated tokens in the Azure 2023 conversation trace; the mean service time uses it."""
CACHED_FRACTION = 0.8
MEASURED_WEIGHT = 0.5
"""Weight of an engine-reported recent TTFT while the endpoint's calibration is not ready."""
CHUNK_TOKENS = 2048
"""Prompt tokens per engine step under chunked prefill (vLLM's and llama.cpp's default batch)."""
DECODE_STEP_GROWTH = 1.0
"""A full batch of decodes makes a step this much slower than a lone one (attention over the batch)."""
UNCALIBRATED_SPREAD = 1.5
"""p90 / p50 before an endpoint has a calibration."""

# Every function here runs once per candidate of every decision. Where a formula reads max(x, lo) it is
# written `lo if lo > x else x` (min(x, hi): `hi if hi < x else x`), which is what the builtin returns, bit
# for bit, at a third of its cost in CPython 3.11 (the builtin parses its arguments for key= and default=).


def service_time_s(endpoint: Endpoint, state: EndpointState) -> float:
    """Mean time one request occupies a batch slot: measured output length x time per output token, each
    falling back to the profile (TYPICAL_OUTPUT_TOKENS, decode_tps) until measured."""
    tps = endpoint.decode_tps
    tpot = state.tpot_s if state.tpot_s else 1.0 / (1e-9 if 1e-9 > tps else tps)
    tokens = state.mean_output_tokens if state.mean_output_tokens else TYPICAL_OUTPUT_TOKENS
    return tokens * tpot


def in_system(state: EndpointState) -> int:
    """Requests at the endpoint: the engine's count or the gateways' ledger, whichever knows more."""
    engine, ledger = state.running + state.waiting, state.pending_requests + state.decoding
    return ledger if ledger > engine else engine


def queue_wait_s(endpoint: Endpoint, state: EndpointState) -> float:
    """Wait for a free batch slot (M/M/c): zero while a slot is free."""
    slots = 1 if 1 > endpoint.max_concurrency else endpoint.max_concurrency
    n = in_system(state)
    if n < slots:
        return 0.0
    return (n - slots + 1) * service_time_s(endpoint, state) / slots


def unseen_tokens(request: RequestInfo, state: EndpointState) -> float:
    """Requests the engine reports waiting beyond the gateways' ledger (traffic from elsewhere), each counted
    at this request's prompt size."""
    unseen = state.waiting - state.pending_requests
    return unseen * request.prompt_tokens if unseen > 0 else 0.0


def tokens_ahead(request: RequestInfo, state: EndpointState) -> float:
    """Prompt tokens queued for prefill ahead of this request, every pending prompt counted whole."""
    return state.pending_prompt_tokens + unseen_tokens(request, state)


def drain_tps(endpoint: Endpoint, state: EndpointState, step: float) -> float:
    """Prompt tokens per second the engine prefills while it has a backlog: full chunks, each riding a step
    with the running decodes; slower by the calibrated prefill coefficient once there is one."""
    tps = endpoint.prefill_tps
    chunk_ms = CHUNK_TOKENS * 1000.0 / (1e-9 if 1e-9 > tps else tps) + step
    rate = CHUNK_TOKENS * 1000.0 / chunk_ms
    cal = state.calibration
    if cal is not None and cal.ready:
        rate /= cal.prefill_coef
    return rate


def travel_share(request: RequestInfo, endpoint: Endpoint, state: EndpointState, rate: float) -> float:
    """The share of the drain `rate` that works off the backlog ahead while a request travels to the engine:
    the engine also takes in the prompts other clients send meanwhile, which reach it before this request
    does and which no gateway can know of yet; they use up the rest. Their inflow, by Little's law: the
    requests in the system (in_system) over the time each spends there (service_time_s) per second, each
    the size of the mean pending prompt (this request's where none is pending). 1 where nothing is in the
    system, 0 where the inflow is at least the drain (a saturated engine's backlog does not shrink)."""
    n = in_system(state)
    if n <= 0 or rate <= 0.0:
        return 1.0
    pending = state.pending_requests
    size = state.pending_prompt_tokens / pending if pending > 0 else request.prompt_tokens
    share = 1.0 - n / service_time_s(endpoint, state) * size / rate
    return 0.0 if 0.0 > share else share


def backlog_tokens(queue: PrefillQueue, arrive_s: float, rate: float, share: float = 1.0) -> float:
    """Prompt tokens still to prefill at the engine when a request sent now reaches it `arrive_s` from now:
    Lindley's recursion over the pending prompts in arrival order, from the anchor (the latest first token:
    everything that arrived before it was done), draining at `rate` tokens per second whenever the engine
    has a backlog, until now; from now on, while this request travels, at `share` x `rate` (travel_share:
    the rest goes to prompts sent after this one that reach the engine first, unknown yet). Prompts that
    arrive after this request are not ahead of it.

    Before 7 Dec 2026 the backlog drained at the full rate while the request travelled, which made a busy
    far site's queue look shorter the farther away the client was: in the simulator's loaded cell
    (docs/routing.md, "Near or fast") the engine time of requests sent to a site with a backlog ran over
    its prediction by 5 ms on average at the nearest site and by 60-110 ms at the three farthest."""
    t = queue.anchor_s
    backlog = 0.0
    for at, tokens in queue.arrivals:
        if at > arrive_s:
            break
        if t is None or at > t:
            if t is not None:
                backlog -= _drained(rate, share, t, at)
                if 0.0 > backlog:
                    backlog = 0.0
            t = at
        backlog += tokens
    if t is not None and arrive_s > t:
        backlog -= _drained(rate, share, t, arrive_s)
        if 0.0 > backlog:
            backlog = 0.0
    return backlog


def _drained(rate: float, share: float, start: float, end: float) -> float:
    """Tokens the engine prefills from `start` to `end` (seconds from now, start < end) with a backlog: at
    `rate` until now, at `share` x `rate` after."""
    past = (end if 0.0 > end else 0.0) - start if 0.0 > start else 0.0
    ahead = end - (start if start > 0.0 else 0.0) if end > 0.0 else 0.0
    return rate * past + share * rate * ahead


def uncached_tokens(request: RequestInfo, cached: float | None) -> float:
    """The prompt tokens an endpoint must prefill: all of them where it is cold (`cached` None), the rest
    of what its prefix cache holds (warm_cache) where it is warm."""
    return request.prompt_tokens if cached is None else request.prompt_tokens - cached


def step_ms(endpoint: Endpoint, state: EndpointState) -> float:
    """One engine step carrying a prefill chunk, slowed by the running decodes that ride it."""
    slots = 1 if 1 > endpoint.max_concurrency else endpoint.max_concurrency
    decoding = state.running if state.running > state.decoding else state.decoding
    decoding = slots if slots < decoding else decoding
    tps = endpoint.decode_tps
    return 1000.0 / (1e-9 if 1e-9 > tps else tps) * (1.0 + DECODE_STEP_GROWTH * decoding / slots)


def prefill_ms(endpoint: Endpoint, state: EndpointState, tokens: float, step: float | None = None) -> float:
    """Time to prefill `tokens` under chunked prefill, with the running decodes riding every step (`step`:
    step_ms(endpoint, state), for a caller that already has it)."""
    if tokens <= 0:
        return 0.0
    if step is None:
        step = step_ms(endpoint, state)
    tps = endpoint.prefill_tps
    return tokens * 1000.0 / (1e-9 if 1e-9 > tps else tps) + ceil(tokens / CHUNK_TOKENS) * step


def warm_cache(request: RequestInfo, prefix_owner: Mapping[str, str]) -> dict[str, float]:
    """Endpoint -> prompt tokens its prefix cache holds for this request, for the (at most two) endpoints
    that last served its shared prefix or its session (the warm ones), with one lookup per key. The shared
    prefix: its own tokens when the gateway knows them (request.prefix_tokens,
    a system prompt), else CACHED_FRACTION of the prompt; the session (a conversation's history):
    CACHED_FRACTION of the prompt; the larger where one endpoint holds both. At least one token is always
    prefilled."""
    prompt = request.prompt_tokens
    out: dict[str, float] = {}
    key = request.prefix_hash
    if key is not None and (owner := prefix_owner.get(key)) is not None:
        known = request.prefix_tokens
        out[owner] = prompt * CACHED_FRACTION if known is None else float(min(known, max(prompt - 1, 0)))
    key = request.session
    if key is not None and (owner := prefix_owner.get(key)) is not None:
        share = prompt * CACHED_FRACTION
        if owner not in out or out[owner] < share:  # warm even when nothing is cached (an empty prompt)
            out[owner] = share
    return out


def client_distance_km(client: GeoPoint | None, site: Site) -> float | None:
    return None if client is None else distance_km(client, site.location)


def network_ms(dist: float | None, state: EndpointState) -> float:
    """The round trip: the gateway's measured one when the client is at the gateway (no location given),
    else the distance model from the client's location."""
    if dist is None:
        return state.rtt_ms if state.rtt_ms is not None else 0.0
    return rtt_ms(dist)


def _counted_ms(request: RequestInfo, endpoint: Endpoint, state: EndpointState, wait_s: float, mine: float,
                own: float, step: float, net: float) -> float:
    """The wait behind every pending prompt counted whole (arrived or still travelling, partly prefilled or
    not), less the half round trip the engine works while this request travels (not clamped)."""
    return (wait_s * 1000.0 + prefill_ms(endpoint, state, tokens_ahead(request, state) + mine, step) - own
            - net / 2.0)


def committed_ms(request: RequestInfo, endpoint: Endpoint, state: EndpointState, prediction: Prediction,
                 cached: float | None) -> float:
    """The work committed to the endpoint, which requests sent after this one will queue behind too: every
    pending prompt counted whole (_counted_ms). The predictor's rule when it has no placed queue, and what
    the batch class's saturation rule reads (core.urgency.saturated): it leaves headroom for later urgent
    work, so it counts what they will meet, not only what this request meets."""
    mine = uncached_tokens(request, cached)
    step = step_ms(endpoint, state)
    ahead = _counted_ms(request, endpoint, state, queue_wait_s(endpoint, state), mine,
                        prefill_ms(endpoint, state, mine, step), step, prediction.rtt_ms)
    return 0.0 if 0.0 > ahead else ahead


def predict(request: RequestInfo, endpoint: Endpoint, site: Site, state: EndpointState,
            cached: float | None = None, known_km: float = -1.0) -> Prediction:
    """`cached`: prompt tokens this endpoint's prefix cache holds for the request (warm_cache), not
    prefilled again; None where it is not warm (it did not serve the request's prefix or session last).
    `known_km`: the client's distance to the site where the caller has it already (GridView.distances_km,
    what client_distance_km gives; only for a request with a client location); negative: computed here."""
    dist = client_distance_km(request.client_location, site) if known_km < 0.0 else known_km
    net = network_ms(dist, state)
    mine = uncached_tokens(request, cached)
    step = step_ms(endpoint, state)
    own = prefill_ms(endpoint, state, mine, step)
    pending = state.prefill_queue
    wait = queue_wait_s(endpoint, state)
    if pending is None:
        ahead = _counted_ms(request, endpoint, state, wait, mine, own, step, net)
    else:
        # waiting for a batch slot, the prompts ahead wait too: they drain only while the engine admits
        rate = 0.0 if wait > 0.0 else drain_tps(endpoint, state, step)
        tokens = backlog_tokens(pending, net / 2000.0, rate, travel_share(request, endpoint, state, rate))
        ahead = wait * 1000.0 + prefill_ms(endpoint, state, tokens + unseen_tokens(request, state) + mine,
                                           step) - own
    if 0.0 > ahead:
        ahead = 0.0
    cal = state.calibration
    if cal is not None and cal.ready:
        queue, prefill = cal.parts_ms(ahead, own)
        spread = cal.ratio_q
    elif state.ttft_s is not None:
        blended = (1 - MEASURED_WEIGHT) * (ahead + own) + MEASURED_WEIGHT * state.ttft_s * 1000.0
        queue, prefill, spread = blended - own, own, UNCALIBRATED_SPREAD
        if 0.0 > queue:
            queue = 0.0
    else:
        queue, prefill, spread = ahead, own, UNCALIBRATED_SPREAD
    tpot = None if state.tpot_s is None else state.tpot_s * 1000.0
    # every field in order (rtt, queue, prefill, distance, warm, spread, model ahead / own, tpot, measured rtt),
    # without Prediction.__new__'s Python frame (keywords doubled the cost): once per candidate of every decision
    return new_record(Prediction, (net, queue, prefill, dist, cached is not None, spread, ahead, own, tpot,
                                   state.rtt_ms))
