"""What a client writes reaches a span bounded, and never its name (tracing.py)."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from aigrid.errors import ModelNotFound
from aigrid.gateway.app import Gateway
from aigrid.gateway.tracing import TEXT_MAX_CHARS, Tracing, build_tracing
from aigrid.spec.models import OtelSpec
from tests.gateway.test_tracing import BODY, FRANKFURT, TracedFake, exporter, post, traced

__all__ = ["exporter", "traced"]  # the fixtures


async def test_a_model_the_grid_does_not_know_never_names_a_span(
        traced: tuple[Gateway, dict[str, TracedFake]], exporter: InMemorySpanExporter) -> None:
    """Span names are indexed (Jaeger's operations, Tempo's span metrics): one per model a client makes up was
    one more operation each."""
    gw, _ = traced
    for model in ("nope-1", "nope-2", "smollm2-135m"):
        await post(gw, {**BODY, "model": model}, FRANKFURT)
    roots = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert [s.name for s in roots] == ["chat", "chat", "chat smollm2-135m"]
    assert [s.attributes["gen_ai.request.model"] for s in roots] == ["nope-1", "nope-2", "smollm2-135m"]


def test_an_error_echoing_the_request_is_cut_in_the_span() -> None:
    """A 404 echoed the model name as sent to /v1/embeddings (2 MB, before that route bounded it at 256
    characters): the span's status held it whole."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace = Tracing(provider).start("/v1/embeddings", {})
    trace.end(None, None, ModelNotFound(f"unknown embedding model {'m' * 2_000_000!r}", param="model"),
              "error:model_not_found")
    (root,) = exporter.get_finished_spans()
    assert root.attributes is not None and root.attributes["error.type"] == "model_not_found"
    description = root.status.description or ""
    assert description.startswith("unknown embedding model 'mmm") and len(description) < TEXT_MAX_CHARS + 32


def test_attributes_are_bounded_unless_the_standard_variables_say_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", raising=False)
    monkeypatch.delenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", raising=False)
    tracing = build_tracing(OtelSpec(enabled=True, endpoint="http://127.0.0.1:9"), env={})
    assert tracing.provider is not None
    try:
        assert tracing.provider._span_limits.max_span_attribute_length == TEXT_MAX_CHARS
    finally:
        tracing.provider.shutdown()
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "50")
    tracing = build_tracing(OtelSpec(enabled=True, endpoint="http://127.0.0.1:9"),
                            env={"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "50"})
    assert tracing.provider is not None
    try:
        assert tracing.provider._span_limits.max_span_attribute_length == 50
    finally:
        tracing.provider.shutdown()


@pytest.mark.parametrize(("outcome", "error"), [("steered", False), ("client_closed", True)])
def test_a_response_its_clients_steer_cut_is_no_error_in_its_span(outcome: str, error: bool) -> None:
    from opentelemetry.trace import StatusCode

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    Tracing(provider).start("/v1/responses", {}).end(None, None, None, outcome)
    (root,) = exporter.get_finished_spans()
    assert (root.status.status_code == StatusCode.ERROR) is error
    assert root.attributes is not None and ("error.type" in root.attributes) is error
