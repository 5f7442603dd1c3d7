"""The pending prompts of one gateway placed in time: what becomes the predictor's PrefillQueue
(core.types.PrefillQueue, replayed by core.predict.backlog_tokens).

A count of pending prompt tokens (telemetry.inflight) says how much prefill was sent and has not produced a
first token; it does not say how much of it is still ahead of a request sent now. Part of it is done already
(the engine has been working on it since it arrived), part of it has not arrived yet and will arrive after
this request (a prompt sent a moment ago to a far site from a gateway far from it), and the first tokens of
some of it are on their way back. Measured in the simulator, the count was the largest part of the
prediction error with queue ahead (docs/simulator.md, "Where the prediction error comes from").

So each gateway keeps, per endpoint, every pending prompt with the time it reaches the engine (sent + half
the round trip, as the gateway reckons it) and the latest first token it saw: the anchor, the time the
engine produced it (seen - half the round trip) and the time that request had arrived. An engine prefills
in arrival order, so at the anchor's time everything that arrived before that request was done; the
predictor replays the rest at the engine's prefill rate.

One rule for the live gateway (telemetry/store.py), its exchanges (Redis, the workers' hub) and the
simulator (sim/shared_state.py): `queue_of` builds the PrefillQueue from an anchor and the arrivals known,
`latest` picks the anchor among several gateways'.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping

from aigrid.core.types import PrefillQueue

Anchor = tuple[float, float]
"""(when the engine produced the latest known first token, when that request reached the engine)."""
Arrival = tuple[float, int]
"""(when a pending prompt reaches or reached the engine, its prompt tokens)."""
Pending = tuple[Anchor | None, tuple[Arrival, ...]]
"""One endpoint's (anchor, pending prompts) as a gateway reports them."""
Report = dict[str, Pending]
"""endpoint -> Pending: what one gateway tells the others, or several merged."""
ANCHOR_HORIZON_S = 30.0
"""An anchor older than this is no longer reported: every prompt it could rule out is long done."""


def latest(*anchors: Anchor | None) -> Anchor | None:
    """The anchor with the latest first token (None where none is known)."""
    best: Anchor | None = None
    for anchor in anchors:
        if anchor is not None and (best is None or anchor[0] > best[0]):
            best = anchor
    return best


NOTHING_PENDING = PrefillQueue(None, ())
"""No prompt pending: nothing ahead whatever the anchor (core.predict.backlog_tokens is 0 without arrivals)."""


def queue_of(anchor: Anchor | None, arrivals: Iterable[Arrival], now: float) -> PrefillQueue:
    """The PrefillQueue at `now` (times become relative to it): the prompts that arrive after the anchor's
    request, oldest first (those before it are done); NOTHING_PENDING when none is left."""
    after = float("-inf") if anchor is None else anchor[1]
    pending = sorted((at - now, tokens) for at, tokens in arrivals if at > after)
    if not pending:
        return NOTHING_PENDING
    return PrefillQueue(None if anchor is None else anchor[0] - now, tuple(pending))


class PrefillBook:
    """One gateway's pending prompts per endpoint (request key -> arrival) and its latest anchor there."""

    __slots__ = ("_pending", "_anchors")

    def __init__(self) -> None:
        self._pending: dict[Hashable, dict[Hashable, Arrival]] = {}
        self._anchors: dict[Hashable, Anchor] = {}

    def sent(self, endpoint: Hashable, request: Hashable, arrives_at: float, prompt_tokens: int) -> None:
        self._pending.setdefault(endpoint, {})[request] = (arrives_at, prompt_tokens)

    def first_token(self, endpoint: Hashable, request: Hashable, produced_at: float) -> None:
        """The request's first token came back; the engine produced it at `produced_at`."""
        arrival = self.drop(endpoint, request)
        if arrival is not None:
            mine = self._anchors.get(endpoint)
            if mine is None or produced_at > mine[0]:  # latest(mine, anchor) is the new anchor: compared, not
                # by identity (compiled, a tuple of two floats is a C struct, boxed afresh at each use)
                self._anchors[endpoint] = (produced_at, arrival[0])

    def drop(self, endpoint: Hashable, request: Hashable) -> Arrival | None:
        """The request left the book without a first token (failed, cancelled); returns its arrival."""
        pending = self._pending.get(endpoint)
        if pending is None:
            return None
        arrival = pending.pop(request, None)
        if not pending:
            del self._pending[endpoint]
        return arrival

    def anchor(self, endpoint: Hashable) -> Anchor | None:
        return self._anchors.get(endpoint)

    def arrivals(self, endpoint: Hashable) -> Iterable[Arrival]:
        pending = self._pending.get(endpoint)
        return () if pending is None else pending.values()

    def has_pending(self, endpoint: Hashable) -> bool:
        return endpoint in self._pending

    def report(self, now: float, shift: float = 0.0) -> Report:
        """Every endpoint with pending prompts or a recent anchor (ANCHOR_HORIZON_S; older ones are
        forgotten), for the other gateways, with `shift` added to every time (this clock to wall time)."""
        stale = [ep for ep, anchor in self._anchors.items() if anchor[0] < now - ANCHOR_HORIZON_S]
        for endpoint in stale:
            del self._anchors[endpoint]
        out: Report = {}
        for endpoint in {*self._pending, *self._anchors}:
            anchor = self._anchors.get(endpoint)
            out[str(endpoint)] = (
                None if anchor is None else (anchor[0] + shift, anchor[1] + shift),
                tuple((at + shift, tokens) for at, tokens in self.arrivals(endpoint)))
        return out


def merge_reports(reports: Iterable[Mapping[str, Pending]]) -> Report:
    """Several gateways' reports as one: per endpoint the latest anchor and every pending prompt."""
    out: Report = {}
    for report in reports:
        for endpoint, (anchor, arrivals) in report.items():
            prev = out.get(endpoint)
            out[endpoint] = (anchor, arrivals) if prev is None else (latest(prev[0], anchor), prev[1] + arrivals)
    return out



def to_wire(report: Mapping[str, Pending]) -> dict[str, list[object]]:
    """A report as JSON-able lists: {endpoint: [[produced, arrived] or null, [[arrives, tokens], ...]]}."""
    return {ep: [None if anchor is None else list(anchor), [list(a) for a in arrivals]]
            for ep, (anchor, arrivals) in report.items()}


def from_wire(raw: object) -> Report:
    """to_wire's lists back; anything malformed (a value no gateway of this version writes) is left out: a time
    that is an integer past float's range (10**400, JSON) too, which raised OverflowError out of the exchange."""
    out: Report = {}
    if not isinstance(raw, dict):
        return out
    for ep, value in raw.items():
        try:
            anchor_raw, arrivals_raw = value
            anchor = None if anchor_raw is None else (float(anchor_raw[0]), float(anchor_raw[1]))
            arrivals = tuple((float(at), int(tokens)) for at, tokens in arrivals_raw)
        except (TypeError, ValueError, IndexError, OverflowError):
            continue
        out[str(ep)] = (anchor, arrivals)
    return out
