"""Forward one routed request to its endpoint and stream the answer back, failing over before the first byte.

For each candidate in the decision's ranking (at most max_attempts): wait the emulated network round trip
(demo only), open the upstream request, and read its first chunk. Any failure up to that point is invisible
to the client: the endpoint is charged a failure (circuit breaker) and the next candidate is tried. After the
first byte the response is committed; SSE bytes are relayed untouched. A break mid-stream ends the stream
with an OpenAI-style error event rather than silently truncating it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse

from aigrid.core.types import Candidate, Decision
from aigrid.engines.protocol import Engine, UpstreamResponse
from aigrid.errors import EngineError, EngineUnavailable, UpstreamFailed
from aigrid.gateway.decisions import DecisionRecord
from aigrid.gateway.metrics import GatewayMetrics
from aigrid.gateway.usage import sse_usage
from aigrid.telemetry.store import TelemetryStore

Sleep = Callable[[float], Awaitable[None]]
_PASS_HEADERS = ("content-type",)


class Proxy:
    def __init__(self, engines: Mapping[str, Engine], served_models: Mapping[str, str], store: TelemetryStore,
                 metrics: GatewayMetrics, clock: Callable[[], float], *, emulate_network: bool,
                 max_attempts: int, sleep: Sleep = asyncio.sleep) -> None:
        self._engines = engines
        self._served = served_models
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._emulate = emulate_network
        self._max_attempts = max_attempts
        self._sleep = sleep

    async def forward(self, path: str, body: dict[str, Any], decision: Decision, record: DecisionRecord,
                      stream: bool) -> Response:
        started = self._clock()
        for cand in decision.ranked[: self._max_attempts]:
            attempt_start = self._clock()
            stack = AsyncExitStack()
            self._store.request_started(cand.endpoint_id)
            try:
                if self._emulate:
                    await self._sleep(cand.prediction.rtt_ms / 1000.0)
                sent_at = self._clock()
                payload = orjson.dumps({**body, "model": self._served[cand.endpoint_id]})
                upstream = await stack.enter_async_context(self._engines[cand.endpoint_id].open(path, payload))
                if upstream.status >= 500:
                    raise EngineUnavailable(f"engine answered HTTP {upstream.status}")
                first = await anext(upstream.body, b"")
                first_at = self._clock()
                rest = b"" if stream else b"".join([chunk async for chunk in upstream.body])
            except EngineError as e:
                await stack.aclose()
                self._fail(cand, record, str(e) or type(e).__name__, self._clock() - attempt_start)
                continue
            # The engine's own time to first token (emulated network excluded) feeds the routing model; a
            # non-streamed answer's first byte comes after the whole generation, so it says nothing of TTFT.
            self._store.record_success(cand.endpoint_id, first_at - sent_at if stream else None)
            self._store.remember_affinity(record.affinity_keys, cand.endpoint_id)
            client_ttft = first_at - started
            if stream:
                self._metrics.ttft.labels(cand.site_id).observe(client_ttft)
            record.served_by, record.ttft_ms, record.status = cand.endpoint_id, client_ttft * 1000, "streaming"
            record.attempts.append({"endpoint": cand.endpoint_id, "ok": True,
                                    "ms": round((first_at - attempt_start) * 1000, 1)})
            headers = self._headers(cand, decision, upstream)
            if stream:
                return StreamingResponse(self._relay(first, upstream, stack, cand, record),
                                         status_code=upstream.status, headers=headers)
            await stack.aclose()
            self._finish(cand, record, upstream.status, first + rest)
            return Response(first + rest, status_code=upstream.status, headers=headers)
        record.status = "failed"
        tried = "; ".join(f"{a['endpoint']}: {a.get('error')}" for a in record.attempts)
        self._metrics.rejected.labels("upstream_failed").inc()
        raise UpstreamFailed(f"every candidate failed before answering ({tried})",
                             headers={"x-aigrid-decision": decision.request_id})

    def _fail(self, cand: Candidate, record: DecisionRecord, reason: str, elapsed: float) -> None:
        self._store.request_finished(cand.endpoint_id)
        self._store.record_failure(cand.endpoint_id, reason)
        self._metrics.retries.labels(cand.endpoint_id).inc()
        self._metrics.requests.labels(cand.site_id, cand.endpoint_id, "failed_before_first_byte").inc()
        record.attempts.append({"endpoint": cand.endpoint_id, "ok": False, "error": reason,
                                "ms": round(elapsed * 1000, 1)})

    def _finish(self, cand: Candidate, record: DecisionRecord, status: int, tail: bytes) -> None:
        self._store.request_finished(cand.endpoint_id)
        outcome = "ok" if status < 400 else f"http_{status}"
        record.status = outcome
        self._metrics.requests.labels(cand.site_id, cand.endpoint_id, outcome).inc()
        usage = sse_usage(tail) if status < 400 else None
        if usage:
            self._metrics.tokens.labels(cand.site_id, "prompt").inc(usage.get("prompt_tokens", 0))
            self._metrics.tokens.labels(cand.site_id, "completion").inc(usage.get("completion_tokens", 0))

    async def _relay(self, first: bytes, upstream: UpstreamResponse, stack: AsyncExitStack, cand: Candidate,
                     record: DecisionRecord) -> AsyncIterator[bytes]:
        status, last = upstream.status, first
        try:
            yield first
            async for chunk in upstream.body:
                if b'"usage"' in chunk:
                    last = chunk
                yield chunk
        except EngineError as e:
            status = 599
            self._store.record_failure(cand.endpoint_id, f"stream broke: {e}")
            err = {"error": {"message": f"the engine at {cand.site_id} failed mid-stream: {e}",
                             "type": "upstream_error", "param": None, "code": "stream_interrupted"}}
            yield b"data: " + orjson.dumps(err) + b"\n\n"
        finally:
            await stack.aclose()
            self._finish(cand, record, status, last)

    @staticmethod
    def _headers(cand: Candidate, decision: Decision, upstream: UpstreamResponse) -> dict[str, str]:
        headers = {k: v for k, v in upstream.headers.items() if k.lower() in _PASS_HEADERS}
        headers.update({"x-aigrid-site": cand.site_id, "x-aigrid-endpoint": cand.endpoint_id,
                        "x-aigrid-decision": decision.request_id, "x-aigrid-jurisdiction": cand.jurisdiction})
        if headers.get("content-type", "").startswith("text/event-stream"):
            headers["cache-control"] = "no-cache"
        return headers
