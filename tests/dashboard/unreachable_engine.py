"""A FAKE engine healthy to the scraper that refuses every request: a request that fails where it was sent (the live
table's failures, the operator's view of them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aigrid.engines.protocol import EngineStats, UpstreamResponse
from aigrid.errors import EngineUnavailable
from tests.gateway.fake_engine import FakeEngine


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
