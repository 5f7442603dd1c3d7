"""One Protocol for every inference engine the grid can route to.

An adapter knows how to reach one engine (its base URL, its kind) and how to read that engine's own load
telemetry. Proxying is byte-level: the gateway hands the adapter the client's JSON body and gets the
engine's response back as it arrives, so SSE bytes can pass through untouched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class EngineStats:
    """Load as reported by the engine's own metrics. None means the engine does not expose it.

    Cumulative counters (ttft_sum_s/ttft_count, ...) are kept raw so that the telemetry layer can turn
    two scrapes into a rate or a windowed mean.
    """

    running: int | None = None
    waiting: int | None = None
    kv_usage: float | None = None
    ttft_sum_s: float | None = None
    ttft_count: float | None = None
    tpot_sum_s: float | None = None
    tpot_count: float | None = None
    prompt_tokens_total: float | None = None
    generation_tokens_total: float | None = None
    power_w: float | None = None
    """GPU power draw in watts (sum over the endpoint's GPUs), from DCGM where the site exports it."""


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    status: int
    headers: Mapping[str, str]
    body: AsyncIterator[bytes]
    """The body, read by read. It may also offer `attach(sink) -> Future | None` and `detach()`: later reads
    handed to `sink` from the connection's read callback until it is detached (OpenAICompatEngine on
    aigrid's own transport; the relay uses it when present, gateway/relay.py)."""


class Engine(Protocol):
    kind: str
    base_url: str

    def open(self, path: str, body: bytes) -> AbstractAsyncContextManager[UpstreamResponse]:
        """POST body to path (e.g. /v1/chat/completions) and stream the response.

        Raises aigrid.errors.EngineUnavailable when the engine cannot be reached or fails before
        any byte of the response.
        """
        ...

    async def health(self) -> bool: ...

    async def stats(self) -> EngineStats: ...

    async def aclose(self) -> None: ...
