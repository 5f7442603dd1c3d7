"""BackgroundRuns: a run told to stop stops, even when the cancel itself is lost on the way."""

from __future__ import annotations

import asyncio
import logging

import pytest

from aigrid.gateway.background import BackgroundRuns


async def _lossy_run(runs: BackgroundRuns, rid: str, steps: list[str]) -> None:
    """A run whose every await swallows a cancel, as a Redis call inside asyncio.wait_for can on Python 3.11
    (background._halt): only its check() between steps can stop it."""
    try:
        for _ in range(2_000):
            try:
                await asyncio.sleep(0.001)
            except asyncio.CancelledError:
                steps.append("cancel lost")
            runs.check(rid)
        steps.append("ran to its end")
    except asyncio.CancelledError:
        steps.append("stopped")
        raise


async def test_a_cancel_lost_in_a_step_stops_the_run_at_its_next_check() -> None:
    runs, steps = BackgroundRuns(), []
    runs.spawn("resp_1", "acme", _lossy_run(runs, "resp_1", steps))
    await asyncio.sleep(0.01)
    await asyncio.wait_for(runs.cancel("resp_1", wait_s=5.0), 6.0)
    assert steps[-2:] == ["cancel lost", "stopped"] and not runs.owns("resp_1")


async def test_the_gateway_stopping_stops_every_run_whose_cancel_was_lost() -> None:
    runs, steps = BackgroundRuns(), []
    for rid in ("resp_1", "resp_2"):
        runs.spawn(rid, "acme", _lossy_run(runs, rid, steps))
    await asyncio.sleep(0.01)
    await asyncio.wait_for(runs.stop(), 6.0)
    assert steps.count("stopped") == 2 and "ran to its end" not in steps and len(runs) == 0


async def test_a_run_recording_its_outcome_is_not_stopped_by_check() -> None:
    runs, recorded = BackgroundRuns(), []
    gate = asyncio.Event()

    async def run() -> None:
        runs.ending("resp_1")
        await gate.wait()
        runs.stopping = True  # the gateway stops now too
        runs.check("resp_1")  # told to stop after it began recording: it records, it is not interrupted
        recorded.append("resp_1")

    runs.spawn("resp_1", "acme", run())
    await asyncio.sleep(0)
    cancelling = asyncio.create_task(runs.cancel("resp_1", wait_s=5.0))
    await asyncio.sleep(0.01)
    gate.set()
    await cancelling
    assert recorded == ["resp_1"] and not runs.owns("resp_1")


async def test_the_watcher_logs_a_stores_unexpected_error_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    """An error the watcher did not expect from its store (a hub answering in an older form: AttributeError) ended
    the watcher unlogged, so the lease went unrenewed and later cancels were never read. It is logged, and the next
    poll renews the lease and stops the run a client cancelled."""
    runs, asked = BackgroundRuns(poll_s=0.01, lease_s=1.0), []

    class Store:
        async def heartbeat(self, owner: str, lease_s: float) -> None:
            asked.append("heartbeat")

        async def cancelled(self, keys: list[tuple[str, str]]) -> dict[str, str]:
            if "broken" not in asked:
                asked.append("broken")
                raise AttributeError("'list' object has no attribute 'items'")
            return {rid: "cancelled" for _, rid in keys}

    async def run() -> None:
        await asyncio.Event().wait()

    with caplog.at_level(logging.ERROR, logger="aigrid.gateway"):
        runs.spawn("resp_1", "acme", run(), Store())
        task = runs._tasks["resp_1"][1]
        await asyncio.wait_for(asyncio.wait({task}), 10)
    assert task.cancelled() and asked.count("heartbeat") >= 2  # renewed after the error too
    assert [r.getMessage() for r in caplog.records] == ["background runs: could not renew the lease or ask for cancels"]
