"""Abuse digests between gateways through a real Redis stream."""

from __future__ import annotations

import orjson
import pytest
import redis.asyncio as aioredis

from aigrid.errors import SharedStateUnavailable
from aigrid.security.firewall.abuse import RequestTraits, digest
from aigrid.security.firewall.abuse_redis import RedisAbuseRelay
from aigrid.security.firewall.abuse_shared import batch_to_wire


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


async def test_entries_no_gateway_wrote_are_skipped_counted_and_warned_once(
        redis_port: int, caplog: pytest.LogCaptureFixture) -> None:
    """A stream entry without `g`, or whose `b` is not JSON or not a batch, raised out of relay(): the other
    gateways' digests read in that exchange were lost. Now each is skipped, the rest counted, one warning."""
    now = [0.0]
    b = RedisAbuseRelay(aioredis.Redis(host="127.0.0.1", port=redis_port), "relay-malformed", clock=lambda: now[0])
    raw = aioredis.Redis(host="127.0.0.1", port=redis_port)
    key = "aigrid:relay-malformed:abuse"

    async def other_gateway(digests: list) -> None:
        await raw.xadd(key, {"g": b"a", "b": orjson.dumps(batch_to_wire(digests))})

    bad = [{"b": b"[]"}, {"g": b"x", "b": b"{not json"}, {"g": b"x", "b": b'{"a": 1}'}, {"g": b"x", "b": b"[1]"},
           {"g": b"x", "b": b'[["k", "p", "x", 0]]'}, {"g": b"x", "b": b'[[["k"], "p", "x", 0, 1]]'},
           {"g": b"x", "b": b'[["k", "p", "x", 0, 7]]'}, {"g": b"\xff", "b": b"[[1"}, {"g": b"x"}]
    try:
        assert await b.relay([]) == []
        await other_gateway(batch("k", 2))
        for fields in bad:
            await raw.xadd(key, fields)
        await other_gateway(batch("k", 3, 10))
        with caplog.at_level("WARNING", logger="aigrid.abuse"):
            assert await b.relay([]) == batch("k", 2) + batch("k", 3, 10)
            assert b.malformed == len(bad)
            for _ in range(50):  # a flood: counted, not a line each
                await raw.xadd(key, {"g": b"x", "b": b"nope"})
            await other_gateway(batch("k", 1, 20))
            assert await b.relay([]) == batch("k", 1, 20)
            assert b.malformed == len(bad) + 50
            warnings = [r.getMessage() for r in caplog.records if r.name == "aigrid.abuse"]
            assert len(warnings) == 1 and f"skipped {len(bad)} entries" in warnings[0]
            now[0] += 61  # the next warning tells how many since the last
            await raw.xadd(key, {"g": b"x"})
            assert await b.relay([]) == []
            warnings = [r.getMessage() for r in caplog.records if r.name == "aigrid.abuse"]
            assert len(warnings) == 2 and "skipped 51 entries" in warnings[1]
    finally:
        await raw.aclose()
        await b.aclose()


async def test_entries_skipped_inside_the_window_are_warned_after_it_with_none_since(
        redis_port: int, caplog: pytest.LogCaptureFixture) -> None:
    """Entries skipped inside the window after a warning were never logged when none came after it (`malformed`
    counted them): they are in the warning of the first read after the window, without a new one."""
    now = [0.0]
    b = RedisAbuseRelay(aioredis.Redis(host="127.0.0.1", port=redis_port), "relay-leftover", clock=lambda: now[0])
    raw = aioredis.Redis(host="127.0.0.1", port=redis_port)
    key = "aigrid:relay-leftover:abuse"
    try:
        assert await b.relay([]) == []
        with caplog.at_level("WARNING", logger="aigrid.abuse"):
            await raw.xadd(key, {"g": b"x"})
            assert await b.relay([]) == []  # warned: 1
            now[0] += 30
            for _ in range(3):
                await raw.xadd(key, {"g": b"x", "b": b"nope"})
            assert await b.relay([]) == [] and b.malformed == 4  # inside the window: counted, not warned
            now[0] += 20
            assert await b.relay([]) == []  # none since, still inside the window
            assert len([r for r in caplog.records if r.name == "aigrid.abuse"]) == 1
            now[0] += 11  # the window is over: the next read warns of the three, though none arrived since
            assert await b.relay([]) == []
            warnings = [r.getMessage() for r in caplog.records if r.name == "aigrid.abuse"]
            assert len(warnings) == 2 and "skipped 3 entries" in warnings[1]
            now[0] += 61
            assert await b.relay([]) == []  # nothing left: no warning
            assert len([r for r in caplog.records if r.name == "aigrid.abuse"]) == 2
    finally:
        await raw.aclose()
        await b.aclose()
