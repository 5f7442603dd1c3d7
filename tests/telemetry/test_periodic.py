"""Background loops are supervised: an unexpected error in one tick is logged and the next tick runs."""

from __future__ import annotations

import asyncio

import pytest

from aigrid.telemetry.periodic import Periodic


async def test_a_failing_tick_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    ticks: list[int] = []

    async def tick() -> None:
        ticks.append(len(ticks))
        if len(ticks) == 2:
            raise RuntimeError("a bug in one scrape")

    loop = Periodic(tick, 0.01, "aigrid-test-loop")
    with caplog.at_level("ERROR", logger="aigrid.telemetry"):
        await loop.start()
        for _ in range(200):
            if len(ticks) >= 5:
                break
            await asyncio.sleep(0.01)
        await loop.stop()
    assert len(ticks) >= 5 and loop.failures == 1
    assert "aigrid-test-loop: tick failed unexpectedly" in caplog.text and "a bug in one scrape" in caplog.text
