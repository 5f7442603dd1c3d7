"""Background loops are supervised: an unexpected error in one tick is logged and the next tick runs."""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from aigrid.telemetry.periodic import Periodic
from tests.security.redis_server import redis_server


@pytest.mark.parametrize("failing", [2, 1], ids=["a-later-tick", "the-first-tick"])
async def test_a_failing_tick_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture, failing: int) -> None:
    """S (twenty-third session, `the-first-tick`): start() ran its first tick unsupervised, so one that failed
    unexpectedly raised out of the app's start (the gateway did not start) and no loop ran after it."""
    ticks: list[int] = []

    async def tick() -> None:
        ticks.append(len(ticks))
        if len(ticks) == failing:
            raise RuntimeError("a bug in one scrape")

    loop = Periodic(tick, 0.01, "aigrid-test-loop")
    with caplog.at_level("ERROR", logger="aigrid.telemetry"):
        await loop.start()  # the-first-tick, before: raised RuntimeError
        for _ in range(3000):  # polled up to 30 s: a loaded machine is late, not wrong
            if len(ticks) >= 5:
                break
            await asyncio.sleep(0.01)
        await loop.stop()
    assert len(ticks) >= 5 and loop.failures == 1
    assert "aigrid-test-loop: tick failed unexpectedly" in caplog.text and "a bug in one scrape" in caplog.text


class _Abort(BaseException):
    """Ends a runaway test loop (Periodic catches Exception only)."""


async def test_stop_ends_the_loop_even_when_a_cancel_is_lost_in_a_redis_call(tmp_path: Path) -> None:
    """redis-py (socket_timeout set, as every aigrid client sets it) runs each command inside asyncio.wait_for,
    which on Python 3.11 can swallow a cancel that lands as the command completes (CPython gh-86296): the task
    goes on as if never cancelled. A loop whose tick is all Redis calls must still stop, every time."""
    with redis_server(tmp_path) as port:
        client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=1.0)
        await client.set("k", "v")
        abort = False

        async def tick() -> None:
            for _ in range(50):
                if abort:
                    raise _Abort
                await client.get("k")

        try:
            rng = random.Random(3)
            for attempt in range(30):
                loop = Periodic(tick, 0.0, "aigrid-test-redis-loop")
                await loop.start()
                await asyncio.sleep(rng.random() * 0.02)
                stopping = asyncio.create_task(loop.stop())
                done, _ = await asyncio.wait({stopping}, timeout=5.0)
                if not done:
                    abort = True
                    with contextlib.suppress(_Abort):
                        await stopping
                    pytest.fail(f"stop {attempt + 1}: the loop went on after its cancel")
        finally:
            await client.aclose()
