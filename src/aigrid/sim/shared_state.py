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

from aigrid.telemetry.inflight import InflightLedger, Load


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
