"""Abuse digests between gateways through a real Redis stream."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from aigrid.errors import SharedStateUnavailable
from aigrid.security.firewall.abuse import RequestTraits, digest
from aigrid.security.firewall.abuse_redis import RedisAbuseRelay


def batch(key: str, n: int, start: int = 0) -> list:
    return [(key, digest(RequestTraits(f"probe {i}"), 32)) for i in range(start, start + n)]


async def test_each_gateway_reads_the_others_digests_once_and_not_its_own(redis_port: int) -> None:
    url = f"redis://127.0.0.1:{redis_port}/0"
    a, b = RedisAbuseRelay.from_url(url, "relay-test"), RedisAbuseRelay.from_url(url, "relay-test")
    try:
        assert await a.relay([]) == [] and await b.relay([]) == []  # both started: reading from the end
        assert await a.relay(batch("k", 3)) == []  # its own entry is not read back
        assert await b.relay(batch("k", 2, 10)) == batch("k", 3)
        assert await b.relay([]) == []  # read once
        assert await a.relay([]) == batch("k", 2, 10)
        late = RedisAbuseRelay.from_url(url, "relay-test")  # a gateway that starts now: no replay
        try:
            assert await late.relay([]) == []
            await a.relay(batch("j", 1))
            assert await late.relay([]) == batch("j", 1)
        finally:
            await late.aclose()
    finally:
        await a.aclose()
        await b.aclose()


async def test_redis_unreachable_is_shared_state_unavailable() -> None:
    relay = RedisAbuseRelay(aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2), "down")
    with pytest.raises(SharedStateUnavailable):
        await relay.relay(batch("k", 1))
    await relay.aclose()
