"""OpenTelemetry traces of the pipeline, exported with the SDK's in-memory exporter, against FAKE engines:
GenAI attributes, aigrid's decision, one span per failover attempt, W3C trace context to the engine; and
nothing at all when tracing is off."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from aigrid.engines.openai_compat import OpenAICompatEngine
from aigrid.engines.protocol import UpstreamResponse
from aigrid.engines.trace_context import TRACE_HEADERS
from aigrid.gateway.app import Gateway, build_app, build_gateway
from aigrid.gateway.tracing import Tracing, build_tracing
from aigrid.spec.load import load_spec
from aigrid.spec.models import OtelSpec
from tests.agents.scripted_engine import ScriptedEngine, answer, call
from tests.gateway.conftest import DEMO, _no_sleep, spec_in
from tests.gateway.fake_engine import FakeEngine

BODY = {"model": "smollm2-135m", "max_tokens": 16, "temperature": 0.5,
        "messages": [{"role": "user", "content": "What is my name?"}]}
FRANKFURT = {"x-aigrid-client-location": "Frankfurt"}


class Traced:
    """An engine (FakeEngine, ScriptedEngine) that keeps the trace headers each request (each model turn) would carry
    to it."""

    trace_headers: list[dict[str, str]]

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        self.trace_headers.append(dict(TRACE_HEADERS.get()))
        async with super().open(path, body) as upstream:  # type: ignore[misc]
            yield upstream


class TracedFake(Traced, FakeEngine):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.trace_headers = []


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def traced(tmp_path: Path, exporter: InMemorySpanExporter) -> tuple[Gateway, dict[str, TracedFake]]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    fakes = {e.id: TracedFake(e.id) for e in load_spec(DEMO).endpoints}
    gw = build_gateway(spec_in(tmp_path), fakes, rng=random.Random(7), sleep=_no_sleep, tracing=Tracing(provider))
    await gw.scraper.scrape_once()
    return gw, fakes


async def post(gw: Gateway, body: dict, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        return await c.post("/v1/chat/completions", json=body, headers=headers)


@pytest.mark.parametrize("stream", [False, True])
async def test_one_request_span_with_genai_attributes_and_one_span_per_failover_attempt(
        traced: tuple[Gateway, dict[str, TracedFake]], exporter: InMemorySpanExporter, stream: bool) -> None:
    gw, fakes = traced
    fakes["fra-smollm2"].down = True  # still healthy in the last scrape: chosen, fails, the next one answers
    r = await post(gw, {**BODY, "stream": stream}, FRANKFURT)
    assert r.status_code == 200
    spans = exporter.get_finished_spans()
    root = next(s for s in spans if s.kind == SpanKind.SERVER)
    attempts = sorted((s for s in spans if s.kind == SpanKind.CLIENT), key=lambda s: s.start_time or 0)
    assert len(spans) == 3 and len(attempts) == 2
    a = root.attributes or {}
    assert root.name == "chat smollm2-135m"
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "aigrid"
    assert a["gen_ai.request.model"] == "smollm2-135m" and a["gen_ai.request.max_tokens"] == 16
    assert a["gen_ai.request.temperature"] == 0.5
    assert a["gen_ai.usage.input_tokens"] == 5 and a["gen_ai.usage.output_tokens"] == 4
    assert a["aigrid.decision.id"] == r.headers["x-aigrid-decision"] and a["aigrid.policy"] == "balanced"
    assert a["aigrid.site"] == "fra" and a["aigrid.failover.attempts"] == 2
    assert a["aigrid.ttft.predicted_ms"] > 0 and a["aigrid.first_byte_ms"] >= 0
    # set beside the prediction only where it is a first token's time: a whole answer's first byte is not one
    assert a.get("aigrid.ttft.observed_ms") == (a["aigrid.first_byte_ms"] if stream else None), a
    assert a["aigrid.served_by"] == r.headers["x-aigrid-endpoint"] and a["aigrid.outcome"] == "ok"
    failed, answered = attempts
    assert failed.attributes["aigrid.endpoint"] == "fra-smollm2" and failed.status.status_code == StatusCode.ERROR
    assert "error.type" in failed.attributes
    assert answered.attributes["aigrid.endpoint"] == r.headers["x-aigrid-endpoint"]
    assert answered.status.status_code != StatusCode.ERROR
    for span in attempts:
        assert span.parent is not None and span.parent.span_id == root.context.span_id
        assert span.context.trace_id == root.context.trace_id
    # the engine that answered received this attempt's W3C trace context
    sent = fakes[r.headers["x-aigrid-endpoint"]].trace_headers[-1]["traceparent"]
    assert sent.startswith(f"00-{answered.context.trace_id:032x}-{answered.context.span_id:016x}-")


async def test_a_clients_traceparent_is_the_parent(traced: tuple[Gateway, dict[str, TracedFake]],
                                                  exporter: InMemorySpanExporter) -> None:
    gw, _ = traced
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await post(gw, BODY, {**FRANKFURT, "traceparent": parent})
    root = next(s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER)
    assert f"{root.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert root.parent is not None and f"{root.parent.span_id:016x}" == "b7ad6b7169203331"


async def test_a_refused_request_ends_its_span_with_the_error(traced: tuple[Gateway, dict[str, TracedFake]],
                                                             exporter: InMemorySpanExporter) -> None:
    gw, _ = traced
    r = await post(gw, {**BODY, "model": "nope"}, FRANKFURT)
    assert r.status_code == 404
    (root,) = exporter.get_finished_spans()
    assert root.status.status_code == StatusCode.ERROR and root.attributes["error.type"] == "model_not_found"


async def test_front_doors_are_traced_too(traced: tuple[Gateway, dict[str, TracedFake]],
                                         exporter: InMemorySpanExporter) -> None:
    gw, _ = traced
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        await c.post("/v1/messages", json={"model": "smollm2-135m", "max_tokens": 8,
                                           "messages": [{"role": "user", "content": "What is my name?"}]})
        await c.post("/v1/responses", json={"model": "smollm2-135m", "input": "What is my name?"})
    roots = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert len(roots) == 2 and all(s.attributes["gen_ai.usage.output_tokens"] == 4 for s in roots)
    assert [s.attributes["http.route"] for s in roots] == ["/v1/messages", "/v1/responses"]


async def test_genai_metrics_beside_the_prometheus_ones(traced: tuple[Gateway, dict[str, TracedFake]]) -> None:
    gw, _ = traced
    await post(gw, {**BODY, "stream": True}, FRANKFURT)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        text = (await c.get("/metrics")).text
    assert 'gen_ai_client_token_usage_count{gen_ai_operation_name="chat",gen_ai_request_model="smollm2-135m",' \
           'gen_ai_token_type="input"} 1.0' in text
    assert "gen_ai_client_operation_duration_seconds_count" in text
    assert "gen_ai_server_time_to_first_token_seconds_count" in text
    # the fake streams more than one token: its time per output token, by model and by the site that served
    assert 'gen_ai_server_time_per_output_token_seconds_count{gen_ai_operation_name="chat",' \
           'gen_ai_request_model="smollm2-135m"} 1.0' in text, text
    assert 'aigrid_tpot_seconds_count{site="fra"} 1.0' in text, text


def test_off_by_default_and_on_with_the_standard_variables() -> None:
    assert not build_tracing(OtelSpec(), env={}).enabled
    assert not build_tracing(OtelSpec(enabled=True), env={"OTEL_SDK_DISABLED": "true"}).enabled
    on = build_tracing(OtelSpec(), env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert on.enabled
    on.shutdown()
    spec = build_tracing(OtelSpec(enabled=True, endpoint="http://127.0.0.1:9", service_name="gw-fra"), env={})
    assert spec.enabled and spec.provider is not None
    assert spec.provider.resource.attributes["service.name"] == "gw-fra"
    spec.shutdown()


def test_off_imports_no_tracing_sdk() -> None:
    """(redis's client imports the metrics part of the SDK on its own; the tracer and exporter stay out)"""
    code = ("import sys, random; from aigrid.gateway.app import build_gateway; from aigrid.spec.load import load_spec;"
            f"build_gateway(load_spec({str(DEMO)!r}), {{}}, rng=random.Random(0)).tracing.start('/v1/chat/completions', {{}});"
            "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk.trace', 'opentelemetry.exporter'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "PATH": "/usr/bin"})
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


async def test_the_openai_compatible_adapter_sends_the_trace_context() -> None:
    seen: list[httpx.Headers] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(200, json={"ok": True})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        engine = OpenAICompatEngine("llamacpp", "http://engine:8000", client)
        token = TRACE_HEADERS.set({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
        try:
            async with engine.open("/v1/chat/completions", b"{}") as up:
                _ = [c async for c in up.body]
        finally:
            TRACE_HEADERS.reset(token)
        async with engine.open("/v1/chat/completions", b"{}") as up:
            _ = [c async for c in up.body]
    assert seen[0]["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert "traceparent" not in seen[1]


class TracedScript(Traced, ScriptedEngine):
    def __init__(self, replies: list[dict]) -> None:
        super().__init__(replies)
        self.trace_headers = []


async def test_every_turn_of_a_streamed_tool_loop_carries_the_trace(tmp_path: Path,
                                                                    exporter: InMemorySpanExporter) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine = TracedScript([call("calculator", expression="2 * 21"), answer("42")])
    spec = spec_in(tmp_path)
    gw = build_gateway(spec, {e.id: engine for e in spec.endpoints}, rng=random.Random(3), sleep=_no_sleep,
                       tracing=Tracing(provider))
    await gw.scraper.scrape_once()
    r = await post(gw, {**BODY, "stream": True, "tools": [{"type": "function", "function": {"name": "calculator"}}]},
                   FRANKFURT)
    assert r.status_code == 200 and "42" in r.text
    root = next(s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER)
    assert len(engine.trace_headers) == 2
    for headers in engine.trace_headers:  # the first turn in the attempt, the second while streaming
        assert headers["traceparent"].startswith(f"00-{root.context.trace_id:032x}-")


async def test_genai_metrics_count_what_the_routing_refused_not_what_was_refused_before_it(
        traced: tuple[Gateway, dict[str, TracedFake]]) -> None:
    """docs/observability.md: a request refused before routing is only in aigrid_requests_rejected_total; one the
    routing refused after deciding (no eligible endpoint) is in both, its error_type `error:` and the code."""
    gw, fakes = traced
    assert (await post(gw, {"model": "smollm2-135m"}, FRANKFURT)).status_code == 400  # no messages
    for fake in fakes.values():
        fake.down = True
    await gw.scraper.scrape_once()
    assert (await post(gw, BODY, FRANKFURT)).status_code == 503
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        text = (await c.get("/metrics")).text
    durations = [line for line in text.splitlines() if line.startswith("gen_ai_client_operation_duration_seconds_count")]
    assert durations == ['gen_ai_client_operation_duration_seconds_count{error_type="error:no_eligible_endpoint",'
                         'gen_ai_operation_name="chat",gen_ai_request_model="smollm2-135m"} 1.0'], durations
    assert 'aigrid_requests_rejected_total{code="no_eligible_endpoint"} 1.0' in text
    assert 'aigrid_requests_rejected_total{code="missing_required_parameter"} 1.0' in text  # no messages: OpenAI's code
