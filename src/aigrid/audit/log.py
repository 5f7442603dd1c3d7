"""The async audit writer: requests enqueue records, one background task writes them in batches.

SQLite runs in a worker thread (asyncio.to_thread), so the event loop never waits on the disk. Nothing
starts in the constructor: `await log.start()` opens the database and starts the task, `await log.stop()`
drains the queue, signs a final checkpoint and closes. A full queue makes append() wait (backpressure)
rather than drop records: an audit trail with silent gaps is worse than a slower response. The wait is
bounded (`timeout`): then append() raises AuditUnavailable, so no request path hangs on a stalled disk;
`accepting()` lets the gateway refuse new requests (503) before serving them unaudited. The writer task is
supervised: an unexpected error is logged with its traceback and the writer restarts with the same batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aigrid.audit.record import AuditRecord
from aigrid.audit.store import AuditStore
from aigrid.errors import AuditUnavailable

log = logging.getLogger(__name__)


class AuditSink(Protocol):
    """Where a gateway's audit records go: this log, or (a gateway worker) its hub, the log's one writer."""

    async def start(self) -> None: ...

    def accepting(self) -> bool: ...

    async def append(self, record: AuditRecord, timeout: float | None = None) -> None: ...

    async def flush(self) -> None: ...

    async def stop(self) -> None: ...


class AuditLog:
    def __init__(self, path: Path, signing_key: Ed25519PrivateKey | None = None, *, checkpoint_every: int = 100,
                 batch_max: int = 256, queue_max: int = 10_000, retry_s: float = 1.0,
                 linger_s: float = 0.05) -> None:
        self.store = AuditStore(path, signing_key)
        self.checkpoint_every = checkpoint_every
        self.batch_max = batch_max
        self.retry_s = retry_s
        self.linger_s = linger_s
        """How long the writer lets a batch gather after its first record (one transaction and one thread
        hand-off per batch, not per record; the request never waits for it)."""
        self._queue_max = queue_max
        self._queue: asyncio.Queue[tuple[float, str]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: list[tuple[float, str]] = []
        """The batch being written: kept across a writer restart so nothing is lost."""
        self.restarts = 0

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("audit log already started")
        await asyncio.to_thread(self.store.open)
        self._queue = asyncio.Queue(self._queue_max)
        self._task = asyncio.create_task(self._supervise(), name="aigrid-audit-writer")

    def accepting(self) -> bool:
        """Is there room for a record now (writer running, queue not full)?"""
        return self._queue is not None and self._task is not None and not self._queue.full()

    async def append(self, record: AuditRecord, timeout: float | None = None) -> None:
        """Queue one record. It is serialised here, so a bad record fails in the caller, not the writer.
        With `timeout`, waits at most that long for room, then raises AuditUnavailable."""
        await self.append_entry(record.ts, record.body(), timeout)

    async def append_entry(self, ts: float, body: str, timeout: float | None = None) -> None:
        """Queue one record already serialised (a gateway worker's, handed over by its hub)."""
        if self._queue is None:
            raise AuditUnavailable("the audit log is not running")
        entry = (ts, body)
        try:
            async with asyncio.timeout(timeout):
                await self._queue.put(entry)
        except TimeoutError as e:
            raise AuditUnavailable(f"the audit log's queue stayed full for {timeout} s") from e

    async def flush(self) -> None:
        """Wait until every record appended so far is on disk."""
        if self._queue is not None:
            await self._queue.join()

    async def stop(self) -> None:
        if self._task is None:
            return
        await self.flush()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self._queue = None
        await asyncio.to_thread(self.store.checkpoint)
        await asyncio.to_thread(self.store.close)

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
                self._pending = [await queue.get()]
                if self.linger_s > 0 and queue.qsize() < self.batch_max - 1:
                    await asyncio.sleep(self.linger_s)
                while len(self._pending) < self.batch_max and not queue.empty():
                    self._pending.append(queue.get_nowait())
            await self._write(self._pending)
            done, self._pending = len(self._pending), []
            for _ in range(done):
                queue.task_done()

    async def _write(self, entries: list[tuple[float, str]]) -> None:
        while True:
            try:
                seq = await asyncio.to_thread(self.store.append, entries)
                break
            except (OSError, sqlite3.Error) as e:  # disk full, locked or gone: keep the batch, retry
                log.error("audit write failed, retrying in %.1fs: %s", self.retry_s, e)
            await asyncio.sleep(self.retry_s)
        if seq - self.store.last_checkpoint >= self.checkpoint_every:
            try:
                await asyncio.to_thread(self.store.checkpoint)
            except (OSError, sqlite3.Error) as e:  # the next batch tries again
                log.error("audit checkpoint failed: %s", e)

