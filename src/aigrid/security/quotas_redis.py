"""Redis quota backend: several gateways share one budget.

Check-and-add runs as one Lua script, which Redis executes atomically, so concurrent gateways never
drift past a limit. Keys carry the tenant in a hash tag ({tenant}) so a tenant's counters share a slot
in Redis Cluster. Each counter expires a minute after its window ends (a relative expiry, so
the gateways' clocks and Redis's need not agree to the second). Give the client a BlockingConnectionPool
so a burst of requests waits for a connection instead of failing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from redis.asyncio import Redis

from aigrid.security.quota_backend import Consumed, Counter

_CONSUME = """
for i = 1, #KEYS do
  local amount = tonumber(ARGV[3 * i - 2])
  local limit = tonumber(ARGV[3 * i - 1])
  local current = tonumber(redis.call('GET', KEYS[i]) or '0')
  if current + amount > limit then return {i} end
end
local values = {0}
for i = 1, #KEYS do
  values[i + 1] = redis.call('INCRBY', KEYS[i], ARGV[3 * i - 2])
  redis.call('EXPIRE', KEYS[i], ARGV[3 * i])
end
return values
"""

_ADJUST = """
for i = 1, #KEYS do
  redis.call('INCRBY', KEYS[i], ARGV[2 * i - 1])
  redis.call('EXPIRE', KEYS[i], ARGV[2 * i])
end
return 0
"""

_GRACE_S = 60


class RedisQuotaBackend:
    def __init__(self, client: Redis) -> None:
        self._redis = client
        self._consume = client.register_script(_CONSUME)
        self._adjust = client.register_script(_ADJUST)

    async def consume(self, counters: Sequence[Counter]) -> Consumed:
        if not counters:
            return None, []
        args: list[int] = []
        for c in counters:
            args += [c.amount, c.limit, _expiry(c)]
        full, *values = [int(v) for v in await self._consume(keys=[c.key for c in counters], args=args)]
        return (None, values) if full == 0 else (full - 1, [])

    async def adjust(self, counters: Sequence[Counter]) -> None:
        if not counters:
            return
        args: list[int] = []
        for c in counters:
            args += [c.amount, _expiry(c)]
        await self._adjust(keys=[c.key for c in counters], args=args)

    async def value(self, key: str) -> int:
        raw = await self._redis.get(key)
        return int(raw) if raw is not None else 0

    async def aclose(self) -> None:
        """The client's connections closed (the gateway stopping)."""
        await self._redis.aclose()


def _expiry(c: Counter) -> int:
    return math.ceil(c.ttl_s) + _GRACE_S
