"""An engine in front of another: the proxy's `wrap` hook hands the chosen endpoint's engine to one of these
(the agent tool loop, agents/reply.py; several choices, fan_out.py), which serves some requests itself and
passes everything else, the health and load probes included, to the engine it wraps.

What a wrapper reads of its engine's answers whole (several choices' answers, a legacy completion's) or accumulates
(a tool loop's model turn) is bounded by `max_bytes`, the bound the proxy reads a direct whole answer within
(Proxy.most_bytes, given to the wrappers of each attempt by `bound`): more is the engine's failure
(EngineStreamBroken), not memory the gateway gives it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

from aigrid.engines.protocol import Engine, EngineStats, UpstreamResponse
from aigrid.errors import EngineStreamBroken


class WrappedEngine:
    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.base_url = inner.base_url
        self.max_bytes: int | None = None
        """The most bytes of its engine's answers this wrapper holds for one request (None: no bound): `bound`."""

    def bound(self, max_bytes: int) -> None:
        """Hold at most `max_bytes` of the engine's answers for one request: this wrapper and those it wraps."""
        self.max_bytes = max_bytes
        if isinstance(self.inner, WrappedEngine):
            self.inner.bound(max_bytes)

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


async def read_whole(body: AsyncIterator[bytes], limit: int | None, held: list[int] | None = None) -> bytes:
    """The rest of an answer, whole; EngineStreamBroken past `limit` bytes (None: no limit), read no further.
    `held`: a one-item count shared by several answers' reads (limit: of them all)."""
    parts: list[bytes] = []
    size = held if held is not None else [0]
    async for chunk in body:
        size[0] += len(chunk)
        if limit is not None and size[0] > limit:
            raise EngineStreamBroken(f"the answer is larger than {limit} bytes, more than its tokens can be")
        parts.append(chunk)
    return b"".join(parts)
