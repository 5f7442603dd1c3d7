"""An engine.open whose answer is a refusal (400, JSON), set on the spares of a hostile grid (every endpoint but the
one a request is sent to first), as the tests of a spare's refused continuation share it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from aigrid.engines.protocol import UpstreamResponse
from aigrid.gateway.app import Gateway

Opening = Callable[[str, bytes], AbstractAsyncContextManager[UpstreamResponse]]


def refusing(body: Callable[[], AsyncIterator[bytes]]) -> Opening:
    """An engine.open whose answer is a 400 of `body`."""
    @asynccontextmanager
    async def opening(path: str, payload: bytes) -> AsyncIterator[UpstreamResponse]:
        yield UpstreamResponse(400, {"content-type": "application/json"}, body())
    return opening


def spares_open(gw: Gateway, opening: Opening, first: str = "nrt-smollm2") -> None:
    """Every engine but `first` (where the request goes first) answers with `opening`."""
    for endpoint, engine in gw.proxy._engines.items():
        if endpoint != first:
            engine.open = opening  # type: ignore[method-assign,assignment]
