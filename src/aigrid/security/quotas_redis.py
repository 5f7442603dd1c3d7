"""Redis quota backend: several gateways share one budget.

Check-and-add runs as one Lua script, which Redis executes atomically, so concurrent gateways never
drift past a limit. Keys carry the tenant in a hash tag ({tenant}; a name empty or beginning with '}' or '~'
written '~' and its hex: quotas._tagged) so a tenant's counters share a slot in Redis Cluster. Each counter expires a minute after its window ends (a relative expiry, so
the gateways' clocks and Redis's need not agree to the second). Give the client a BlockingConnectionPool
so a burst of requests waits for a connection instead of failing. A call's op (quota_backend.py) is a key of
its own (the quota's prefix and the tenant's hash tag: the same slot), holding the call's answer and what it
applied for OP_TTL_S (counted from the last call under it); a refused charge (a 429) applied nothing and records
nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from redis.asyncio import Redis

from aigrid.security.quota_backend import Consumed, Counter, Released

OP_TTL_S = 30
"""How long Redis keeps a call's op record, from the last call under it (the release's, the settlement's retry): what
a late copy of the call must arrive within to be kept from applying again. The gateway's client gives up on a call
after its 1 s socket timeout, one attempt (redis_client.connect), and releases it, or sends a failed settlement once
more, at once (quotas.Quotas._charging, settle): a copy still on its way arrives within seconds of that record (a
TCP segment lost 7 times in a row is retransmitted ~25 s later), and the hub keeps its ops 30 s too
(quota_backend.MEMORY_OP_TTL_S). Each admitted request leaves two records of ~170 bytes (342 B a request by INFO's
used_memory over 10,000 admitted and settled requests, redis-server 7.0; 453 B before the ids were cut to 16 and 8 hex
digits and the values to `[answer, applied]`, `1` and `r`): 10,000 requests, 3.4 MB for 30 s (it was 120 s: at 1,000
requests/s, ~10 MB held, ~55 MB at 120 s). A copy arriving later applies (a charge: counted once more in its window,
never less)."""

_CHARGE = """
-- KEYS: the counters, then the op's record (or none); ARGV: n, give, the op's TTL, then amount, limit, expiry each
local n = tonumber(ARGV[1])
local give = tonumber(ARGV[2])
local op = KEYS[n + 1]
if op then
  local seen = redis.call('GET', op)
  if seen == 'r' then return {-1} end -- released
  if seen then return cjson.decode(seen)[1] end
end
local answer = nil
local short = 0
for i = 1, n do
  local amount = tonumber(ARGV[3 * i + 1])
  local over = tonumber(redis.call('GET', KEYS[i]) or '0') + amount - tonumber(ARGV[3 * i + 2])
  if over > give then answer = {i} break end
  if over > short then short = over end
end
if answer then return answer end -- refused: nothing applied, nothing recorded (a repeat is asked afresh)
answer = {0, short}
local applied = {}
for i = 1, n do
  applied[i] = math.max(0, tonumber(ARGV[3 * i + 1]) - short)
  answer[i + 2] = redis.call('INCRBY', KEYS[i], applied[i])
  redis.call('EXPIRE', KEYS[i], ARGV[3 * i + 3])
end
if op then redis.call('SET', op, cjson.encode({answer, applied}), 'EX', ARGV[3]) end -- [answer, applied]
return answer
"""

_ADJUST = """
-- KEYS: the counters, then the op's record (or none); ARGV: n, the op's TTL, then amount, expiry each
local n = tonumber(ARGV[1])
local op = KEYS[n + 1]
if op then
  if redis.call('EXISTS', op) == 1 then return 0 end
  redis.call('SET', op, '1', 'EX', ARGV[2])
end
for i = 1, n do
  redis.call('INCRBY', KEYS[i], ARGV[2 * i + 1])
  redis.call('EXPIRE', KEYS[i], ARGV[2 * i + 2])
end
return 1
"""

_RELEASE = """
-- KEYS: the counters the op was given, then its record; ARGV: the op's TTL. A counter already gone is left gone.
local op = KEYS[#KEYS]
local seen = redis.call('GET', op)
if seen == 'r' then return 0 end
if seen and seen ~= '1' then
  for i, amount in ipairs(cjson.decode(seen)[2]) do
    if amount ~= 0 and redis.call('EXISTS', KEYS[i]) == 1 then redis.call('DECRBY', KEYS[i], amount) end
  end
end
redis.call('SET', op, 'r', 'EX', ARGV[1])
return 1
"""

_GRACE_S = 60


class RedisQuotaBackend:
    def __init__(self, client: Redis) -> None:
        self._redis = client
        self._charge = client.register_script(_CHARGE)
        self._adjust = client.register_script(_ADJUST)
        self._release = client.register_script(_RELEASE)

    async def consume(self, counters: Sequence[Counter], op: str | None = None) -> Consumed:
        if not counters:
            return None, []
        full, *rest = await self._call(counters, 0, op)
        return (None, rest[1:]) if full == 0 else (full - 1, [])

    async def grow(self, counters: Sequence[Counter], give: int, op: str | None = None) -> int | None:
        if not counters:
            return 0
        full, *rest = await self._call(counters, give, op)
        return rest[0] if full == 0 else None

    async def _call(self, counters: Sequence[Counter], give: int, op: str | None) -> list[int]:
        """The charge script's answer: [0, short, the new values...], [the first full counter, from 1]."""
        args: list[int] = [len(counters), give, OP_TTL_S]
        for c in counters:
            args += [c.amount, c.limit, _expiry(c)]
        answer = [int(v) for v in await self._charge(keys=[*(c.key for c in counters), *_op(op)], args=args)]
        if answer[0] < 0:
            raise Released(f"quota call {op} arrived after it was released")
        return answer

    async def adjust(self, counters: Sequence[Counter], op: str | None = None) -> None:
        if not counters:
            return
        args: list[int] = [len(counters), OP_TTL_S]
        for c in counters:
            args += [c.amount, _expiry(c)]
        await self._adjust(keys=[*(c.key for c in counters), *_op(op)], args=args)

    async def release(self, op: str, counters: Sequence[Counter]) -> None:
        await self._release(keys=[*(c.key for c in counters), op], args=[OP_TTL_S])

    async def value(self, key: str) -> int:
        raw = await self._redis.get(key)
        return int(raw) if raw is not None else 0

    async def aclose(self) -> None:
        """The client's connections closed (the gateway stopping)."""
        await self._redis.aclose()


def _op(op: str | None) -> list[str]:
    return [] if op is None else [op]


def _expiry(c: Counter) -> int:
    return math.ceil(c.ttl_s) + _GRACE_S
