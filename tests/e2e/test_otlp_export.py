"""OTLP export for real: `aigrid up` (one real llama.cpp engine) started with only the standard
OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_SERVICE_NAME variables sends its spans over OTLP/HTTP to a collector;
here the collector is a small HTTP server in the test that decodes the protobuf export requests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.e2e.processes import running_grid
from tests.engine_support import require_llama_server

pytestmark = pytest.mark.engine


class Collector:
    """Keeps every span of every OTLP/HTTP trace export it receives."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, dict[str, object]]] = []  # (service, span name, attributes)
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path == "/v1/traces":
                    collector.receive(body)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def receive(self, body: bytes) -> None:
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            service = next(a.value.string_value for a in rs.resource.attributes if a.key == "service.name")
            for ss in rs.scope_spans:
                for span in ss.spans:
                    attrs = {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes}
                    self.spans.append((service, span.name, attrs))


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    thread = threading.Thread(target=c.server.serve_forever, daemon=True)
    thread.start()
    yield c
    c.server.shutdown()
    c.server.server_close()


def one_site(tmp: Path) -> Path:
    spec = {"name": "otlp", "gateway": {"network": "none", "scrape_interval_s": 0.5},
            "models": {"smollm2-135m": {"family": "smollm2", "params_b": 0.135, "context": 2048}},  # 1 slot: ~215 MB
            "sites": {"fra": {"name": "Frankfurt", "lat": 50.11, "lon": 8.68, "jurisdiction": "EU"}},
            "endpoints": [{"id": "fra-smollm2", "site": "fra", "model": "smollm2-135m", "engine": "embedded",
                           "slots": 1, "prefill_tps": 250, "decode_tps": 150}]}
    path = tmp / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_spans_reach_an_otlp_collector_from_the_standard_variables(
        tmp_path: Path, collector: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    require_llama_server()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "aigrid-e2e")
    with running_grid(one_site(tmp_path), tmp_path, healthy=1) as g:
        r = httpx.post(g.base + "/v1/messages", timeout=120, json={
            "model": "smollm2-135m", "max_tokens": 8, "messages": [{"role": "user", "content": "Name a river."}]})
        assert r.status_code == 200, r.text
    # the gateway flushed its batch exporter when Ctrl-C stopped it
    names = {(service, name) for service, name, _ in collector.spans}
    assert ("aigrid-e2e", "chat smollm2-135m") in names
    root = next(a for _, _, a in collector.spans if a.get("http.route") == "/v1/messages")
    assert root["gen_ai.operation.name"] == "chat" and root["aigrid.site"] == "fra"
    assert int(root["gen_ai.usage.output_tokens"]) > 0 and int(root["aigrid.failover.attempts"]) == 1
    attempt = next(a for _, _, a in collector.spans if "server.address" in a)
    assert attempt["aigrid.endpoint"] == "fra-smollm2"
