"""Predicted time to first token: network round trip + queue wait + prefill.

Queue: an engine with c batch slots (continuous batching) serves up to c requests at once; the rest wait.
Given n requests in the system, the expected wait of a new arrival in an M/M/c queue is 0 while n < c and
(n - c + 1) x S / c once every slot is busy, where S is the mean service time of one request. Near
saturation n itself grows without bound, which is where the non-linear knee of TTFT comes from. When the
engine reports its own recent TTFT, the prediction is blended with that measurement, so a miscalibrated
profile is corrected by what the engine actually does.

Prefill: uncached prompt tokens / the endpoint's prefill rate. A prompt whose prefix (or session) was last
served at this endpoint is assumed mostly cached (CACHED_FRACTION).
"""

from __future__ import annotations

from collections.abc import Mapping

from aigrid.core.geo import distance_km, rtt_ms
from aigrid.core.types import Endpoint, EndpointState, GeoPoint, Prediction, RequestInfo, Site

TYPICAL_OUTPUT_TOKENS = 130
"""Median generated tokens in the Azure 2023 conversation trace; the mean service time uses it."""
CACHED_FRACTION = 0.8
MEASURED_WEIGHT = 0.5


def service_time_s(endpoint: Endpoint, state: EndpointState) -> float:
    """Mean time one request occupies a batch slot: measured output length x time per output token, each
    falling back to the profile (TYPICAL_OUTPUT_TOKENS, decode_tps) until measured."""
    tpot = state.tpot_s if state.tpot_s else 1.0 / max(endpoint.decode_tps, 1e-9)
    tokens = state.mean_output_tokens if state.mean_output_tokens else TYPICAL_OUTPUT_TOKENS
    return tokens * tpot


def queue_wait_s(endpoint: Endpoint, state: EndpointState) -> float:
    slots = max(endpoint.max_concurrency, 1)
    in_system = state.running + state.waiting
    if in_system < slots:
        return 0.0
    return (in_system - slots + 1) * service_time_s(endpoint, state) / slots


def prefill_s(endpoint: Endpoint, prompt_tokens: int, warm: bool) -> float:
    uncached = prompt_tokens * (1.0 - CACHED_FRACTION) if warm else prompt_tokens
    return uncached / max(endpoint.prefill_tps, 1e-9)


def is_warm(request: RequestInfo, endpoint: Endpoint, prefix_owner: Mapping[str, str]) -> bool:
    """True when this request's prefix or session was last served by this endpoint."""
    keys = (request.prefix_hash, request.session)
    return any(key is not None and prefix_owner.get(key) == endpoint.id for key in keys)


def client_distance_km(client: GeoPoint | None, site: Site) -> float | None:
    return None if client is None else distance_km(client, site.location)


def predict(request: RequestInfo, endpoint: Endpoint, site: Site, state: EndpointState,
            warm: bool) -> Prediction:
    dist = client_distance_km(request.client_location, site)
    net = 0.0 if dist is None else rtt_ms(dist)
    queue = queue_wait_s(endpoint, state) * 1000.0
    prefill = prefill_s(endpoint, request.prompt_tokens, warm) * 1000.0
    if state.ttft_s is not None:
        measured_engine_ms = state.ttft_s * 1000.0
        modelled_engine_ms = queue + prefill
        blended = (1 - MEASURED_WEIGHT) * modelled_engine_ms + MEASURED_WEIGHT * measured_engine_ms
        queue = max(0.0, blended - prefill)
    return Prediction(rtt_ms=net, queue_ms=queue, prefill_ms=prefill, distance_km=dist, warm=warm)
