"""The gateway's own threads for parsing long request bodies (`Gateway.parses`): routes.read_json's parse of a body
over body_values.OFF_LOOP_BYTES, model_texts.collected's walk of its texts, and responses_socket's parse of a long
WebSocket message run here, never in asyncio's default pool. Until the thirty-seventh session they ran there
(asyncio.to_thread), beside the Files and Batch APIs' disk work (files_api, file_store, batch_*): a flood of long
bodies queued a file upload's writes behind its parses, and a batch's reads delayed the parses
(scripts/bench_parse_pool.py measures an upload under such a flood).

Owned by the Gateway object (never a module's), its threads made on first use and joined by close() (the app's
lifespan, last): a gateway built and never started holds none, and one that stopped holds none. A pool closed and
used again (a second lifespan of the same app, in tests) is made again.

Parses wait their turn by owner (the request's tenant), one owner's turn after another's, oldest first within each
(ParsePool.run's `owner`): until the thirty-eighth session (brief ATK9) they waited in one line, first come first
served, and a tenant that kept the line full of long bodies held every other tenant's long body behind all of
its own (8 clients of 570 KB bodies took another tenant's 60 KB chat requests from 0.49 s to 6.1 s, median, on a
loaded 2-core host). A parse still waiting when its request is cancelled (the client hung up) never runs."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from aigrid.turns import Turns

T = TypeVar("T")

PARSE_THREADS = 4
"""The most parses at once: each holds the interpreter's lock while it runs (orjson's parse, the values' walk), so
more threads add no speed; four keep one slow walk (up to 1.2 s at body_values' bounds) from holding up the short
parses behind it, and bound the threads a flood of long bodies can make."""

THREAD_NAME = "aigrid-parse"


class ParsePool:
    """At most `threads` parses at once, on threads of this pool's own; those waiting are taken one owner at a time,
    round the owners waiting (each owner's oldest first: aigrid.turns.Turns, as the shared embedder's batches)."""

    def __init__(self, threads: int = PARSE_THREADS) -> None:
        if threads < 1:
            raise ValueError(f"a parse pool needs at least one thread, not {threads}")
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._turns = Turns(threads)
        """A turn a thread; made again by close(), so a parse of a closed pool that ends later frees no thread of
        the pool made again (it hands on the turns it took)."""

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix=THREAD_NAME)
            return self._pool

    async def run(self, fn: Callable[..., T], *args: object, owner: str = "") -> T:
        """`fn(*args)` on one of this pool's threads, with the caller's context (as asyncio.to_thread), once its
        `owner`'s turn comes (called on the event loop)."""
        loop = asyncio.get_running_loop()
        turns = self._turns
        await turns.take(owner)
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        try:
            done: Future[T] = self._executor().submit(call)
        except BaseException:
            turns.hand_on()
            raise

        def ended(_: Future[T]) -> None:  # on the parse's thread, or where it was cancelled before it ran
            try:
                loop.call_soon_threadsafe(turns.hand_on)
            except RuntimeError:  # the loop closed meanwhile: nothing left to hand the thread to
                pass

        done.add_done_callback(ended)
        return await asyncio.wrap_future(done)  # cancelled while it waits for its thread: it never runs

    @property
    def running(self) -> int:
        """Parses given a thread and not yet done."""
        return self._turns.held

    def close(self) -> None:
        """Every thread joined (the parses still queued are cancelled: by then no request is being read)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        turns, self._turns = self._turns, Turns(self.threads)
        turns.cancel_waiting()
