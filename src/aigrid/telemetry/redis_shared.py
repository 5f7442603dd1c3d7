"""SharedState in Redis: one round trip (a pipeline) per sync interval per gateway, so the interval can be
short (`gateway.shared_sync_interval_s`, 20 ms by default; its cost: scripts/bench_shared_sync.py).

Keys, all under `aigrid:<grid>:` (redis_client.key_prefix: a grid whose name holds `{` or begins with `~`, `~` and
its name in hex, so that no grid's name makes a hash tag)
- `gateways`: sorted set gateway -> wall time of its last exchange: the gateways alive within `ttl_s`, whose
  ledgers count and whose number weighs the others' calibration observations (telemetry/store.py);
- `ledgers`: hash gateway -> its ledger, packed as JSON: `{"i": {endpoint: [requests pending a first token,
  their prompt tokens, requests decoding]}, "t": {tenant: requests in flight}, "q": {endpoint: [latest
  first token as [produced, arrived] or null, [[pending prompt's arrival, its tokens], ...]]}}` (wall
  times; telemetry/prefill_book.py). One field per gateway, read
  with one HGETALL; a gateway that stopped exchanging stops counting once it leaves `gateways` (within
  `ttl_s`), and the next exchange deletes its field;
- `circuits`: hash endpoint -> wall time a gateway last opened that endpoint's circuit;
- `{affinity}`: a stream of (key, endpoint) entries, capped at `affinity_max` entries; each gateway
  reads from where it left off, so affinity learned anywhere is known everywhere within one interval, and a new
  gateway replays it whole. Past the cap the tenant holding the most (shared.affinity_tag) loses its oldest, as in
  the affinity map itself: `{affinity}:held`, a sorted set tenant (its tag in hex) -> its entries, and
  `{affinity}:ids`, a sorted set of every tenant's entry ids by name (`<tag in hex>:<id, each number 20 digits>`:
  a tenant's oldest is the first of its range), kept by the script that adds them (_ADD_AFFINITY; an entry counted
  by none goes first where it is the oldest). The three keys share a hash tag, `{affinity}`: one Redis Cluster
  slot, and the script declares each (KEYS). Until the thirty-seventh session the stream was trimmed oldest first
  (XADD MAXLEN): one tenant's flood of sessions pushed every other tenant's entries out of a new gateway's start-up
  replay; until the thirty-eighth, the script touched a list per tenant (`affinity:ids:<tag>`) it did not declare,
  which Redis Cluster refuses, and the stream and its sorted set (`affinity`, `affinity:held`) hashed to different
  slots;
- `calibration`: a stream of the outcomes each gateway's TTFT calibration learned from (endpoint, modelled
  wait ahead, modelled own prefill, observed engine ms), capped at about `calibration_max` entries and read
  the same way: each gateway folds the others' into its own calibrations (core.calibration.observe).
"""

from __future__ import annotations

import json
import time
from typing import TypeGuard

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from aigrid.errors import SharedStateUnavailable
from aigrid.redis_client import connect, key_prefix
from aigrid.telemetry.prefill_book import Report, from_wire, to_wire
from aigrid.telemetry.shared import LocalReport, Observation, SharedView, affinity_tag
from aigrid.telemetry.store import merge_peer_reports


def _ledger(raw: bytes, part: str) -> dict[str, object]:
    """One part ("i": in-flight per endpoint, "t": per tenant, "q": pending prompts in time) of a gateway's
    packed ledger; empty for a value no gateway of this version writes (not JSON, not UTF-8, nested past the
    parser's depth: a RecursionError)."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    got = value.get(part) if isinstance(value, dict) else None
    return got if isinstance(got, dict) else {}


_ADD_AFFINITY = """
local stream, held, ids = KEYS[1], KEYS[2], KEYS[3]
local cap, gateway = tonumber(ARGV[1]), ARGV[2]
local function pad(n) return string.rep('0', 20 - #n) .. n end
for i = 3, #ARGV, 3 do
  local id = redis.call('XADD', stream, '*', 'k', ARGV[i + 1], 'e', ARGV[i + 2], 'g', gateway, 't', '1')
  local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
  redis.call('ZADD', ids, 0, ARGV[i] .. ':' .. pad(ms) .. '-' .. pad(seq))
  redis.call('ZINCRBY', held, 1, ARGV[i])
end
while redis.call('XLEN', stream) > cap do
  local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
  local counted = false
  for j = 1, #first[2], 2 do
    if first[2][j] == 't' then counted = true end
  end
  local most = counted and redis.call('ZREVRANGE', held, 0, 0)[1]
  if not counted then
    redis.call('XDEL', stream, first[1])
  elseif not most then
    redis.call('XTRIM', stream, 'MAXLEN', cap)
    break
  else
    local oldest = redis.call('ZRANGEBYLEX', ids, '[' .. most .. ':', '(' .. most .. ';', 'LIMIT', 0, 1)[1]
    if oldest then
      redis.call('ZREM', ids, oldest)
    end
    if not oldest or tonumber(redis.call('ZINCRBY', held, -1, most)) <= 0 then
      redis.call('ZREM', held, most)
    end
    if oldest then
      local ms, seq = string.match(oldest, ':0*(%d+)%-0*(%d+)$')
      redis.call('XDEL', stream, ms .. '-' .. seq)
    end
  end
end
return redis.call('XLEN', stream)
"""
"""The affinity entries of one exchange (KEYS: the stream, its tenants' counts, their entries' ids; ARGV: the cap,
the gateway, then each entry's tag in hex, key and endpoint) added to the stream, each marked `t` (counted); past
the cap the stream's oldest entry goes where it is one the script did not add (counted by no tenant), else the
tenant holding the most loses its oldest (ties: the greatest tag, the sorted set's order). Every key it touches is
one of KEYS, in one slot (`{affinity}`); a tag in hex holds no `:`, so one tenant's ids are exactly the names from
`<tag>:` to `<tag>;`, and an id's numbers padded to 20 digits sort as the stream orders them. Until the thirty-seventh
session's review (brief RV1) the old layout's entries were trimmed only once no counted one was left: a Redis
upgraded with a full stream deleted each new entry as it was added, and the gateways shared no affinity again."""


class RedisSharedState:
    def __init__(self, client: aioredis.Redis, grid: str, *, ttl_s: float = 5.0, affinity_max: int = 10_000,
                 calibration_max: int = 4096) -> None:
        self._r = client
        self._p = key_prefix(grid)
        affinity = f"{self._p}{{affinity}}"  # the stream and the script's keys: one hash tag, one Cluster slot
        self._affinity_keys = [affinity, f"{affinity}:held", f"{affinity}:ids"]
        self._ttl_ms = int(ttl_s * 1000)
        self._affinity_max = affinity_max
        self._add_affinity = client.register_script(_ADD_AFFINITY)
        self._affinity_cursor = "0-0"  # a new gateway replays the (capped) affinity history once
        self._calibration_max = calibration_max
        self._calibration_cursor = "0-0"  # and the (capped) calibration observations

    @classmethod
    def from_url(cls, url: str, grid: str, *, password_env: str | None = None) -> RedisSharedState:
        """`password_env`: gateway.redis_password_env (redis_client.py)."""
        return cls(connect(url, password_env, socket_timeout=1.0, socket_connect_timeout=1.0), grid)

    async def exchange(self, report: LocalReport) -> SharedView:
        p = self._p
        now = time.time()
        ledger = json.dumps({"i": report.inflight, "t": report.tenants, "q": to_wire(report.queues)},
                            separators=(",", ":"))
        try:
            pipe = self._r.pipeline(transaction=False)
            # in this order: a gateway's heartbeat is written before its ledger, and the live set is read after
            # the ledgers, so every ledger read belongs to a gateway in the set unless its heartbeat is stale
            pipe.zadd(f"{p}gateways", {report.gateway_id: now})
            pipe.zremrangebyscore(f"{p}gateways", "-inf", now - self._ttl_ms / 1000)
            pipe.hset(f"{p}ledgers", report.gateway_id, ledger)
            pipe.hgetall(f"{p}ledgers")
            pipe.zrange(f"{p}gateways", 0, -1)
            if report.circuits_opened:
                pipe.hset(f"{p}circuits", mapping={k: repr(v) for k, v in report.circuits_opened.items()})
            if report.affinity:
                entries = [x for key, endpoint in report.affinity
                           for x in (affinity_tag(key).encode().hex(), key, endpoint)]
                await self._add_affinity(keys=self._affinity_keys, client=pipe,
                                         args=[self._affinity_max, report.gateway_id, *entries])
            for endpoint, ahead_ms, own_ms, observed_ms in report.calibration:
                pipe.xadd(f"{p}calibration", {"e": endpoint, "a": repr(ahead_ms), "o": repr(own_ms),
                                              "y": repr(observed_ms), "g": report.gateway_id},
                          maxlen=self._calibration_max, approximate=True)
            pipe.hgetall(f"{p}circuits")
            pipe.xread({self._affinity_keys[0]: self._affinity_cursor}, count=self._affinity_max)
            pipe.xread({f"{p}calibration": self._calibration_cursor}, count=self._calibration_max)
            results = await pipe.execute()
            ledgers: dict[bytes, bytes] = results[3]
            alive = {_text(g) for g in results[4]}
            gone = [g for g in ledgers if _text(g) not in alive]
            if gone:  # a gateway that stopped exchanging: its ledger stops counting with its last heartbeat
                await self._r.hdel(f"{p}ledgers", *gone)
        except RedisError as e:
            raise SharedStateUnavailable(f"redis: {e}") from e
        inflight: dict[str, tuple[int, int, int]] = {}
        tenants: dict[str, int] = {}
        queues: list[Report] = []
        peers = 0
        for g, raw in ledgers.items():
            name = _text(g)
            if name == report.gateway_id or name not in alive:
                continue
            peers += 1
            for ep, load in _ledger(raw, "i").items():
                if isinstance(load, list) and len(load) == 3 and all(_count(x) for x in load):
                    prev = inflight.get(ep, (0, 0, 0))
                    inflight[ep] = (prev[0] + load[0], prev[1] + load[1], prev[2] + load[2])
            for tenant, n in _ledger(raw, "t").items():
                if _count(n):
                    tenants[tenant] = tenants.get(tenant, 0) + n
            queues.append(from_wire(_ledger(raw, "q")))
        circuits = {_text(ep): t for ep, raw in results[-3].items() if (t := _number(raw)) is not None}
        return SharedView(inflight, circuits, self._affinity_from(results[-2], report.gateway_id), tenants,
                          self._calibration_from(results[-1], report.gateway_id), peers,
                          merge_peer_reports(queues, now))

    def _affinity_from(self, raw: StreamRead, me: str) -> tuple[tuple[str, str], ...]:
        self._affinity_cursor, entries = _others(raw, me, self._affinity_cursor)
        return tuple((_text(f[b"k"]), _text(f[b"e"])) for f in entries if b"k" in f and b"e" in f)

    def _calibration_from(self, raw: StreamRead, me: str) -> tuple[Observation, ...]:
        self._calibration_cursor, entries = _others(raw, me, self._calibration_cursor)
        out: list[Observation] = []
        for f in entries:
            try:
                out.append((_text(f[b"e"]), float(f[b"a"]), float(f[b"o"]), float(f[b"y"])))
            except (KeyError, ValueError):
                continue  # an entry no gateway of this version writes
        return tuple(out)

    async def aclose(self) -> None:
        await self._r.aclose()


def _text(raw: bytes) -> str:
    """A name read from Redis (a gateway, an endpoint, an affinity key): bytes that are not UTF-8 are no gateway's,
    read with replacement characters (they match no endpoint nor gateway) rather than raised: raised, one such
    name anyone wrote into the shared keys failed every exchange of every gateway, for as long as it stayed."""
    return raw.decode("utf-8", "replace")


def _number(raw: bytes) -> float | None:
    """A circuit's opening time as a gateway writes it (repr of a float); None for anything else (raised, one
    value `abc` in the circuits hash, which nothing deletes, failed every exchange of every gateway for good)."""
    try:
        return float(raw)
    except ValueError:
        return None


def _count(x: object) -> TypeGuard[int]:
    """Whether a peer's in-flight count may be summed: an int, not negative (one peer's -5, summed, took 5 off
    another's real load; store.bounded_view bounds only the sum)."""
    return type(x) is int and x >= 0


StreamRead = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None
"""What XREAD answers for one stream: [(stream, [(entry id, fields), ...])], or None."""


def _others(raw: StreamRead, me: str, cursor: str) -> tuple[str, list[dict[bytes, bytes]]]:
    """The entries of a stream read written by other gateways (field `g`), and the new read cursor."""
    out: list[dict[bytes, bytes]] = []
    for _stream, entries in raw or []:
        for entry_id, fields in entries:
            cursor = entry_id.decode()
            if _text(fields.get(b"g", b"")) != me:
                out.append(fields)
    return cursor, out
