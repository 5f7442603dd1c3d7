"""BatchRunner's stop (src/aigrid/gateway/batch_runner.py); the batches' API and their runs: test_batches.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aigrid.gateway.batch_line import BATCH_LINE_ROUTE, line_route
from tests.gateway.batch_helpers import (
    audit_rows_at,
    batch_spec,
    clients,
    engines_for,
    jsonl,
    line,
    received,
    started,
    stopped,
    submit,
)


async def test_a_second_signal_ends_the_drain_of_a_stop_at_once(tmp_path: Path) -> None:
    """BatchRunner.hurry (a second Ctrl-C/SIGTERM: stopping.GatewayServer.hurry): the drain of a stop under way ends
    now, the line still running stopped (settled, recorded `cancelled`), not after drain_s (600 s here)."""
    engines = engines_for(tmp_path)
    gw = await started(batch_spec(tmp_path, concurrency=1, drain_s=600), engines)
    oai, _ = clients(gw)
    for e in engines.values():
        e.gate.clear()
    created = await submit(oai, jsonl(line("l1", "SLOW river")))
    for _ in range(3000):  # polled up to 30 s: a loaded machine is late, not wrong
        if received(engines):
            break
        await asyncio.sleep(0.01)
    assert gw.batches is not None
    stopping = asyncio.create_task(stopped(gw))
    await asyncio.sleep(0.5)  # into the drain (a hurry before it skips it too)
    assert not stopping.done()  # the line still runs: the drain waits for it
    gw.batches.runner.hurry()
    await asyncio.wait_for(stopping, 60)
    rows = [r for r in await audit_rows_at(tmp_path) if r["extra"]["route"].startswith(BATCH_LINE_ROUTE)]
    assert [(r["extra"]["route"], r["outcome"]) for r in rows] == [(line_route(created.id, "l1"), "cancelled")]
