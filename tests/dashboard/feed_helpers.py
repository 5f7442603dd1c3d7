"""What the dashboard feed's tests share with others: the (event, data) pairs of a server-sent-events body, and a
FAKE engine healthy to the scraper that refuses every request (a request that fails where it was sent)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson

from aigrid.engines.protocol import EngineStats, UpstreamResponse
from aigrid.errors import EngineUnavailable
from tests.gateway.fake_engine import FakeEngine


def parse_sse(raw: bytes) -> list[tuple[str, object]]:
    events = []
    for block in raw.decode().split("\n\n"):
        lines = block.split("\n")
        name = next((ln[7:] for ln in lines if ln.startswith("event: ")), None)
        data = [ln[6:] for ln in lines if ln.startswith("data: ")]
        if name and data:
            events.append((name, orjson.loads(data[0])))
    return events


class Unreachable(FakeEngine):
    """Healthy to the health check and its stats, refused at every request: the request fails where it was sent."""

    def __init__(self, name: str, address: str) -> None:
        super().__init__(name)
        self.address = self.base_url = address

    async def health(self) -> bool:
        return True

    async def stats(self) -> EngineStats:
        return self.stats_value

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        raise EngineUnavailable(f"connect to {self.address} failed: connection refused")
        yield  # pragma: no cover
