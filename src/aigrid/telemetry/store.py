"""The in-process telemetry store: the latest state of every endpoint, and the GridView built from it.

Two sources feed it: scrapes of each engine's health and Prometheus metrics (engine truth, a little late)
and the gateway's own observations of the requests it proxies (in-flight count, measured TTFT, failures;
immediate). snapshot() hands the routing core an immutable view; it is rebuilt only when something changed.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import chain
from types import MappingProxyType

from aigrid.core.calibration import Calibration, observe
from aigrid.core.types import Circuit, Endpoint, EndpointState, GridView, ModelInfo, Prediction, Site
from aigrid.engines.protocol import EngineStats
from aigrid.logs import fields
from aigrid.most_held import MostHeld
from aigrid.telemetry.circuit import CircuitBreaker
from aigrid.telemetry.inflight import InflightLedger, Load, combined, merged_state
from aigrid.telemetry.prefill_book import Pending, PrefillBook, Report, latest, merge_reports, queue_of
from aigrid.telemetry.shared import LocalReport, Observation, SharedView, affinity_tag
from aigrid.telemetry.window import DeltaMean

log = logging.getLogger("aigrid.telemetry")

EWMA_ALPHA = 0.3
AFFINITY_ENTRIES = 10_000
"""The most entries of the affinity map, every tenant's together: past it, the tenant holding the most loses its
oldest (most_held.MostHeld), so a tenant within its share keeps its own whatever another sends. A key's tenant is
its tag, what comes before its first "." (security/authorize._tenants_own writes `{tag}.{digest}`); keys without
one (an older gateway's, the tests') are one tenant's. Until the thirty-sixth session the least recently used of
all went: one tenant's 10,000 sessions pushed out every other tenant's warm routing."""
CALIBRATION_ENTRIES = 4096
"""Calibration observations waiting for the next exchange, at most (the oldest are dropped first): at the
default 0.1 s interval that is 40,000 served streams a second, and a fit with ~50 requests of memory needs
far fewer; folding 4,096 of them in (a worker's first exchange replays the hub's) takes ~40 ms."""

REASON_CHARS = 200
"""The most characters of an endpoint's reason kept (an engine's error text, a health failure): it goes to /v1/grid,
the decisions and every dashboard at every tick."""
MAX_COUNT = 1_000_000
"""The most requests running or waiting at one engine read: more is an engine's lie, not a load."""
MAX_POWER_W = 1_000_000.0
"""The most watts one endpoint's GPUs are read to draw (eight 1 kW GPUs are 8,000)."""
MAX_TOKENS = 10_000_000
"""The longest answer an engine's usage is read to report, in tokens (past every model's context)."""
MAX_TOTAL = 1e15
"""The most a cumulative counter (tokens, seconds, requests) is read as: past it, its windowed mean is not taken."""


def bounded_reason(text: str, most: int = REASON_CHARS) -> str:
    """An endpoint's reason as it enters telemetry, once: at most `most` characters (the last an ellipsis when
    cut), every character that does not print (control, bidi, line breaks) a '?'. The engine writes it."""
    head = text[: most + 1]
    printable = "".join(c if c.isprintable() else "?" for c in head)
    return printable if len(printable) <= most else printable[: most - 1] + "…"


def _bounded(value: float | None, most: float) -> float | None:
    """A number an engine reported: None (not reported) unless finite; then within [0, most]."""
    if value is None:
        return None
    if isinstance(value, int):  # compared as an int: one past float's range (10**400, a JSON figure) is capped
        return float(min(max(value, 0), most))
    v = float(value)
    return min(max(v, 0.0), most) if math.isfinite(v) else None


def _count(value: float | None) -> int | None:
    v = _bounded(value, MAX_COUNT)
    return None if v is None else round(v)


def bounded_stats(stats: EngineStats) -> EngineStats:
    """An engine's numbers as they enter telemetry, once, whatever adapter read them: finite (NaN and inf read as
    not reported), counts and sums at least 0, the KV fraction within [0, 1], absurd values capped. Routing scores
    and the predictor compare them: a NaN queue made every comparison false."""
    return replace(
        stats, running=_count(stats.running), waiting=_count(stats.waiting),
        kv_usage=_bounded(stats.kv_usage, 1.0), power_w=_bounded(stats.power_w, MAX_POWER_W),
        ttft_sum_s=_bounded(stats.ttft_sum_s, MAX_TOTAL), ttft_count=_bounded(stats.ttft_count, MAX_TOTAL),
        tpot_sum_s=_bounded(stats.tpot_sum_s, MAX_TOTAL), tpot_count=_bounded(stats.tpot_count, MAX_TOTAL),
        prompt_tokens_total=_bounded(stats.prompt_tokens_total, MAX_TOTAL),
        generation_tokens_total=_bounded(stats.generation_tokens_total, MAX_TOTAL),
    )


MAX_OBSERVED_MS = 3_600_000.0
"""The most milliseconds a peer's calibration observation is read to hold (a first token an hour late): past it, or
not finite, or negative, the observation is dropped (1e308 turned the fit's sums to inf)."""
PEER_TIME_SLACK_S = 3600.0
"""How far from this gateway's wall clock a peer's time (a circuit opened, a prompt's arrival, an anchor) is read:
further, it is not a time of this grid's (a circuit opened at 1e308 stayed open for good)."""
PEER_KEY_CHARS = 1024
"""The longest affinity key or tenant name read from a peer: longer ones are dropped (held for good in memory)."""
PEER_ARRIVALS = 4096
"""The most pending prompts read per endpoint from the peers together (each is sorted at every routing decision),
shared among the peers before their reports are merged (merge_peer_reports): a peer with fewer than an equal share
keeps them all, the rest share what it leaves."""


def _peer_count(value: object, most: float = MAX_COUNT) -> int | None:
    """A count a peer sent: an int within [0, most], None when it is no number (or not finite)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    v = _bounded(value, most)
    return None if v is None else round(v)


def _peer_time(value: object, wall_now: float) -> float | None:
    """A wall time a peer sent, None unless finite and within PEER_TIME_SLACK_S of `wall_now`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int):
        value = float(min(max(value, -1e18), 1e18))  # an int past float's range compared as an int
    return value if math.isfinite(value) and abs(value - wall_now) <= PEER_TIME_SLACK_S else None


def _peer_past(value: object, wall_now: float) -> float | None:
    """A wall time a peer sent of something done (a circuit opened, a first token produced): _peer_time, and no
    later than `wall_now`."""
    t = _peer_time(value, wall_now)
    return None if t is None else min(t, wall_now)


def bounded_view(view: SharedView, wall_now: float) -> SharedView:
    """The other gateways' numbers (Redis, the hub) as they enter telemetry, once, as bounded_stats reads an engine's:
    counts within [0, MAX_COUNT] (tokens MAX_TOTAL, a prompt's MAX_TOKENS), times within PEER_TIME_SLACK_S of now
    (a circuit opened or a first token produced later than now read as now), calibration observations within
    [0, MAX_OBSERVED_MS], keys and tenant names of at most PEER_KEY_CHARS; a value that is not a finite number is
    left out, as not reported."""
    inflight: dict[str, tuple[int, int, int]] = {}
    for ep, load in view.inflight.items():
        got = [n for x, most in zip(load, (MAX_COUNT, MAX_TOTAL, MAX_COUNT), strict=False)
               if (n := _peer_count(x, most)) is not None]
        if len(got) == 3:
            inflight[ep] = (got[0], got[1], got[2])
    circuits = {ep: t for ep, raw in view.circuits_opened.items() if (t := _peer_past(raw, wall_now)) is not None}
    tenants = {name: n for name, raw in view.tenants.items()
               if len(name) <= PEER_KEY_CHARS and (n := _peer_count(raw)) is not None}
    affinity = tuple((k, e) for k, e in view.affinity if len(k) <= PEER_KEY_CHARS)
    calibration = tuple(o for o in view.calibration
                        if all(isinstance(x, int | float) and 0.0 <= x <= MAX_OBSERVED_MS for x in o[1:]))
    queues = {ep: _peer_pending(pending, wall_now, PEER_ARRIVALS) for ep, pending in view.queues.items()}
    return replace(view, inflight=inflight, circuits_opened=circuits, tenants=tenants, affinity=affinity,
                   calibration=calibration, peers=_peer_count(view.peers) or 0, queues=queues)


def _peer_pending(pending: Pending, wall_now: float, most: int) -> Pending:
    """One endpoint's pending prompts as a peer reported them: its anchor None unless both times are within
    PEER_TIME_SLACK_S of `wall_now`, and no later than `wall_now` (a first token not yet produced is no peer's:
    an anchor an hour ahead won every merge and ruled out every prompt pending there, those still on their way
    included, for an hour), as a circuit's opening is read; its first `most` arrivals, each kept if its time is
    and its tokens are within [0, MAX_TOKENS]."""
    anchor, arrivals = pending
    produced, arrived = (None, None) if anchor is None else (_peer_past(a, wall_now) for a in anchor)
    kept = []
    for at, tokens in arrivals[:most]:
        t, n = _peer_time(at, wall_now), _peer_count(tokens, MAX_TOKENS)
        if t is not None and n is not None:
            kept.append((t, n))
    return (None if produced is None or arrived is None else (produced, arrived)), tuple(kept)


def merge_peer_reports(reports: Sequence[Mapping[str, Pending]], wall_now: float) -> Report:
    """The peers' pending prompts (Redis, the hub) as one report: each peer's bounded first (_peer_pending, its
    share of PEER_ARRIVALS per endpoint), then merged (prefill_book.merge_reports). Bounded after the merge, one
    peer's anchor at 1e308 won it and was then dropped with every other peer's, and one peer's 10,000 arrivals
    filled the cut and pushed the others' out."""
    sizes: dict[str, list[int]] = {}
    for report in reports:
        for ep, (_, arrivals) in report.items():
            sizes.setdefault(ep, []).append(len(arrivals))
    share = {ep: _fair_share(counts, PEER_ARRIVALS) for ep, counts in sizes.items()}
    return merge_reports([{ep: _peer_pending(pending, wall_now, share[ep]) for ep, pending in report.items()}
                          for report in reports])


def _fair_share(counts: list[int], total: int) -> int:
    """The most arrivals each peer keeps at one endpoint so that together they keep at most `total`: a peer
    with fewer than an equal share keeps all of its own, the others share what it leaves equally."""
    left, peers = total, len(counts)
    for n in sorted(counts):
        if n * peers > left:
            return max(1, left // peers)
        left, peers = left - n, peers - 1
    return total


@dataclass
class _Live:
    scraped: EndpointState = field(default_factory=EndpointState)
    ttft_ewma_s: float | None = None
    errors_ewma: float = 0.0
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    engine_ttft: DeltaMean = field(default_factory=DeltaMean)
    engine_tpot: DeltaMean = field(default_factory=DeltaMean)
    scraped_at: float | None = None
    seen_inflight: int = 0
    """The ledgers' requests in flight here when the last scrape came in (merged_counts' `seen`)."""
    output_tokens_ewma: float | None = None
    remote: Load | None = None
    """The other gateways' in-flight work here, as of the last exchange through the shared state."""
    remote_opened_at: float | None = None
    remote_queue: Pending | None = None
    """The other gateways' pending prompts here placed in time (this store's clock), as of the last exchange."""
    calibration: Calibration = field(default_factory=Calibration)
    rtt_ewma_ms: float | None = None


class TelemetryStore:
    def __init__(self, sites: Mapping[str, Site], endpoints: tuple[Endpoint, ...],
                 models: Mapping[str, ModelInfo], clock: Callable[[], float], *, shares: bool = False) -> None:
        self._sites = dict(sites)
        self._endpoints = endpoints
        self._models = dict(models)
        self._clock = clock
        self._live = {e.id: _Live() for e in endpoints}
        self._ledger = InflightLedger()
        self._book = PrefillBook()
        """This gateway's pending prompts placed in time (telemetry/prefill_book.py), for the predictor."""
        self._slot_count = {e.id: max(e.max_concurrency, 1) for e in endpoints}
        self._affinity: dict[str, str] = {}
        """Key -> the endpoint that last served it: the core's `prefix_owner`."""
        self._affinity_held: dict[str, OrderedDict[str, None]] = {}
        """Per tag (a tenant: _affinity_tag): its keys of `_affinity`, least recently set first."""
        self._affinity_most = MostHeld()
        self._shares = shares
        self._affinity_pending: list[tuple[str, str]] = []
        """Affinity entries for the other gateways, taken by local_report(); kept only when this gateway shares
        state (nothing would take them otherwise), at most AFFINITY_ENTRIES while the shared state is away."""
        self._calibration_pending: deque[Observation] = deque(maxlen=CALIBRATION_ENTRIES)
        """This gateway's calibration observations for the others, taken by local_report(); kept only when it
        shares state, like the affinity entries."""
        self._reserved: dict[str, int] = {}
        """Per endpoint: admitted requests booked in the ledger whose proxy attempt has not started yet."""
        self.tenants_local: dict[str, int] = {}
        """Per tenant: requests this gateway dispatched and has not finished (kept by the admission queue)."""
        self.tenants_remote: Mapping[str, int] = {}
        """Per tenant: the other gateways' in-flight requests, as of the last shared-state exchange."""
        self._states: dict[str, EndpointState] = {}
        self._dirty: set[str] = set(self._live)
        """Endpoints whose state changed since the last snapshot: only those are rebuilt."""
        self.on_circuit_open: Callable[[str], None] | None = None
        """Called with the endpoint's id each time a failure opens its circuit (CircuitBreaker.record_failure: from
        closed, or again from half-open); build_gateway points it at aigrid_endpoint_circuit_opens_total."""

    # engine truth ------------------------------------------------------------------------------------
    def record_scrape(self, endpoint_id: str, healthy: bool, stats: EngineStats | None, reason: str = "") -> None:
        live = self._live[endpoint_id]
        ttft = tpot = None
        reason = bounded_reason(reason)
        if stats is not None:
            stats = bounded_stats(stats)
            ttft = live.engine_ttft.update(stats.ttft_sum_s, stats.ttft_count)
            tpot = live.engine_tpot.update(stats.tpot_sum_s, stats.tpot_count)
        s = stats or EngineStats()
        live.scraped = EndpointState(
            healthy=healthy, running=s.running or 0, waiting=s.waiting or 0, kv_usage=s.kv_usage,
            ttft_s=ttft, tpot_s=tpot, power_w=s.power_w,
            power_source="dcgm" if s.power_w is not None else "estimated", reason=reason,
        )
        live.scraped_at = self._clock()
        ledger = combined(self._ledger.get(endpoint_id), live.remote)
        live.seen_inflight = 0 if ledger is None else ledger.inflight
        if healthy and live.breaker.state(self._clock()) is Circuit.HALF_OPEN:
            live.breaker.record_success()
        self._dirty.add(endpoint_id)

    # gateway observations ----------------------------------------------------------------------------
    def request_started(self, endpoint_id: str, prompt_tokens: int = 0, request: Hashable | None = None,
                        delay_s: float = 0.0, count: int = 1) -> None:
        """A request left for the endpoint: pending (its prompt queues for prefill) until its first token.
        One already reserved there (admitted, not yet sent) takes its reservation instead of booking again.
        With its key (`request`), it also enters the book of pending prompts, due at the engine after
        `delay_s` (an emulated distance) plus half the measured round trip. `count`: the engine requests it
        is (a call the gateway fans out: n choices, a list of prompts; engines/fan_out.py), booked as one
        each in the ledger, its prompt tokens once."""
        if request is not None:
            self._book.sent(endpoint_id, request, self._clock() + delay_s + self._half_rtt_s(endpoint_id),
                            prompt_tokens)
        reserved = self._reserved.get(endpoint_id, 0)
        if reserved >= count:
            self._reserved[endpoint_id] = reserved - count
            return
        self._ledger.sent(endpoint_id, prompt_tokens, count)
        self._dirty.add(endpoint_id)

    def reserve(self, endpoint_id: str, prompt_tokens: int = 0, request: Hashable | None = None,
                count: int = 1) -> None:
        """A request admitted to the endpoint (gateway/admission.py) is in the ledger at once, before its
        proxy attempt starts: the next decision, made a moment later, must see it there."""
        if request is not None:
            self._book.sent(endpoint_id, request, self._clock() + self._half_rtt_s(endpoint_id), prompt_tokens)
        self._ledger.sent(endpoint_id, prompt_tokens, count)
        self._dirty.add(endpoint_id)
        self._reserved[endpoint_id] = self._reserved.get(endpoint_id, 0) + count

    def cancel_reservation(self, endpoint_id: str, prompt_tokens: int = 0, request: Hashable | None = None,
                           count: int = 1) -> None:
        """An admitted request that never started (its client left first) gives its reservation back."""
        reserved = self._reserved.get(endpoint_id, 0)
        if reserved >= count:
            self._reserved[endpoint_id] = reserved - count
            self.request_finished(endpoint_id, prompt_tokens, False, request, count)

    def first_token(self, endpoint_id: str, prompt_tokens: int = 0, request: Hashable | None = None,
                    count: int = 1) -> None:
        """The request's first token came back: its prefill is done, it is decoding. The engine produced it
        half a round trip ago: the book's anchor."""
        self._ledger.first_token(endpoint_id, prompt_tokens, count)
        if request is not None:
            self._book.first_token(endpoint_id, request, self._clock() - self._half_rtt_s(endpoint_id))
        self._dirty.add(endpoint_id)

    def request_finished(self, endpoint_id: str, prompt_tokens: int = 0, had_first_token: bool = False,
                         request: Hashable | None = None, count: int = 1) -> None:
        self._ledger.finished(endpoint_id, prompt_tokens, had_first_token, count)
        if request is not None and not had_first_token:
            self._book.drop(endpoint_id, request)
        self._dirty.add(endpoint_id)

    def _half_rtt_s(self, endpoint_id: str) -> float:
        rtt = self._live[endpoint_id].rtt_ewma_ms
        return 0.0 if rtt is None else rtt / 2000.0

    def record_success(self, endpoint_id: str, ttft_s: float | None, prediction: Prediction | None = None) -> None:
        """A served answer. With its engine TTFT measured (a stream) and the decision's prediction, the
        endpoint's calibration learns from it (core.calibration.observe, the simulator's update too)."""
        live = self._live[endpoint_id]
        if live.breaker.opened_at is not None:
            log.warning("circuit of %s closed: the endpoint answered again", endpoint_id,
                        extra=fields(endpoint=endpoint_id, circuit="closed"))
        live.breaker.record_success()
        live.errors_ewma *= 1 - EWMA_ALPHA
        if ttft_s is not None:
            prev = live.ttft_ewma_s
            live.ttft_ewma_s = ttft_s if prev is None else prev + EWMA_ALPHA * (ttft_s - prev)
            if prediction is not None:
                network_ms = live.rtt_ewma_ms or 0.0  # a real remote engine's first byte crosses the network
                seen = (endpoint_id, prediction.model_ahead_ms, prediction.model_own_ms,
                        max(ttft_s * 1000.0 - network_ms, 0.0))
                live.calibration = observe(live.calibration, *seen[1:])
                if self._shares:
                    self._calibration_pending.append(seen)
        self._dirty.add(endpoint_id)

    def record_rtt(self, endpoint_id: str, seconds: float) -> None:
        """A measured round trip from this gateway to the endpoint (a health probe). Smoothed, and a sample
        far above the current estimate (a slow handler, a GC pause) moves it only a little."""
        live = self._live[endpoint_id]
        ms = seconds * 1000.0
        prev = live.rtt_ewma_ms
        if prev is None:
            live.rtt_ewma_ms = ms
        else:
            alpha = EWMA_ALPHA if ms <= 2 * prev else EWMA_ALPHA / 4
            live.rtt_ewma_ms = prev + alpha * (ms - prev)
        self._dirty.add(endpoint_id)

    def calibration(self, endpoint_id: str) -> Calibration:
        return self._live[endpoint_id].calibration

    def _learn(self, observations: tuple[Observation, ...], peers: int) -> None:
        """The other gateways' outcomes, folded into this gateway's calibrations with the same pure update,
        each with weight 1 / peers: all the others together count as much as this gateway's own outcomes, so
        the fit's memory does not shrink with the number of gateways (their order between this gateway's own
        outcomes differs from gateway to gateway by up to an exchange interval)."""
        weight = 1.0 / max(peers, 1)
        for endpoint_id, ahead_ms, own_ms, observed_ms in observations:
            live = self._live.get(endpoint_id)
            if live is not None:
                live.calibration = observe(live.calibration, ahead_ms, own_ms, observed_ms, weight=weight)

    def measured_rtt_ms(self, endpoint_id: str) -> float | None:
        return self._live[endpoint_id].rtt_ewma_ms

    def record_usage(self, endpoint_id: str, completion_tokens: int) -> None:
        """Generated tokens of one finished answer: the queue model's service time follows real lengths."""
        live = self._live[endpoint_id]
        prev = live.output_tokens_ewma
        tokens = _bounded(completion_tokens, MAX_TOKENS)  # the engine's figure: negative or 10**400 in its JSON
        if tokens is None:
            return
        live.output_tokens_ewma = tokens if prev is None else prev + EWMA_ALPHA * (tokens - prev)
        self._dirty.add(endpoint_id)

    def record_failure(self, endpoint_id: str, reason: str) -> None:
        live = self._live[endpoint_id]
        reason = bounded_reason(reason)
        was_open = live.breaker.opened_at is not None
        opened = live.breaker.record_failure(self._clock())
        if opened and self.on_circuit_open is not None:
            self.on_circuit_open(endpoint_id)
        if not was_open and live.breaker.opened_at is not None:
            log.warning("circuit of %s opened after %d consecutive failures: %s", endpoint_id,
                        live.breaker.failures, reason,
                        extra=fields(endpoint=endpoint_id, circuit="open", reason=reason))
        live.errors_ewma = live.errors_ewma * (1 - EWMA_ALPHA) + EWMA_ALPHA
        live.scraped = live.scraped._replace(reason=reason)
        self._dirty.add(endpoint_id)

    def remember_affinity(self, keys: tuple[str | None, ...], endpoint_id: str) -> None:
        for key in keys:
            if key is not None:
                self._set_affinity(key, endpoint_id)
                if self._shares:
                    self._affinity_pending.append((key, endpoint_id))

    def _set_affinity(self, key: str, endpoint_id: str) -> None:
        """`key` last served by `endpoint_id`; past AFFINITY_ENTRIES, the tenant holding the most forgets its
        oldest (its own least recently set)."""
        self._affinity[key] = endpoint_id
        tag = affinity_tag(key)  # the tenant's tag with its ".": "" without one
        held = self._affinity_held.get(tag)
        if held is None:
            held = self._affinity_held[tag] = OrderedDict()
        elif key in held:
            held.move_to_end(key)
            return
        held[key] = None
        self._affinity_most.moved(tag, len(held) - 1, len(held))
        if len(self._affinity) > AFFINITY_ENTRIES:
            self._forget_affinity()

    def _forget_affinity(self) -> None:
        """The oldest entry of the tenant holding the most, gone."""
        tag = self._affinity_most.most()
        assert tag is not None  # the map holds more than AFFINITY_ENTRIES
        held = self._affinity_held[tag]
        del self._affinity[held.popitem(last=False)[0]]
        self._affinity_most.moved(tag, len(held) + 1, len(held))
        if not held:
            del self._affinity_held[tag]

    # sharing with other gateways (telemetry/sync.py) ---------------------------------------------------
    def local_report(self, gateway_id: str, wall: Callable[[], float]) -> LocalReport:
        now, wall_now = self._clock(), wall()
        opened = {ep: wall_now - (now - live.breaker.opened_at) for ep, live in self._live.items()
                  if live.breaker.opened_at is not None and live.breaker.state(now) is Circuit.OPEN}
        pending, self._affinity_pending = tuple(self._affinity_pending), []
        observations = tuple(self._calibration_pending)
        self._calibration_pending.clear()
        loads = {str(ep): (load.pending, load.pending_tokens, load.decoding) for ep, load in self._ledger.items()}
        return LocalReport(gateway_id, loads, opened, pending, dict(self.tenants_local), observations,
                           self._book.report(now, wall_now - now))

    def requeue_affinity(self, entries: tuple[tuple[str, str], ...]) -> None:
        """Entries a failed exchange did not deliver go out with the next one (the newest, if the shared
        state stays away long enough for more than AFFINITY_ENTRIES to wait)."""
        self._affinity_pending[:0] = entries
        del self._affinity_pending[:-AFFINITY_ENTRIES]

    def requeue_calibration(self, observations: tuple[Observation, ...]) -> None:
        """Observations a failed exchange did not deliver go out with the next one (the newest
        CALIBRATION_ENTRIES of them and of those made since)."""
        self._calibration_pending = deque((*observations, *self._calibration_pending), maxlen=CALIBRATION_ENTRIES)

    def apply_shared(self, view: SharedView, wall: Callable[[], float]) -> None:
        now, wall_now = self._clock(), wall()
        view = bounded_view(view, wall_now)  # what peers said, as a scrape is read: bounded once, here
        for ep, live in self._live.items():
            remote = view.inflight.get(ep)
            live.remote = None if remote is None else Load(*remote)
            opened_wall = view.circuits_opened.get(ep)
            live.remote_opened_at = None if opened_wall is None else now - (wall_now - opened_wall)
            queue = view.queues.get(ep)
            if queue is None:
                live.remote_queue = None
            else:  # wall time to this store's clock
                shift = now - wall_now
                anchor, arrivals = queue
                live.remote_queue = (None if anchor is None else (anchor[0] + shift, anchor[1] + shift),
                                     tuple((at + shift, tokens) for at, tokens in arrivals))
        for key, endpoint_id in view.affinity:
            if endpoint_id in self._live:
                self._set_affinity(key, endpoint_id)
        self._learn(view.calibration, view.peers)
        self.tenants_remote = view.tenants
        self._dirty.update(self._live)

    def inflight(self, endpoint_id: str) -> int:
        """Requests this gateway has open at the endpoint."""
        load = self._ledger.get(endpoint_id)
        return 0 if load is None else load.inflight

    # the view ----------------------------------------------------------------------------------------
    def state(self, endpoint_id: str) -> EndpointState:
        live = self._live[endpoint_id]
        now = self._clock()
        s = merged_state(live.scraped, combined(self._ledger.get(endpoint_id), live.remote),
                         self._slots(endpoint_id), live.seen_inflight)
        remote = live.remote_queue
        anchor = self._book.anchor(endpoint_id)
        arrivals = self._book.arrivals(endpoint_id)
        if remote is not None:
            anchor, arrivals = latest(anchor, remote[0]), chain(arrivals, remote[1])
        return s._replace(
            prefill_queue=queue_of(anchor, arrivals, now),
            circuit=self._circuit(live, now),
            rtt_ms=live.rtt_ewma_ms,
            calibration=live.calibration,
            ttft_s=s.ttft_s if s.ttft_s is not None else live.ttft_ewma_s,
            mean_output_tokens=live.output_tokens_ewma,
            error_rate=live.errors_ewma,
            age_s=0.0 if live.scraped_at is None else now - live.scraped_at,
        )

    @staticmethod
    def _circuit(live: _Live, now: float) -> Circuit:
        """The local breaker's state, or OPEN while another gateway's recently opened circuit cools down."""
        local = live.breaker.state(now)
        remote = live.remote_opened_at
        if local is Circuit.CLOSED and remote is not None and now - remote < live.breaker.cooldown_s:
            return Circuit.OPEN
        return local

    def snapshot(self) -> GridView:
        """The view for one decision. Only endpoints that changed are rebuilt (plus those whose circuit is
        cooling down, which changes with time alone); `age_s` is as of each endpoint's last change."""
        for ep, live in self._live.items():
            # a cooling circuit changes with time alone, and so do the pending prompts' times (relative to now)
            if (live.breaker.opened_at is not None or live.remote_opened_at is not None
                    or (live.remote_queue is not None and live.remote_queue[1]) or self._book.has_pending(ep)):
                self._dirty.add(ep)
        for ep in self._dirty:
            self._states[ep] = self.state(ep)
        self._dirty.clear()
        return GridView(
            sites=self._sites, endpoints=self._endpoints, states=dict(self._states),
            # a read-only window, not a copy: schedule() runs synchronously, so nothing changes under it
            prefix_owner=MappingProxyType(self._affinity), models=self._models,
        )

    def _slots(self, endpoint_id: str) -> int:
        return self._slot_count[endpoint_id]
