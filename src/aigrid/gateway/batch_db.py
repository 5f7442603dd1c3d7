"""The SQLite index of the Files and Batch APIs (file_store.py, batch_store.py): one database file under
`gateway.batch.dir`, which every gateway process on the machine opens (`aigrid up --workers N`), so each
worker sees every file and batch without the hub, and a batch's claim is taken by exactly one of them.

Every call runs in a thread (asyncio.to_thread), never on the event loop, with a connection of its own
(SQLite opens one in well under a millisecond); WAL lets readers go on while one process writes, and
`BEGIN IMMEDIATE` makes each read-modify-write one step across processes. The database is created on first
use, so building a gateway touches no disk.

Upgrades: the index says its format in SQLite's `user_version` (FORMAT; 0 is an index written before the stamp,
the same tables, stamped at the next open). An index of a later format (a newer aigrid's) is refused with a
message saying so (the gateway does not start: `gateway.batch.dir: ...`), not read as what it is not: before,
an older aigrid listed a newer one's Message Batches as OpenAI batches and their hidden files as the tenant's.
A change of these tables, or of what a row's JSON means to a reader of the previous format, takes a new FORMAT
and a migration here.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
DB_NAME = "index.sqlite3"
FORMAT = 1
"""The index's format (PRAGMA user_version): this version reads and writes 1 (0: before the stamp)."""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, purpose TEXT NOT NULL, filename TEXT NOT NULL,
    bytes INTEGER NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER, path TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS files_by_tenant ON files (tenant, created_at);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, created_at INTEGER NOT NULL, status TEXT NOT NULL,
    object TEXT NOT NULL, principal TEXT NOT NULL, headers TEXT NOT NULL, owner TEXT, heartbeat REAL);
CREATE INDEX IF NOT EXISTS batches_by_tenant ON batches (tenant, created_at);
CREATE INDEX IF NOT EXISTS batches_by_status ON batches (status);
"""
BUSY_S = 10.0
"""How long a call waits for another process's write to end before it fails (sqlite3.OperationalError)."""


class BatchDb:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / DB_NAME
        self._ready = False
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=BUSY_S, isolation_level=None)  # transactions as written
        db.row_factory = sqlite3.Row
        return db

    def create(self) -> None:
        """The folder and the index, once per process. Workers starting together (`--workers N`) create it at
        the same moment, and SQLite answers some of them "database is locked" at once, without waiting its busy
        timeout (switching a new file to WAL, creating the tables): 8 of 180 concurrent opens in a one-off count (2026-12-04), and a worker
        that failed its start was restarted (CI saw it). Such an answer is tried again for up to BUSY_S."""
        with self._lock:
            if self._ready:
                return
            self.root.mkdir(parents=True, exist_ok=True)
            deadline = time.monotonic() + BUSY_S
            while True:
                try:
                    self._init()
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) or time.monotonic() > deadline:
                        raise
                time.sleep(0.02)
            self._ready = True

    def _init(self) -> None:
        with closing(self._connect()) as db:
            found = int(db.execute("PRAGMA user_version").fetchone()[0])
            if found > FORMAT:
                raise sqlite3.DatabaseError(
                    f"{self.path}: written by a newer aigrid (batch index format {found}; this version writes "
                    f"{FORMAT}): run that aigrid or a later one (the folder is left as it is)")
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            if found != FORMAT:  # a new index, or one written before the stamp (the same tables)
                db.execute(f"PRAGMA user_version = {FORMAT}")

    def _call(self, fn: Callable[[sqlite3.Connection], T], write: bool) -> T:
        self.create()
        with closing(self._connect()) as db:
            if not write:
                return fn(db)
            db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(self._call, fn, False)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn` in one transaction that holds the database's write lock from its first read."""
        return await asyncio.to_thread(self._call, fn, True)
