"""quota_retry.TryAgain: calls to a quota store tried again in the background."""

from __future__ import annotations

import asyncio
import time

from aigrid.security.quota_retry import TryAgain


async def test_aclose_cancels_the_task_in_its_pause() -> None:
    """A gateway that stops while the task waits its pause between rounds: aclose cancels it and gives up what
    waits. Before, aclose cleared the task before `stop` looked at it, so nothing was cancelled and it waited out
    the pause (RELEASE_RETRY_PAUSE_MAX_S, 4 s, for the quotas' releases; here an hour)."""
    async def send(item: int, first: float) -> None:
        raise ConnectionError("the store is down")

    lost: list[tuple[int, str]] = []
    again = TryAgain[int](send, lambda item, why: lost.append((item, why)), what="test", within_s=7200,
                          max_waiting=10, pause_s=3600, pause_max_s=3600)
    assert again.add(1, time.monotonic()) is None
    task = again._task
    assert task is not None
    for _ in range(100):  # the task started, now in its first pause
        await asyncio.sleep(0)
    closing = asyncio.create_task(again.aclose("stopping"))
    for _ in range(100):  # a few turns of the loop: aclose waits for nothing but the cancelled task
        await asyncio.sleep(0)
    done = closing.done()
    if not done:  # (before: waiting out the pause)
        closing.cancel()
        task.cancel()
    assert done, "aclose still waits for the task's pause"
    assert task.cancelled() and again._task is None
    assert lost == [(1, "stopping")] and len(again) == 0
