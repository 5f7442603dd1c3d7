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

Format 2 (the nineteenth session) adds `jurisdictions` to `files` and `batches`: the jurisdictions the key that
made the row may use (a sorted JSON list; NULL: a key that may use every one), which decide which keys of the
tenant see it (`visible_to`: docs/batches.md, "Where files live, and residency"). The migration (`_migrate`, in
the one transaction that opens the index, so workers opening it together migrate it once) adds the columns and
fills them where the index knows the maker: a batch from the key recorded with it (`principal`, its scopes), its
output and error files (a message batch's requests too) from their batch. An upload of before has no record of
its key: NULL, seen by the tenant's unrestricted keys only, never by a narrowed key it may not belong to.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

import orjson

T = TypeVar("T")
log = logging.getLogger("aigrid.batches")
DB_NAME = "index.sqlite3"
FORMAT = 2
"""The index's format (PRAGMA user_version): this version reads 0 to 2 and writes 2 (0: before the stamp; 1:
without `jurisdictions`, added by `_migrate`)."""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, purpose TEXT NOT NULL, filename TEXT NOT NULL,
    bytes INTEGER NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER, path TEXT NOT NULL,
    jurisdictions TEXT);
CREATE INDEX IF NOT EXISTS files_by_tenant ON files (tenant, created_at);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, created_at INTEGER NOT NULL, status TEXT NOT NULL,
    object TEXT NOT NULL, principal TEXT NOT NULL, headers TEXT NOT NULL, owner TEXT, heartbeat REAL,
    jurisdictions TEXT);
CREATE INDEX IF NOT EXISTS batches_by_tenant ON batches (tenant, created_at);
CREATE INDEX IF NOT EXISTS batches_by_status ON batches (status);
"""
BUSY_S = 10.0
"""How long a call waits for another process's write to end before it fails (sqlite3.OperationalError)."""


def _private_folder(root: Path) -> None:
    """The folder of every tenant's files and results, made readable by this user only (0700, whatever the
    umask): under the usual umask 022 it was 0755 and its files 0644, so any local account could read every
    tenant's uploads and batch answers. A folder the operator made before is left as it is, with a warning when
    others may read it."""
    try:
        root.mkdir(mode=0o700, parents=True)
        root.chmod(0o700)  # mkdir's mode is masked by the umask
    except FileExistsError:
        if root.is_dir() and root.stat().st_mode & 0o077:
            log.warning("gateway.batch.dir %s may be read by other local users (mode %o): its files are the tenants' "
                        "uploads and batch answers; chmod 700 it", root, root.stat().st_mode & 0o777)


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
            _private_folder(self.root)
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
            self._check_format(db)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("BEGIN IMMEDIATE")  # the tables made or migrated once, whichever worker opens it first
            try:
                found = self._check_format(db)  # again, under the write lock
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                _migrate(db)
                if found != FORMAT:  # a new index, or one of an earlier format (migrated above)
                    db.execute(f"PRAGMA user_version = {FORMAT}")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _check_format(self, db: sqlite3.Connection) -> int:
        found = int(db.execute("PRAGMA user_version").fetchone()[0])
        if found > FORMAT:
            raise sqlite3.DatabaseError(
                f"{self.path}: written by a newer aigrid (batch index format {found}; this version writes "
                f"{FORMAT}): run that aigrid or a later one (the folder is left as it is)")
        return found

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


def _migrate(db: sqlite3.Connection) -> None:
    """An index of format 0 or 1: the `jurisdictions` columns added and filled where the index knows who made the
    row (module docstring); nothing for an index that has them."""
    added = False
    for table in ("files", "batches"):
        if "jurisdictions" not in {r[1] for r in db.execute(f"PRAGMA table_info({table})")}:
            db.execute(f"ALTER TABLE {table} ADD COLUMN jurisdictions TEXT")
            added = True
    if not added:
        return
    for r in db.execute("SELECT id, tenant, object, principal FROM batches").fetchall():
        try:
            scopes = orjson.loads(r[3]).get("scopes") or {}
            made_under = scopes.get("jurisdictions")
            obj = orjson.loads(r[2])
        except (orjson.JSONDecodeError, AttributeError):  # not written by aigrid: left to unrestricted keys
            continue
        if not isinstance(made_under, list):
            continue
        kept = encode(frozenset(str(j) for j in made_under))
        made = [obj.get("output_file_id"), obj.get("error_file_id")]
        if str(r[0]).startswith("msgbatch_"):  # its requests' file is the batch's own (an OpenAI batch's, an upload)
            made.append(obj.get("input_file_id"))
        db.execute("UPDATE batches SET jurisdictions = ? WHERE id = ?", (kept, r[0]))
        db.executemany("UPDATE files SET jurisdictions = ? WHERE id = ? AND tenant = ? AND purpose != 'batch'",
                       [(kept, fid, r[1]) for fid in made if isinstance(fid, str)])


def encode(jurisdictions: frozenset[str] | None) -> str | None:
    """A key's allowed jurisdictions as a row keeps them (None: every one)."""
    return None if jurisdictions is None else orjson.dumps(sorted(jurisdictions)).decode()


def decode(kept: str | None) -> frozenset[str] | None:
    return None if kept is None else frozenset(orjson.loads(kept))


def visible_to(allowed: frozenset[str] | None) -> tuple[str, tuple[Any, ...]]:
    """The SQL condition (and its arguments) on a row of `files` or `batches` that a key allowed `allowed` may see:
    every row for a key that may use every jurisdiction (None); else a row made by a key whose jurisdictions are
    all among `allowed` (a row made by an unrestricted key, or an upload from before format 2, NULL: never)."""
    if allowed is None:
        return "1", ()
    marks = ", ".join("?" * len(allowed))
    return (f"(jurisdictions IS NOT NULL AND NOT EXISTS (SELECT 1 FROM json_each(jurisdictions) "
            f"WHERE value NOT IN ({marks})))", tuple(sorted(allowed)))
