"""Measurement only: aiohttp's client behind the contract of `Http1Transport.exchange`, so that the gateway's
direct upstream path can be measured on aiohttp (`python -m aigrid.bench.gateway_launch SPEC --transport
aiohttp`, docs/benchmarks.md). aiohttp is not a dependency (`pip install aiohttp`); the gateway never uses this.

aiohttp's errors are mapped to httpx's transport errors, which the engine adapter already handles.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx


class _Body:
    """The response body: one read per chunk as it arrives, then the connection goes back to the pool."""

    def __init__(self, response: Any) -> None:
        self._response = response

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._response.content.readany()
        except Exception as exc:  # aiohttp's ClientPayloadError, ServerDisconnectedError, timeouts
            raise httpx.ReadError(repr(exc)) from exc
        if not chunk:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport:
    """`exchange(origin, head, body, timeouts)` on one aiohttp ClientSession (its connector: keep-alive, at most
    1,000 connections in all, as Http1Transport's default cap per origin)."""

    def __init__(self) -> None:
        try:
            import aiohttp
        except ImportError:
            raise SystemExit("--transport aiohttp needs aiohttp (pip install aiohttp); it is not a dependency") from None
        self._aiohttp = aiohttp
        self._session: Any = None

    def _open(self) -> Any:
        if self._session is None:  # created inside the running loop
            a = self._aiohttp
            self._session = a.ClientSession(connector=a.TCPConnector(limit=1000, limit_per_host=1000),
                                            auto_decompress=False, skip_auto_headers=("User-Agent", "Accept-Encoding"))
        return self._session

    async def exchange(self, origin: tuple[str, int], head: list[bytes], body: bytes,
                       timeouts: Mapping[str, float | None]) -> tuple[int, list[tuple[bytes, bytes]], _Body]:
        method, path, _ = head[0].decode("latin-1").split(" ", 2)
        headers = {}
        for line in head[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() not in ("host", "content-length"):
                headers[name] = value.strip()
        a = self._aiohttp
        timeout = a.ClientTimeout(total=None, connect=timeouts.get("connect"), sock_read=timeouts.get("read"))
        try:
            response = await self._open().request(method, f"http://{origin[0]}:{origin[1]}{path}", data=body,
                                                  headers=headers, timeout=timeout)
        except Exception as exc:
            raise httpx.ConnectError(repr(exc)) from exc
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
        return response.status, raw, _Body(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
