"""The routing core's contract: plain, immutable data.

Everything the scheduler reads (a request, a snapshot of the grid) and everything it returns (a decision)
is an immutable record defined here. The gateway builds these from live telemetry, the simulator from its
models; neither can tell the core which world it is in.

Most are frozen dataclasses. The three built once per candidate of every decision (EndpointState in the
view, Prediction and Candidate in the decision) are NamedTuples: as immutable, with the same fields and
constructor, and about eight times cheaper to build in CPython (a frozen dataclass's __init__ sets each
field through object.__setattr__; a NamedTuple is one tuple). They compare and iterate as tuples; change
one with `_replace`, not dataclasses.replace.

This module is compiled with the core (scripts/build_core.py): its frozen dataclasses are then native classes,
whose fields the compiled core reads directly instead of through Python's generic attribute lookup. They
pickle and copy through `__reduce__` (reduce_record), stay frozen, and store a float field as a float (an int
given for one reads back as a float: `GeoPoint(1, 2).lat == 1.0`), and refuse a value of another type than
the field's (TypeError: a numpy integer for an int field, a list for a tuple field), which Python's would keep.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, NamedTuple, Protocol, TypeVar

from aigrid.core.calibration import Calibration

AXES: tuple[str, ...] = ("ttft", "cost", "affinity", "headroom", "proximity")
"""The five scoring axes, in the order the seeds list them."""


class Rng(Protocol):
    """The only randomness the core may use; passed in, never global (random.Random fits)."""

    def random(self) -> float: ...


def reduce_record(record: Any) -> tuple[object, ...]:
    """How a frozen dataclass here pickles and copies: rebuilt by its class from every field, in order. Compiled
    with mypyc, the default would set each field on the new record through setattr, which a frozen dataclass
    refuses (FrozenInstanceError); its __init__ takes them (the pure-Python record pickles the same way)."""
    return (type(record), tuple(getattr(record, f.name) for f in fields(record)))


@dataclass(frozen=True, slots=True)
class GeoPoint:
    lat: float
    lon: float

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_record(self)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    family: str
    params_b: float
    context: int | None = None
    """Tokens a request to the model may hold, prompt and answer (the grid spec's ModelSpec.context): the context
    filter (filters/context.py) rejects an endpoint of a model that cannot hold the request's prompt. None: not
    known (the simulator's models), and no endpoint is rejected for it."""

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_record(self)


@dataclass(frozen=True, slots=True)
class Site:
    """A point of presence: a GPU region, an edge site or a CPU box."""

    id: str
    name: str
    location: GeoPoint
    jurisdiction: str
    hardware: str = "cpu"
    power_budget_w: float = 0.0
    idle_power_w: float = 0.0
    peak_power_w: float = 0.0

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_record(self)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One inference engine at a site, serving one model."""

    id: str
    site_id: str
    model: str
    family: str
    params_b: float
    price_in_per_mtok: float = 0.0
    price_out_per_mtok: float = 0.0
    max_concurrency: int = 1
    prefill_tps: float = 1000.0
    decode_tps: float = 50.0
    engine: str = "openai"

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_record(self)


class Circuit(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class PrefillQueue(NamedTuple):
    """The prompts the gateways sent to one endpoint that have not produced a first token, placed in time:
    what the predictor replays to know how much prefill is still ahead of a new request when it arrives.

    Times are seconds relative to the snapshot (negative: in the past). The engine prefills in arrival order,
    so once the gateways saw the first token of a request, everything that arrived before it is done: that
    request is the anchor, and only prompts that arrived after it are listed."""

    anchor_s: float | None
    """When the engine produced the latest first token the gateways know of (None: none known)."""
    arrivals: tuple[tuple[float, int], ...]
    """(when the prompt reaches or reached the engine, its prompt tokens), oldest first."""


class EndpointState(NamedTuple):
    """Latest telemetry for one endpoint. Missing numbers are None: the core falls back to the profile.

    A NamedTuple, like Prediction and Candidate: see the module's docstring. Change one with `_replace`."""

    healthy: bool = True
    circuit: Circuit = Circuit.CLOSED
    running: int = 0
    waiting: int = 0
    kv_usage: float | None = None
    ttft_s: float | None = None
    tpot_s: float | None = None
    mean_output_tokens: float | None = None
    """Recent mean of generated tokens per request here (measured); sizes the queue's service time."""
    error_rate: float = 0.0
    pending_requests: int = 0
    """Requests the gateways sent here that have produced no first token yet (own sends at once, other
    gateways' through the shared state): the work ahead that engine telemetry shows only a scrape later."""
    pending_prompt_tokens: int = 0
    """Their prompt tokens: the prefill backlog a new request queues behind."""
    decoding: int = 0
    """Requests sent here past their first token and still generating (the gateways' ledger)."""
    rtt_ms: float | None = None
    """Round trip from this gateway to the site, measured (connection set-up, health probes); None: unmeasured."""
    calibration: Calibration | None = None
    """This endpoint's TTFT model fitted on observed outcomes (core.calibration); None: the spec alone."""
    power_w: float | None = None
    power_source: str = "estimated"
    age_s: float = 0.0
    reason: str = ""
    prefill_queue: PrefillQueue | None = None
    """The gateways' pending prompts placed in time (None: not known; the predictor then counts
    pending_prompt_tokens as all ahead)."""


@dataclass(frozen=True, slots=True)
class GridView:
    """An immutable snapshot of the grid handed to the scheduler."""

    sites: Mapping[str, Site]
    endpoints: tuple[Endpoint, ...]
    states: Mapping[str, EndpointState]
    prefix_owner: Mapping[str, str] = field(default_factory=dict)
    """prefix hash or session id -> endpoint id that served it last (cache warmth)."""
    models: Mapping[str, ModelInfo] = field(default_factory=dict)
    """The model catalogue, so that a request may name a family or fall back within one."""
    distances_km: Mapping[str, float] | None = None
    """The request's client to each endpoint's site, keyed by the id of every endpoint in `endpoints`:
    exactly core.geo.distance_km(request.client_location, site.location), where the caller has computed it
    already (the simulator's regional view, once per client place and candidate list). None: the core
    computes each distance itself (the gateway). Read only when the request has a client location."""

    def state(self, endpoint_id: str) -> EndpointState:
        return self.states.get(endpoint_id, UNKNOWN_STATE)

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_record(self)


UNKNOWN_STATE = EndpointState()
"""The state of an endpoint the snapshot has no telemetry for."""

new_record = tuple.__new__
"""`new_record(Prediction, (every field, in order))`: a NamedTuple built without its __new__'s Python frame
(the same tuple; keywords cost twice as much again). For the records built once per candidate of every
decision, in the core and the simulator."""

R = TypeVar("R")


def record_builder(cls: type[R]) -> Callable[..., R]:
    """A function that builds the frozen dataclass `cls` (slots, no __post_init__) from every field, in order,
    positionally: the same record as `cls(*values)`, at about half the cost. The generated __init__ of a frozen
    dataclass sets each field through object.__setattr__ (a global lookup, an attribute lookup and a call per
    field); this sets each slot through its own descriptor, bound once. For the records built once per
    decision on the simulator's hot path (RequestInfo, GridView, Decision, the core's Context)."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    if hasattr(cls, "__post_init__") or not all(f.init for f in fields(cls)):  # type: ignore[arg-type]
        raise TypeError(f"{cls.__name__}: only a record whose __init__ sets every field as given")
    # cls.__new__: object.__new__ for a Python class; a class compiled with mypyc (core/context.py's Context)
    # has its own, and its fields' descriptors are its native getters and setters
    scope: dict[str, Any] = {"new": cls.__new__, "cls": cls}
    scope.update({f"set_{i}": vars(cls)[name].__set__ for i, name in enumerate(names)})
    args = ", ".join(f"a{i}" for i in range(len(names)))
    body = "".join(f"    set_{i}(o, a{i})\n" for i in range(len(names)))
    exec(f"def build({args}):\n    o = new(cls)\n{body}    return o\n", scope)  # noqa: S102 (as dataclasses does)
    build: Callable[..., R] = scope["build"]
    build.__qualname__ = build.__name__ = f"build_{cls.__name__}"
    return build


@dataclass(frozen=True, slots=True)
class Policy:
    """A named weight set over the five axes plus knobs for the picker."""

    name: str
    weights: Mapping[str, float]
    tie_tolerance: float = 0.02
    ttft_slo_ms: float = 2000.0
    allow_family_fallback: bool = True
    tpot_slo_ms: float | None = None
    """Time per output token the tenant needs; an endpoint whose recent TPOT is above it does not meet the SLO
    (None: TTFT alone decides)."""
    cost_reference_usd_per_mtok: float = 1.0
    """The blended price that scores 0.5 on the cost axis; set it near your grid's prices (self-hosted GPUs
    run at $0.03-0.15 per million tokens) so that the axis separates your sites."""

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_record(self)


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What the core needs to know about one request, and nothing else."""

    id: str
    model: str
    prompt_tokens: int = 0
    max_output_tokens: int = 256
    client_location: GeoPoint | None = None
    allowed_jurisdictions: frozenset[str] | None = None
    tenant: str = "default"
    allowed_sites: frozenset[str] | None = None
    prefix_hash: str | None = None
    """The prefix other requests share (the gateway: a chat's system prompt, else its first user turn):
    the endpoint that served it last is warm (core.predict.warm_cache)."""
    session: str | None = None
    """The client's session, or the conversation's head when the prefix is a system prompt: a second key
    to the same map, so a conversation finds its history's cache as well as its app's."""
    exclude_endpoints: frozenset[str] = frozenset()
    quality: Mapping[str, float] | None = None
    """Right-sizing (model "auto" or a tenant's model ladder): per candidate model, the estimated probability
    that it answers this prompt well (the gateway's estimate, aigrid.rightsize). None: models are not judged."""
    max_quality_drop: float = 1.0
    """The tenant's quality target: a model is eligible only if its estimate is at most this far below the
    best model's (core/right_size.py)."""
    priority: int = 5
    """Urgency level 0-9, higher is more urgent: batch 0, standard 5, interactive 9 (core/urgency.py)."""
    deadline_ms: float | None = None
    """First token wanted within this many ms (what is left of it when decided); None: no deadline."""
    prefix_tokens: int | None = None
    """Tokens of the shared prefix `prefix_hash` names (a system prompt), which the endpoint that served it
    last holds in its prefix cache; None: unknown (core.predict.warm_cache assumes CACHED_FRACTION)."""
    allowed_models: tuple[frozenset[str], ...] = ()
    """The caller's model scope (security.authorize.scope_request): sets of glob patterns, and the model an
    endpoint serves must match a pattern of each; empty: any model. A hard filter (filters/model.py), so neither
    `auto`, a family fallback, a retry nor an escalation reaches a model the key or its tenant may not use."""
    min_prompt_tokens: int = 0
    """A lower bound on the prompt's tokens, never above the real count (the gateway: its characters over
    gateway.context_window.MAX_CHARS_PER_TOKEN, as its context check): the context filter (filters/context.py)
    rejects an endpoint whose model's context cannot hold this many and an answer's first token. 0: no bound."""

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_record(self)


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """Why this model (right-sizing): the estimates, the target and what the choice saved against the best
    model's best-ranked endpoint."""

    chosen: str
    best: str
    estimates: Mapping[str, float]
    max_quality_drop: float
    eligible: tuple[str, ...]
    cost_saved_usd: float | None = None
    ttft_saved_ms: float | None = None

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_record(self)


class Prediction(NamedTuple):
    """The time-to-first-token prediction, broken into its parts (milliseconds)."""

    rtt_ms: float
    queue_ms: float
    prefill_ms: float
    distance_km: float | None = None
    warm: bool = False
    """The prompt's prefix or session was last served here, so prefill counted it as mostly cached."""
    spread: float = 1.0
    """p90 / p50 of the engine part (queue + prefill), from the endpoint's calibration."""
    model_ahead_ms: float = 0.0
    """The uncalibrated modelled wait behind the work ahead (admission + prefill of pending prompts)..."""
    model_own_ms: float = 0.0
    """... and of this request's own prefill: what calibration compares the observed engine time with."""
    tpot_ms: float | None = None
    """The endpoint's recent time per output token (engine telemetry), when known."""
    measured_rtt_ms: float | None = None
    """This gateway's measured round trip to the site (health probes), shown beside the model when unused."""

    @property
    def ttft_ms(self) -> float:
        """The point prediction (about the median)."""
        return self.rtt_ms + self.queue_ms + self.prefill_ms

    @property
    def rtt_measured(self) -> bool:
        """rtt_ms is this gateway's measured round trip (the client gave no location), not the distance model."""
        return self.distance_km is None and self.measured_rtt_ms is not None

    @property
    def ttft_p90_ms(self) -> float:
        return self.rtt_ms + (self.queue_ms + self.prefill_ms) * self.spread

    @property
    def ttft_p10_ms(self) -> float:
        """The optimistic end: the engine part divided by the spread (the p90 mirrored on a log scale)."""
        return self.rtt_ms + (self.queue_ms + self.prefill_ms) / max(self.spread, 1.0)


class Candidate(NamedTuple):
    endpoint_id: str
    site_id: str
    jurisdiction: str
    model: str
    scores: Mapping[str, float]
    total: float
    prediction: Prediction
    cost_usd: float
    note_parts: tuple[tuple[str, str, tuple[object, ...]], ...] = ()
    """(axis, template, args) per scorer; `notes` formats them on demand."""

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(f"{axis}: {template.format(*args)}" for axis, template, args in self.note_parts)


@dataclass(frozen=True, slots=True)
class Rejection:
    endpoint_id: str
    site_id: str
    filter: str
    reason: str

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_record(self)


@dataclass(frozen=True, slots=True)
class Urgency:
    """What the request's urgency made of the policy; kept on the Decision for `aigrid explain`."""

    level: int
    klass: str
    slo_ms: float
    """The TTFT SLO the picker used: the policy's, relaxed for batch, capped by the deadline."""
    base_slo_ms: float
    weights: Mapping[str, float]
    base_weights: Mapping[str, float]
    deadline_ms: float | None = None
    """What was left of the request's deadline when it was decided (it may have waited at the gateway)."""
    max_busy: float = float("inf")
    """Requests in the system per batch slot at or above which an endpoint is saturated for this class."""
    max_queue_ms: float = float("inf")
    """Modelled wait behind the work queued ahead above which an endpoint is saturated for this class."""

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_record(self)


@dataclass(frozen=True, slots=True)
class Decision:
    """The scheduler's answer. No eligible endpoint is a normal Decision with chosen=None."""

    request_id: str
    policy: str
    ranked: tuple[Candidate, ...]
    rejected: tuple[Rejection, ...]
    reason: str
    model_choice: ModelChoice | None = None
    """Set when the request was right-sized (RequestInfo.quality): which model, and why."""
    urgency: Urgency | None = None
    """Set when the request's class or deadline changed the policy (core/urgency.py)."""

    @property
    def chosen(self) -> Candidate | None:
        return self.ranked[0] if self.ranked else None

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_record(self)


build_request_info = record_builder(RequestInfo)
"""RequestInfo(*every field, in order), without its generated __init__ (record_builder)."""
build_grid_view = record_builder(GridView)
"""GridView(*every field, in order), without its generated __init__ (record_builder)."""
build_decision = record_builder(Decision)
"""Decision(*every field, in order), without its generated __init__ (record_builder)."""
