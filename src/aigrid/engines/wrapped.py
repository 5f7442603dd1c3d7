"""An engine in front of another: the proxy's `wrap` hook hands the chosen endpoint's engine to one of these
(the agent tool loop, agents/reply.py; several choices, fan_out.py), which serves some requests itself and
passes everything else, the health and load probes included, to the engine it wraps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

from aigrid.engines.protocol import Engine, EngineStats, UpstreamResponse


class WrappedEngine:
    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.base_url = inner.base_url

    def open(self, path: str, body: bytes) -> AbstractAsyncContextManager[UpstreamResponse]:
        return self.inner.open(path, body)

    async def health(self) -> bool:
        return await self.inner.health()

    async def stats(self) -> EngineStats:
        return await self.inner.stats()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def once(data: bytes) -> AsyncIterator[bytes]:
    """A response body of one piece."""
    yield data
