"""Health: never route to an endpoint that failed its health check or whose circuit breaker is open."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from aigrid.core.compiling import mypyc_attr
from aigrid.core.plugins import PASS, Context, Verdict
from aigrid.core.types import UNKNOWN_STATE, Circuit, Endpoint

CIRCUIT_OPEN: Final = Circuit.OPEN
"""Circuit.OPEN, read once: compiled, `Circuit.OPEN` is a lookup on the enum's class (its metaclass), which costs about
twenty times an attribute of a record, once per candidate of every decision."""


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True, slots=True)
class Healthy:
    name: str = "health"

    def applies(self, ctx: Context) -> bool:
        return True

    def check(self, ctx: Context, endpoint: Endpoint) -> Verdict:
        state = ctx.view.states.get(endpoint.id, UNKNOWN_STATE)  # view.state(), without its Python frame
        if not state.healthy:
            return Verdict(False, f"unhealthy{': ' + state.reason if state.reason else ''}")
        if state.circuit is CIRCUIT_OPEN:
            return Verdict(False, "circuit breaker open after recent failures")
        return PASS
