"""The async audit writer: requests enqueue records, one background task writes them in batches.

SQLite runs on the store's own daemon thread (`StoreThread`), so the event loop never waits on the disk and
a write that hangs in the kernel cannot keep the process from exiting. Nothing
starts in the constructor: `await log.start()` opens the database and starts the task, `await log.stop()`
drains the queue, signs a final checkpoint and closes. A full queue makes append() wait (backpressure)
rather than drop records: an audit trail with silent gaps is worse than a slower response. The wait is
bounded (`timeout`): then append() raises AuditUnavailable, so no request path hangs on a stalled disk;
`accepting()` lets the gateway refuse new requests (503) before serving them unaudited. The writer task is
supervised: an unexpected error is logged with its traceback and the writer restarts with the same batch.
A failing disk is retried for as long as the log runs, but stop() waits at most `stop_wait_s` for the queue
to drain: then the records still unwritten are logged and counted as lost (`lost`), and shutdown goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aigrid.audit.chain import OPENED_UNSIGNED
from aigrid.audit.record import AuditRecord
from aigrid.audit.store import AuditStore
from aigrid.audit.store_thread import StoreThread
from aigrid.errors import AuditUnavailable

log = logging.getLogger(__name__)
CHECKPOINT_AFTER_S = 10.0
"""The default longest wait of a written record for its signed checkpoint."""
STOP_WAIT_S = 3.0
"""How long stop() waits for the writer to put the queued records on disk before it gives them up as lost
(and, only when a write hangs in its thread rather than failing, as long again for that write to return)."""
_T = TypeVar("_T")
_KEY_ID = re.compile(r"[0-9a-f]{16}")


class AuditSink(Protocol):
    """Where a gateway's audit records go: this log, or (a gateway worker) its hub, the log's one writer."""

    lost: int
    """Records accepted by append() and never written (given up by stop())."""

    async def start(self) -> None: ...

    def accepting(self) -> bool: ...

    def backlog(self) -> tuple[int, int]:
        """(records waiting to be written, the number at which accepting() turns false): the gateway's metrics."""
        ...

    async def append(self, record: AuditRecord, timeout: float | None = None) -> None: ...

    async def flush(self) -> None: ...

    async def stop(self) -> None: ...


class AuditLog:
    def __init__(self, path: Path, signing_key: Ed25519PrivateKey | None = None, *, checkpoint_every: int = 100,
                 checkpoint_after_s: float | None = CHECKPOINT_AFTER_S, batch_max: int = 256,
                 queue_max: int = 10_000, retry_s: float = 1.0, linger_s: float = 0.05,
                 stop_wait_s: float = STOP_WAIT_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = AuditStore(path, signing_key)
        self.checkpoint_every = checkpoint_every
        self.checkpoint_after_s = checkpoint_after_s
        """A record waits at most this long for its signed checkpoint, however few follow it (None: only every
        `checkpoint_every` records and at stop()). Without it a quiet gateway's last records stayed unsigned
        for hours: `aigrid audit verify` failed a fresh log (records, no checkpoint), and records appended to the
        file after the last checkpoint could not be told from the writer's."""
        self._clock = clock
        self._unsigned_since: float | None = None
        """When the oldest record not yet under a checkpoint was written (None: every record is signed)."""
        self.batch_max = batch_max
        self.retry_s = retry_s
        self.linger_s = linger_s
        """How long the writer lets a batch gather after its first record (one transaction and one thread
        hand-off per batch, not per record; the request never waits for it, nor does a flush() or stop(): a
        waiter cuts the linger short, as everything it waits for is queued already)."""
        self._waiters = 0
        """flush() and stop() calls waiting for the queue to be written (the writer does not linger for them)."""
        self._hurry = asyncio.Event()
        """Set while _waiters > 0: wakes a lingering writer. Made again by each start(), as the queue is: an event
        waited on belongs to that loop, and a log started again under another loop found it bound to the first."""
        self.stop_wait_s = stop_wait_s
        self.lost = 0
        """Records given up by stop() when the disk would not take them within stop_wait_s (logged)."""
        self._queue_max = queue_max
        self._queue: asyncio.Queue[tuple[float, str]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = StoreThread()
        self._store_call: asyncio.Future[Any] | None = None
        """The last store call handed to a worker thread (stop() waits for it before closing the store)."""
        self._pending: list[tuple[float, str]] = []
        """The batch being written: kept across a writer restart so nothing is lost."""
        self.restarts = 0

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("audit log already started")
        try:
            await self._in_thread(self.store.open)
        except BaseException:
            self._thread.close()
            raise
        self._queue = asyncio.Queue(self._queue_max)
        self._hurry = asyncio.Event()
        if self.store.found_unsigned is not None:
            self._queue.put_nowait(self._found_unsigned(*self.store.found_unsigned,
                                                        self.store.unchecked_checkpoints))
        self._task = asyncio.create_task(self._supervise(), name="aigrid-audit-writer")

    @staticmethod
    def _found_unsigned(first: int, last: int, unchecked: list[str] | None = None) -> tuple[float, str]:
        """The record that opens a log found with records after its last checkpoint (the last one signed with
        this writer's key over the stored record: AuditStore.open): the next checkpoint signs them with
        everything else, so the log says first that this writer does not vouch for them (verify prints it).
        Without it, records appended to a stopped gateway's file with correct hashes (no key needed) were
        signed by its next start as if it had written them. `unchecked`: the key ids named by later checkpoint
        rows that do not hold for this writer's key (a key rotation, or rows added to the file)."""
        log.warning("audit log opened with records %d..%d after its last checkpoint signed with its key: the writer "
                    "that wrote them stopped before signing them (a crash), another key signed them (a rotation), "
                    "or they were added to the file; run aigrid audit verify; a record saying so is written first",
                    first, last)
        message = (f"records {first}..{last} followed the last checkpoint signed with this writer's key when it "
                   "opened the log: it did not write them and does not vouch for them (a crash before their "
                   "checkpoint, or added to the file)")
        if unchecked:
            named = sorted({kid if _KEY_ID.fullmatch(kid) else "(not a key id)" for kid in unchecked})
            message += (f"; {len(unchecked)} checkpoint rows after it do not hold for this writer's key (they name "
                        f"{', '.join(named[:3])}{', ...' if len(named) > 3 else ''}: a key rotation, or rows added "
                        "to the file)")
        note = AuditRecord(ts=time.time(), request_id="", tenant="-", key_id="-", model="", outcome=OPENED_UNSIGNED,
                           extra={"route": "audit", "unsigned": [first, last], "message": message})
        return note.ts, note.body()

    def accepting(self) -> bool:
        """Is there room for a record now (writer running, queue not full)?"""
        return self._queue is not None and self._task is not None and not self._queue.full()

    def backlog(self) -> tuple[int, int]:
        """(records queued for the writer, not yet taken to be written; queue_max: full, accepting() is false)."""
        return (0 if self._queue is None else self._queue.qsize()), self._queue_max

    async def append(self, record: AuditRecord, timeout: float | None = None) -> None:
        """Queue one record. It is serialised here, so a bad record fails in the caller, not the writer.
        With `timeout`, waits at most that long for room, then raises AuditUnavailable."""
        await self.append_entry(record.ts, record.body(), timeout)

    async def append_entry(self, ts: float, body: str, timeout: float | None = None) -> None:
        """Queue one record already serialised (a gateway worker's, handed over by its hub). A body UTF-8
        cannot carry (a lone surrogate) raises UnicodeEncodeError here: in the writer it failed its whole batch
        again at every restart, and the log took no record more."""
        body.encode("utf-8")
        if self._queue is None:
            raise AuditUnavailable("the audit log is not running")
        entry = (ts, body)
        if not self._queue.full():  # room now: queued at once, no timer armed (put() would not wait either)
            self._queue.put_nowait(entry)
            return
        try:
            async with asyncio.timeout(timeout):
                await self._queue.put(entry)
        except TimeoutError as e:
            raise AuditUnavailable(f"the audit log's queue stayed full for {timeout} s") from e

    async def flush(self) -> None:
        """Wait until every record appended so far is on disk."""
        if self._queue is not None:
            await self._written(self._queue)

    async def _written(self, queue: asyncio.Queue[tuple[float, str]]) -> None:
        """Wait for `queue` to be written, the writer not lingering for more meanwhile."""
        self._waiters += 1
        self._hurry.set()
        try:
            await queue.join()
        finally:
            self._waiters -= 1
            if not self._waiters:
                self._hurry.clear()

    async def stop(self) -> None:
        """Drain the queue, sign a final checkpoint and close. A writer that cannot drain it within
        `stop_wait_s` (the disk failing) is stopped: the records it still held are logged and counted as lost."""
        if self._task is None:
            return
        await self._drain()
        # nothing queued from here on: an append while the writer is cancelled below is refused (AuditUnavailable,
        # which its caller logs and counts), not left in a queue no writer reads (lost with no word)
        self._queue = None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if await self._store_idle():
            await self._close_store()
        self._thread.close()

    async def _drain(self) -> None:
        """Wait for the queue to be written, at most stop_wait_s; then give up what is left (logged, counted)."""
        assert self._queue is not None
        try:
            async with asyncio.timeout(self.stop_wait_s):
                await self._written(self._queue)
        except TimeoutError:
            unwritten = len(self._pending) + self._queue.qsize()
            self.lost += unwritten
            self._pending = []
            log.error("audit log stopping: %d records still unwritten after %.1f s (is the disk failing?); "
                      "they are lost", unwritten, self.stop_wait_s)

    async def _store_idle(self) -> bool:
        """No store call left running in its thread (one the cancelled writer was waiting on), within
        stop_wait_s: the store is not thread-safe, so it is not checkpointed or closed under one."""
        call = self._store_call
        if call is None or call.done():
            return True
        await asyncio.wait([call], timeout=self.stop_wait_s)
        if not call.done():
            log.error("audit store left open: a write still hangs in its thread after %.1f s", self.stop_wait_s)
            return False
        return True  # its error, if any, was retrieved by the shield and logged by the writer

    async def _close_store(self) -> None:
        try:
            await self._in_thread(self.store.checkpoint)
        except (OSError, sqlite3.Error) as e:  # the tail stays unsigned: verify reports it
            log.error("audit log stopping: final checkpoint failed: %s", e)
        try:
            await self._in_thread(self.store.close)
        except (OSError, sqlite3.Error) as e:
            log.error("audit log stopping: close failed: %s", e)

    async def _in_thread(self, fn: Callable[[], _T]) -> _T:
        """`fn()` on the store's thread, the loop free meanwhile. The call is kept until it returns, even when
        its awaiter is cancelled (a thread cannot be), so stop() knows when the store is free again."""
        call = self._thread.call(fn)
        self._store_call = call
        return await asyncio.shield(call)

    async def _supervise(self) -> None:
        while True:
            try:
                await self._run()
            except Exception:  # a bug must not silently stop the audit trail: log it and restart
                self.restarts += 1
                log.exception("audit writer failed unexpectedly; restarting (restart %d)", self.restarts)
                await asyncio.sleep(self.retry_s)

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            if not self._pending:
                first = await self._next(queue)
                if first is None:  # the unsigned tail is due
                    await self._checkpoint()
                    continue
                self._pending = [first]
                if self.linger_s > 0 and queue.qsize() < self.batch_max - 1 and not self._hurry.is_set():
                    with contextlib.suppress(TimeoutError):  # the linger, cut short by a flush() or stop()
                        async with asyncio.timeout(self.linger_s):
                            await self._hurry.wait()
                while len(self._pending) < self.batch_max and not queue.empty():
                    self._pending.append(queue.get_nowait())
            await self._write(self._pending)
            done, self._pending = len(self._pending), []
            for _ in range(done):
                queue.task_done()

    async def _write(self, entries: list[tuple[float, str]]) -> None:
        while True:
            try:
                seq = await self._in_thread(functools.partial(self.store.append, entries))
                break
            except (OSError, sqlite3.Error) as e:  # disk full, locked or gone: keep the batch, retry
                log.error("audit write failed, retrying in %.1fs: %s", self.retry_s, e)
            await asyncio.sleep(self.retry_s)
        if self.store.signing_key is None:  # nothing to sign with: no checkpoint to try
            return
        if self._unsigned_since is None and seq > self.store.last_checkpoint:
            self._unsigned_since = self._clock()
        if seq - self.store.last_checkpoint >= self.checkpoint_every or self._due() <= 0:
            await self._checkpoint()

    def _due(self) -> float:
        """Seconds until the unsigned tail must be signed (inf: nothing waits, or no time limit)."""
        if self._unsigned_since is None or self.checkpoint_after_s is None or self.store.signing_key is None:
            return float("inf")
        return self._unsigned_since + self.checkpoint_after_s - self._clock()

    async def _next(self, queue: asyncio.Queue[tuple[float, str]]) -> tuple[float, str] | None:
        """The next record, or None once the unsigned tail is due before one comes."""
        due = self._due()
        if due == float("inf"):
            return await queue.get()
        if due <= 0:
            return None
        try:
            async with asyncio.timeout(due):
                return await queue.get()
        except TimeoutError:
            return None

    async def _checkpoint(self) -> None:
        try:
            await self._in_thread(self.store.checkpoint)
        except (OSError, sqlite3.Error) as e:  # tried again after the next batch, or checkpoint_after_s
            log.error("audit checkpoint failed: %s", e)
            self._unsigned_since = self._clock()
            return
        self._unsigned_since = None

