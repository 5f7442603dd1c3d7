"""Quotas on a real redis-server: two gateways (clients) share one budget and counting never drifts."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("redis", reason="the redis client package is not installed")

from redis.asyncio import BlockingConnectionPool, Redis  # noqa: E402

from aigrid.errors import RateLimited  # noqa: E402
from aigrid.security.principal import Principal, Scopes
from aigrid.security.quotas import QuotaLimits, QuotaRules, Quotas
from aigrid.security.quotas_redis import RedisQuotaBackend

P = Principal("acme", "k-1", Scopes())


def client_for(port: int) -> Redis:
    return Redis(connection_pool=BlockingConnectionPool(host="127.0.0.1", port=port, max_connections=20))


async def test_two_gateways_share_one_limit_without_drift(redis_port: int) -> None:
    rules = QuotaRules(default_key=QuotaLimits(requests_per_min=150, tokens_per_min=10_000))
    clients = [client_for(redis_port) for _ in range(2)]
    now = 7_000_000.0
    gateways = [Quotas(rules, RedisQuotaBackend(c), clock=lambda: now, prefix="t1") for c in clients]
    try:
        async def one(q: Quotas) -> bool:
            try:
                await q.admit(P, 10)
                return True
            except RateLimited as e:
                assert int(e.headers["Retry-After"]) >= 1
                return False

        results = await asyncio.gather(*(one(g) for g in gateways for _ in range(200)))
        assert sum(results) == 150
        key = "t1:{acme}:key:k-1"
        assert await gateways[0].backend.value(f"{key}:rpm:{int(now // 60)}") == 150
        assert await gateways[1].backend.value(f"{key}:tpm:{int(now // 60)}") == 1500
        assert await clients[0].ttl(f"{key}:rpm:{int(now // 60)}") > 0
    finally:
        for c in clients:
            await c.aclose()


async def test_concurrent_settlements_add_up_exactly(redis_port: int) -> None:
    rules = QuotaRules(default_key=QuotaLimits(tokens_per_min=1_000_000))
    clients = [client_for(redis_port) for _ in range(2)]
    gateways = [Quotas(rules, RedisQuotaBackend(c), clock=lambda: 60.0, prefix="t2") for c in clients]
    try:
        async def one(q: Quotas) -> None:
            r = await q.admit(P, 100)
            await q.settle(r, 37)

        await asyncio.gather(*(one(g) for g in gateways for _ in range(200)))
        assert await gateways[0].backend.value("t2:{acme}:key:k-1:tpm:1") == 400 * 37
    finally:
        for c in clients:
            await c.aclose()


async def test_redis_refusal_reports_retry_after(redis_port: int) -> None:
    client = client_for(redis_port)
    q = Quotas(QuotaRules(default_tenant=QuotaLimits(requests_per_min=1)), RedisQuotaBackend(client),
               clock=lambda: 125.0, prefix="t3")
    try:
        first = await q.admit(P, 1)  # the counters' values come back from the script: what is left
        assert [(h.kind, h.limit, h.remaining) for h in first.headroom] == [("requests", 1, 0)]
        with pytest.raises(RateLimited) as e:
            await q.admit(P, 1)
        assert e.value.headers == {"Retry-After": "55", "x-ratelimit-limit-requests": "1",
                                   "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "55s"}
    finally:
        await client.aclose()


GATEWAY_SCRIPT = """
import asyncio, sys
from redis.asyncio import BlockingConnectionPool, Redis
from aigrid.errors import RateLimited  # noqa: E402
from aigrid.security.principal import Principal, Scopes
from aigrid.security.quotas import QuotaLimits, QuotaRules, Quotas
from aigrid.security.quotas_redis import RedisQuotaBackend

async def main(port: int) -> None:
    client = Redis(connection_pool=BlockingConnectionPool(host="127.0.0.1", port=port, max_connections=20))
    q = Quotas(QuotaRules(tenants={"acme": QuotaLimits(requests_per_min=170)}), RedisQuotaBackend(client),
               clock=lambda: 9_000_000.0, prefix="proc")
    async def one() -> int:
        try:
            await q.admit(Principal("acme", "k-1", Scopes()), 1)
            return 1
        except RateLimited:
            return 0
    print(sum(await asyncio.gather(*(one() for _ in range(200)))))
    await client.aclose()

asyncio.run(main(int(sys.argv[1])))
"""


def test_two_gateway_processes_share_one_budget(redis_port: int) -> None:
    import subprocess
    import sys

    procs = [subprocess.Popen([sys.executable, "-c", GATEWAY_SCRIPT, str(redis_port)], stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    admitted = [int(p.communicate(timeout=60)[0].strip()) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(admitted) == 170


async def test_an_admitted_and_settled_request_s_op_records_are_kept_30_s(redis_port: int) -> None:
    """The op records (admission's, settlement's) were kept 120 s: 10,000 requests left 20,000 keys, 4.6 MB, for two
    minutes (~55 MB at 1,000 requests/s), though the gateway's client gives up after 1 s and releases at once."""
    client = client_for(redis_port)
    q = Quotas(QuotaRules(default_key=QuotaLimits(tokens_per_min=1_000_000)), RedisQuotaBackend(client),
               clock=lambda: 60.0, prefix="t-ttl")
    try:
        await q.settle(await q.admit(P, 100), 37)
        ops = [key async for key in client.scan_iter("t-ttl:*:op:*")]
        assert len(ops) == 2
        ttls = [await client.ttl(key) for key in ops]
        assert all(0 < ttl <= 30 for ttl in ttls), ttls
    finally:
        await client.aclose()


async def test_an_admitted_request_s_op_records_are_small(redis_port: int) -> None:
    """What an admitted and settled request leaves in Redis for the ops' 30 s: two records (admission's, its
    settlement's). Before: 156 bytes of key names and values here (a whole uuid4 in each op key; 173 once the
    settlement's op was named after admission's, this session; JSON objects with field names as values); now 101 (by
    MEMORY USAGE on redis-server 7.0, 208 bytes for the two)."""
    client = client_for(redis_port)
    await client.flushdb()
    q = Quotas(QuotaRules(default_key=QuotaLimits(requests_per_min=10, tokens_per_min=1000)), RedisQuotaBackend(client),
               clock=lambda: 7_000_000.0)
    try:
        await q.settle(await q.admit(P, 300), 120)
        records = [(k, await client.get(k)) async for k in client.scan_iter("*:op:*")]
        assert len(records) == 2
        assert sum(len(k) + len(v) for k, v in records) <= 101, records
    finally:
        await client.aclose()


async def test_usage_past_the_reservation_is_carried_on_redis_and_refused_next_minute(redis_port: int) -> None:
    """Review RV6 of brief TOKEST: the excess a settlement carries (Quotas._carry, one store grow a window) lands in
    Redis's counters of the next windows, shared by both gateways, each key with a TTL, and the next minute's
    admission on the other gateway is refused while its window holds the debt."""
    rules = QuotaRules(default_key=QuotaLimits(tokens_per_min=1_000))
    clients = [client_for(redis_port) for _ in range(2)]
    now = [7_200_000.0]  # a window's start
    gateways = [Quotas(rules, RedisQuotaBackend(c), clock=lambda: now[0], prefix="t9") for c in clients]
    try:
        burst = [await gateways[i % 2].admit(P, 100) for i in range(10)]
        for i, r in enumerate(burst):
            await gateways[i % 2].settle(r, 250)  # 2,500 used on 1,000 reserved: 1,500 carried
        key, minute = "t9:{acme}:key:k-1:tpm", int(now[0] // 60)
        values = [await gateways[0].backend.value(f"{key}:{minute + i}") for i in range(4)]
        assert values == [1000, 1000, 500, 0]
        assert await clients[1].ttl(f"{key}:{minute + 2}") > 120
        now[0] += 61  # the next minute: full of the debt, on either gateway
        with pytest.raises(RateLimited):
            await gateways[1].admit(P, 1)
        now[0] += 60  # the one after: 500 of room
        await gateways[0].admit(P, 500)
        with pytest.raises(RateLimited):
            await gateways[1].admit(P, 1)
    finally:
        for c in clients:
            await c.aclose()
