"""Capacity: an endpoint whose queue is already `max_queue_factor` x its batch slots deep is full."""

from __future__ import annotations

from dataclasses import dataclass

from aigrid.core.plugins import PASS, Context, Verdict
from aigrid.core.types import Endpoint


@dataclass(frozen=True, slots=True)
class HasCapacity:
    name: str = "capacity"
    max_queue_factor: float = 4.0

    def check(self, ctx: Context, endpoint: Endpoint) -> Verdict:
        state = ctx.view.state(endpoint.id)
        limit = self.max_queue_factor * max(endpoint.max_concurrency, 1)
        if state.waiting >= limit:
            return Verdict(False, f"queue full ({state.waiting} waiting, limit {limit:g})")
        return PASS
