"""Polls every engine's health and Prometheus metrics into the telemetry store, concurrently, on an interval.

Each endpoint on its own loop: one whose probes do not answer (a site whose network went dark, an engine that
drips its /metrics; each GET may take the probe timeout) holds no other endpoint's next scrape. Started and stopped
by the app's lifespan; never from a constructor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from functools import partial

from aigrid.core.types import Endpoint
from aigrid.engines.protocol import Engine
from aigrid.errors import EngineError
from aigrid.gateway.metrics import GatewayMetrics
from aigrid.logs import fields
from aigrid.telemetry.periodic import Periodic
from aigrid.telemetry.store import TelemetryStore, bounded_stats

log = logging.getLogger("aigrid.scraper")


class Scraper:
    def __init__(self, store: TelemetryStore, engines: Mapping[str, Engine], endpoints: tuple[Endpoint, ...],
                 metrics: GatewayMetrics, interval_s: float) -> None:
        self._store = store
        self._engines = engines
        self._endpoints = endpoints
        self._metrics = metrics
        self._periodic = [Periodic(partial(self._scrape, e), interval_s, f"aigrid-scraper-{e.id}") for e in endpoints]

    async def scrape_once(self) -> None:
        """Every endpoint scraped once now, concurrently, and no task left running: the same `_scrape` as each
        loop's tick (start()'s first round is this, each endpoint on its own loop). The seam for a gateway whose
        lifespan is not run (the tests' gateways: telemetry fresh on demand, with no background loop to stop or to
        race with); only the supervision differs: an unexpected error here raises, where a loop logs it."""
        await asyncio.gather(*(self._scrape(e) for e in self._endpoints))

    async def _scrape(self, endpoint: Endpoint) -> None:
        engine = self._engines[endpoint.id]
        labels = (endpoint.site_id, endpoint.id)
        try:
            probe_start = time.perf_counter()
            healthy = await engine.health()
            if healthy:  # the health probe is a trivial handler: its time is the round trip to the site
                self._store.record_rtt(endpoint.id, time.perf_counter() - probe_start)
            stats = await engine.stats() if healthy else None
        except Exception as e:  # noqa: BLE001 -- logged: one engine's scrape never fails the others' (nor a start)
            if not isinstance(e, EngineError):
                log.warning("endpoint %s: unexpected error reading its health or metrics", endpoint.id, exc_info=e)
            why = str(e) or type(e).__name__
            if self._store.state(endpoint.id).healthy:
                log.warning("endpoint %s is now UNHEALTHY: %s", endpoint.id, why,
                            extra=fields(endpoint=endpoint.id, healthy=False, reason=why))
            self._store.record_scrape(endpoint.id, False, None, reason=why)
            self._metrics.healthy.labels(*labels).set(0)
            return
        was_healthy = self._store.state(endpoint.id).healthy
        reason = "" if healthy else "health check failed"  # an engine's probe that says why raises (above)
        self._store.record_scrape(endpoint.id, healthy, stats, reason=reason)
        if was_healthy != healthy:
            log.warning("endpoint %s is now %s", endpoint.id, "healthy" if healthy else f"UNHEALTHY: {reason}",
                        extra=fields(endpoint=endpoint.id, healthy=healthy, **({"reason": reason} if reason else {})))
        self._metrics.healthy.labels(*labels).set(1 if healthy else 0)
        waiting = bounded_stats(stats).waiting if stats is not None else None  # as telemetry reads it, not raw
        if waiting is not None:
            self._metrics.queue.labels(*labels).set(waiting)

    async def start(self) -> None:
        """Every endpoint scraped once (the first request sees them), then each on its own interval."""
        await asyncio.gather(*(p.start() for p in self._periodic))

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop() for p in self._periodic))
