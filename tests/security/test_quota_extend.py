"""Quotas.extend: a request's reservation grown before a further model call (a tool loop's later turn), on each
backend (in process, Redis, the workers' hub): charged on the same token counters all or none, no request counted,
refused (nothing charged) where a counter has no room, and settled once to the real usage."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from aigrid.gateway.hub import Hub
from aigrid.gateway.hub_client import HubClient, HubQuotaBackend
from aigrid.security.principal import Principal, Scopes
from aigrid.security.quota_backend import MemoryQuotaBackend, QuotaBackend
from aigrid.security.quotas import QuotaLimits, QuotaRules, Quotas

ALICE = Principal("acme", "k-alice", Scopes())
NOW = 86_400.0 * 3 + 30  # 30 s into a minute window
RULES = QuotaRules(default_tenant=QuotaLimits(requests_per_min=10, token_budget=1000),
                   default_key=QuotaLimits(tokens_per_min=800))
BUDGET = "aigrid:q:{acme}:tenant:acme:budget:3"
TPM = f"aigrid:q:{{acme}}:key:k-alice:tpm:{int(NOW // 60)}"
RPM = f"aigrid:q:{{acme}}:tenant:acme:rpm:{int(NOW // 60)}"


@pytest.fixture
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="aigrid-q-"))  # short: a Unix socket path has ~100 bytes
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@asynccontextmanager
async def backend(kind: str, work: Path, request: pytest.FixtureRequest) -> AsyncIterator[QuotaBackend]:
    if kind == "memory":
        yield MemoryQuotaBackend()
    elif kind == "redis":
        pytest.importorskip("redis", reason="the redis client package is not installed")
        from redis.asyncio import Redis

        from aigrid.security.quotas_redis import RedisQuotaBackend
        port = request.getfixturevalue("redis_port")
        client = Redis(host="127.0.0.1", port=port)
        await client.flushdb()
        try:
            yield RedisQuotaBackend(client)
        finally:
            await client.aclose()
    else:
        hub = Hub(work / "hub.sock", None)
        await hub.start()
        client = HubClient(hub.path)
        try:
            yield HubQuotaBackend(client)
        finally:
            await client.aclose()
            await hub.stop()


@pytest.mark.parametrize("kind", ["memory", "redis", "hub"])
async def test_extend_charges_the_token_counters_all_or_none_and_settle_corrects_once(
        kind: str, work: Path, request: pytest.FixtureRequest) -> None:
    async with backend(kind, work, request) as store:
        q = Quotas(RULES, store, clock=lambda: NOW)
        r = await q.admit(ALICE, 300)  # the first turn: its prompt's estimate and max_tokens
        grown = await q.extend(r, 400)  # the loop's next turn
        assert grown is not None and grown.reserved_tokens == 700
        assert (await store.value(BUDGET), await store.value(TPM), await store.value(RPM)) == (700, 700, 1)
        assert await q.extend(grown, 200) is None  # past the key's 800 tokens a minute: nothing charged
        assert (await store.value(BUDGET), await store.value(TPM)) == (700, 700)
        assert await q.extend(grown, 0) == grown  # nothing to reserve: nothing asked
        await q.settle(grown, 450)  # the real usage of both turns, once
        assert (await store.value(BUDGET), await store.value(TPM), await store.value(RPM)) == (450, 450, 1)


async def test_extend_without_token_limits_grows_the_reservation_only() -> None:
    q = Quotas(QuotaRules(default_key=QuotaLimits(requests_per_min=5)), clock=lambda: NOW)
    r = await q.admit(ALICE, 100)
    grown = await q.extend(r, 50)
    assert grown is not None and grown.reserved_tokens == 150 and grown.token_counters == ()
