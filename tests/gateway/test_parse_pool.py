"""The gateway's parse threads (parse_pool.ParsePool, Gateway.parses): bounded, its own, joined when it closes."""

from __future__ import annotations

import asyncio
import threading

import pytest

from aigrid.gateway.parse_pool import THREAD_NAME, ParsePool


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
