"""The loop that shares a gateway's abuse digests once per `security.abuse.share_interval_s`
(security/firewall/abuse_shared.py): a worker sends them to its hub and takes back the verdicts over all
workers; a lone gateway with `gateway.shared_state_url` relays them through Redis (abuse_redis.py) and counts
the other gateways' in its own monitor (`redis_exchange`).

One round trip per interval whatever the request rate, never one per request. While the peer does not
answer, the gateway answers from its own monitor alone (logged once, and once when the peer answers again);
a request is never refused or delayed because of it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aigrid.errors import SharedStateUnavailable
from aigrid.security.firewall.abuse_shared import Batch, SharedAbuseMonitor, SharedVerdicts
from aigrid.telemetry.periodic import Periodic

if TYPE_CHECKING:  # redis only where a spec names it (guard.abuse_relay)
    from aigrid.security.firewall.abuse_redis import RedisAbuseRelay

log = logging.getLogger("aigrid.abuse")

AbuseExchange = Callable[[int, Batch], Awaitable[SharedVerdicts]]
"""Send one batch with the hub's change counter at the last answer, get the verdicts changed since (or all
of them); raises ConnectionError when the hub is unreachable."""


def redis_exchange(monitor: SharedAbuseMonitor, relay: RedisAbuseRelay) -> AbuseExchange:
    """A lone gateway's exchange: its batch out through Redis, the other gateways' digests counted into its
    own monitor (so its verdicts are over all gateways; no separate verdicts come back)."""

    async def exchange(since: int, batch: Batch) -> SharedVerdicts:
        monitor.local.count_all(await relay.relay(batch))
        return SharedVerdicts(0, False, {})

    return exchange


class AbuseSync:
    def __init__(self, monitor: SharedAbuseMonitor, exchange: AbuseExchange, interval_s: float,
                 peer: str = "the workers' hub") -> None:
        self._monitor = monitor
        self._exchange = exchange
        self._peer = peer
        self._periodic = Periodic(self.sync_once, interval_s, "aigrid-abuse-sync")
        self.unreachable = False
        self.batches = 0

    async def sync_once(self) -> bool:
        batch = self._monitor.take_batch()
        try:
            answer = await self._exchange(self._monitor.since, batch)
        except (ConnectionError, SharedStateUnavailable) as e:
            if not self.unreachable:
                log.warning("abuse signals: %s did not answer (%s); counting only this process's requests "
                            "until it does", self._peer, e)
            self.unreachable = True
            self._monitor.forget_shared()
            return False
        if self.unreachable:
            log.warning("abuse signals: %s answers again; verdicts count every peer's requests", self._peer)
        self.unreachable = False
        self.batches += 1
        self._monitor.apply(answer)
        return True

    async def start(self) -> None:
        await self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
