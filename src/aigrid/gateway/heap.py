"""The gateway's heap once it serves: what start-up built is moved out of the cyclic garbage collector's way.

Start-up loads the spec, the firewall's models and tables, the routing core and the libraries: ~100,000
container objects that live as long as the process. CPython's collector re-scans all of them at every full
collection and many at every middle one, which a py-spy profile of the gateway under load shows as stalls on
arbitrary lines (docs/benchmarks.md, 2026-12-02 "CPU per request, third round"). `settle()` collects once and
then freezes what survives (`gc.freeze()`): those objects are no longer scanned; they are still freed by
reference counting like any other, and the collector keeps handling everything created afterwards (requests,
decision records), so nothing about what is kept or freed changes but the work of finding cycles. The
youngest generation is also collected every 7,000 net allocations instead of CPython's 700: a request
allocates a few hundred containers, almost all freed by reference counting, so most young collections found
nothing to free; cyclic garbage now waits a few more requests before it is freed.

Measured with gc.callbacks over 1,500 streamed requests (default spec, 50 streams): 0.13 ms of collection per
request before (one full collection of ~110,000 objects took 0.1 s), 0.03 ms after.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Protocol


class _Started(Protocol):
    started: bool
    should_exit: bool


YOUNG_THRESHOLD = 7000


def settle() -> None:
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


async def settle_when_started(server: _Started, poll_s: float = 0.05) -> bool:
    """Settle once `server` (a uvicorn.Server) has run its lifespan start-up (engines, audit log, firewall
    loaded); False when it exits before it started."""
    while not server.started and not server.should_exit:
        await asyncio.sleep(poll_s)
    if server.started:
        settle()
    return server.started
