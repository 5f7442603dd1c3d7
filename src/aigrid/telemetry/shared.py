"""What gateways serving one grid share, and the contract of the place they share it.

Each gateway scrapes every engine itself (engine truth needs no sharing). What only one gateway can see is
shared: what it has in flight at each endpoint (requests pending a first token with their prompt tokens,
requests decoding) and for each tenant (fair sharing in the admission queues), which endpoints it has seen
fail (an open circuit breaker), which endpoint served which prompt prefix or session (cache affinity), and
the outcomes each endpoint's TTFT calibration learns from (core/calibration.py). With these, two gateways in
front of one grid decide from the same picture instead of each thinking the grid is idle, and each
calibration learns from every gateway's outcomes, not from its own share of them.

Times crossing process boundaries are wall-clock seconds (time.time()); each store converts them to its
own clock when it merges.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from aigrid.telemetry.prefill_book import Pending

Queues = Mapping[str, Pending]
"""endpoint id -> (anchor, pending prompts) in wall time (telemetry/prefill_book.py)."""

Observation = tuple[str, float, float, float]
"""One served outcome for calibration: (endpoint id, modelled wait ahead ms, modelled own prefill ms,
observed engine ms), the arguments of core.calibration.observe."""


def affinity_tag(key: str) -> str:
    """The tenant of an affinity key: its tag with its ".", what comes before its first "." (security/authorize
    ._tenants_own writes `{tag}.{digest}`); "" for a key without one (an older gateway's, the tests'): one tenant's.
    The affinity map (store.py) and the shared relays of its entries (gateway/hub.py, redis_shared.py) keep each
    tenant's apart by it: past their bound the tenant holding the most loses its oldest (most_held.MostHeld)."""
    return key[: key.find(".") + 1]


@dataclass(frozen=True, slots=True)
class LocalReport:
    """What this gateway tells the others, once per sync interval."""

    gateway_id: str
    inflight: Mapping[str, tuple[int, int, int]]
    """endpoint id -> (requests pending a first token, their prompt tokens, requests decoding)."""
    circuits_opened: Mapping[str, float]
    """endpoint id -> wall time this gateway opened its circuit (only open circuits)."""
    affinity: tuple[tuple[str, str], ...]
    """(prefix or session key, endpoint id) learned since the previous report."""
    tenants: Mapping[str, int] = field(default_factory=dict)
    """tenant -> requests this gateway has in flight for it (the admission queue's fair sharing)."""
    calibration: tuple[Observation, ...] = ()
    """The calibration observations this gateway made since the previous report."""
    queues: Queues = field(default_factory=dict)
    """This gateway's pending prompts placed in time, and its latest first token, per endpoint."""


@dataclass(frozen=True, slots=True)
class SharedView:
    """What the other gateways said, merged."""

    inflight: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)
    """endpoint id -> the other gateways' (pending, pending prompt tokens, decoding), summed."""
    circuits_opened: Mapping[str, float] = field(default_factory=dict)
    affinity: tuple[tuple[str, str], ...] = ()
    tenants: Mapping[str, int] = field(default_factory=dict)
    """tenant -> the other gateways' in-flight requests, summed."""
    calibration: tuple[Observation, ...] = ()
    """The other gateways' calibration observations since this gateway's previous exchange, oldest first."""
    peers: int = 0
    """How many other gateways reported recently: their observations count 1 / peers each, so all of them
    together weigh as much as this gateway's own (core.calibration.observe)."""
    queues: Queues = field(default_factory=dict)
    """The other gateways' pending prompts and latest first tokens, merged (prefill_book.merge_reports)."""


class SharedState(Protocol):
    async def exchange(self, report: LocalReport) -> SharedView:
        """Publish this gateway's report and return the others'. Raises SharedStateUnavailable."""
        ...

    async def aclose(self) -> None: ...
