"""OpenTelemetry traces of the request pipeline, following the GenAI semantic conventions.

One SERVER span per request, "chat {model}" (gen_ai.operation.name, gen_ai.provider.name, gen_ai.request.*,
gen_ai.response.model, gen_ai.usage.input_tokens / output_tokens) with aigrid's decision on it
(aigrid.decision.id, aigrid.policy, aigrid.tenant, the chosen aigrid.site / aigrid.endpoint /
aigrid.jurisdiction, aigrid.ttft.predicted_ms vs aigrid.ttft.observed_ms, aigrid.failover.attempts); one
CLIENT span per attempt at an engine (failover, hedge, mid-stream continuation), whose W3C `traceparent`
the engine receives (engines/trace_context.py). A client's own `traceparent` makes the request span its
child.

Off by default: Tracing(None) hands every request NO_TRACE, whose methods do nothing, and the
OpenTelemetry SDK is never imported. build_tracing() turns it on from the spec (gateway.otel) or the
standard OTEL_EXPORTER_OTLP_* variables (docs/observability.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aigrid.audit.record import is_error
from aigrid.core.types import Candidate, Decision
from aigrid.engines.trace_context import TRACE_HEADERS
from aigrid.errors import ApiError, ConfigError
from aigrid.logs import shortened
from aigrid.spec.models import OtelSpec

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from aigrid.gateway.decisions import DecisionRecord

OPERATIONS = {"/v1/chat/completions": "chat", "/v1/completions": "text_completion", "/v1/embeddings": "embeddings",
              "/v1/messages": "chat", "/v1/responses": "chat"}
"""gen_ai.operation.name of each audited route."""
PROVIDER = "aigrid"
_REQUEST_ATTRS = {"max_tokens": "gen_ai.request.max_tokens", "temperature": "gen_ai.request.temperature",
                  "top_p": "gen_ai.request.top_p"}
TEXT_MAX_CHARS = 1024
"""What a span keeps of a text a client or an engine wrote (an error's message, an attribute): a 404 echoed a
2 MB model name sent to /v1/embeddings whole into its span's status, one span above what an OTLP collector takes
in a request (4 MiB by default), the spans exported with it lost."""


def _short(text: str) -> str:
    return shortened(text, TEXT_MAX_CHARS)


class AttemptTrace:
    """One attempt at an engine. This base class records nothing (tracing off)."""

    headers: Mapping[str, str] = MappingProxyType({})
    """The W3C trace context the engine receives for this attempt."""

    def ok(self) -> None:
        return None

    def fail(self, reason: str) -> None:
        return None


class RequestTrace:
    """One request through the pipeline. This base class records nothing (tracing off)."""

    def parsed(self, model: str, body: Mapping[str, Any]) -> None:
        return None

    def decided(self, decision: Decision, policy: str, tenant: str) -> None:
        return None

    def attempt(self, cand: Candidate, hedged: bool, url: str) -> AttemptTrace:
        return NO_ATTEMPT

    def end(self, record: DecisionRecord | None, usage: Mapping[str, Any] | None, error: ApiError | None,
            outcome: str) -> None:
        return None


NO_ATTEMPT = AttemptTrace()
NO_TRACE = RequestTrace()


class _OtelAttempt(AttemptTrace):
    def __init__(self, span: Span, headers: Mapping[str, str]) -> None:
        self.span = span
        self.headers = headers

    def ok(self) -> None:
        self.span.end()

    def fail(self, reason: str) -> None:
        from opentelemetry.trace import Status, StatusCode
        self.span.set_attribute("error.type", reason.split(":")[0][:64] or "error")
        self.span.set_status(Status(StatusCode.ERROR, _short(reason)))
        self.span.end()


class _OtelRequest(RequestTrace):
    def __init__(self, tracer: Tracer, route: str, headers: Mapping[str, str]) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._trace = trace
        self._propagator = TraceContextTextMapPropagator()
        self._tracer = tracer
        self.operation = operation = OPERATIONS.get(route, "chat")
        self.model = ""
        parent = self._propagator.extract(carrier=dict(headers))
        self.span = tracer.start_span(operation, context=parent, kind=SpanKind.SERVER, attributes={
            "gen_ai.operation.name": operation, "gen_ai.provider.name": PROVIDER, "http.route": route})
        self._ctx = trace.set_span_in_context(self.span)

    def parsed(self, model: str, body: Mapping[str, Any]) -> None:
        """The request as read, its model not yet checked: the span is named after it once decided (a name a client
        made up, `chat nope-1`, `chat nope-2`, ..., was each a span name: a new operation in Jaeger's index, a new
        series of Tempo's span metrics)."""
        self.model = model = _short(model)
        self.span.set_attribute("gen_ai.request.model", model)
        self.span.set_attribute("aigrid.stream", bool(body.get("stream")))
        for key, attr in _REQUEST_ATTRS.items():
            value = body.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.span.set_attribute(attr, value)

    def decided(self, decision: Decision, policy: str, tenant: str) -> None:
        s = self.span
        if self.model:  # a model of the grid (decided: build_request_info knew it)
            s.update_name(f"{self.operation} {self.model}")
        s.set_attribute("aigrid.decision.id", decision.request_id)
        s.set_attribute("aigrid.policy", policy)
        s.set_attribute("aigrid.tenant", tenant)
        s.set_attribute("aigrid.candidates", len(decision.ranked))
        s.set_attribute("aigrid.rejected", len(decision.rejected))
        if decision.chosen is not None:
            c = decision.chosen
            s.set_attribute("aigrid.ttft.predicted_ms", round(c.prediction.ttft_ms, 1))
            s.set_attribute("aigrid.site", c.site_id)
            s.set_attribute("aigrid.endpoint", c.endpoint_id)
            s.set_attribute("aigrid.jurisdiction", c.jurisdiction)
        else:
            s.set_attribute("aigrid.decision.reason", decision.reason)

    def attempt(self, cand: Candidate, hedged: bool, url: str) -> AttemptTrace:
        from opentelemetry.trace import SpanKind
        where = urlsplit(url)
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": self.operation, "gen_ai.provider.name": PROVIDER,
            "gen_ai.request.model": cand.model, "aigrid.endpoint": cand.endpoint_id, "aigrid.site": cand.site_id,
            "aigrid.jurisdiction": cand.jurisdiction, "aigrid.hedge": hedged,
            "aigrid.ttft.predicted_ms": round(cand.prediction.ttft_ms, 1)}
        if where.hostname:
            attrs["server.address"] = where.hostname
        if where.port:
            attrs["server.port"] = where.port
        span = self._tracer.start_span(f"{self.operation} {cand.model}", context=self._ctx, kind=SpanKind.CLIENT,
                                       attributes=attrs)
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._trace.set_span_in_context(span))
        TRACE_HEADERS.set(carrier)  # this attempt's task: the engine adapter sends it as traceparent
        return _OtelAttempt(span, carrier)

    def end(self, record: DecisionRecord | None, usage: Mapping[str, Any] | None, error: ApiError | None,
            outcome: str) -> None:
        from opentelemetry.trace import Status, StatusCode
        s = self.span
        if record is not None:
            s.set_attribute("aigrid.failover.attempts", len(record.attempts))
            if record.served_by:
                s.set_attribute("aigrid.served_by", record.served_by)
            from aigrid.gateway.decisions import first_byte_fields  # (decisions.py imports this module)

            # beside aigrid.ttft.predicted_ms, a first token's time only (a whole answer's first byte came after its
            # last token): until the thirty-fourth session observed_ms was any first byte
            shown = first_byte_fields(record.to_first_byte())
            if shown["first_byte_ms"] is not None:
                s.set_attribute("aigrid.first_byte_ms", shown["first_byte_ms"])
            if shown["ttft_ms"] is not None:
                s.set_attribute("aigrid.ttft.observed_ms", shown["ttft_ms"])
        if usage:
            s.set_attribute("gen_ai.usage.input_tokens", int(usage.get("prompt_tokens") or 0))
            s.set_attribute("gen_ai.usage.output_tokens", int(usage.get("completion_tokens") or 0))
            s.set_attribute("gen_ai.response.model", self.model)
        s.set_attribute("aigrid.outcome", outcome)
        if error is not None:
            s.set_attribute("error.type", error.code or type(error).__name__)
            s.set_status(Status(StatusCode.ERROR, _short(error.message)))
        elif is_error(outcome):
            s.set_attribute("error.type", outcome)
            s.set_status(Status(StatusCode.ERROR, outcome))
        s.end()


class Tracing:
    """The gateway's tracer; `provider` None is tracing off (no cost, no OpenTelemetry import)."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("aigrid.gateway") if provider is not None else None

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def start(self, path: str, headers: Mapping[str, str]) -> RequestTrace:
        if self._tracer is None:
            return NO_TRACE
        return _OtelRequest(self._tracer, path, headers)

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()  # flushes the batch exporter


def _configured(spec: OtelSpec, env: Mapping[str, str]) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return spec.enabled or bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def build_tracing(spec: OtelSpec, env: Mapping[str, str] | None = None) -> Tracing:
    """Tracing from gateway.otel and the OTEL_* variables: an OTLP/HTTP exporter behind a batch processor."""
    env = os.environ if env is None else env
    if not _configured(spec, env):
        return Tracing(None)
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SpanLimits, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError as e:
        raise ConfigError(f"OpenTelemetry is configured but not installed ({e.name}): "
                          "pip install 'aigrid[otel]'") from e
    name = env.get("OTEL_SERVICE_NAME") or spec.service_name
    sampler = ParentBased(TraceIdRatioBased(spec.sample_ratio)) if spec.sample_ratio < 1 else None
    # an attribute's value cut at TEXT_MAX_CHARS unless the standard variables say otherwise (the SDK's own default
    # is no limit)
    limited = any(env.get(v) for v in ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"))
    limits = None if limited else SpanLimits(max_span_attribute_length=TEXT_MAX_CHARS)
    provider = TracerProvider(resource=Resource.create({"service.name": name}), sampler=sampler, span_limits=limits)
    endpoint = None
    if spec.endpoint:
        endpoint = spec.endpoint.rstrip("/")
        endpoint = endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, headers=spec.headers or None)))
    return Tracing(provider)
