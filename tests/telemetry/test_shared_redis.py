"""Two gateways share one picture through a REAL redis-server; Redis going away leaves them serving, stale."""

from __future__ import annotations

import asyncio
import codecs
import math
import random
import re
import socket
import time
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from aigrid.core.types import Circuit, Prediction
from aigrid.gateway.app import Gateway, build_app, build_gateway
from aigrid.spec.load import load_spec
from aigrid.telemetry.prefill_book import queue_of
from aigrid.telemetry.redis_shared import RedisSharedState
from aigrid.telemetry.shared import LocalReport, SharedView
from aigrid.telemetry.store import bounded_view, merge_peer_reports
from tests.gateway.fake_engine import FakeEngine
from tests.security.redis_server import redis_server

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.yaml"
CHAT = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}]}


async def _no_sleep(_: float) -> None:
    return None


def gateway(url: str, name: str, fakes: dict[str, FakeEngine]) -> Gateway:
    spec = load_spec(DEMO)
    return build_gateway(spec, fakes, rng=random.Random(1), sleep=_no_sleep,
                         shared=RedisSharedState.from_url(url, "test"), gateway_id=name)


@pytest.fixture
def fakes() -> dict[str, FakeEngine]:
    return {e.id: FakeEngine(e.id) for e in load_spec(DEMO).endpoints}


async def test_circuit_inflight_and_affinity_cross_gateways(tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    with redis_server(tmp_path) as port:
        url = f"redis://127.0.0.1:{port}/0"
        a, b = gateway(url, "gw-a", fakes), gateway(url, "gw-b", fakes)
        assert a.sync is not None and b.sync is not None
        # A sees nrt fail three times and opens its circuit; B has never sent nrt anything
        for _ in range(3):
            a.store.record_failure("nrt-smollm2", "connection refused")
        # A has two requests open at fra; A learned that prefix p1 lives at iad
        a.store.request_started("fra-smollm2")
        a.store.request_started("fra-smollm2")
        a.store.remember_affinity(("p1",), "iad-smollm2")
        assert await a.sync.sync_once() and await b.sync.sync_once()
        view = b.store.snapshot()
        assert view.state("nrt-smollm2").circuit is Circuit.OPEN
        assert view.state("fra-smollm2").running == 2
        assert view.prefix_owner["p1"] == "iad-smollm2"
        # B routes Tokyo around nrt because of what A saw
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(b)), base_url="http://b") as c:
            r = await c.post("/v1/chat/completions", json=CHAT, headers={"x-aigrid-client-location": "Tokyo"})
        assert r.status_code == 200 and r.headers["x-aigrid-site"] != "nrt"
        assert fakes["nrt-smollm2"].received == []
        # A finishes: B no longer counts A's requests
        a.store.request_finished("fra-smollm2")
        a.store.request_finished("fra-smollm2")
        await a.sync.sync_once()
        await b.sync.sync_once()
        assert b.store.snapshot().state("fra-smollm2").running == 0
        await a.sync.stop()
        await b.sync.stop()


async def test_redis_down_keeps_serving_stale_then_recovers(tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    (tmp_path / "r1").mkdir()
    (tmp_path / "r2").mkdir()
    with redis_server(tmp_path / "r1") as port:
        url = f"redis://127.0.0.1:{port}/0"
        gw = gateway(url, "gw-a", fakes)
        assert gw.sync is not None and await gw.sync.sync_once()
    # Redis is gone
    assert not await gw.sync.sync_once()
    gw.store.remember_affinity(("p2",), "fra-smollm2")
    assert not await gw.sync.sync_once()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://a") as c:
        r = await c.post("/v1/chat/completions", json=CHAT, headers={"x-aigrid-client-location": "Tokyo"})
        assert r.status_code == 200 and r.headers["x-aigrid-site"] == "nrt"
        health = (await c.get("/healthz")).json()
    assert health["shared_state"]["stale"] is True and health["shared_state"]["stale_since"] is not None
    sample = gw.metrics.registry.get_sample_value
    assert sample("aigrid_shared_sync_failures_total") == 2.0  # both failed exchanges counted
    assert sample("aigrid_shared_sync_seconds_count") == 1.0  # the one that succeeded, timed
    # Redis comes back on the same port: the gateway reconnects and delivers what it learned meanwhile
    with redis_server(tmp_path / "r2", port=port):
        assert await gw.sync.sync_once()
        assert gw.sync.status()["stale"] is False
        assert sample("aigrid_shared_sync_seconds_count") == 2.0 and sample("aigrid_shared_sync_seconds_sum") > 0
        other = gateway(url, "gw-b", fakes)
        assert other.sync is not None and await other.sync.sync_once()
        assert other.store.snapshot().prefix_owner["p2"] == "fra-smollm2"
        await other.sync.stop()
    await gw.sync.stop()


async def test_tenant_in_flight_counts_cross_gateways(tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    """The admission queues' fair sharing counts every gateway's requests (tolerance: one sync interval)."""
    with redis_server(tmp_path) as port:
        url = f"redis://127.0.0.1:{port}/0"
        a, b = gateway(url, "gw-a", fakes), gateway(url, "gw-b", fakes)
        assert a.sync is not None and b.sync is not None
        a.store.tenants_local.update({"acme": 3, "zen": 1})
        b.store.tenants_local.update({"acme": 1})
        assert await a.sync.sync_once() and await b.sync.sync_once() and await a.sync.sync_once()
        assert b.admission.inflight("acme") == 4 and b.admission.inflight("zen") == 1
        assert a.admission.inflight("acme") == 4 and a.admission.inflight("zen") == 1
        a.store.tenants_local.clear()
        assert await a.sync.sync_once() and await b.sync.sync_once()
        assert b.admission.inflight("acme") == 1 and b.admission.inflight("zen") == 0
        await a.sync.stop()
        await b.sync.stop()


async def test_calibration_learns_from_every_gateways_outcomes(tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    """Outcomes one gateway's calibration learned from reach the other's (the same pure update), never the
    sender's own again; a gateway that arrives later replays the capped stream once."""
    seen = Prediction(0.0, 0.0, 0.0, model_ahead_ms=10.0, model_own_ms=100.0)
    with redis_server(tmp_path) as port:
        url = f"redis://127.0.0.1:{port}/0"
        a, b = gateway(url, "gw-a", fakes), gateway(url, "gw-b", fakes)
        assert a.sync is not None and b.sync is not None
        for ms in (100, 130, 160):
            a.store.record_success("fra-smollm2", ms / 1000.0, seen)
        b.store.record_success("fra-smollm2", 0.3, seen)
        assert await a.sync.sync_once() and await b.sync.sync_once() and await a.sync.sync_once()
        assert b.store.calibration("fra-smollm2").n == 4 and a.store.calibration("fra-smollm2").n == 4
        assert await a.sync.sync_once() and a.store.calibration("fra-smollm2").n == 4  # nothing came back twice
        late = gateway(url, "gw-c", fakes)
        assert late.sync is not None and await late.sync.sync_once()
        assert late.store.calibration("fra-smollm2").n == 4
        # three gateways alive: each hears of two others, whose outcomes count a half each
        probe = RedisSharedState.from_url(url, "test")
        try:
            assert (await probe.exchange(LocalReport("gw-c", {}, {}, ()))).peers == 2
            assert (await probe.exchange(LocalReport("gw-d", {}, {}, ()))).peers == 3
        finally:
            await probe.aclose()
        for g in (a, b, late):
            assert g.sync is not None
            await g.sync.stop()


async def test_a_silent_gateways_ledger_stops_counting(tmp_path: Path) -> None:
    """Ledgers live in one hash read with one HGETALL; a gateway that stops exchanging leaves the live set
    after ttl_s, its ledger no longer counts and the next exchange deletes it; a value no gateway writes is
    skipped, not a failed exchange."""
    with redis_server(tmp_path) as port:
        url = f"redis://127.0.0.1:{port}/0"
        a = RedisSharedState.from_url(url, "test")
        b = RedisSharedState.from_url(url, "test")
        raw = aioredis.Redis.from_url(url)  # to age heartbeats and plant a value no gateway writes
        try:
            t = time.time()  # pending prompts in time (wall time: a peer's within an hour of it are read)
            queues = {"fra": ((t - 1.0, t - 2.0), ((t + 6.0, 100), (t + 6.5, 800)))}
            await a.exchange(LocalReport("gw-a", {"fra": (2, 900, 1)}, {}, (), {"acme": 3}, (), queues))
            view = await b.exchange(LocalReport("gw-b", {"fra": (1, 100, 0)}, {}, ()))
            assert view.peers == 1 and view.inflight == {"fra": (2, 900, 1)} and view.tenants == {"acme": 3}
            assert view.queues == queues
            await raw.hset("aigrid:test:ledgers", "gw-x", b"not json")
            await raw.zadd("aigrid:test:gateways", {"gw-x": time.time()})
            view = await b.exchange(LocalReport("gw-b", {}, {}, ()))
            assert view.peers == 2 and view.inflight == {"fra": (2, 900, 1)}
            await raw.zadd("aigrid:test:gateways", {"gw-a": 1.0, "gw-x": 1.0})  # both silent since 1970
            view = await b.exchange(LocalReport("gw-b", {}, {}, ()))
            assert view.peers == 0 and view.inflight == {} and view.tenants == {} and view.queues == {}
            assert set(await raw.hkeys("aigrid:test:ledgers")) == {b"gw-b"}
        finally:
            for client in (a, b, raw):
                await client.aclose()


async def test_a_peer_s_absurd_numbers_are_bounded_before_the_core_reads_them(
        tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    """S (twenty-second session): a scrape's numbers are bounded as they enter telemetry (store.bounded_stats), a
    peer's were not: whoever writes the shared Redis (or the hub) put 10**400 or -5 requests in flight at an
    endpoint, opened its circuit at 1e308 (open for good), fed the calibration 1e308 ms (its fit turned inf),
    queued prompts at NaN or with 10**400 tokens, and held tenant names and affinity keys of megabytes. They are
    bounded at the one entry, TelemetryStore.apply_shared (store.bounded_view)."""
    with redis_server(tmp_path) as port:
        url = f"redis://127.0.0.1:{port}/0"
        b = gateway(url, "gw-b", fakes)
        assert b.sync is not None
        raw = aioredis.Redis.from_url(url)
        now, huge = time.time(), "k" * 2_000_000
        try:
            big = 10**400
            ledger = (f'{{"i": {{"fra-smollm2": [{big}, 5, 0], "iad-smollm2": [-5, -9, -1]}},'
                      f' "t": {{"acme": {big}, "zen": -4, "{huge}": 1}},'
                      f' "q": {{"fra-smollm2": [[NaN, 1e308], [[NaN, 5], [{now + 1!r}, {big}], [1e308, 1], [{now + 2!r}, 7]]]}}}}')
            await raw.hset("aigrid:test:ledgers", "evil", ledger)
            await raw.zadd("aigrid:test:gateways", {"evil": now})
            await raw.hset("aigrid:test:circuits", mapping={"nrt-smollm2": "1e308", "iad-smollm2": "nan"})
            for a, o, y in (("1e308", "1", "1"), ("nan", "1", "1"), ("-1", "1", "1"), ("10", "100", "1e308")):
                await raw.xadd("aigrid:test:calibration", {"e": "fra-smollm2", "a": a, "o": o, "y": y, "g": "evil"})
            await raw.xadd("aigrid:test:{affinity}", {"k": huge, "e": "iad-smollm2", "g": "evil"})
            assert await b.sync.sync_once()
            view = b.store.snapshot()
            fra, iad = view.state("fra-smollm2"), view.state("iad-smollm2")
            assert 0 <= fra.running <= 1_000_000 and iad.running == 0
            assert view.state("nrt-smollm2").circuit is Circuit.CLOSED
            assert view.state("iad-smollm2").circuit is Circuit.CLOSED
            assert b.store.calibration("fra-smollm2").n == 0  # none of the four was a measurement
            pending = fra.prefill_queue.arrivals
            assert len(pending) == 2 and all(math.isfinite(at) and 0 < tokens <= 10_000_000 for at, tokens in pending)
            assert fra.prefill_queue.anchor_s is None
            assert huge not in view.prefix_owner
            assert b.admission.inflight("acme") == 1_000_000 and b.admission.inflight("zen") == 0
            assert huge not in b.store.tenants_remote
        finally:
            await raw.aclose()
            await b.sync.stop()


async def test_a_peer_s_negative_counts_do_not_cancel_another_peer_s(tmp_path: Path) -> None:
    """R3 (twenty-second session's review): the peers' in-flight counts were summed before they were bounded
    (store.bounded_view clamps the sum at 0), so one peer's -5 at an endpoint or for a tenant took 5 off another
    peer's real load there. A negative count (no gateway writes one) is left out, as not reported."""
    with redis_server(tmp_path) as port:
        url = f"redis://127.0.0.1:{port}/0"
        me, raw = RedisSharedState.from_url(url, "test"), aioredis.Redis.from_url(url)
        try:
            now = time.time()
            await raw.hset("aigrid:test:ledgers", mapping={
                "good": '{"i": {"fra-smollm2": [3, 100, 1]}, "t": {"acme": 2}, "q": {}}',
                "evil": '{"i": {"fra-smollm2": [-5, -9, -1]}, "t": {"acme": -4}, "q": {}}'})
            await raw.zadd("aigrid:test:gateways", {"good": now, "evil": now})
            view = await me.exchange(LocalReport("me", {}, {}, ()))
            assert view.peers == 2
            assert view.inflight == {"fra-smollm2": (3, 100, 1)}  # before: (-2, 91, 0)
            assert view.tenants == {"acme": 2}  # before: -2
        finally:
            await raw.aclose()
            await me.aclose()


async def test_one_peer_s_pending_prompts_neither_void_nor_crowd_out_another_s(tmp_path: Path) -> None:
    """R (twenty-second session's review): the peers' pending prompts were merged before they were bounded
    (store.bounded_view), so one peer's anchor at 1e308 won the merge (the latest anchor) and was then dropped
    with the other peers' valid one, and one peer's 10,000 arrivals filled the 4,096 cut on the merged list. Each
    peer's report is bounded first, to its share of the cut (store.merge_peer_reports)."""
    with redis_server(tmp_path) as port:
        url = f"redis://127.0.0.1:{port}/0"
        me, raw = RedisSharedState.from_url(url, "test"), aioredis.Redis.from_url(url)
        try:
            now = time.time()
            flood = ",".join(f"[{now + 1 + i / 1e5!r},1]" for i in range(10_000))
            await raw.hset("aigrid:test:ledgers", mapping={
                "evil": f'{{"i": {{}}, "t": {{}}, "q": {{"fra": [[1e308, 1e308], [{flood}]]}}}}',
                "good": f'{{"i": {{}}, "t": {{}}, "q": {{"fra": [[{now - 1!r}, {now - 2!r}], [[{now + 9!r}, 70]]]}}}}'})
            await raw.zadd("aigrid:test:gateways", {"evil": now, "good": now})
            anchor, arrivals = (await me.exchange(LocalReport("me", {}, {}, ()))).queues["fra"]
            assert anchor == (now - 1, now - 2)  # before: None (1e308 won, then was dropped)
            assert (now + 9, 70) in arrivals and len(arrivals) <= 4096  # before: cut away behind the 10,000
        finally:
            await raw.aclose()
            await me.aclose()


def test_a_busy_peer_keeps_the_pending_prompts_an_idle_peer_leaves_it() -> None:
    """Review (F3): merge_peer_reports gave each peer an equal share of the 4,096 pending prompts read per
    endpoint (62b39e4) whatever the others sent, so a busy peer's 3,000 beside an idle peer's one were cut to
    2,048 though all fit. A peer under an equal share keeps all of its own, the others share what it leaves;
    a flooding peer still gets no more than an equal share."""
    now = time.time()
    busy = {"fra": (None, tuple((now + i / 1e4, 10) for i in range(3000)))}
    idle = {"fra": (None, ((now, 5),))}
    assert len(merge_peer_reports([busy, idle], now)["fra"][1]) == 3001  # before: 2,049
    flood = {"fra": (None, tuple((now + i / 1e4, 1) for i in range(10_000)))}
    arrivals = merge_peer_reports([busy, idle, flood], now)["fra"][1]
    assert len(arrivals) == 1 + 2047 + 2047 and sum(n == 10 for _, n in arrivals) == 2047


def test_a_peer_s_anchor_ahead_of_now_does_not_void_the_prompts_still_on_their_way() -> None:
    """S (twenty-third session): a peer's anchor (its latest first token) was read anywhere within an hour of now,
    a circuit's opening no later than now: an anchor an hour ahead won every merge, and every gateway's own, and
    ruled out every prompt pending at the endpoint, those still on their way included, for that hour. A first
    token not yet produced is read as produced now (store._peer_past), as a circuit's opening is."""
    now = time.time()
    good = {"fra": ((now - 1, now - 2), ((now - 0.5, 40), (now + 0.2, 70)))}
    evil = {"fra": ((now + 3000, now + 3000), ())}
    anchor, arrivals = merge_peer_reports([good, evil], now)["fra"]
    assert anchor == (now, now)  # before: (now + 3000, now + 3000)
    queue = queue_of(anchor, arrivals, now)
    assert [tokens for _, tokens in queue.arrivals] == [70]  # before: none (NOTHING_PENDING)
    # the one entry of both backends' views (TelemetryStore.apply_shared) reads it so too
    view = bounded_view(SharedView(queues={"fra": ((now + 3000, now + 1), ((now + 0.2, 70),))}), now)
    assert view.queues["fra"][0] == (now, now)  # before: (now + 3000, now + 1)


async def test_a_value_no_gateway_writes_fails_no_exchange(tmp_path: Path) -> None:
    """S (twenty-third session): a value in the shared keys that no gateway writes raised out of the exchange (a
    circuit's time `abc`: ValueError; a name that is not UTF-8: UnicodeDecodeError; an affinity entry without its
    key: KeyError; a ledger nested 100,000 deep: RecursionError; a pending prompt's time 10**400: OverflowError),
    so one HSET by whoever writes the Redis failed every exchange of every gateway (a traceback each 20 ms, the
    shared view frozen and not marked stale) for as long as it stayed: the circuits hash is never cleaned. Each is
    left out, as not reported; the other peers' numbers are read."""
    with redis_server(tmp_path) as port:
        url = f"redis://127.0.0.1:{port}/0"
        me, raw = RedisSharedState.from_url(url, "test"), aioredis.Redis.from_url(url)
        try:
            now, big = time.time(), 10**400
            await raw.hset("aigrid:test:ledgers", mapping={
                "good": '{"i": {"fra": [3, 100, 1]}, "t": {}, "q": {}}', "deep": "[" * 100_000,
                "huge": f'{{"i": {{}}, "t": {{}}, "q": {{"fra": [[{big}, 1], [[{big}, 5]]]}}}}',
                b"\xfe": "{}"})
            await raw.zadd("aigrid:test:gateways", {"good": now, "deep": now, "huge": now, b"\xfe": now})
            await raw.hset("aigrid:test:circuits", mapping={"x": "abc", b"\xff": "1", "fra": repr(now - 1)})
            await raw.xadd("aigrid:test:{affinity}", {"e": "fra", "g": "evil"})
            await raw.xadd("aigrid:test:{affinity}", {"k": b"\xff", "e": "fra", "g": "evil"})
            await raw.xadd("aigrid:test:{affinity}", {"k": "p", "e": "fra", "g": "good"})
            view = await me.exchange(LocalReport("me", {}, {}, ()))  # before: raised (each value alone too)
            assert view.inflight == {"fra": (3, 100, 1)} and view.peers == 4
            assert view.circuits_opened["fra"] == now - 1 and "x" not in view.circuits_opened
            assert ("p", "fra") in view.affinity
            assert "fra" not in view.queues  # the 10**400 report left out whole
        finally:
            await raw.aclose()
            await me.aclose()


async def test_one_tenants_affinity_flood_leaves_the_others_entries_in_a_new_gateways_replay(tmp_path: Path) -> None:
    """(7 Dec 2026, thirty-seventh session, brief FIX9) The shared affinity stream is what a new gateway replays at
    its first exchange; it was trimmed oldest first (XADD MAXLEN), so one tenant's flood of sessions pushed every other
    tenant's entries out. Now the tenant holding the most (shared.affinity_tag) loses its oldest: the quiet tenant's
    entries stay, the noisy one's newest are kept, and the stream stays within its cap."""
    quiet = tuple((f"quiet.k{i}", "fra-smollm2") for i in range(3))
    noisy = tuple((f"noisy.k{i}", "iad-smollm2") for i in range(2_000))
    with redis_server(tmp_path) as port:
        url = f"redis://127.0.0.1:{port}/0"
        writer = RedisSharedState(aioredis.Redis.from_url(url), "test", affinity_max=100)
        late = RedisSharedState(aioredis.Redis.from_url(url), "test", affinity_max=100)
        raw = aioredis.Redis.from_url(url)
        try:
            await writer.exchange(LocalReport("gw-a", {}, {}, quiet))
            for i in range(0, len(noisy), 70):  # in several exchanges, as a sync interval's reports come
                await writer.exchange(LocalReport("gw-a", {}, {}, noisy[i:i + 70]))
            replay = (await late.exchange(LocalReport("gw-new", {}, {}, ()))).affinity
            assert set(quiet) <= set(replay), replay[:5]  # before: none of them (trimmed with the oldest 1,900)
            assert replay == quiet + noisy[-97:], replay[:5]
            assert await raw.xlen("aigrid:test:{affinity}") == 100
            assert (await late.exchange(LocalReport("gw-new", {}, {}, ()))).affinity == ()
            await writer.exchange(LocalReport("gw-a", {}, {}, (("quiet.k3", "fra-smollm2"),)))
            assert (await late.exchange(LocalReport("gw-new", {}, {}, ()))).affinity == (("quiet.k3", "fra-smollm2"),)
        finally:
            for closing in (writer, late):
                await closing.aclose()
            await raw.aclose()


async def test_an_upgraded_gateways_affinity_entries_outlast_a_full_stream_of_the_old_layout(tmp_path: Path) -> None:
    """(7 Dec 2026, thirty-seventh session, brief RV1) A Redis upgraded from the old layout holds a stream full of
    entries no tenant's count holds (an older gateway's XADD MAXLEN). 3877a705's script trimmed the tenant holding
    the most while such entries were left: each new entry was deleted as soon as it was added, and no gateway learned
    another's affinity again. The old layout's entries now go first, oldest first; a new gateway replays the new
    entries, and the stream stays within its cap."""
    new = tuple((f"t.k{i}", "fra-smollm2") for i in range(3))
    with redis_server(tmp_path) as port:
        url = f"redis://127.0.0.1:{port}/0"
        raw = aioredis.Redis.from_url(url)
        writer = RedisSharedState(aioredis.Redis.from_url(url), "test", affinity_max=100)
        late = RedisSharedState(aioredis.Redis.from_url(url), "test", affinity_max=100)
        try:
            for i in range(100):  # what an older gateway wrote: the stream at its cap, no tenant's count
                await raw.xadd("aigrid:test:{affinity}", {"k": f"old.k{i}", "e": "iad-smollm2", "g": "gw-old"})
            await writer.exchange(LocalReport("gw-a", {}, {}, new))
            replay = (await late.exchange(LocalReport("gw-new", {}, {}, ()))).affinity
            assert replay[-3:] == new, replay[-5:]  # before: none of them (each deleted as it was added)
            assert replay[0] == ("old.k3", "iad-smollm2")  # the old layout's oldest three went
            assert await raw.xlen("aigrid:test:{affinity}") == 100
        finally:
            for closing in (writer, late):
                await closing.aclose()
            await raw.aclose()


def _monitored(line: bytes) -> tuple[str, list[bytes]]:
    """A MONITOR line (`+1.2 [0 lua] "ZADD" "k" ...`) as who ran it (`lua`, or the client's address) and its words."""
    who = line.split(b"[", 1)[1].split(b"]", 1)[0].split(b" ", 1)[1].decode()
    words = [codecs.escape_decode(w)[0] for w in re.findall(rb'"((?:[^"\\]|\\.)*)"', line)]
    return who, words


async def test_the_affinity_script_touches_only_the_keys_it_declares(tmp_path: Path) -> None:
    """(7 Dec 2026, thirty-eighth session, brief FIX10) A script must name every key it touches in KEYS (Redis's rule;
    Redis Cluster refuses a key of another slot, and routes a script by its KEYS): the affinity script pushed each
    entry's id onto a list per tenant (`affinity:ids:<tag>`) and popped the most-holding tenant's, neither declared.
    Every command the script runs, watched with MONITOR while a flood trims the stream, touches only its KEYS
    (COMMAND GETKEYS names each command's keys)."""
    quiet = tuple((f"quiet.k{i}", "fra-smollm2") for i in range(3))
    noisy = tuple((f"noisy.k{i}", "iad-smollm2") for i in range(30))
    with redis_server(tmp_path) as port:
        url = f"redis://127.0.0.1:{port}/0"
        writer = RedisSharedState(aioredis.Redis.from_url(url), "test", affinity_max=10)
        raw = aioredis.Redis.from_url(url)
        watch = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            watch.sendall(b"MONITOR\r\n")
            assert watch.recv(5) == b"+OK\r\n"
            await writer.exchange(LocalReport("gw-a", {}, {}, quiet))
            await writer.exchange(LocalReport("gw-a", {}, {}, noisy))
            await raw.echo("the end")
            seen = b""
            while b'"the end"' not in seen:
                seen += watch.recv(65536)
            declared: set[bytes] = set()
            touched: list[tuple[bytes, set[bytes]]] = []
            for line in seen.split(b"\r\n"):
                if not line.startswith(b"+") or b"[" not in line:
                    continue
                who, words = _monitored(line)
                if who != "lua" and words[0].upper() in (b"EVALSHA", b"EVAL"):
                    declared |= set(words[3:3 + int(words[2])])
                elif who == "lua":
                    touched.append((words[0], {k if isinstance(k, bytes) else k.encode() for k in await raw.command_getkeys(*words)}))
            assert [(c, keys) for c, keys in touched if not keys <= declared] == [], declared
            assert {c.upper() for c, _ in touched} >= {b"XADD", b"XDEL"}, touched  # the flood trimmed the stream
            assert await raw.xlen("aigrid:test:{affinity}") == 10
        finally:
            watch.close()
            await writer.aclose()
            await raw.aclose()


@pytest.mark.parametrize("grid, stream", [("test", "aigrid:test:{affinity}"), ("g{", "aigrid:~677b:{affinity}")])
async def test_the_gateways_share_affinity_through_a_redis_cluster(tmp_path: Path, grid: str, stream: str) -> None:
    """(7 Dec 2026, thirty-eighth session, brief FIX10) On a Redis Cluster (here one node serving every slot) a
    script's keys must share a slot: the affinity stream and its tenants' counts (`affinity`, `affinity:held`) did
    not (CROSSSLOT: every exchange that carried affinity failed, and the gateways stopped sharing their state). Their
    hash tag `{affinity}` puts them in one; a flood still trims the noisy tenant's oldest entries. The keys are those
    docs/reliability.md names, under redis_client.key_prefix (a grid named with `{`: `~` and its name in hex; review
    RV3)."""
    quiet = tuple((f"quiet.k{i}", "fra-smollm2") for i in range(3))
    noisy = tuple((f"noisy.k{i}", "iad-smollm2") for i in range(200))
    with socket.socket() as bus:  # the cluster's bus port (by default the port + 10,000: past 65,535 for most)
        bus.bind(("127.0.0.1", 0))
        bus_port = bus.getsockname()[1]
    clustered = ["--cluster-enabled", "yes", "--cluster-port", str(bus_port)]
    with redis_server(tmp_path, args=lambda p: ["--port", str(p), *clustered]) as port:
        url = f"redis://127.0.0.1:{port}/0"
        raw = aioredis.Redis.from_url(url)
        writer = RedisSharedState(aioredis.Redis.from_url(url), grid, affinity_max=50)
        late = RedisSharedState(aioredis.Redis.from_url(url), grid, affinity_max=50)
        try:
            await raw.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            for _ in range(100):
                if b"cluster_state:ok" in await raw.execute_command("CLUSTER", "INFO"):
                    break
                await asyncio.sleep(0.05)
            await writer.exchange(LocalReport("gw-a", {}, {}, quiet))
            for i in range(0, len(noisy), 70):
                await writer.exchange(LocalReport("gw-a", {}, {}, noisy[i:i + 70]))
            replay = (await late.exchange(LocalReport("gw-new", {}, {}, ()))).affinity
            assert replay == quiet + noisy[-47:], replay[:5]
            assert await raw.xlen(stream) == 50 and await raw.exists(f"{stream}:held", f"{stream}:ids") == 2
        finally:
            for closing in (writer, late):
                await closing.aclose()
            await raw.aclose()
