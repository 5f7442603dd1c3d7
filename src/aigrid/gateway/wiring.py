"""Engine adapters for every endpoint of a spec: embedded engines by their local URL, external ones by theirs."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from aigrid.engines.openai_compat import OpenAICompatEngine
from aigrid.engines.protocol import Engine
from aigrid.engines.upstream_transport import Http1Transport
from aigrid.errors import EngineBuildError
from aigrid.spec.models import GridSpec

EMBEDDED_KIND = "llamacpp"
"""The embedded engine is llama.cpp's own llama-server, so it is reached like any llama.cpp server."""


def upstream_client(http1: Http1Transport | None = None) -> httpx.AsyncClient:
    """One pooled client for all engines: plain-HTTP engines on aigrid's HTTP/1.1 transport (httpcore's pool
    bookkeeping was 60% of the gateway's CPU at 200 streams, docs/benchmarks.md), https:// ones (remote
    regions, hosted providers) on httpx's own; no read timeout while tokens stream. Pass the same `http1` to
    build_engines so that proxied requests use it without httpx's client layer."""
    timeout = httpx.Timeout(connect=3.0, read=300.0, write=30.0, pool=10.0)
    tls = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200))
    return httpx.AsyncClient(mounts={"http://": http1 or Http1Transport(), "https://": tls}, timeout=timeout,
                             trust_env=False)


def build_engines(spec: GridSpec, embedded_urls: Mapping[str, str],
                  client: httpx.AsyncClient, http1: Http1Transport | None = None) -> dict[str, Engine]:
    engines: dict[str, Engine] = {}
    for ep in spec.endpoints:
        if ep.engine == "embedded":
            url = embedded_urls.get(ep.id)
            if url is None:
                raise EngineBuildError(f"endpoint {ep.id}: embedded engine was not started")
            kind = EMBEDDED_KIND
        else:
            assert ep.url is not None  # the spec validator guarantees it
            url, kind = ep.url, ep.engine
        engines[ep.id] = OpenAICompatEngine(kind, url, client, power_url=ep.power_metrics_url, gpus=ep.gpus,
                                            transport=http1)
    return engines
