"""proxy._attempt's way out before the first byte, cut by a BaseException that is neither an Exception nor a cancel
(KeyboardInterrupt, SystemExit; an injected one here, which pytest does not act on): the engine's request is closed
and its slot freed as for any other way out (test_close_then_book covers the reads and closes after it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from aigrid.engines.protocol import UpstreamResponse
from tests.gateway import hostile_engine as H
from tests.gateway.test_close_then_book import Injected, booked, inflight, raised, two_engines


async def test_an_attempt_cut_by_another_base_exception_before_its_first_byte_frees_its_slot(tmp_path: Path) -> None:
    """Until review RV5 of the thirtieth session such a cut left the engine's request open and one in flight for
    good (the except took an Exception or a cancel only). Now closed, nothing in flight, not counted against the
    engine (no failed_before_first_byte), and raised on."""
    error = Injected("interrupted before the first byte")
    closed: list[str] = []

    async def cut_before_the_first_byte() -> AsyncIterator[bytes]:
        raise error
        yield b""  # (an async generator)

    @asynccontextmanager
    async def opening(path: str, payload: bytes) -> AsyncIterator[UpstreamResponse]:
        try:
            yield UpstreamResponse(200, {"content-type": "text/event-stream"}, cut_before_the_first_byte())
        finally:
            closed.append(path)

    async for g in two_engines(tmp_path, lambda p, r: H.whole(b"{}")):
        for engine in g.gw.proxy._engines.values():
            engine.open = opening  # type: ignore[method-assign]
        with pytest.raises(BaseException) as got:  # the injected error (within a task group's, where one wraps it)
            await g.post("chat", True)
        assert raised(error)(got.value), got.value
        assert inflight(g.gw) == 0
        assert len(closed) == 1, closed
        assert "failed_before_first_byte" not in {o for (_, o) in booked(g.gw)}, booked(g.gw)
