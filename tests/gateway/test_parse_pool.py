"""The gateway's parse threads (parse_pool.ParsePool, Gateway.parses): bounded, its own, joined when it closes."""

from __future__ import annotations

import asyncio
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from aigrid.gateway.app import build_app, build_gateway
from aigrid.gateway.parse_pool import THREAD_NAME, ParsePool
from tests.gateway.conftest import _no_sleep, spec_in
from tests.gateway.fake_engine import FakeEngine


class _Seen(ParsePool):
    """A pool that notes the threads its calls ran on."""

    def __init__(self, threads: int) -> None:
        super().__init__(threads)
        self.seen: set[int | None] = set()


def _mine(pool: _Seen) -> list[threading.Thread]:
    """The threads alive that ran `pool`'s calls."""
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME) and t.is_alive()
            and t.ident in pool.seen]


async def test_parses_run_on_at_most_its_threads_and_close_joins_them() -> None:
    pool = _Seen(2)
    gate = threading.Event()
    running = 0
    most = 0
    lock = threading.Lock()

    def parse(n: int) -> int:
        nonlocal running, most
        pool.seen.add(threading.get_ident())
        with lock:
            running += 1
            most = max(most, running)
        gate.wait(10)
        with lock:
            running -= 1
        assert threading.current_thread().name.startswith(THREAD_NAME)
        return n * 2

    jobs = [asyncio.ensure_future(pool.run(parse, n)) for n in range(6)]
    while len(pool.seen) < 2:
        await asyncio.sleep(0.01)
    gate.set()
    assert await asyncio.gather(*jobs) == [0, 2, 4, 6, 8, 10]
    assert most == 2 and len(pool.seen) == 2  # bounded: the other four waited for a thread
    assert len(_mine(pool)) == 2
    pool.close()
    assert _mine(pool) == []  # joined: no thread outlives the pool
    assert await pool.run(parse, 7) == 14  # used again (a second lifespan): made again
    pool.close()
    assert _mine(pool) == []


def test_a_pool_without_threads_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one thread"):
        ParsePool(0)


async def test_the_lifespan_joins_the_parse_threads_even_where_a_stop_before_it_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(brief RV1, review of 2de7810b) The lifespan's stops ran one after the other and the parse pool's close came
    last: a stop before it that raised (the guard's, here) left the pool's threads running after the gateway. The
    close now runs whatever the stops before it did; the stop's error still ends the lifespan."""
    gw = build_gateway(spec_in(tmp_path), {e.id: FakeEngine(e.id) for e in spec_in(tmp_path).endpoints},
                       rng=random.Random(3), sleep=_no_sleep)
    app = build_app(gw)

    async def failing() -> None:
        raise RuntimeError("the guard's stop failed")

    # parse threads of other tests' gateways (built without a lifespan, never closed) may be alive in the same
    # process: the name is the pool's, not the gateway's, so only the threads this gateway made are watched (the
    # whole suite met one, the fresh clone of the thirty-seventh session)
    before = {t for t in threading.enumerate() if t.name.startswith(THREAD_NAME)}
    with pytest.raises(RuntimeError, match="guard's stop failed"):
        async with app.app.router.lifespan_context(app.app):
            assert await gw.parses.run(threading.current_thread) is not None
            made = {t for t in threading.enumerate() if t.name.startswith(THREAD_NAME)} - before
            assert made
            monkeypatch.setattr(gw.guard, "stop", failing)
    assert [t for t in made if t.is_alive()] == []


async def test_parses_waiting_take_their_turns_one_owner_after_another() -> None:
    """(brief ATK9, thirty-eighth session) The parses waiting for a thread were taken first come first served: a
    tenant that kept the line full of long bodies held another tenant's long body behind every one of its own (8
    clients of 570 KB bodies took another tenant's 60 KB chat requests from 0.49 s to 6.1 s, median). They are taken
    one owner after another now, each owner's oldest first; one cancelled while it waits (its client gone) never
    runs."""
    pool = ParsePool(1)
    gate = threading.Event()
    ran: list[str] = []

    def parse(name: str) -> str:
        if name == "a0":
            gate.wait(10)
        ran.append(name)
        return name

    first = asyncio.ensure_future(pool.run(parse, "a0", owner="flood"))
    while pool.running < 1:  # the one thread taken
        await asyncio.sleep(0.01)
    waiting = [asyncio.ensure_future(pool.run(parse, f"a{i}", owner="flood")) for i in range(1, 4)]
    gone = asyncio.ensure_future(pool.run(parse, "b0", owner="other"))
    others = [asyncio.ensure_future(pool.run(parse, f"b{i}", owner="other")) for i in range(1, 3)]
    await asyncio.sleep(0.01)  # every one waiting for the thread
    gone.cancel()
    gate.set()
    await asyncio.gather(first, *waiting, *others)
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert ran == ["a0", "a1", "b1", "a2", "b2", "a3"]  # first come first served: a0, a1, a2, a3, b1, b2
    pool.close()


def test_every_long_body_waits_in_its_tenants_turn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(brief ATK9) Each long body's parse and texts' walk, HTTP and the Responses WebSocket's message alike, waits
    for a thread as its tenant's: a WebSocket's waited as one owner for every tenant's sockets."""
    import json

    import websockets.sync.client

    from tests.gateway.socket_grid import MODEL, TENANT, served

    owners: list[str] = []
    run = ParsePool.run

    async def noted(self: ParsePool, fn: Any, *args: object, owner: str = "") -> Any:
        owners.append(owner)
        return await run(self, fn, *args, owner=owner)

    monkeypatch.setattr(ParsePool, "run", noted)
    create = {"type": "response.create", "model": MODEL, "input": "Say hello. " * 4_000, "max_output_tokens": 8}
    with served(tmp_path) as grid:
        with websockets.sync.client.connect(f"ws://127.0.0.1:{grid.port}/v1/responses",
                                            additional_headers=TENANT) as ws:
            ws.send(json.dumps(create))
            while (event := json.loads(ws.recv(timeout=30)))["type"] not in ("response.completed", "error"):
                pass
        assert event["type"] == "response.completed", event
        with grid.sync_client() as client:
            client.chat.completions.create(model=MODEL, max_tokens=8,
                                           messages=[{"role": "user", "content": "Say hello. " * 4_000}])
    assert owners and set(owners) == {"metered"}, owners  # the socket's message, its create's body, the chat's
