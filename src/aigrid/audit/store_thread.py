"""The one thread an audit store's calls run on: a daemon, so a disk write that hangs cannot keep the process alive.

The loop's default executor would do the threading, but its threads are joined at interpreter exit: one
write stuck in the kernel (a dead NFS mount, a frozen disk) then hangs the gateway's shutdown for ever after
AuditLog.stop() has given up on it. This thread is a daemon, and it is the only one touching the store, so
the store (not thread-safe) never sees two calls at once. `call(fn)` returns an asyncio future that the loop
awaits; the thread starts on the first call.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")
_Job = tuple[Callable[[], object], asyncio.Future[object], asyncio.AbstractEventLoop]


class StoreThread:
    def __init__(self, name: str = "aigrid-audit-store") -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def call(self, fn: Callable[[], _T]) -> asyncio.Future[_T]:
        """Run `fn()` on the store's thread; the future resolves on the calling loop with its result or error."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
            self._thread.start()
        self._jobs.put((fn, future, loop))
        return future  # type: ignore[return-value]

    def close(self) -> None:
        """Let the thread end once the calls queued before this have run (a hung one: never, harmlessly)."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, future, loop = job
            try:
                outcome: tuple[object, BaseException | None] = (fn(), None)
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting loop, which logs or raises it
                outcome = (None, e)
            try:
                loop.call_soon_threadsafe(_settle, future, *outcome)
            except RuntimeError:  # the loop closed while the call ran (a write that hung past shutdown)
                pass


def _settle(future: asyncio.Future[object], result: object, error: BaseException | None) -> None:
    if future.done():  # cancelled by its awaiter meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
