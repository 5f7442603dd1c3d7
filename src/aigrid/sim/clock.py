"""The discrete-event kernel: a virtual clock and a heap of (time, seq, handler, arg).

The sequence number breaks ties in scheduling order, so two events at the same instant always run in the
same order and a run is a pure function of its inputs and seed (SimPy's kernel does the same).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

Handler = Callable[[Any], None]


class EventLoop:
    __slots__ = ("now", "events", "_heap", "_seq")

    def __init__(self) -> None:
        self.now = 0.0
        self.events = 0
        self._heap: list[tuple[float, int, Handler, Any]] = []
        self._seq = 0

    def at(self, when: float, handler: Handler, arg: Any = None) -> None:
        """Run handler(arg) at virtual time `when` (never earlier than now)."""
        self._seq += 1
        when = float(when)  # a numpy scalar (a time read from an array) would make the heap's comparisons, and
        # every time computed from `now` after it, numpy arithmetic: the same values, several times the cost
        heapq.heappush(self._heap, (when if when > self.now else self.now, self._seq, handler, arg))

    def after(self, delay: float, handler: Handler, arg: Any = None) -> None:
        """self.at(self.now + delay, handler, arg), inline: most events are scheduled through here."""
        self._seq += 1
        now = self.now
        when = float(now + delay)
        heapq.heappush(self._heap, (when if when > now else now, self._seq, handler, arg))

    def run(self, until: float = float("inf"), on_tick: Callable[[float], None] | None = None,
            tick_every: int = 50_000) -> None:
        heap = self._heap
        pop = heapq.heappop
        while heap and heap[0][0] <= until:
            when, _, handler, arg = pop(heap)
            self.now = when
            self.events += 1
            handler(arg)
            if on_tick is not None and self.events % tick_every == 0:
                on_tick(when)
        if until != float("inf"):
            self.now = max(self.now, until)

    def __len__(self) -> int:
        return len(self._heap)
