"""Run one coroutine now and then every `interval_s`, as a task that start() creates and stop() ends.

The background loops of a gateway (scraping engines, syncing shared state) are this; no constructor
starts them, the app's lifespan does. The loop is supervised: an unexpected error in one tick is logged
with its traceback and the next tick runs as usual, so one bad scrape never stops telemetry for good.

stop() does not rely on the cancel alone: redis-py runs each command inside asyncio.wait_for (its socket
timeout), which on Python 3.11 swallows a cancel that lands as the command completes (CPython gh-86296), and
the tick then goes on as if never cancelled; measured with a loop of GETs on a real Redis, about half the
cancels were lost (tests/telemetry/test_periodic.py). The loop also checks a stop flag before each tick, so a
lost cancel costs at most the rest of one tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("aigrid.telemetry")


class Periodic:
    def __init__(self, tick: Callable[[], Awaitable[object]], interval_s: float, name: str) -> None:
        self._tick = tick
        self._interval = interval_s
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.failures = 0

    async def _loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._interval)
            if self._stopping:  # a cancel lost in the last tick (module docstring)
                break
            await self._supervised()

    async def _supervised(self) -> None:
        try:
            await self._tick()
        except Exception:  # supervised: log it and keep ticking
            self.failures += 1
            log.exception("%s: tick failed unexpectedly (%d so far); next tick in %.1f s", self._name,
                          self.failures, self._interval)

    async def start(self) -> None:
        """One tick right away (so the first request sees fresh state), then one per interval. The first tick is
        supervised as the others are: one that failed unexpectedly raised out of the app's start, and the gateway
        did not start (a value in the shared Redis that no gateway writes did so)."""
        await self._supervised()
        self._task = asyncio.create_task(self._loop(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._stopping = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self._stopping = False
