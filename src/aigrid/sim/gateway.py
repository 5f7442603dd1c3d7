"""What the simulated gateways see: late telemetry, their own recent sends, their circuit breakers.

Telemetry: every `interval` the engines that changed publish their EndpointState; a batch becomes visible
`lag` seconds later. Several gateways decide at once: each knows only its own sends since the visible
snapshot was taken (local accounting, added to `waiting`), so gateways acting on the same stale view can
herd onto the same endpoint. A gateway whose connection to an endpoint fails opens its own circuit breaker
for `cooldown` seconds.

Which endpoints a gateway scores for a request (its regional view) is sim/regional.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from aigrid.core.calibration import DECAY, Calibration, observe, observe_each
from aigrid.core.types import (
    Circuit,
    Endpoint,
    EndpointState,
    GridView,
    PrefillQueue,
    build_grid_view,
    new_record,
)
from aigrid.sim.clock import EventLoop
from aigrid.sim.grid import Grid
from aigrid.sim.shared_state import SyncedLedger, SyncedPrefillBook
from aigrid.telemetry.circuit import CircuitBreaker
from aigrid.telemetry.inflight import Load, merged_counts
from aigrid.telemetry.prefill_book import NOTHING_PENDING

NO_CALIBRATION = Calibration()
CIRCUIT_CLOSED: Final = Circuit.CLOSED
"""Circuit.CLOSED, read once: compiled, `Circuit.CLOSED` is a lookup on the enum's class (its metaclass), which costs about
twenty times an attribute of a record, once per state seen_state builds."""
SHARED_LOG_LIMIT = 64
"""Outcomes an endpoint's shared log holds before every gateway there folds them (Gateways.learnt)."""


def seen_state(s: EndpointState, counts: tuple[int, int, int, int, int] | None, cal: Calibration | None,
               circuit: Circuit, queue: PrefillQueue | None = None) -> EndpointState:
    """The engine's published state `s` as one gateway sees it: its in-flight ledger folded in (`counts`,
    telemetry.inflight.merged_counts), its own calibration, its own circuit breaker when not closed, the
    pending prompts it knows of placed in time (`queue`).

    The same state as s._replace(**changes) would build (tests/sim/test_gateway.py checks it field by field),
    built with one positional call, once per candidate of every decision: dataclasses.replace on the frozen
    dataclass EndpointState was, walking every field by name, about a tenth of a planet run."""
    running, waiting, pending, tokens, decoding = counts if counts is not None else (
        s.running, s.waiting, s.pending_requests, s.pending_prompt_tokens, s.decoding)
    closed = circuit is CIRCUIT_CLOSED
    return new_record(EndpointState, (  # EndpointState(...) positionally, without its __new__'s Python frame
        s.healthy, s.circuit if closed else circuit, running, waiting, s.kv_usage, s.ttft_s, s.tpot_s,
        s.mean_output_tokens, s.error_rate, pending, tokens, decoding, s.rtt_ms,
        s.calibration if cal is None else cal, s.power_w, s.power_source, s.age_s,
        s.reason if closed else "connection failed recently", s.prefill_queue if queue is None else queue))


class Telemetry:
    """Engines -> (interval, lag) -> the visible states every gateway reads."""

    def __init__(self, loop: EventLoop, n: int, read: Callable[[int], EndpointState],
                 interval_s: float, lag_s: float) -> None:
        self.loop = loop
        self.read = read
        self.interval_s = interval_s
        self.lag_s = lag_s
        self.visible: list[EndpointState] = [read(i) for i in range(n)]
        self.seen: list[int | tuple[int, ...]] = [0] * n
        """Per endpoint: the gateways' ledger when the visible state was taken (merged_counts' `seen`): one
        count every gateway shares, or one per gateway (Gateways.seen_now)."""
        self.seen_now: Callable[[int], int | tuple[int, ...]] | None = None
        self.captured = [0.0] * n
        self.dirty: set[int] = set()
        self.stopped = False

    def changed(self, index: int) -> None:
        self.dirty.add(index)

    def start(self) -> None:
        self.loop.after(self.interval_s, self._publish)

    def _publish(self, _: object) -> None:
        if self.dirty:
            now = self.loop.now
            seen = self.seen_now
            batch = [(i, self.read(i), 0 if seen is None else seen(i)) for i in sorted(self.dirty)]
            self.dirty.clear()
            self.loop.after(self.lag_s, self._deliver, (now, batch))
        if not self.stopped:
            self.loop.after(self.interval_s, self._publish)

    def _deliver(self, arg: tuple[float, list[tuple[int, EndpointState, int | tuple[int, ...]]]]) -> None:
        captured, batch = arg
        for i, state, seen in batch:
            self.visible[i] = state
            self.seen[i] = seen
            self.captured[i] = captured


class Gateways:
    """The simulated gateways: each with its own in-flight ledger, circuit breakers and calibrations (the
    gateway's own classes and pure updates), sharing ledgers and calibration observations every
    `shared_sync_s` (Redis; 0: not shared).

    Calibration is shared as the live gateways share it (telemetry/store.py): a gateway folds its own
    outcomes in at once and the other gateways' at the next exchange, each with weight 1 / (gateways - 1)
    (core.calibration.observe). One difference, for speed at planet scale (16 gateways, 7,432 endpoints):
    a gateway folds the others' outcomes of an endpoint only once it has scored that endpoint, where a live
    gateway folds them for every endpoint of its grid; before that it never used that calibration.

    The others' outcomes are folded lazily, with the same result: an exchange appends them to the endpoint's
    shared log, and a gateway folds what it has not folded of that log, in the log's order, when it next
    reads or updates its calibration there (its next decision that scores the endpoint, its own next outcome
    there), or when the log reaches SHARED_LOG_LIMIT. Each calibration sees the same outcomes in the same
    order as if folded at each exchange (its own at once, the others' exchanged before), so every decision
    is the same; an outcome a gateway never reads again is never folded, and each gateway's folds run back to
    back on the same calibration (docs/simulator.md, "Speed")."""

    def __init__(self, grid: Grid, telemetry: Telemetry, count: int, local_accounting: bool, cooldown_s: float,
                 shared_sync_s: float = 0.1, failure_threshold: int = 1, calibrate: bool = True) -> None:
        self.grid = grid
        self.telemetry = telemetry
        self.count = count
        self.local_accounting = local_accounting
        self.cooldown_s = cooldown_s
        self.failure_threshold = failure_threshold
        self.calibrate = calibrate
        """Fit each endpoint's TTFT calibration from outcomes; off for the baselines, whose formulas read none
        (the peers' routers learn nothing), which spares the work and changes no decision."""
        self.ledgers = [SyncedLedger() for _ in range(count)]
        self.total = SyncedLedger()
        """Every gateway's sends together: what the shared state holds once synced."""
        self.book = SyncedPrefillBook(len(grid.endpoints)) if local_accounting and calibrate else None
        """The pending prompts placed in time (the predictor's PrefillQueue); not kept for the baselines,
        which read none."""
        self.shared_sync_s = shared_sync_s if count > 1 and local_accounting else 0.0
        self.breakers: list[dict[int, CircuitBreaker]] = [{} for _ in range(count)]
        self.learnt: list[dict[int, list]] = [{} for _ in grid.endpoints]
        """Per endpoint: each gateway's [calibration there (None: none yet), how far into the endpoint's
        shared log it has folded (a position counted from the log's start, trimmed entries included)]. A
        gateway is a key once it has scored the endpoint (or learnt there from its own outcome): the keys are
        the gateways that fold the others' outcomes there, from the log's end when they became keys."""
        self.shared: list[list[tuple[int, float, float, float]]] = [[] for _ in grid.endpoints]
        """Per endpoint: the outcomes exchanged (gateway, ahead, own, observed), oldest first, from position
        `shared_base` on: the log each gateway folds the others' outcomes from."""
        self.shared_base = [0] * len(grid.endpoints)
        self.shared_end = [0] * len(grid.endpoints)
        """Per endpoint: the position of the log's first entry kept, and of its end."""
        self.observations: list[tuple[int, int, float, float, float]] = []
        """(gateway, endpoint, ahead, own, observed) made since the last exchange, oldest first."""
        self.others_weight = 1.0 / max(count - 1, 1)
        self.slots = [max(ep.max_concurrency, 1) for ep in grid.endpoints]
        if local_accounting:
            telemetry.seen_now = self.seen_now
        shared_owner: dict[str, str] = {}
        self.prefix_owner: list[dict[str, str]] = [
            shared_owner if self.shared_sync_s > 0 else {} for _ in range(count)]
        """Per gateway: prefix key -> the endpoint that last answered it (the live store's affinity map,
        shared through the shared state as there, here without the exchange's delay)."""

    def seen_now(self, index: int) -> int | tuple[int, ...]:
        """What the gateways' ledgers hold at endpoint `index` now, as a telemetry sample taken now records
        it: every gateway's sends together where they share state (each one's view of the others lags that
        by at most one exchange) or where there is one gateway; each gateway's own where they do not."""
        if self.shared_sync_s > 0 or self.count == 1:
            load = self.total.get(index)
            return 0 if load is None else load.pending + load.decoding
        return tuple(0 if (load := ledger.get(index)) is None else load.pending + load.decoding
                     for ledger in self.ledgers)

    def start(self, loop: EventLoop) -> None:
        if self.shared_sync_s > 0:
            loop.after(self.shared_sync_s, self._sync, loop)

    def _sync(self, loop: EventLoop) -> None:
        """One exchange through the shared state: every gateway learns every other's ledger as of now."""
        self.total.exchange()
        if self.book is not None:
            self.book.exchange(loop.now)
        for ledger in self.ledgers:
            ledger.exchange()
        if self.observations:
            self._share_observations()
        if not self.telemetry.stopped or not self.total.empty():
            loop.after(self.shared_sync_s, self._sync, loop)

    def _share_observations(self) -> None:
        """The outcomes made since the last exchange join their endpoints' shared logs, for every other
        gateway that scores the endpoint (none: no entry, as nobody would fold it); a log that reaches
        SHARED_LOG_LIMIT is folded into every gateway there and emptied."""
        learnt, logs, ends = self.learnt, self.shared, self.shared_end
        for source, index, ahead_ms, own_ms, observed_ms in self.observations:
            cals = learnt[index]
            if len(cals) > (source in cals):  # a gateway other than the source folds it
                log = logs[index]
                log.append((source, ahead_ms, own_ms, observed_ms))
                ends[index] += 1
                if len(log) >= SHARED_LOG_LIMIT:
                    end = ends[index]
                    for g, entry in cals.items():
                        if entry[1] != end:
                            self._fold(index, g, entry)
                    log.clear()
                    self.shared_base[index] = end
        self.observations.clear()

    def _fold(self, index: int, gateway: int, entry: list) -> Calibration | None:
        """Fold what gateway `gateway` has not folded of endpoint `index`'s shared log into its calibration
        there (`entry`, its learnt entry), the others' outcomes only, in the log's order; returns it."""
        log = self.shared[index]
        cal = entry[0]
        start = entry[1] - self.shared_base[index]
        if cal is None:  # the first of the others' outcomes starts it from NO_CALIBRATION (observe's argument)
            for k in range(start, len(log)):
                if log[k][0] != gateway:
                    cal = NO_CALIBRATION
                    break
        if cal is not None:
            # observe(cal, ahead, own, observed, DECAY, others_weight) for each of the others' outcomes, in the
            # log's order, in one call (the same calibration, without those in between)
            cal = observe_each(cal, log, start, gateway, DECAY, self.others_weight)
        entry[0] = cal
        entry[1] = self.shared_end[index]
        return cal

    def calibration(self, gateway: int, index: int) -> Calibration | None:
        """Gateway `gateway`'s calibration of endpoint `index` (None: it has none)."""
        entry = self.learnt[index].get(gateway)
        if entry is None:
            return None
        return self._fold(index, gateway, entry) if entry[1] != self.shared_end[index] else entry[0]

    def load(self, gateway: int, index: int) -> Load | None:
        """What gateway `gateway` knows is in flight at endpoint `index`: its own ledger now plus the other
        gateways' as of the last exchange."""
        if not self.local_accounting:
            return None
        mine = self.ledgers[gateway]
        return mine.get(index) if self.shared_sync_s <= 0 else _with_others(mine, self.total, index)

    def view(self, gateway: int, idx: tuple[int, ...], endpoints: tuple[Endpoint, ...], now: float,
             distances: dict[str, float] | None = None) -> GridView:
        """What gateway `gateway` sees of these endpoints now (`load`, `_with_others`, the book's `queue` for an
        endpoint with nothing pending and `seen_state` inline: this runs once per candidate of every
        decision; an endpoint nobody has anything in flight at, with no count left to correct, takes the
        shortcut merged_counts would: nothing changes)."""
        visible, seen_at, slots = self.telemetry.visible, self.telemetry.seen, self.slots
        breakers, learnt, ends = self.breakers[gateway], self.learnt, self.shared_end
        fold = self.shared_sync_s > 0 and self.calibrate  # this gateway folds the others' outcomes from now on
        mine = self.ledgers[gateway] if self.local_accounting else None
        total = self.total if self.shared_sync_s > 0 else None
        book = self.book
        entries = None if book is None else book.entries
        closed = CIRCUIT_CLOSED
        states: dict[str, EndpointState] = {}
        if len(idx) != len(endpoints):
            raise ValueError("view: one index per endpoint")  # what zip(..., strict=True) checked
        for k in range(len(idx)):  # compiled, a range over two tuples: no zip object, no pair per candidate
            i = idx[k]
            ep = endpoints[k]
            s = visible[i]
            if mine is None:
                counts = None
            else:
                at = seen_at[i]
                seen: int = at[gateway] if isinstance(at, tuple) else at  # tuple: one count per gateway
                load = mine.get(i) if total is None else _with_others(mine, total, i)
                counts = None if load is None and seen == 0 else merged_counts(s, load, slots[i], seen)
            entry = learnt[i].get(gateway)
            if entry is None:
                cal = None
                if fold:  # a key from now on: it folds the outcomes exchanged from now
                    learnt[i][gateway] = [None, ends[i]]
            elif entry[1] != ends[i]:
                cal = self._fold(i, gateway, entry)
            else:
                cal = entry[0]
            breaker = breakers.get(i)
            circuit = closed if breaker is None else breaker.state(now)
            if entries is not None:
                queue = book.queue(i, gateway, now) if entries[i] else NOTHING_PENDING  # type: ignore[union-attr]
                if counts is None and circuit is closed:  # seen_state(s, None, cal, closed, queue), inline
                    states[ep.id] = new_record(EndpointState, (
                        s.healthy, s.circuit, s.running, s.waiting, s.kv_usage, s.ttft_s, s.tpot_s,
                        s.mean_output_tokens, s.error_rate, s.pending_requests, s.pending_prompt_tokens,
                        s.decoding, s.rtt_ms, s.calibration if cal is None else cal, s.power_w, s.power_source,
                        s.age_s, s.reason, queue))
                else:
                    states[ep.id] = seen_state(s, counts, cal, circuit, queue)
            elif counts is None and cal is None and circuit is closed:
                states[ep.id] = s
            else:
                states[ep.id] = seen_state(s, counts, cal, circuit)
        # GridView(...) without its generated __init__ (core.types.record_builder: the same record)
        return build_grid_view(self.grid.sites, endpoints, states, self.prefix_owner[gateway], self.grid.models,
                               distances)

    def remember_prefix(self, gateway: int, key: str, index: int) -> None:
        """Gateway `gateway` saw the first token of a request opening with prefix `key` from endpoint `index`
        (the live gateway's TelemetryStore.remember_affinity)."""
        self.prefix_owner[gateway][key] = self.grid.endpoints[index].id

    # ---- the gateway's observations (the live gateway's TelemetryStore does the same) -------------------
    def record_send(self, gateway: int, index: int, prompt_tokens: int, rid: int, now: float,
                    arrives_at: float) -> None:
        """Gateway `gateway` sent request `rid` (`prompt_tokens`) to endpoint `index` at `now`; it expects it
        there at `arrives_at` (half its round trip later)."""
        if self.local_accounting:
            self.ledgers[gateway].sent(index, prompt_tokens)
            self.total.sent(index, prompt_tokens)
            if self.book is not None:
                self.book.sent(index, rid, gateway, now, arrives_at, prompt_tokens)

    def record_first_token(self, gateway: int, index: int, prompt_tokens: int, model_ahead_ms: float,
                           model_own_ms: float, observed_engine_ms: float, rid: int, now: float,
                           produced_at: float) -> None:
        """The first token of request `rid` reached its gateway at `now`; the engine produced it at
        `produced_at` as the gateway reckons (now less half the round trip)."""
        if self.local_accounting:
            self.ledgers[gateway].first_token(index, prompt_tokens)
            self.total.first_token(index, prompt_tokens)
            if self.book is not None:
                self.book.first_token(index, rid, gateway, now, produced_at)
        if self.calibrate:
            entry = self.learnt[index].get(gateway)
            if entry is None:  # a key from now on
                entry = self.learnt[index][gateway] = [None, self.shared_end[index]]
            cal = entry[0] if entry[1] == self.shared_end[index] else self._fold(index, gateway, entry)
            entry[0] = observe(NO_CALIBRATION if cal is None else cal, model_ahead_ms, model_own_ms,
                               observed_engine_ms)
            if self.shared_sync_s > 0:
                self.observations.append((gateway, index, model_ahead_ms, model_own_ms, observed_engine_ms))
        breaker = self.breakers[gateway].get(index)
        if breaker is not None:
            breaker.record_success()

    def record_finished(self, gateway: int, index: int, prompt_tokens: int, had_first_token: bool,
                        rid: int, now: float) -> None:
        if self.local_accounting:
            self.ledgers[gateway].finished(index, prompt_tokens, had_first_token)
            self.total.finished(index, prompt_tokens, had_first_token)
            if self.book is not None and not had_first_token:
                self.book.drop(index, rid, now)

    def record_failure(self, gateway: int, index: int, now: float) -> None:
        if self.cooldown_s > 0:
            breaker = self.breakers[gateway].get(index)
            if breaker is None:
                breaker = self.breakers[gateway][index] = CircuitBreaker(self.failure_threshold, self.cooldown_s)
            breaker.record_failure(now)


def _with_others(mine: SyncedLedger, total: SyncedLedger, index: int) -> Load | None:
    """One gateway's own ledger at endpoint `index` now plus the other gateways' as of the last exchange:
    the total then, less this gateway's own then, plus its own now."""
    own = mine.get(index)
    synced = total.then(index)
    if synced is None:
        return own
    mine_then = mine.then(index)
    if mine_then is None and own is None:  # only the others' then: that load as it is (read only, as `then` and
        return synced                      # `get` return theirs), not a copy of it
    # Load.add(mine_then, -1) and Load.add(own), inline (compiled integer arithmetic, no Python frames)
    pending, tokens, decoding = synced.pending, synced.pending_tokens, synced.decoding
    if mine_then is not None:
        pending, tokens, decoding = (pending - mine_then.pending, tokens - mine_then.pending_tokens,
                                     decoding - mine_then.decoding)
    if own is not None:
        pending, tokens, decoding = pending + own.pending, tokens + own.pending_tokens, decoding + own.decoding
    return Load(pending, tokens, decoding)
