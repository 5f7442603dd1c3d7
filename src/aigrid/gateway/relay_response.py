"""The streamed answer's ASGI response: chunks straight to `send`, with one plain task watching for the
client's disconnect.

Starlette's StreamingResponse runs each response in an anyio task group (to listen for the disconnect while
streaming) when the server speaks ASGI < 2.4, as uvicorn does; per chunk and per response that machinery was
about a quarter of the gateway's CPU at 200 streams (docs/benchmarks.md). Here the watcher is one asyncio
future on `receive()`, checked between chunks; when the client is gone the relay stops, so its generator's
cleanup releases the engine at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class RelayResponse(Response):
    def __init__(self, chunks: AsyncIterator[bytes], status_code: int, headers: Mapping[str, str]) -> None:
        self.body_iterator = chunks
        self.status_code = status_code
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self.body_iterator:
                if gone.done():
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            else:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # ASGI 2.4 servers raise on send after the client left: nothing more to deliver
        finally:
            gone.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gone
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()  # the relay's cleanup: release the engine, book the outcome


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
