"""Server-sent events: the wire format, and the loop that feeds one viewer about once a second."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson

from aigrid.dashboard.feed import Feed

RETRY_MS = 2000
"""How long a disconnected browser waits before it reconnects (sent once, as SSE `retry:`)."""


def sse_event(name: str, data: Any) -> bytes:
    """One SSE event; orjson output has no raw newlines, so the data fits on one `data:` line."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def event_stream(feed: Feed, *, interval_s: float, clock: Callable[[], float],
                       sleep: Callable[[float], Awaitable[None]], ticks: int | None = None,
                       stopping: Callable[[], bool] = lambda: False) -> AsyncIterator[bytes]:
    """retry, hello, then each tick's events; until `ticks` are sent or the server is `stopping`.

    Checking `stopping` each tick lets a server shut down within one interval instead of waiting its
    graceful-shutdown timeout on a stream that never ends. Read-only by construction.
    """
    yield f"retry: {RETRY_MS}\n\n".encode()
    yield sse_event("hello", {"name": feed.gw.spec.name, "interval_s": interval_s})
    n = 0
    while (ticks is None or n < ticks) and not stopping():
        if n:
            await sleep(interval_s)
            if stopping():
                return
        await feed.refresh()
        for name, data in feed.tick(clock()):
            yield sse_event(name, data)
        n += 1
