"""The gateway's admission queue: where a request waits when every eligible endpoint is busy for its class.

`admit()` routes a request now when it can. When the decision says wait (core.urgency.verdict: every
eligible endpoint saturated for its class, or its queue full), or when others are already waiting here,
the request takes its place in core/fair_queue.py's order: the highest level first, then the tenant holding
the fewest requests in flight per unit of its weight (in flight here, plus at the other gateways through the
shared state: telemetry/sync.py carries per-tenant counts). It is routed again, with what is left of its
deadline, whenever one of this gateway's requests finishes (`release`), and every `poll_s` (50 ms) while
anything waits (the other gateways' requests and the engines' progress free capacity too).

Every request leaves with an answer, never silently: dispatched (the decision it is sent on), refused
because its deadline can no longer be met (503 deadline_unmeetable, before any engine works on it), shed
past its class's longest wait or pushed out of a full queue, lowest level first (429 overloaded with
Retry-After: the queue ahead over the recent dispatch rate), or rejected (no endpoint may serve it: the
caller's 503). The route's Exchange closes as usual, so quotas, audit and metering see every outcome.

A dispatched request is booked in the in-flight ledger at once (TelemetryStore.reserve; its proxy attempt
takes the reservation), so the next decision, a moment later, sees it there; one that never starts (its
client left) gives it back when its exchange closes.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from aigrid.core.fair_queue import FairQueue, Waiting
from aigrid.core.types import Decision, RequestInfo
from aigrid.core.urgency import LATE, REJECT, SEND, WAIT, AdmissionRules, class_of, label, verdict
from aigrid.errors import ApiError, DeadlineUnmeetable, Overloaded
from aigrid.gateway.metrics import GatewayMetrics

Decide = Callable[[RequestInfo], Decision]
Written = Callable[[str, Callable[[], None]], None]
"""How the queue writes its metrics: `written(what, write)` (the gateway's one observe.MetricsWrites, Proxy.written:
a write that fails, a multiprocess metrics file that cannot grow on a full disk, is counted and logged, never the
request's)."""
RETRY_AFTER_MAX_S = 60


class Refused(Exception):
    """The admission queue's answer when it is an error: the ApiError, and the last decision made for it."""

    def __init__(self, error: ApiError, decision: Decision | None) -> None:
        super().__init__(error.message)
        self.error = error
        self.decision = decision


@dataclass(eq=False)
class Waiter:
    info: RequestInfo
    decide: Decide
    arrived: float
    future: asyncio.Future[Decision]
    ticket: Ticket
    slo_ms: float | None
    """The policy's TTFT SLO (core.urgency.verdict); past it (relaxed for batch) the request waits behind the
    fresh ones of its level."""
    last: Decision | None = None


@dataclass
class Ticket:
    """What admission did for one request (on the Exchange: audit, access log, release)."""

    tenant: str
    level: int
    deadline_ms: float | None
    queued_ms: float = 0.0
    deadline_field: str = "deadline_ms"
    """What the caller named its deadline with (x-aigrid-deadline-ms or the body's deadline_ms): the refusal's param."""
    held: bool = False
    reserved: tuple[str, int, str, int] | None = None
    """(endpoint, prompt tokens, request id, engine requests) booked in the ledger when it was dispatched."""
    width: int = 1
    """The engine requests the call becomes (n choices, a list of prompts: engines/fan_out.py), each in the ledger."""

    def to_dict(self) -> dict[str, object]:
        return {"priority": label(self.level), "deadline_ms": self.deadline_ms, "queued_ms": round(self.queued_ms, 1)}


@dataclass
class Admission:
    rules: AdmissionRules
    clock: Callable[[], float]
    metrics: GatewayMetrics
    enabled: bool = True
    poll_s: float = 0.05
    weights: Mapping[str, float] = field(default_factory=dict)
    reserve: Callable[[str, int, str, int], None] = lambda endpoint, tokens, request, count: None
    """Book a dispatched request (its engine requests) in the in-flight ledger (TelemetryStore.reserve)."""
    unreserve: Callable[[str, int, str, int], None] = lambda endpoint, tokens, request, count: None
    local: dict[str, int] = field(default_factory=dict)
    """Per tenant: requests this gateway dispatched that have not finished (shared with the other gateways)."""
    remote: Callable[[], Mapping[str, int]] = dict
    """Per tenant: the other gateways' in-flight requests, as of the last shared-state exchange."""
    written: Written = lambda what, write: write()
    """Each metrics write goes through it, after the state it tells of changed (a request dispatched, refused,
    shed): the gateway hands its proxy's (app.Gateway), so that a write that fails never leaves a dispatch half
    done, a waiter unanswered, or the release in routes.close_exchange raising before the quota is settled and
    the audit record written."""
    queue: FairQueue[Waiter] = field(init=False)
    _rate: float = 0.0
    _last_dispatch: float | None = None
    _polling: bool = False

    def __post_init__(self) -> None:
        self.queue = FairQueue(self.rules.capacity, self.weights)

    def inflight(self, tenant: str) -> float:
        return self.local.get(tenant, 0) + self.remote().get(tenant, 0)

    async def admit(self, info: RequestInfo, decide: Decide, ticket: Ticket, arrived: float,
                    slo_ms: float | None = None) -> Decision:
        """The decision to send the request on, once it may go (its ranking may be empty: no endpoint may
        serve it, the caller's 503). Raises Refused (429 overloaded, 503 deadline_unmeetable)."""
        if not len(self.queue):
            decision = decide(self._remaining(info, arrived, self.clock()))
            what = verdict(decision, slo_ms if self.enabled else None, 0.0, self.rules.engine_queue_share)
            if what == SEND:
                self._hold(ticket, decision, info)
                return decision
            if what == LATE:
                self._count(info.priority, "late")
                raise Refused(self._late(info, ticket), decision)
            if what == REJECT or not self.enabled:
                return decision
            return await self._wait(Waiter(info, decide, arrived, asyncio.get_running_loop().create_future(),
                                           ticket, slo_ms, decision))
        return await self._wait(Waiter(info, decide, arrived, asyncio.get_running_loop().create_future(), ticket,
                                       slo_ms))

    def release(self, ticket: Ticket | None, started: bool = True) -> None:
        """The request is over (its Exchange closed): its tenant holds one request less; try the queue.
        `started`: a proxy attempt took its ledger reservation (else it is given back)."""
        if ticket is None or not ticket.held:
            return
        ticket.held = False
        if ticket.reserved is not None and not started:
            self.unreserve(*ticket.reserved)
        left = self.local.get(ticket.tenant, 0) - 1
        if left > 0:
            self.local[ticket.tenant] = left
        else:
            self.local.pop(ticket.tenant, None)
        if len(self.queue):
            self.drain()

    def drain(self) -> None:
        """Refuse what expired, then dispatch waiting requests in the queue's order while they can go now
        (the order is taken again after each dispatch: its tenant now holds one more)."""
        now = self.clock()
        for item in self.queue.expired(now):
            self._expire(item, now)
        busy: set[int] = set()  # waiting requests that must keep waiting: capacity only shrinks in a pass
        progressed = True
        while progressed:
            progressed = False
            for item in self.queue.order(self.inflight, now):
                if item.seq in busy:
                    continue
                if self._try(item, now):
                    progressed = True
                    break
                busy.add(item.seq)
        self._gauge()

    def _try(self, item: Waiting[Waiter], now: float) -> bool:
        """Route one waiting request again; True when it left the queue (sent, refused or rejected)."""
        w = item.payload
        if w.future.done():  # the client left while it waited
            self.queue.remove(item)
            return False
        w.last = decision = w.decide(self._remaining(w.info, w.arrived, now))
        what = verdict(decision, w.slo_ms, (now - w.arrived) * 1000.0, self.rules.engine_queue_share)
        if what == WAIT:
            return False
        self.queue.remove(item)
        if what == LATE:
            w.future.set_exception(Refused(self._late(w.info, w.ticket), decision))
            self._count(w.info.priority, "late")
            return True
        if what == SEND:
            self._dispatched(now)
            self._hold(w.ticket, decision, w.info)
        w.future.set_result(decision)
        return True

    # --- inside ------------------------------------------------------------------------------------------
    async def _wait(self, w: Waiter) -> Decision:
        ticket = w.ticket
        now = self.clock()
        level = w.info.priority
        item, shed = self.queue.push(w, ticket.tenant, level, now,
                                     self.rules.expires(level, w.arrived, w.info.deadline_ms, w.slo_ms),
                                     self.rules.stale_at(level, w.arrived, w.slo_ms))
        for victim in shed:
            self._shed(victim, "the admission queue is full; lower-urgency work is shed first",
                       now - victim.payload.arrived)
        loop = asyncio.get_running_loop()
        loop.call_at(loop.time() + max(item.expires - now, 0.0), self.drain)
        self._next_pass(0.0)
        self._count(level, "waited")
        try:
            decision = await w.future
        finally:
            self.queue.remove(item)
            ticket.queued_ms = (self.clock() - now) * 1000.0
            self.written("the admission queue", lambda: self.metrics.admission_wait.labels(class_of(level)).observe(
                ticket.queued_ms / 1000.0))
            self._gauge()
        if decision.chosen is not None:
            self._count(level, "dispatched")
        return decision

    def _next_pass(self, delay_s: float) -> None:
        """Another pass soon, and polling while anything waits."""
        loop = asyncio.get_running_loop()
        loop.call_later(delay_s, self.drain)
        if not self._polling:
            self._polling = True
            loop.call_later(self.poll_s, self._poll)

    def _poll(self) -> None:
        self._polling = False
        if len(self.queue):
            self.drain()
            if len(self.queue) and not self._polling:
                self._polling = True
                asyncio.get_running_loop().call_later(self.poll_s, self._poll)

    def _hold(self, ticket: Ticket, decision: Decision, info: RequestInfo) -> None:
        """Count the dispatched request for its tenant and book it in the ledger at its endpoint now."""
        ticket.held = True
        self.local[ticket.tenant] = self.local.get(ticket.tenant, 0) + 1
        assert decision.chosen is not None
        ticket.reserved = (decision.chosen.endpoint_id, info.prompt_tokens, decision.request_id, ticket.width)
        self.reserve(*ticket.reserved)

    def _expire(self, item: Waiting[Waiter], now: float) -> None:
        w = item.payload
        if w.future.done():
            return
        left = self.rules.remaining_ms(w.info.deadline_ms, w.arrived, now)
        if left is not None and left <= 0:
            w.future.set_exception(Refused(self._late(w.info, w.ticket), w.last))
            self._count(w.info.priority, "late")
        else:
            waited = now - w.arrived
            self._shed(item, f"every eligible endpoint stayed busy for {waited:.1f} s, the longest a "
                             f"{class_of(w.info.priority)} request waits", waited)

    def _shed(self, item: Waiting[Waiter], why: str, waited_s: float) -> None:
        w = item.payload
        if w.future.done():
            return
        retry = self.retry_after_s(waited_s)
        w.future.set_exception(Refused(Overloaded(
            f"shed ({label(w.info.priority)}): {why}; retry in about {retry} s",
            headers={"retry-after": str(retry)}), w.last))
        self._count(w.info.priority, "shed")

    def retry_after_s(self, waited_s: float = 0.0) -> int:
        """The queue ahead over the recent dispatch rate, 1 to 60 s. Before the queue has dispatched anything
        (no rate yet, e.g. the first burst after a start) as long as the shed request waited: a request shed at
        its 1 s SLO is told to come back in about a second, not a minute (an OpenAI SDK sleeps that long)."""
        if self._rate <= 0:
            return max(1, min(RETRY_AFTER_MAX_S, math.ceil(waited_s)))
        return max(1, min(RETRY_AFTER_MAX_S, math.ceil(len(self.queue) / self._rate)))

    def _dispatched(self, now: float) -> None:
        if self._last_dispatch is not None:
            gap = max(now - self._last_dispatch, 1e-3)
            self._rate = 1.0 / gap if self._rate <= 0 else 0.8 * self._rate + 0.2 / gap
        self._last_dispatch = now

    @staticmethod
    def _late(info: RequestInfo, ticket: Ticket) -> DeadlineUnmeetable:
        asked = info.deadline_ms if ticket.deadline_ms is None else ticket.deadline_ms  # info's: what is left of it
        return DeadlineUnmeetable(f"the deadline ({asked:.0f} ms to the first token) cannot be met: no "
                                  "eligible endpoint is predicted to answer in time; refused before any engine "
                                  "worked on it", param=ticket.deadline_field)

    @staticmethod
    def _remaining(info: RequestInfo, arrived: float, now: float) -> RequestInfo:
        if info.deadline_ms is None:
            return info
        return replace(info, deadline_ms=info.deadline_ms - (now - arrived) * 1000.0)

    def _count(self, level: int, outcome: str) -> None:
        self.written("the admission queue", lambda: self.metrics.admission.labels(class_of(level), outcome).inc())

    def _gauge(self) -> None:
        self.written("the admission queue", lambda: self.metrics.admission_waiting.set(len(self.queue)))
