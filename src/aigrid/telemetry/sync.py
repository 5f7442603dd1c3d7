"""The loop that exchanges this gateway's observations with the others through a SharedState (Redis).

While the shared store is unreachable the gateway keeps serving from its last merged view, marked stale
(`SharedSync.stale_since`), and retries every interval; nothing blocks a request on Redis.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aigrid.errors import SharedStateUnavailable
from aigrid.telemetry.periodic import Periodic
from aigrid.telemetry.shared import SharedState
from aigrid.telemetry.store import TelemetryStore

log = logging.getLogger("aigrid.sync")


class SharedSync:
    def __init__(self, store: TelemetryStore, shared: SharedState, gateway_id: str, wall: Callable[[], float],
                 interval_s: float = 0.5, observe: Callable[[float | None], None] | None = None) -> None:
        """`observe` hears of every exchange: its round trip in seconds, or None when it failed (the
        gateway's metrics: aigrid_shared_sync_seconds and aigrid_shared_sync_failures)."""
        self._store = store
        self._shared = shared
        self._id = gateway_id
        self._wall = wall
        self._periodic = Periodic(self.sync_once, interval_s, "aigrid-shared-sync")
        self._observe = observe
        self.stale_since: float | None = None
        self.last_ok: float | None = None

    async def sync_once(self) -> bool:
        report = self._store.local_report(self._id, self._wall)
        started = time.perf_counter()
        try:
            view = await self._shared.exchange(report)
        except SharedStateUnavailable as e:
            if self._observe is not None:
                self._observe(None)
            if self.stale_since is None:
                self.stale_since = self._wall()
                log.warning("shared state unreachable, serving from the last view (stale): %s", e)
            self._store.requeue_affinity(report.affinity)
            self._store.requeue_calibration(report.calibration)
            return False
        if self.stale_since is not None:
            log.warning("shared state reachable again after %.1f s", self._wall() - self.stale_since)
        if self._observe is not None:
            self._observe(time.perf_counter() - started)
        self.stale_since = None
        self.last_ok = self._wall()
        self._store.apply_shared(view, self._wall)
        return True

    async def start(self) -> None:
        await self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
        await self._shared.aclose()

    def status(self) -> dict[str, object]:
        return {"backend": type(self._shared).__name__, "stale": self.stale_since is not None,
                "stale_since": self.stale_since, "last_ok": self.last_ok}
