"""Capacity: an endpoint whose queue is already `max_queue_factor` x its batch slots deep is full."""

from __future__ import annotations

from dataclasses import dataclass

from aigrid.core.compiling import mypyc_attr
from aigrid.core.plugins import PASS, Context, Verdict
from aigrid.core.types import UNKNOWN_STATE, Endpoint


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True, slots=True)
class HasCapacity:
    name: str = "capacity"
    max_queue_factor: float = 4.0

    def applies(self, ctx: Context) -> bool:
        return True

    def check(self, ctx: Context, endpoint: Endpoint) -> Verdict:
        state = ctx.view.states.get(endpoint.id, UNKNOWN_STATE)  # view.state(), without its Python frame
        slots = endpoint.max_concurrency
        limit = self.max_queue_factor * (1 if 1 > slots else slots)  # max(slots, 1): see core/predict.py
        if state.waiting >= limit:
            return Verdict(False, f"queue full ({state.waiting} waiting, limit {limit:g})")
        return PASS
