"""The simulated gateways' admission queues: core/fair_queue.py's order, driven by the virtual clock.

Each gateway holds its own FairQueue. A request waits there when its decision says so (core.urgency.verdict:
every eligible endpoint is busy for its class), or when it arrives while others are already waiting at
its gateway (it takes its turn by the queue's order, not ahead of them). A gateway tries its queue again
whenever it sees one of its own requests finish, and every `tick_s` while anything waits (the others'
finishes reach it through the shared state that often). Each tenant's requests in flight are counted per
gateway and exchanged every tick, the live gateways' shared per-tenant counts (telemetry/shared.py).

A request that waits past its expiry (deadline, or its class's longest wait; checked every tick) or is
pushed out of a full queue is handed back to the runner, which records it as shed or refused: nothing is lost silently.
"""

from __future__ import annotations

from collections.abc import Callable

from aigrid.core.fair_queue import FairQueue, Waiting
from aigrid.core.urgency import AdmissionRules
from aigrid.sim.clock import EventLoop

TryDispatch = Callable[[int], bool]
"""Route call i again: True when it left the queue (sent, refused or rejected), False when it must wait."""
Drop = Callable[[int, str], None]
"""Call i leaves the queue unserved; the reason is "expired" or "overflow"."""


class Admission:
    def __init__(self, loop: EventLoop, gateways: int, rules: AdmissionRules, tick_s: float,
                 try_dispatch: TryDispatch, drop: Drop, slo_ms: float, weights: dict[str, float] | None = None
                 ) -> None:
        self.loop = loop
        self.rules = rules
        self.slo_ms = slo_ms
        self.tick_s = tick_s
        self.try_dispatch = try_dispatch
        self.drop = drop
        self.queues: list[FairQueue[int]] = [FairQueue(rules.capacity, weights or {}) for _ in range(gateways)]
        self.own: list[dict[str, int]] = [{} for _ in range(gateways)]
        """Per gateway: each tenant's requests in flight sent by it (exact, now)."""
        self.synced_total: dict[str, int] = {}
        self.synced_own: list[dict[str, int]] = [{} for _ in range(gateways)]
        self.ticking = False

    def busy(self, g: int) -> bool:
        return len(self.queues[g]) > 0

    def wait(self, i: int, g: int, tenant: str, level: int, arrived: float,
             deadline_ms: float | None) -> Waiting[int]:
        now = self.loop.now
        item, shed = self.queues[g].push(i, tenant, level, now,
                                         self.rules.expires(level, arrived, deadline_ms, self.slo_ms),
                                         self.rules.stale_at(level, arrived, self.slo_ms))
        for victim in shed:
            self.drop(victim.payload, "overflow")
        if not self.ticking:
            self.ticking = True
            self.loop.after(self.tick_s, self._tick)
        return item

    def inflight(self, g: int) -> Callable[[str], float]:
        own, mine_then, total = self.own[g], self.synced_own[g], self.synced_total
        return lambda t: own.get(t, 0) + total.get(t, 0) - mine_then.get(t, 0)

    def drain(self, g: int) -> None:
        """Dispatch waiting requests in the queue's order until none can be placed."""
        q = self.queues[g]
        while len(q):
            placed = False
            for item in q.order(self.inflight(g), self.loop.now):
                if self.try_dispatch(item.payload):
                    q.remove(item)
                    placed = True
                    break
            if not placed:
                return

    def hold(self, g: int, tenant: str, sign: int = 1) -> None:
        own = self.own[g]
        own[tenant] = own.get(tenant, 0) + sign

    def _expire(self, g: int) -> None:
        for item in self.queues[g].expired(self.loop.now):
            self.drop(item.payload, "expired")

    def _tick(self, _: object = None) -> None:
        self.synced_own = [dict(o) for o in self.own]
        total: dict[str, int] = {}
        for o in self.own:
            for t, n in o.items():
                total[t] = total.get(t, 0) + n
        self.synced_total = total
        for g, q in enumerate(self.queues):
            if len(q):
                self._expire(g)
                self.drain(g)
        if any(len(q) for q in self.queues):
            self.loop.after(self.tick_s, self._tick)
        else:
            self.ticking = False
