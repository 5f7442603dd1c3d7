"""The quota store (`security.quotas_redis_url`) failing: a Redis that accepts and never answers, or one that is not
there. A request's reservation is then the client's 503 `quota_unavailable` (logged), never served uncounted; before,
a silent Redis held each request about 5 s (the quota client had no socket timeout) and answered a 500."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from aigrid.gateway.app import build_app, build_gateway
from aigrid.spec.models import GridSpec
from tests.gateway.conftest import _no_sleep, spec_in
from tests.gateway.fake_engine import FakeEngine

CHAT = {"model": "smollm2-135m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A server that accepts connections and never writes a byte (a hung Redis)."""
    held: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for w in held:
        w.close()
    server.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _asked(tmp: Path, port: int) -> httpx.Response:
    raw = spec_in(tmp).model_dump(mode="json", exclude_unset=True)
    raw["security"].update(quotas_redis_url=f"redis://127.0.0.1:{port}/0")
    raw.setdefault("tenants", {})["default"] = {"quotas": {"requests_per_min": 100}}
    spec = GridSpec.model_validate(raw)
    gw = build_gateway(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}, rng=random.Random(1), sleep=_no_sleep)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            return await asyncio.wait_for(c.post("/v1/chat/completions", json=CHAT), 30)
    finally:
        await gw.guard.stop()


@pytest.mark.parametrize("how", ["silent", "closed"])
async def test_a_quota_store_that_fails_is_the_client_s_503_and_logged(
        tmp_path: Path, silent_port: int, how: str, caplog: pytest.LogCaptureFixture) -> None:
    port = silent_port if how == "silent" else closed_port()
    with caplog.at_level(logging.ERROR, logger="aigrid.guard"):
        r = await _asked(tmp_path, port)
    assert r.status_code == 503, r.text  # before: 500 internal_error
    assert r.json()["error"]["code"] == "quota_unavailable" and r.json()["error"]["type"] == "service_unavailable_error"
    assert r.headers["retry-after"] == "1"
    assert any("quota store failed to reserve" in rec.getMessage() for rec in caplog.records)


async def test_a_workers_hub_that_is_gone_is_the_same_503(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A worker's quota counters are the hub's (HubQuotaBackend), which raises UpstreamFailed when the hub cannot be
    reached: Guard._reserve let that ApiError through as the client's 502 `upstream_failed` (an engine's error),
    without Retry-After and unlogged by the guard, where a Redis store failing is 503 `quota_unavailable`."""
    from aigrid.gateway.guard import Guard
    from aigrid.gateway.hub_client import HubClient, HubQuotaBackend

    raw = spec_in(tmp_path).model_dump(mode="json", exclude_unset=True)
    raw.setdefault("tenants", {})["default"] = {"quotas": {"requests_per_min": 100}}
    spec = GridSpec.model_validate(raw)
    hub = HubClient(tmp_path / "no-hub.sock")
    guard = Guard(spec, quota_backend=HubQuotaBackend(hub))
    gw = build_gateway(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}, rng=random.Random(1), sleep=_no_sleep,
                       guard=guard)
    try:
        with caplog.at_level(logging.ERROR, logger="aigrid.guard"):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
                r = await asyncio.wait_for(c.post("/v1/chat/completions", json=CHAT), 30)
    finally:
        await gw.guard.stop()
        await hub.aclose()
    assert r.status_code == 503, r.text  # before: 502 upstream_failed
    assert r.json()["error"]["code"] == "quota_unavailable" and r.headers["retry-after"] == "1"
    assert any("quota store failed to reserve" in rec.getMessage() for rec in caplog.records)


def test_only_a_store_that_pauses_has_its_charges_shielded(tmp_path: Path) -> None:
    """Shielding a charge (guard._uncut: a task and two loop turns, ~11 us) keeps a cancel from losing what a store
    that awaits mid-call charged; the in-memory store never pauses, so it is awaited plainly on every request."""
    from aigrid.security.quota_backend import MemoryQuotaBackend
    from aigrid.security.quotas_redis import RedisQuotaBackend

    spec = GridSpec.model_validate(spec_in(tmp_path).model_dump(mode="json", exclude_unset=True))
    plain = build_gateway(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}, rng=random.Random(1),
                          sleep=_no_sleep)
    assert plain.guard._store_pauses is False and MemoryQuotaBackend.pauses is False
    assert getattr(RedisQuotaBackend, "pauses", True) is True
