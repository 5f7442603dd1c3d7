"""The loop that sends a worker's abuse digests to its hub and takes back the verdicts over all workers
(security/firewall/abuse_shared.py), once per `security.abuse.share_interval_s`.

One hub round trip per interval whatever the request rate, never one per request. While the hub does not
answer, the worker answers from its own monitor alone (logged once, and once when the hub answers again);
a request is never refused or delayed because of it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aigrid.security.firewall.abuse_shared import Batch, SharedAbuseMonitor, SharedVerdicts
from aigrid.telemetry.periodic import Periodic

log = logging.getLogger("aigrid.abuse")

AbuseExchange = Callable[[int, Batch], Awaitable[SharedVerdicts]]
"""Send one batch with the hub's change counter at the last answer, get the verdicts changed since (or all
of them); raises ConnectionError when the hub is unreachable."""


class AbuseSync:
    def __init__(self, monitor: SharedAbuseMonitor, exchange: AbuseExchange, interval_s: float) -> None:
        self._monitor = monitor
        self._exchange = exchange
        self._periodic = Periodic(self.sync_once, interval_s, "aigrid-abuse-sync")
        self.unreachable = False
        self.batches = 0

    async def sync_once(self) -> bool:
        batch = self._monitor.take_batch()
        try:
            answer = await self._exchange(self._monitor.since, batch)
        except ConnectionError as e:
            if not self.unreachable:
                log.warning("abuse signals: the hub did not answer (%s); each worker counts only its own "
                            "requests until it does", e)
            self.unreachable = True
            self._monitor.forget_shared()
            return False
        if self.unreachable:
            log.warning("abuse signals: the hub answers again; verdicts count every worker's requests")
        self.unreachable = False
        self.batches += 1
        self._monitor.apply(answer)
        return True

    async def start(self) -> None:
        await self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
