"""A gateway's in-flight ledger together with what the shared state (Redis) last learnt of it.

Simulated gateways exchange ledgers every `shared_state_s` (0.1 s): each then knows every other's ledger as
of that exchange. Copying every ledger at every exchange costs O(requests in flight) each time: at planet
scale (1,400 in flight, 36,000 exchanges an hour) that was a third of a run. This keeps the same information
copy-on-write instead: the live ledger (telemetry.inflight.InflightLedger, the gateway's own class), plus the
load each endpoint had at the last exchange for the endpoints changed since, so an exchange costs O(changes)
and `then(key)` returns exactly what a full copy would have held.
"""

from __future__ import annotations

from collections.abc import Hashable

from aigrid.core.types import PrefillQueue
from aigrid.telemetry.inflight import InflightLedger, Load
from aigrid.telemetry.prefill_book import NOTHING_PENDING, latest, queue_of


class SyncedLedger:
    """InflightLedger's updates, plus `then(key)`: the key's load at the last `exchange()` (None: none).

    Before the first exchange the shared state is empty: `then` returns None for every key."""

    __slots__ = ("live", "_then", "_loads")

    def __init__(self) -> None:
        self.live = InflightLedger()
        self._loads = self.live.loads()
        """The live ledger's loads, read without a second call (`get` and `then` run per candidate)."""
        self._then: dict[Hashable, Load | None] = {}
        """Pre-images of the keys changed since the last exchange (the ledger starts empty: a first
        exchange of nothing at construction)."""

    def _keep(self, key: Hashable) -> None:
        if key not in self._then:
            load = self._loads.get(key)
            self._then[key] = None if load is None else Load(load.pending, load.pending_tokens, load.decoding)

    def sent(self, key: Hashable, prompt_tokens: int) -> None:
        self._keep(key)
        self.live.sent(key, prompt_tokens)

    def first_token(self, key: Hashable, prompt_tokens: int) -> None:
        self._keep(key)
        self.live.first_token(key, prompt_tokens)

    def finished(self, key: Hashable, prompt_tokens: int, had_first_token: bool) -> None:
        self._keep(key)
        self.live.finished(key, prompt_tokens, had_first_token)

    def get(self, key: Hashable) -> Load | None:
        """The load now."""
        return self._loads.get(key)

    def then(self, key: Hashable) -> Load | None:
        """The load at the last exchange (do not modify it)."""
        then = self._then
        return then[key] if key in then else self._loads.get(key)

    def exchange(self) -> None:
        """The shared state learns the ledger as it is now."""
        self._then.clear()

    def empty(self) -> bool:
        return next(self.live.items(), None) is None


class SyncedPrefillBook:
    """Every gateway's pending prompts per endpoint, placed in time (core.types.PrefillQueue), as each gateway
    knows them: its own at once, the other gateways' as of the last exchange.

    One dict per endpoint holds every gateway's entries (request -> [arrives at, tokens, gateway, sent at,
    dropped at]). An entry taken off (first token seen, finished, failed) stays until the next exchange with
    the time it went, so the other gateways still see it as the shared state last held it; the exchange then
    purges it. Anchors (the engine time of the latest first token seen, and that request's arrival) are kept
    per gateway and merged at each exchange."""

    __slots__ = ("entries", "own_anchor", "synced_anchor", "synced_at", "_gone", "_anchored")

    def __init__(self, endpoints: int) -> None:
        self.entries: list[dict[int, list[float]]] = [{} for _ in range(endpoints)]
        self.own_anchor: list[dict[int, tuple[float, float]]] = [{} for _ in range(endpoints)]
        self.synced_anchor: list[tuple[float, float] | None] = [None] * endpoints
        self.synced_at = float("-inf")
        self._gone: list[tuple[int, int]] = []
        self._anchored: set[int] = set()

    def sent(self, index: int, rid: int, gateway: int, now: float, arrives_at: float, tokens: int) -> None:
        self.entries[index][rid] = [arrives_at, float(tokens), float(gateway), now, float("inf")]

    def drop(self, index: int, rid: int, now: float) -> list[float] | None:
        entry = self.entries[index].get(rid)
        if entry is None or entry[4] != float("inf"):
            return None
        entry[4] = now
        self._gone.append((index, rid))
        return entry

    def first_token(self, index: int, rid: int, gateway: int, now: float, produced_at: float) -> None:
        entry = self.drop(index, rid, now)
        if entry is None:
            return
        anchors = self.own_anchor[index]
        mine = anchors.get(gateway)
        if mine is None or produced_at > mine[0]:  # latest(mine, anchor) is the new anchor: compared, not by
            # identity (compiled, a tuple of two floats is a C struct, boxed afresh at each use)
            anchors[gateway] = (produced_at, entry[0])
            self._anchored.add(index)

    def exchange(self, now: float) -> None:
        self.synced_at = now
        entries = self.entries
        for index, rid in self._gone:
            entries[index].pop(rid, None)
        self._gone.clear()
        for index in self._anchored:
            self.synced_anchor[index] = latest(self.synced_anchor[index], *self.own_anchor[index].values())
        self._anchored.clear()

    def queue(self, index: int, gateway: int, now: float) -> PrefillQueue:
        """What gateway `gateway` knows of endpoint `index`'s pending prompts now."""
        entries = self.entries[index]
        if not entries:  # most endpoints of a large grid, at every decision
            return NOTHING_PENDING
        anchor = latest(self.synced_anchor[index], self.own_anchor[index].get(gateway))
        g, synced = float(gateway), self.synced_at
        return queue_of(anchor, ((at, int(tokens)) for at, tokens, owner, sent, gone in entries.values()
                                 if (gone > now if owner == g else sent <= synced < gone)), now)
