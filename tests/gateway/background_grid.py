"""What the background Responses tests share (test_responses_background.py, test_responses_background_stream.py,
test_response_store_redis.py, test_background_*.py, test_responses_cut.py): two tenants' headers, a FAKE engine whose
whole answers wait at a gate, waits on a run (its status, its end, an engine reached), the run's audit record and the
tenant's balance, and a real hub on a Unix socket that two gateways share as workers do."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from aigrid.gateway.app import Gateway
from aigrid.gateway.background import BACKGROUND_ROUTE
from aigrid.gateway.hub import Hub
from tests.gateway.conftest import audit_rows
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.started_hub import started_hub

TENANT = {"x-aigrid-tenant": "metered", "x-aigrid-client-location": "Tokyo"}
OTHER = {"x-aigrid-tenant": "default", "x-aigrid-client-location": "Tokyo"}


class Stalling(FakeEngine):
    """A FAKE engine whose whole answers wait for `gate` (open: answers at once)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.gate = asyncio.Event()
        self.gate.set()

    async def _json(self, req: dict) -> AsyncIterator[bytes]:
        await self.gate.wait()
        async for chunk in super()._json(req):
            yield chunk


async def run_record(gw: Gateway) -> dict[str, Any]:
    """The one audit record of the background run (besides the create call's and the reads')."""
    rows = [r for r in await audit_rows(gw) if r["extra"]["route"] == BACKGROUND_ROUTE]
    assert len(rows) == 1, rows
    assert rows[0]["extra"]["response_id"].startswith("resp_")  # which response it ran
    return rows[0]


async def balance(gw: Gateway) -> int:
    return await gw.guard.quotas.tokens_this_minute(gw.guard.principal(None, "metered"))


def inflight(gw: Gateway) -> int:
    return sum(gw.store.inflight(e.id) for e in gw.store.snapshot().endpoints)


async def until(oai: openai.AsyncOpenAI, rid: str, *statuses: str) -> Any:
    """Poll `retrieve` as a client would, until the response reaches one of `statuses`."""
    for _ in range(3000):  # polled up to 30 s: a loaded machine is late, not wrong
        got = await oai.responses.retrieve(rid)
        if got.status in statuses:
            return got
        await asyncio.sleep(0.01)
    raise AssertionError(f"{rid} stayed {got.status}")


async def ended(gw: Gateway, rid: str) -> None:
    """Until the run has closed its exchange (just after its final status is visible)."""
    for _ in range(3000):  # polled up to 30 s: a loaded machine is late, not wrong
        if not gw.background.owns(rid):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the run of {rid} did not end")


async def stalled(engines: dict[str, Stalling]) -> None:
    for e in engines.values():
        e.gate.clear()


async def reached_an_engine(engines: dict[str, Stalling]) -> None:
    for _ in range(3000):  # polled up to 30 s: a loaded machine is late, not wrong
        if any(e.received for e in engines.values()):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no engine got the request")


@pytest.fixture
async def hub_path() -> AsyncIterator[Hub]:
    """A started hub (its socket's path and its token: HubClient(hub.path, hub.token))."""
    async with started_hub("aigrid-bg-") as hub:
        yield hub


async def close_hub_pair(gateways: tuple[Gateway, ...], clients: tuple[openai.AsyncOpenAI, ...]) -> None:
    """Two gateways sharing a hub, as workers do: their runs stopped, their audit writers and hub clients closed."""
    for gw in gateways:
        await gw.background.stop()
        await gw.guard.stop()
        assert gw.hub is not None
        await gw.hub.aclose()
    for client in clients:
        await client.close()
