"""A circuit breaker per endpoint: CLOSED -> (N consecutive failures) -> OPEN -> (cooldown) -> HALF_OPEN ->
one success closes it, one failure opens it again. Time is passed in, so it runs on any clock."""

from __future__ import annotations

from dataclasses import dataclass

from aigrid.core.types import Circuit


@dataclass
class CircuitBreaker:
    failure_threshold: int = 3
    cooldown_s: float = 10.0
    failures: int = 0
    opened_at: float | None = None

    def state(self, now: float) -> Circuit:
        if self.opened_at is None:
            return Circuit.CLOSED
        if now - self.opened_at >= self.cooldown_s:
            return Circuit.HALF_OPEN
        return Circuit.OPEN

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None

    def record_failure(self, now: float) -> bool:
        """One failure at `now`; True when it opened the circuit (from closed, or again from half-open): the hook the
        gateway counts openings by (aigrid_endpoint_circuit_opens_total). A failure while already open (another
        attempt that was under way) only restarts the cooldown."""
        was_open = self.state(now) is Circuit.OPEN
        self.failures += 1
        if self.opened_at is not None or self.failures >= self.failure_threshold:
            self.opened_at = now
            return not was_open
        return False
