"""Stored Responses, background placeholders and Conversations in a Redis (`gateway.stores`): the store of
the jurisdictions that name this URL, shared by every gateway and worker that names it (stores.py routes each
record to its jurisdiction's store; this one never holds another's).

Keys, all under `aigrid:<grid>:` (a grid whose name holds `{` or begins with `~`: `aigrid:~<its name in
hex>:`, `key_prefix`, so that no grid's name makes a hash tag), each expiring `ttl_s` after it was last written
(`gateway.store_ttl_days`):
- `resp:<jurisdiction>:{<tenant>}:<id>`: a stored response, a hash: `r` the record without its turn (JSON of
  StoredResponse's other fields), `t` its turn (JSON chat messages), `p` the id it continued ("" none). A
  follow-up's history is read by one Lua script walking `p` within the jurisdiction and tenant; a turn gone
  (expired, evicted by Redis's maxmemory policy, deleted) or unreadable (logged) breaks the chain: BrokenHistory, a 404.
- `pending:{<tenant>}:<id>`: a background placeholder (no conversation content), a hash of Pending's fields
  (`error`, `settings` and `scopes` as JSON, "" none; `owner` the gateway process that runs it); only in the store named
  `unbound`.
- `owner:<owner>`: that process's lease, a key it sets (SET PX) every poll while it has runs and that expires
  after its lease (background.py); a reader that finds a running placeholder whose owner's key is gone fails it
  in one Lua script, which changes it only while it is still running and still that owner's (once, whoever
  races). Not in a tenant's slot: it is read apart from the script.
- `events:{<tenant>}:<id>`: the event log of a background response created with stream (event_log.py), a
  Redis Stream: one entry per Responses event, its ID `<sequence_number>-1` (XADD with that explicit ID:
  an event written twice or out of order is refused by Redis), field `e` the SSE event, and `end` on the
  log's last. Written by the run that owns the response (XADD, in one Lua script with the key's EXPIRE,
  which refuses to go on with a log that is gone, evicted or expired: ValueError, as in memory); read
  with XRANGE from the reader's `starting_after`, polled every event_log.FOLLOW_POLL_S while nothing is new
  rather than held in XREAD BLOCK: a blocked read holds one connection of the pool (64, shared by every
  store call of the process, each call given 1 s) per reader for as long as it waits, so a few dozen idle
  readers would starve the stores. In the store of the tenant's one jurisdiction when its key may use
  only one, else in `unbound` (stores.Responses.events_home).
- `conv:{<tenant>}:<id>`: a conversation, the JSON of StoredConversation; changed by reading it, running
  conversation_store.ConversationStore's own operation on it, and writing it back unless another gateway
  wrote it meanwhile (WATCH/MULTI/EXEC, tried again; the write and its ledger hold one script in it): the same
  code as in memory.
- `held:{<tenant>}` and `sizes:{<tenant>}`: what the tenant holds in this Redis (`_Ledger`): at most
  `gateway.store_tenant_max_bytes` of its records, past it its own oldest written evicted (never another
  tenant's: a Redis full to its `maxmemory` evicted by its own policy, whoever owned the key). Every write is
  one Lua script with its ledger update, every delete and every placeholder's rewrite too (one round trip; no
  eviction between a write and its hold, no deleted record counted).
The tenant is in every key (another tenant's id is simply absent) and in a hash tag, so that one tenant's keys
share a slot (Redis Cluster) and a script may touch several; a tenant whose name holds `{`, `}` or `~` is
written `~` and its name in hex there (`tag`), so that no id read under one tenant is another tenant's key. What the in-memory store does in one step stays
one step: marking a placeholder (only while it has not ended), storing an answer and dropping its placeholder
(`complete`), removing an ended placeholder: each one Lua script.

A Redis that does not answer (connection refused, 1 s timeout) refuses the request that needs it with a 503
(StoreUnavailable), logged once per outage and once when it answers again.

Gateways of two versions may share one Redis (a rolling upgrade, a rollback): a record is read with
record_fields.read_record, so a field a newer aigrid added is ignored (logged once) and a record unreadable (a known
field of the wrong type, not JSON) is logged and read as absent (a 404), never a 500.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, TypeVar

import orjson
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError, WatchError

from aigrid.errors import StoreUnavailable
from aigrid.gateway.conversation_store import ConversationStore, StoredConversation
from aigrid.gateway.event_log import READ_MAX
from aigrid.gateway.record_fields import read_json_record, read_record
from aigrid.gateway.response_store import (
    FINAL,
    REFUSED,
    UNKEPT,
    BrokenHistory,
    Pending,
    StoredResponse,
    may_store,
)
from aigrid.redis_client import connect, key_prefix
from aigrid.spec.models import UNBOUND_STORE

log = logging.getLogger("aigrid.gateway")
T = TypeVar("T")
MAX_CHAIN = 100_000
"""Turns one history read walks at most (a guard: no chain is that long)."""
WRITE_TRIES = 20
"""Times a conversation change is tried again when another gateway changed it meanwhile."""
TENANT_MAX_BYTES = 256 * 1024 * 1024
"""The default of `gateway.store_tenant_max_bytes`: what one tenant's records (stored responses, placeholders,
event logs, conversations) may hold in one Redis of `gateway.stores`, as their memory there (`_Ledger`): past it,
that tenant's oldest written records are evicted, never another tenant's (the in-memory stores' fair_lru.py gives
the same guarantee)."""
RECORD_BYTES = 640
"""What a record weighs in a tenant's ledger besides its fields' bytes: its key, Redis's own entries and the
ledger's (measured on Redis 7.0, used_memory per record less its fields' bytes: 560 to 950)."""
EVENT_BYTES = 64
"""What an event of a log weighs besides its bytes (measured: 70, its stream entry)."""
EVICT_MOST = 1_000
"""Records one write evicts at most (its ledger's script holds the whole Redis while it runs: 100,000 evictions of
small records were 0.76 s of every tenant's calls); a tenant still past its bound loses more at its next writes."""
_FINAL_LUA = "local final = {" + ", ".join(f"{s} = true" for s in sorted(FINAL)) + "}\n"

_HISTORY = """
local turns, ids, id, left = {}, {}, ARGV[1], tonumber(ARGV[2])
while id ~= '' do
  if left == 0 then return {0, id} end
  left = left - 1
  local v = redis.call('HMGET', KEYS[1] .. id, 't', 'p')
  if not v[1] then return {0, id} end
  turns[#turns + 1] = v[1]
  ids[#ids + 1] = id
  id = v[2] or ''
end
return {1, turns, ids}
"""

_LEDGER = """
local held, sizes, key = KEYS[1], KEYS[2], KEYS[3]
local add, ttl, limit = ARGV[2] == '1', tonumber(ARGV[3]), tonumber(ARGV[4])
local most = tonumber(ARGV[5])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
-- sizes outlives held only when Redis evicted held: its entries would count for good, nothing lists them
if redis.call('EXISTS', held) == 0 then redis.call('DEL', sizes) end
local total = tonumber(redis.call('HGET', sizes, '') or '0')
local function forget(k)
  total = total - tonumber(redis.call('HGET', sizes, k) or '0')
  redis.call('HDEL', sizes, k)
  redis.call('ZREM', held, k)
end
for i = 4, #KEYS do forget(KEYS[i]) end
for _, k in ipairs(redis.call('ZRANGEBYSCORE', held, '-inf', now - ttl, 'LIMIT', 0, 256)) do forget(k) end
if size >= 0 then
  local old = tonumber(redis.call('HGET', sizes, key) or '0')
  local new = size
  if add then new = old + size end
  total = total + new - old
  redis.call('HSET', sizes, key, new)
  redis.call('ZADD', held, now, key)
end
local evicted = {}
-- a background run's placeholder is never evicted (a few hundred bytes; its run replaces it with the answer):
-- evicted, the run went on while its polls and cancels were 404s. `skip` counts those passed over at the front
local skip = 0
-- the tenant's placeholders' own prefix (`<p>pending:{<tag>}:`, from `<p>held:{<tag>}`; a tag holds no brace):
-- matched at the key's start, so no jurisdiction or id spelled with `pending:{` makes other records unevictable
local brace = held:match('.*(){')
local pend = held:sub(1, brace - 6) .. 'pending:' .. held:sub(brace) .. ':'
while total > limit and #evicted < most do
  local page = redis.call('ZRANGE', held, skip, skip + 63)
  if #page == 0 then break end
  local oldest = nil
  for _, k in ipairs(page) do
    if k ~= key and k:sub(1, #pend) ~= pend then oldest = k break end
    skip = skip + 1
  end
  if oldest then
    forget(oldest)
    redis.call('DEL', oldest)
    evicted[#evicted + 1] = oldest
  end
end
if redis.call('EXISTS', held) == 1 then
  redis.call('HSET', sizes, '', total)
  redis.call('PEXPIRE', held, ttl)
  redis.call('PEXPIRE', sizes, ttl)
else
  redis.call('DEL', sizes)
end
"""
"""The tenant's ledger (KEYS[1:2]) after a write of KEYS[3] weighing `size` (a local the script sets before it; -1:
nothing written), KEYS[4:] forgotten: its `evicted` keys in a local, for the script to return."""

_HOLD = "local size = tonumber(ARGV[1])\n" + _LEDGER + "return evicted\n"
"""`_LEDGER` alone, `size` ARGV[1] (ARGV[1:5]: size, whether it adds to the key's, TTL ms, limit, most evicted)."""

_WEIGH = """
local size = tonumber(ARGV[1])
for i, v in ipairs(redis.call('HGETALL', KEYS[3])) do size = size + #v end
"""
"""`size` as `_weight` counts hash KEYS[3] (ARGV[1] its RECORD_BYTES): for a script that changed some of its fields."""

_MARK = _FINAL_LUA + """
local s = redis.call('HGET', KEYS[3], 'status')
if not s then return false end
if final[s] then return {redis.call('HGETALL', KEYS[3]), {}} end
redis.call('HSET', KEYS[3], 'status', ARGV[6], 'error', ARGV[7])
redis.call('EXPIRE', KEYS[3], ARGV[8])
""" + _WEIGH + _LEDGER + "return {redis.call('HGETALL', KEYS[3]), evicted}\n"
"""A placeholder (KEYS[3]) not yet ended given its status and error (ARGV[6:7]) and TTL (ARGV[8]), and held again
at its new weight (it was not: a mark's error counted nothing, and the ledger forgot the placeholder `ttl` after
its creation while the mark's EXPIRE kept it): {its fields, evicted}, nil when it is gone."""

_ABANDON = _FINAL_LUA + """
local v = redis.call('HMGET', KEYS[3], 'status', 'owner')
if not v[1] or final[v[1]] or v[2] ~= ARGV[6] then return false end
redis.call('HSET', KEYS[3], 'status', 'failed', 'error', ARGV[7])
redis.call('EXPIRE', KEYS[3], ARGV[8])
""" + _WEIGH + _LEDGER + "return {redis.call('HGETALL', KEYS[3]), evicted}\n"
"""A running placeholder (KEYS[3]) of owner ARGV[6] failed with error ARGV[7], TTL ARGV[8], held again as `_MARK`."""

_DELETE = """
if redis.call('DEL', unpack(KEYS, 4)) == 0 then return false end
local size = -1
""" + _LEDGER + "return evicted\n"
"""Records KEYS[4:] deleted and forgotten by the ledger (KEYS[1:3]: held, sizes, held again as `key`) in one
script: nil when none was there. Deleted, then forgotten in a second call, a record counted in the tenant's total
after it was gone (another gateway's write then evicted one more of the tenant's records than its bound asked)."""

_APPEND = """
local first, ended, n = tonumber(ARGV[6]), ARGV[7] == '1', #ARGV - 8
if first > 0 and redis.call('EXISTS', KEYS[3]) == 0 then return false end
for i = 1, n do
  if ended and i == n then
    redis.call('XADD', KEYS[3], (first + i - 1) .. '-1', 'e', ARGV[8 + i], 'end', '1')
  else
    redis.call('XADD', KEYS[3], (first + i - 1) .. '-1', 'e', ARGV[8 + i])
  end
end
redis.call('EXPIRE', KEYS[3], ARGV[8])
""" + _HOLD
"""An event log's append (KEYS[3]; ARGV[6:] its first number, whether it ends, its TTL, its events), refused (nil)
when the log is gone, then held in the tenant's ledger as `_HOLD` (KEYS[1:3], ARGV[1:5]) in the same script: one
call per append (a background stream appends at every chunk)."""

_PUT = """
redis.call('HSET', KEYS[3], unpack(ARGV, 7))
redis.call('EXPIRE', KEYS[3], ARGV[6])
""" + _HOLD
"""A hash (KEYS[3]; ARGV[6] its TTL, ARGV[7:] its fields and values) written and held in the tenant's ledger
(`_HOLD`, KEYS[1:3], ARGV[1:5]) in one script: one round trip, and no other gateway's eviction between the write
and its hold (which lost the write while the put returned True)."""

_SET = """
redis.call('SET', KEYS[3], ARGV[7], 'EX', ARGV[6])
""" + _HOLD
"""A string (KEYS[3], a conversation; ARGV[6] its TTL, ARGV[7] its value) written and held, as `_PUT`."""

_COMPLETE = """
local s = redis.call('HGET', KEYS[4], 'status')
if s == 'cancelled' or s == 'failed' then return s end
redis.call('HSET', KEYS[3], 'r', ARGV[7], 't', ARGV[8], 'p', ARGV[9])
redis.call('EXPIRE', KEYS[3], ARGV[6])
redis.call('DEL', KEYS[4])
""" + _HOLD
"""A background answer stored (KEYS[3]) and its placeholder (KEYS[4]) dropped and forgotten, held as `_PUT`, unless
the placeholder was cancelled or failed meanwhile (that status returned, nothing written)."""

_PENDING_DELETE = _FINAL_LUA + """
local all = redis.call('HGETALL', KEYS[4])
if #all == 0 then return false end
if not final[redis.call('HGET', KEYS[4], 'status')] then return {all, {}} end
redis.call('DEL', KEYS[4])
local size = -1
""" + _LEDGER + "return {all, evicted}\n"
"""A placeholder (KEYS[4]) removed and forgotten when it has ended, in one script: {its fields, evicted}, nil
when it is gone."""


class _Guard:
    """Every Redis call of one store: a failure becomes StoreUnavailable (503), logged once per outage."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = ", ".join(names)
        self.down = False

    async def __call__(self, call: Awaitable[T]) -> T:
        try:
            result = await call
        except (RedisError, OSError) as e:
            if not self.down:
                log.error("the store of %s (Redis) did not answer: %s; requests that need it get 503 until it "
                          "answers", self.names, e)
            self.down = True
            raise StoreUnavailable(f"the store of {self.names} did not answer; retry later",
                                   headers={"retry-after": "1"}) from e
        if self.down:
            log.warning("the store of %s (Redis) answers again", self.names)
            self.down = False
        return result


def tag(tenant: str) -> str:
    """The tenant as its keys name it, in their hash tag: as it is, unless it holds a character that could
    make two tenants' keys one (`}` ends the tag, so tenant `a` asking for id `x}:r1` read tenant `a}:x`'s
    record `r1`; `{` and `~` too): then `~` and its UTF-8 bytes in hex, which no plain name begins with."""
    if "{" in tenant or "}" in tenant or "~" in tenant:
        return "~" + tenant.encode().hex()
    return tenant


class _Ledger:
    """What each tenant holds in one Redis (`held:{<tenant>}`, a sorted set of its record keys by when each was
    last written; `sizes:{<tenant>}`, a hash of their bytes and, under "", their total), kept by the Lua script
    that writes each record (`put`, `set`, `complete`, `append`: the write and its hold in one script, one round
    trip; no other gateway's eviction can fall between them), and every delete in the script that deletes
    (`delete`, `_PENDING_DELETE`) and every placeholder's rewrite in its (`_MARK`, `_ABANDON`): a tenant past
    `limit` bytes loses its own oldest records (deleted by the script), never the one just written. Records that
    expired (their last write `ttl_s` ago) leave the ledger as later writes find them; a record Redis evicted
    (maxmemory) counts until then, or until it is the oldest."""

    def __init__(self, client: Redis, prefix: str, ttl_s: int, limit: int, guard: _Guard) -> None:
        self._p, self._ttl_ms, self._ttl_s, self.limit, self._g = prefix, ttl_s * 1000, ttl_s, limit, guard
        self._delete = client.register_script(_DELETE)
        self._append = client.register_script(_APPEND)
        self._put = client.register_script(_PUT)
        self.set_script = client.register_script(_SET)
        self._complete = client.register_script(_COMPLETE)

    def keys(self, tenant: str) -> list[str]:
        return [f"{self._p}held:{{{tag(tenant)}}}", f"{self._p}sizes:{{{tag(tenant)}}}"]

    def hold_args(self, size: int, add: bool = False) -> list[Any]:
        return [size, "1" if add else "0", self._ttl_ms, self.limit, EVICT_MOST]

    async def put(self, tenant: str, key: str, fields: Mapping[str, Any]) -> None:
        """Hash `key` (the tenant's) written with `fields`, its expiry renewed, and held (`_PUT`)."""
        flat = [x for k, v in fields.items() for x in (k, v)]
        self.evicted(tenant, await self._g(self._put(keys=[*self.keys(tenant), key],
                                                      args=[*self.hold_args(_weight(fields)), self._ttl_s, *flat])))

    def set_call(self, tenant: str, key: str, data: bytes) -> tuple[list[str], list[Any]]:
        """`_SET`'s keys and arguments: string `key` (the tenant's) set to `data` with its expiry, and held."""
        return [*self.keys(tenant), key], [*self.hold_args(RECORD_BYTES + len(data)), self._ttl_s, data]

    async def set(self, tenant: str, key: str, data: bytes) -> None:
        keys, args = self.set_call(tenant, key, data)
        self.evicted(tenant, await self._g(self.set_script(keys=keys, args=args)))

    async def complete(self, tenant: str, pending: str, key: str, fields: Mapping[str, Any]) -> str:
        """`_COMPLETE`: "stored", or the placeholder's status ("cancelled", "failed") and nothing written."""
        got = await self._g(self._complete(keys=[*self.keys(tenant), key, pending],
                                           args=[*self.hold_args(_weight(fields)), self._ttl_s,
                                                 fields["r"], fields["t"], fields["p"]]))
        if isinstance(got, list):
            self.evicted(tenant, got)
            return "stored"
        return got.decode() if isinstance(got, bytes) else str(got)

    async def append(self, tenant: str, key: str, size: int, log_args: Sequence[Any]) -> bool:
        """Event log `key`'s append (`_APPEND`: `log_args` its first number, ended, TTL and events) and its `size`
        more bytes held, in one script; False, nothing written, when the log is gone."""
        evicted = await self._g(self._append(keys=[*self.keys(tenant), key],
                                             args=[*self.hold_args(size, add=True), *log_args]))
        if evicted is None:
            return False
        self.evicted(tenant, evicted)
        return True

    async def delete(self, tenant: str, keys: Sequence[str]) -> bool:
        """Records `keys` (the tenant's) deleted and forgotten in one script (`_DELETE`): whether one was there."""
        evicted = await self._g(self._delete(keys=[*self.keys(tenant), self.keys(tenant)[0], *keys],  # as `key`: one slot
                                             args=self.hold_args(-1)))
        if evicted is None:
            return False
        self.evicted(tenant, evicted)
        return True

    def evicted(self, tenant: str, evicted: Sequence[bytes]) -> None:
        if evicted:
            log.warning("tenant %s holds more than %d bytes in the store of %s (Redis): its %d oldest records "
                        "evicted", tenant, self.limit, self._g.names, len(evicted))


def _weight(fields: Mapping[str, Any]) -> int:
    """A hash's bytes in a tenant's ledger."""
    return RECORD_BYTES + sum(len(k) + len(v if isinstance(v, bytes) else str(v).encode()) for k, v in fields.items())


def _record_fields(record: StoredResponse) -> dict[str, bytes | str]:
    rest = dataclasses.asdict(record)
    turn = rest.pop("turn")
    rest.pop("size")
    return {"r": orjson.dumps(rest), "t": orjson.dumps(turn), "p": record.previous or ""}


def _record(raw: dict[bytes, bytes]) -> StoredResponse | None:
    """The stored response of hash `raw`; None (logged) for one unreadable, fields a newer aigrid added left out
    (record_fields.py)."""
    what = "a stored response in Redis"
    try:
        turn = orjson.loads(raw[b"t"])
    except (KeyError, orjson.JSONDecodeError) as e:
        log.error("%s is unreadable (its turn: %s): read as absent", what, e)
        return None
    return read_json_record(StoredResponse, raw.get(b"r", b""), what, turn=turn)


def _turn(raw: bytes, rid: str) -> list[dict[str, Any]] | None:
    """A stored response's turn (its `t`: chat messages) as the history read finds it; None, logged, for one
    unreadable (not JSON, not a list of objects)."""
    try:
        turn = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        turn = e
    if isinstance(turn, list) and all(isinstance(m, dict) for m in turn):
        return turn
    log.error("the turn of stored response %s in Redis is unreadable (%s): a history through it is broken there", rid,
              turn if isinstance(turn, Exception) else f"not a list of objects but {type(turn).__name__}")
    return None


_PENDING_JSON = ("error", "settings", "scopes")
"""Pending's fields its hash keeps as JSON ("": none, its default)."""


def _pending(raw: dict[bytes, bytes] | list[bytes]) -> Pending | None:
    """The placeholder of hash `raw`; None (logged) for one unreadable, fields a newer aigrid added left out."""
    if isinstance(raw, list):  # a script's HGETALL: field, value, field, value...
        raw = dict(zip(raw[::2], raw[1::2], strict=True))
    what = "a background placeholder in Redis"
    try:
        got: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
        got["created_at"] = int(got["created_at"])
        for name in _PENDING_JSON:
            if got.get(name):
                got[name] = orjson.loads(got[name])
            else:
                got.pop(name, None)
    except (KeyError, ValueError) as e:  # UnicodeDecodeError, JSONDecodeError: ValueErrors
        log.error("%s is unreadable (%s: %s): read as absent", what, type(e).__name__, e)
        return None
    return read_record(Pending, got, what)


class RedisResponses:
    """A ResponseBook (stores.py) in Redis: the records of `jurisdictions`, and the placeholders when
    `placeholders` (the `unbound` store)."""

    shared = True

    def __init__(self, client: Redis, prefix: str, jurisdictions: Sequence[str], placeholders: bool, ttl_s: int,
                 guard: _Guard, ledger: _Ledger) -> None:
        self._r, self._p, self._js, self._holds_pending = client, prefix, list(jurisdictions), placeholders
        self._ttl, self._g, self._ledger = ttl_s, guard, ledger
        self._history = client.register_script(_HISTORY)
        self._mark = client.register_script(_MARK)
        self._pending_delete = client.register_script(_PENDING_DELETE)
        self._abandon = client.register_script(_ABANDON)

    def record_key(self, jurisdiction: str, tenant: str, rid: str) -> str:
        return f"{self._p}resp:{jurisdiction}:{{{tag(tenant)}}}:{rid}"

    def pending_key(self, tenant: str, rid: str) -> str:
        return f"{self._p}pending:{{{tag(tenant)}}}:{rid}"

    async def lookup(self, tenant: str, rid: str) -> StoredResponse | Pending | None:
        async def read() -> list[Any]:
            pipe = self._r.pipeline(transaction=True)  # one snapshot: never neither while `complete` runs
            for j in self._js:
                pipe.hgetall(self.record_key(j, tenant, rid))
            if self._holds_pending:
                pipe.hgetall(self.pending_key(tenant, rid))
            return list(await pipe.execute())

        got = await self._g(read())
        for raw in got[: len(self._js)]:
            found = _record(raw) if raw else None
            if found is not None:
                return found
        return _pending(got[-1]) if self._holds_pending and got[-1] else None

    async def history(self, record: StoredResponse) -> list[dict[str, Any]]:
        ok, found, *ids = await self._g(self._history(keys=[self.record_key(record.jurisdiction, record.tenant, "")],
                                                      args=[record.previous or "", MAX_CHAIN]))
        if not ok:
            raise BrokenHistory(found.decode())
        turns = [record.turn]
        for raw, rid in zip(found, ids[0], strict=True):
            turn = _turn(raw, rid.decode())
            if turn is None:  # unreadable (logged): that turn is as gone
                raise BrokenHistory(rid.decode())
            turns.append(turn)
        return [message for turn in reversed(turns) for message in turn]

    async def put(self, record: StoredResponse, allowed: frozenset[str] | None) -> bool:
        if not may_store(record, allowed):
            return False
        await self._ledger.put(record.tenant, self.record_key(record.jurisdiction, record.tenant, record.id),
                               _record_fields(record))
        return True

    async def delete(self, tenant: str, rid: str) -> bool:
        if not self._js:
            return False
        return await self._ledger.delete(tenant, [self.record_key(j, tenant, rid) for j in self._js])

    async def pending_add(self, pending: Pending) -> None:
        key = self.pending_key(pending.tenant, pending.id)
        fields = {"id": pending.id, "tenant": pending.tenant, "model": pending.model,
                  "created_at": pending.created_at, "status": pending.status,
                  "error": orjson.dumps(pending.error) if pending.error is not None else "", "owner": pending.owner,
                  "key_id": pending.key_id, "settings": orjson.dumps(pending.settings),
                  "scopes": orjson.dumps(pending.scopes) if pending.scopes is not None else ""}
        await self._ledger.put(pending.tenant, key, fields)

    async def mark(self, tenant: str, rid: str, status: str,
                   error: dict[str, Any] | None = None) -> Pending | None:
        return await self._rewrite(self._mark, tenant, rid,
                                   [status, orjson.dumps(error) if error is not None else "", self._ttl])

    async def _rewrite(self, script: AsyncScript, tenant: str, rid: str, args: list[Any]) -> Pending | None:
        """`_MARK` or `_ABANDON` on the tenant's placeholder `rid` (`args` its ARGV[6:]), held again in its ledger."""
        got = await self._g(script(keys=[*self._ledger.keys(tenant), self.pending_key(tenant, rid)],
                                   args=[*self._ledger.hold_args(RECORD_BYTES), *args]))
        if got is None:
            return None
        self._ledger.evicted(tenant, got[1])
        return _pending(got[0])

    async def complete(self, record: StoredResponse, allowed: frozenset[str] | None) -> str:
        """The answer stored, its placeholder dropped and both in the ledger, in one script (both in this Redis)."""
        if not may_store(record, allowed):
            marked = await self.mark(record.tenant, record.id, "failed", dict(REFUSED))
            return "cancelled" if marked is not None and marked.status == "cancelled" else "refused"
        fields = _record_fields(record)
        pending, key = (self.pending_key(record.tenant, record.id),
                        self.record_key(record.jurisdiction, record.tenant, record.id))
        return await self._ledger.complete(record.tenant, pending, key, fields)

    async def cancelled(self, keys: list[tuple[str, str]]) -> dict[str, str]:
        async def read() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            for tenant, rid in keys:
                pipe.hget(self.pending_key(tenant, rid), "status")
            return list(await pipe.execute())

        statuses = await self._g(read())
        unkept = {s.encode() for s in UNKEPT}
        return {rid: status.decode() for (_, rid), status in zip(keys, statuses, strict=True) if status in unkept}

    async def pending_delete(self, tenant: str, rid: str) -> Pending | None:
        ledger = self._ledger.keys(tenant)
        got = await self._g(self._pending_delete(keys=[*ledger, ledger[0], self.pending_key(tenant, rid)],
                                                 args=self._ledger.hold_args(-1)))
        if got is None:
            return None
        self._ledger.evicted(tenant, got[1])
        return _pending(got[0])

    def owner_key(self, owner: str) -> str:
        return f"{self._p}owner:{owner}"

    async def heartbeat(self, owner: str, lease_s: float) -> None:
        await self._g(self._r.set(self.owner_key(owner), "1", px=max(1, round(lease_s * 1000))))

    async def abandon(self, pending: Pending, error: dict[str, Any]) -> Pending | None:
        if not pending.owner:
            return None
        if await self._g(self._r.exists(self.owner_key(pending.owner))):  # its owner alive
            return None
        return await self._rewrite(self._abandon, pending.tenant, pending.id,
                                   [pending.owner, orjson.dumps(error), self._ttl])

    def events_key(self, tenant: str, rid: str) -> str:
        return f"{self._p}events:{{{tag(tenant)}}}:{rid}"

    async def events_append(self, tenant: str, rid: str, first: int, events: list[str], ended: bool) -> None:
        key = self.events_key(tenant, rid)

        size = sum(len(e.encode()) + EVENT_BYTES for e in events) + (RECORD_BYTES if first == 0 else 0)
        if not await self._ledger.append(tenant, key, size, [first, "1" if ended else "0", self._ttl, *events]):
            raise ValueError(f"the event log of {rid} is gone (evicted, or expired)")

    async def events_read(self, tenant: str, rid: str, after: int,
                          limit: int = READ_MAX) -> tuple[list[str], bool] | None:
        key = self.events_key(tenant, rid)

        async def read() -> list[Any]:
            pipe = self._r.pipeline(transaction=True)  # one snapshot: the events and the log's last
            pipe.xrange(key, min=f"{after + 1}-0", max="+", count=limit)
            pipe.xrevrange(key, max="+", min="-", count=1)
            return list(await pipe.execute())

        got, last = await self._g(read())
        if not last:
            return None
        last_id, last_fields = last[0]
        ended = b"end" in last_fields and int(last_id.split(b"-")[0]) <= after + len(got)
        return [fields[b"e"].decode() for _, fields in got], ended

    async def events_next(self, tenant: str, rid: str) -> tuple[int, bool] | None:
        last: Any = await self._g(self._r.xrevrange(self.events_key(tenant, rid), max="+", min="-", count=1))
        if not last:
            return None
        last_id, last_fields = last[0]
        return int(last_id.split(b"-")[0]) + 1, b"end" in last_fields

    async def events_delete(self, tenant: str, rid: str) -> bool:
        return await self._ledger.delete(tenant, [self.events_key(tenant, rid)])


class RedisConversations:
    """A ConversationBook (stores.py) in Redis: each operation is ConversationStore's own, run on the one
    conversation read from Redis; a change is written back in a WATCH/MULTI/EXEC transaction."""

    def __init__(self, client: Redis, prefix: str, ttl_s: int, guard: _Guard, ledger: _Ledger) -> None:
        self._r, self._p, self._ttl, self._g, self._ledger = client, prefix, ttl_s, guard, ledger

    def key(self, tenant: str, cid: str) -> str:
        return f"{self._p}conv:{{{tag(tenant)}}}:{cid}"

    async def call(self, op: str, arg: list[Any]) -> Any:
        return await self._g(self._call(op, arg))

    async def _call(self, op: str, arg: list[Any]) -> Any:
        if op == "create":
            one = ConversationStore()
            public = one.apply(op, arg)
            conv = one.get(str(arg[0]["tenant"]), public["id"])
            assert conv is not None
            await self._ledger.set(conv.tenant, self.key(conv.tenant, conv.id), _dump(conv))
            return public
        tenant, cid = str(arg[0]), str(arg[1])
        key = self.key(tenant, cid)
        if op == "delete":
            return await self._ledger.delete(tenant, [key])
        if op in ("get", "head", "page", "item"):
            raw = await self._r.get(key)
            found = None if raw is None else _one(raw)
            return None if found is None else found.apply(op, arg)
        for _ in range(WRITE_TRIES):  # update, append, delete_item: read, change, write back unless changed meanwhile
            async with self._r.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        return None
                    found = _one(raw)
                    if found is None:  # unreadable (logged): absent
                        return None
                    result = found.apply(op, arg)
                    if result is False or (isinstance(result, dict) and {"full", "bound_elsewhere"} & result.keys()):
                        return result  # nothing changed (an append refused: too large, or bound elsewhere)
                    conv = found.get(tenant, cid)
                    assert conv is not None
                    keys, args = self._ledger.set_call(tenant, key, _dump(conv))
                    pipe.multi()  # the write and its hold (`_SET`) in the transaction: one script, one round trip
                    pipe.evalsha(self._ledger.set_script.sha, len(keys), *keys, *args)
                    evicted = (await pipe.execute())[0]
                    self._ledger.evicted(tenant, evicted)
                    return result
                except WatchError:
                    continue
                except NoScriptError:  # Redis lost its scripts (restarted, SCRIPT FLUSH): nothing was written
                    await self._r.script_load(_SET)
                    continue
        raise WatchError(f"conversation {cid} was changed by others {WRITE_TRIES} times while this change was made")


def _one(raw: bytes | str) -> ConversationStore | None:
    """A store holding just this conversation, to run ConversationStore's operations on it; None (logged) for one
    unreadable, fields a newer aigrid added left out (record_fields.py)."""
    conv = read_json_record(StoredConversation, raw, "a conversation in Redis")
    if conv is None:
        return None
    one = ConversationStore()
    one.create(conv)
    return one


def _dump(conv: StoredConversation) -> bytes:
    return orjson.dumps(dataclasses.asdict(conv))


class RedisStore:
    """One Redis URL of `gateway.stores`: the jurisdictions (and `unbound`) that name it, one client."""

    def __init__(self, client: Redis, grid: str, names: Sequence[str], ttl_s: int,
                 tenant_max_bytes: int | None = None) -> None:
        guard = _Guard(names)
        keys = key_prefix(grid)
        self._client = client
        ledger = _Ledger(client, keys, ttl_s, TENANT_MAX_BYTES if tenant_max_bytes is None else tenant_max_bytes,
                         guard)
        self.responses = RedisResponses(client, keys, [n for n in names if n != UNBOUND_STORE],
                                        UNBOUND_STORE in names, ttl_s, guard, ledger)
        self.conversations = RedisConversations(client, keys, ttl_s, guard, ledger)

    @classmethod
    def from_url(cls, url: str, grid: str, names: Sequence[str], ttl_s: int,
                 tenant_max_bytes: int | None = None, *, password_env: str | None = None) -> RedisStore:
        """Connections opened on first use; a burst waits (up to 2 s) for one of 64; a call that gets no
        answer within 1 s (one retry, on a fresh connection) is a StoreUnavailable. `password_env`:
        gateway.redis_password_env (redis_client.py)."""
        client = connect(url, password_env, pool_size=64, pool_wait_s=2, socket_timeout=1.0,
                         socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 1))
        return cls(client, grid, names, ttl_s, tenant_max_bytes)

    async def aclose(self) -> None:
        await self._client.aclose(close_connection_pool=True)
