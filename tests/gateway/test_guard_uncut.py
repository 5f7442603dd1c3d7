"""guard._uncut under asyncio.timeout (Python 3.11's Task.cancelling/uncancel): a cancel that lands while it waits
for the store call it shields is counted, not lost, so an enclosing asyncio.timeout tells its own expiry (TimeoutError)
from another cancel (CancelledError, the task's count left at that one cancel), and what the call charged is kept."""

from __future__ import annotations

import asyncio

import pytest

from aigrid.gateway.guard import _uncut


async def _charge() -> int:
    await asyncio.sleep(0.2)  # a store call answering within its socket timeout
    return 7


@pytest.mark.parametrize("other_cancel_at", [None, 0.03, 0.1], ids=["timeout-only", "cancel-first", "timeout-first"])
async def test_an_enclosing_timeout_sees_exactly_the_cancels_that_landed(other_cancel_at: float | None) -> None:
    async def request() -> tuple[str, int, list[int]]:
        me = asyncio.current_task()
        assert me is not None
        kept: list[int] = []
        if other_cancel_at is not None:  # a shutdown or a hang-up, before or after the timeout expires
            asyncio.get_running_loop().call_later(other_cancel_at, me.cancel)
        try:
            async with asyncio.timeout(0.05):
                await _uncut(_charge(), kept.append)
        except TimeoutError:
            return "timeout", me.cancelling(), kept
        except asyncio.CancelledError:
            return "cancelled", me.cancelling(), kept
        return "returned", me.cancelling(), kept

    outcome = await asyncio.create_task(request())
    assert outcome == (("timeout", 0, [7]) if other_cancel_at is None else ("cancelled", 1, [7]))
