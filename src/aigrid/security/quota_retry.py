"""Calls to a quota store that failed, tried again in the background while the store still keeps their op.

One implementation for both: a failed charge's release (`quotas.Quotas`) and a worker's settlement the hub may not
have (`gateway.hub_client.HubQuotaBackend`). Bounded three ways: at most `max_waiting` wait (one more is refused:
its caller counts it lost), each only `within_s` from its first try (the store then no longer keeps its op: a late
copy would take back or settle nothing), and a round stops after ROUND_FAILURES failures in a row (a store that is
down costs a round that many calls, not one per waiting call). A call that fails goes to the back and the round goes
on with the next: one call the store keeps failing never keeps the others waiting a pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger("aigrid.quotas")
T = TypeVar("T")

ROUND_FAILURES = 2
"""A round stops after this many failures in a row (the rest wait a pause); a failure followed by a success (a store
that refuses one call, or was slow once) costs the calls behind it nothing."""


class TryAgain(Generic[T]):
    """Calls waiting to be tried again (`send(item, first)`; an exception is a failure), each with when it was first
    tried (monotonic: `first`, held here only). Rounds start `pause_s` apart (the first at once where not
    `wait_first`), the pause doubled after a round in which nothing got through, up to `pause_max_s`, and back to
    `pause_s` after one that did. `lost(item, why)` is told of each given up: past `within_s`, or still waiting when
    `stop` is called."""

    def __init__(self, send: Callable[[T, float], Awaitable[object]], lost: Callable[[T, str], None], *, what: str,
                 within_s: float, max_waiting: int, pause_s: float, pause_max_s: float,
                 wait_first: bool = True, sent: Callable[[T], None] | None = None) -> None:
        self._send = send
        self._lost = lost
        self._sent = sent
        self.what = what
        """Names the calls in the task's name and the log lines ("quota release", "quota settlement")."""
        self.within_s = within_s
        self.max_waiting = max_waiting
        self.pause_s = pause_s
        self.pause_max_s = pause_max_s
        self.wait_first = wait_first
        """Whether the first round waits a pause too (False: it starts at once, where the call's failure says
        nothing of the next try: a connection that broke, reopened at once)."""
        self._waiting: deque[tuple[float, T]] = deque()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, item: T, first: float) -> str | None:
        """Queue `item` (first tried at `first`, monotonic) and start the task that tries it again; or, past the
        bounds, why not (the caller counts it lost)."""
        if len(self._waiting) >= self.max_waiting:
            return f"{self.max_waiting} already wait to be tried again"
        if time.monotonic() - first >= self.within_s:
            return f"first tried {self.within_s:g} s ago or more (the store may have forgotten its op)"
        self._waiting.append((first, item))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"aigrid-{self.what}-again")
        return None

    async def _run(self) -> None:
        pause, wait = self.pause_s, self.wait_first
        while self._waiting:
            if wait:
                await asyncio.sleep(pause)
            wait = True
            through = await self._round()
            pause = self.pause_s if through else min(2 * pause, self.pause_max_s)

    async def _round(self) -> bool:
        """Try each call waiting at the round's start once (fewer where ROUND_FAILURES fail in a row); whether one
        got through."""
        through, failures = False, 0
        for _ in range(len(self._waiting)):
            if not self._waiting or failures >= ROUND_FAILURES:
                break
            entry = self._waiting[0]
            first, item = entry
            if time.monotonic() - first >= self.within_s:
                self._waiting.popleft()
                self._lost(item, f"not taken within {self.within_s:g} s of its first try")
                continue
            try:
                await self._send(item, first)
            except Exception as e:  # noqa: BLE001 (still failing: to the back, the round goes on)
                failures += 1
                log.debug("%s tried again and failed (%d waiting): %s", self.what, len(self._waiting), e)
                if self._waiting and self._waiting[0] is entry:
                    self._waiting.rotate(-1)
                continue
            failures, through = 0, True
            if self._waiting and self._waiting[0] is entry:
                self._waiting.popleft()
            if self._sent is not None:
                self._sent(item)
        return through

    def stop(self, why: str) -> None:
        """Stop trying: each call still waiting is given up (`lost`)."""
        if self._task is not None:
            self._task.cancel()
        waiting, self._waiting = self._waiting, deque()
        for _, item in waiting:
            self._lost(item, why)

    async def aclose(self, why: str) -> None:
        """`stop`, and wait for the task to end (cancelled by `stop`: not left to finish its pause)."""
        task = self._task
        self.stop(why)
        self._task = None
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
