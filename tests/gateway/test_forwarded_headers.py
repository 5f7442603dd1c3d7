"""X-Forwarded-For / X-Forwarded-Proto are believed only from the proxies the spec names (gateway.forwarded_allow_ips):
uvicorn's ProxyHeadersMiddleware, on by default and trusting 127.0.0.1, ran on every request and let any process on
the gateway's host say the client's address and scheme. Served as `aigrid up` serves it (stopping.gateway_server)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from aigrid.errors import SpecError
from aigrid.gateway.app import build_app, build_gateway
from aigrid.gateway.stopping import gateway_server
from aigrid.spec.load import parse_spec
from aigrid.spec.models import GatewaySpec
from tests.gateway.conftest import spec_in
from tests.gateway.fake_engine import FakeEngine
from tests.serving import serving_gateway


@asynccontextmanager
async def gateway_at(tmp_path: Path, proxies: list[str]) -> AsyncIterator[str]:
    """The demo grid's gateway as gateway_server builds it, with `proxies` as its forwarded_allow_ips: its base URL."""
    spec = spec_in(tmp_path)
    spec = spec.model_copy(update={"gateway": spec.gateway.model_copy(update={"forwarded_allow_ips": proxies})})
    gw = build_gateway(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}, rng=random.Random(3))
    async with serving_gateway(gateway_server(build_app(gw), gw)) as (port, _):
        yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("proxies", [[], ["127.0.0.1"], ["127.0.0.0/8"]])
async def test_forwarded_headers_are_believed_only_from_the_proxies_the_spec_names(tmp_path: Path,
                                                                                  proxies: list[str]) -> None:
    """The scheme the gateway sees is what its base URLs say (a 404's base URL hint here; the message batches'
    results_url): from a peer the spec names, X-Forwarded-Proto's; from any other, the connection's own. Before,
    uvicorn believed 127.0.0.1 whatever the spec said."""
    async with gateway_at(tmp_path, proxies) as base, httpx.AsyncClient(base_url=base, timeout=30) as c:
        r = await c.get("/chat/completions", headers={"x-forwarded-proto": "https", "x-forwarded-for": "203.0.113.9"})
    assert r.status_code == 404
    message = r.json()["error"]["message"]
    said = "https" if proxies else "http"
    assert f"base URL is {said}://127.0.0.1:" in message, message


def test_forwarded_allow_ips_are_addresses_or_networks_written_as_uvicorn_reads_them() -> None:
    """A network with host bits set is its network (uvicorn reads "10.0.0.1/8" as a name no peer has, and
    believed nothing from that proxy, silently); anything else is refused naming the field."""
    assert GatewaySpec().forwarded_allow_ips == []
    assert GatewaySpec(forwarded_allow_ips=["10.0.0.1/8", " ::1", "192.168.1.7"]).forwarded_allow_ips == [
        "10.0.0.0/8", "::1", "192.168.1.7"]
    grid = {"name": "g", "gateway": {"forwarded_allow_ips": ["*"]}, "models": {"m": {"family": "f", "params_b": 1}},
            "sites": {"s": {"name": "S", "lat": 0, "lon": 0, "jurisdiction": "EU"}},
            "endpoints": [{"id": "e", "site": "s", "model": "m", "engine": "vllm", "url": "http://127.0.0.1:1"}]}
    with pytest.raises(SpecError, match=r"gateway\.forwarded_allow_ips.*'\*' is not an address or a network"):
        parse_spec(grid, "spec.yaml")
