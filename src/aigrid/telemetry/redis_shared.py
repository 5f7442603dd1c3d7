"""SharedState in Redis: one round trip (a pipeline) per sync interval per gateway.

Keys, all under `aigrid:<grid>:`
- `inflight:<gateway>`: hash endpoint -> "pending,prompt tokens,decoding" of its open requests, expiring after `ttl_s`, so a gateway that dies stops
  counting within seconds;
- `tenants:<gateway>`: hash tenant -> its requests in flight from that gateway, expiring the same way;
- `gateways`: sorted set gateway -> wall time of its last exchange: the gateways alive within `ttl_s`,
  whose count weighs the others' calibration observations (telemetry/store.py);
- `circuits`: hash endpoint -> wall time a gateway last opened that endpoint's circuit;
- `affinity`: a stream of (key, endpoint) entries, capped at about `affinity_max` entries; each gateway
  reads from where it left off, so affinity learned anywhere is known everywhere within one interval;
- `calibration`: a stream of the outcomes each gateway's TTFT calibration learned from (endpoint, modelled
  wait ahead, modelled own prefill, observed engine ms), capped at about `calibration_max` entries and read
  the same way: each gateway folds the others' into its own calibrations (core.calibration.observe).
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from aigrid.errors import SharedStateUnavailable
from aigrid.telemetry.shared import LocalReport, Observation, SharedView


def _load(raw: bytes) -> tuple[int, int, int] | None:
    """One gateway's "pending,tokens,decoding" entry (a bare count from an older gateway is all decoding);
    None for a value no gateway writes."""
    try:
        parts = [int(x) for x in raw.decode().split(",")]
    except ValueError:
        return None
    if len(parts) == 1:
        return (0, 0, parts[0])
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None


class RedisSharedState:
    def __init__(self, client: aioredis.Redis, grid: str, *, ttl_s: float = 5.0, affinity_max: int = 10_000,
                 calibration_max: int = 4096) -> None:
        self._r = client
        self._p = f"aigrid:{grid}:"
        self._ttl_ms = int(ttl_s * 1000)
        self._affinity_max = affinity_max
        self._affinity_cursor = "0-0"  # a new gateway replays the (capped) affinity history once
        self._calibration_max = calibration_max
        self._calibration_cursor = "0-0"  # and the (capped) calibration observations

    @classmethod
    def from_url(cls, url: str, grid: str) -> RedisSharedState:
        client = aioredis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        return cls(client, grid)

    async def exchange(self, report: LocalReport) -> SharedView:
        p = self._p
        try:
            pipe = self._r.pipeline(transaction=False)
            key = f"{p}inflight:{report.gateway_id}"
            pipe.delete(key)
            if report.inflight:
                pipe.hset(key, mapping={k: ",".join(map(str, v)) for k, v in report.inflight.items()})
            pipe.pexpire(key, self._ttl_ms)
            tkey = f"{p}tenants:{report.gateway_id}"
            pipe.delete(tkey)
            if report.tenants:
                pipe.hset(tkey, mapping={k: str(v) for k, v in report.tenants.items()})
            pipe.pexpire(tkey, self._ttl_ms)
            now = time.time()
            pipe.zadd(f"{p}gateways", {report.gateway_id: now})
            pipe.zremrangebyscore(f"{p}gateways", "-inf", now - self._ttl_ms / 1000)
            if report.circuits_opened:
                pipe.hset(f"{p}circuits", mapping={k: repr(v) for k, v in report.circuits_opened.items()})
            for prefix, endpoint in report.affinity:
                pipe.xadd(f"{p}affinity", {"k": prefix, "e": endpoint, "g": report.gateway_id},
                          maxlen=self._affinity_max, approximate=True)
            for endpoint, ahead_ms, own_ms, observed_ms in report.calibration:
                pipe.xadd(f"{p}calibration", {"e": endpoint, "a": repr(ahead_ms), "o": repr(own_ms),
                                              "y": repr(observed_ms), "g": report.gateway_id},
                          maxlen=self._calibration_max, approximate=True)
            await pipe.execute()
            others = [k async for k in self._r.scan_iter(match=f"{p}inflight:*", count=100)]
            peers = [k async for k in self._r.scan_iter(match=f"{p}tenants:*", count=100)]
            pipe = self._r.pipeline(transaction=False)
            for k in others:
                pipe.hgetall(k)
            for k in peers:
                pipe.hgetall(k)
            pipe.hgetall(f"{p}circuits")
            pipe.zcard(f"{p}gateways")
            pipe.xread({f"{p}affinity": self._affinity_cursor}, count=self._affinity_max)
            pipe.xread({f"{p}calibration": self._calibration_cursor}, count=self._calibration_max)
            results = await pipe.execute()
        except RedisError as e:
            raise SharedStateUnavailable(f"redis: {e}") from e
        inflight: dict[str, tuple[int, int, int]] = {}
        mine = f"{p}inflight:{report.gateway_id}".encode()
        for k, h in zip(others, results[: len(others)], strict=True):
            if (k if isinstance(k, bytes) else k.encode()) == mine:
                continue
            for ep, raw in h.items():
                load = _load(raw)
                if load is None:
                    continue
                prev = inflight.get(ep.decode(), (0, 0, 0))
                inflight[ep.decode()] = (prev[0] + load[0], prev[1] + load[1], prev[2] + load[2])
        tenants: dict[str, int] = {}
        mine = f"{p}tenants:{report.gateway_id}".encode()
        for k, h in zip(peers, results[len(others): len(others) + len(peers)], strict=True):
            if (k if isinstance(k, bytes) else k.encode()) == mine:
                continue
            for tenant, raw in h.items():
                if raw.isdigit():
                    tenants[tenant.decode()] = tenants.get(tenant.decode(), 0) + int(raw)
        circuits = {ep.decode(): float(t) for ep, t in results[len(others) + len(peers)].items()}
        alive = int(results[-3]) - 1  # this gateway is one of them
        return SharedView(inflight, circuits, self._affinity_from(results[-2], report.gateway_id), tenants,
                          self._calibration_from(results[-1], report.gateway_id), max(alive, 0))

    def _affinity_from(self, raw: StreamRead, me: str) -> tuple[tuple[str, str], ...]:
        self._affinity_cursor, entries = _others(raw, me, self._affinity_cursor)
        return tuple((f[b"k"].decode(), f[b"e"].decode()) for f in entries)

    def _calibration_from(self, raw: StreamRead, me: str) -> tuple[Observation, ...]:
        self._calibration_cursor, entries = _others(raw, me, self._calibration_cursor)
        out: list[Observation] = []
        for f in entries:
            try:
                out.append((f[b"e"].decode(), float(f[b"a"]), float(f[b"o"]), float(f[b"y"])))
            except (KeyError, ValueError):
                continue  # an entry no gateway of this version writes
        return tuple(out)

    async def aclose(self) -> None:
        await self._r.aclose()


StreamRead = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None
"""What XREAD answers for one stream: [(stream, [(entry id, fields), ...])], or None."""


def _others(raw: StreamRead, me: str, cursor: str) -> tuple[str, list[dict[bytes, bytes]]]:
    """The entries of a stream read written by other gateways (field `g`), and the new read cursor."""
    out: list[dict[bytes, bytes]] = []
    for _stream, entries in raw or []:
        for entry_id, fields in entries:
            cursor = entry_id.decode()
            if fields.get(b"g", b"").decode() != me:
                out.append(fields)
    return cursor, out
