"""The files of the Files API (files_api.py): uploaded batch inputs and the batches' output and error files.

Each file's bytes are a plain file on the local disk of the machine that runs the gateway, under
`gateway.batch.dir`/<tenant>/ (a tenant name that is not a plain identifier becomes `t-` and a hash of it);
its metadata is a row of the SQLite index (batch_db.py), so every worker process on the machine sees it.
Every read is scoped by tenant: another tenant's file is not found. Within the tenant, by residency: each file
records the jurisdictions of the key that made it (`jurisdictions`: the uploader's, a batch's creator's for its
results; None: a key that may use every one), and a key narrowed to some jurisdictions finds only the files made
by a key whose jurisdictions are all among its own (`allowed`: batch_db.visible_to); the others are not found,
as another tenant's. A file given an expiry
(`expires_after`) is not found once it has passed, and its bytes are deleted by the batch runner's sweep.

The files of Anthropic's message batches (their requests, results: message_batches_api.py) are kept here too,
with a purpose of their own (HIDDEN): the Files API never lists, reads or deletes them (`hidden=False`); only
the batch runner and the Message Batches API that made them do.

Storage quota (`quotas.storage_bytes`, `storage_files`: StorageLimit): every live file of a tenant counts, hidden
ones and the batches' outputs too. `add` (an upload, a message batch's requests) is refused past it
(StorageFull, 400 storage_quota_exceeded): the sum is read and the row written in one transaction that holds
the index's write lock (batch_db.BatchDb.write), so uploads racing in any number of worker processes never
take a tenant past it; the bytes copied before the check are deleted again. `keep_results` (a batch's output, the
work already done, indexed in the transaction that drops its `batch_results` row) is never refused: it counts (`check_room`, asked before a batch is created, refuses a new
batch to a tenant without room for two more files, its output and its error file). A running batch's results are checked before each line is written
(`check_output`): a line that would take the tenant past its quota (its bytes, or its number of files: the line
that makes the output or the error file; a Batch API batch counts both from its start, `files` 2), or the disk below `min_free_bytes`, stops the batch (failed, what it wrote kept: batch_runner.py). A deleted or expired file counts
no more (expired: at once, its bytes deleted by the next sweep; but the input of a batch that has not ended, kept
and counted until it ends).

An upload of the Files API holds its room while it arrives (`reserve`: a row of `upload_reservations` in the
same index, so every worker process counts it): what the tenant has left, up to the per-file limit, is set
aside before its body is read, the upload is stopped as soon as more than that arrives, and its file replaces
the reservation in the transaction that checks the sum. Uploads racing each other (in any process) never
spool together more than the tenant has room for; a reservation left by a process that died lapses at its
upload's deadline. The same rows hold the disk: an upload (or a message batch) is refused when the disk's free
space, less every room held by the uploads arriving now (any tenant, any process), could fall under
`min_free_bytes` (`check_disk`, in the transaction that sets its own room aside).

An upload's bytes are written as they arrive into the tenant's folder, on the disk the floor watches (`spool`: a
`.upload-*.part` file beside the files), and become the file by a rename (`add` given its path): never in the
system's temporary folder first, never copied (before the twentieth session Starlette spooled it to the temporary
folder, another disk the floor did not see or the same one twice over, and it was copied from there). A spool left by
a process that died is deleted by the sweep once untouched for SPOOL_STALE_S.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from aigrid.errors import InsufficientStorage, InvalidRequest
from aigrid.gateway.batch_db import BatchDb, decode, encode, visible_to
from aigrid.gateway.batch_store import ACTIVE

_PLAIN = re.compile(r"[A-Za-z0-9_-]{1,64}")
SPOOL_PREFIX = ".upload-"
SPOOL_STALE_S = 6 * 3600.0
"""A spool untouched this long is a dead process's (an upload's deadline is at most about half an hour at the
default max_file_bytes, and a live one writes as it arrives): the sweep deletes it."""
HIDDEN = ("message_batch", "message_batch_output")
"""The purposes of the files of Anthropic's message batches: not the Files API's."""
_VISIBLE = f"purpose NOT IN ({', '.join(repr(p) for p in HIDDEN)})"


@dataclass(frozen=True, slots=True)
class StoredFile:
    id: str
    tenant: str
    purpose: str
    filename: str
    bytes: int
    created_at: int
    expires_at: int | None
    path: str
    """Relative to the store's root."""
    jurisdictions: frozenset[str] | None = None
    """The jurisdictions of the key that made it (None: every one, or an upload from before they were kept)."""

    def to_object(self) -> dict[str, Any]:
        """OpenAI's File object."""
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed",
                "expires_at": self.expires_at, "status_details": None}


@dataclass(frozen=True, slots=True)
class StorageLimit:
    """What one tenant's files may hold (its quotas' storage_bytes and storage_files)."""

    bytes: int
    files: int


class StorageFull(InvalidRequest):
    code = "storage_quota_exceeded"


class InputInUse(InvalidRequest):
    """A DELETE of the input of a batch that has not ended."""


def new_file_id() -> str:
    return "file-" + os.urandom(12).hex()


def tenant_folder(tenant: str) -> str:
    return tenant if _PLAIN.fullmatch(tenant) else "t-" + hashlib.sha256(tenant.encode()).hexdigest()[:16]


def _row(r: sqlite3.Row) -> StoredFile:
    return StoredFile(r["id"], r["tenant"], r["purpose"], r["filename"], r["bytes"], r["created_at"],
                      r["expires_at"], r["path"], decode(r["jurisdictions"]))


log = logging.getLogger("aigrid.batches")

_LIVE = "(expires_at IS NULL OR expires_at > ?)"
_IN_USE = ("EXISTS (SELECT 1 FROM batches WHERE batches.tenant = files.tenant AND batches.status IN "
           f"({', '.join(repr(s) for s in ACTIVE)}) AND json_extract(batches.object, '$.input_file_id') = files.id)")
"""A file that is the input of a batch of its tenant that has not ended (kept past its expiry: `sweep`)."""
RESERVE_SLACK_S = 60.0
"""How long past its body's deadline an upload's room stays held (the copy into the store, the index)."""
_RESERVATIONS = ("CREATE TABLE IF NOT EXISTS upload_reservations (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, "
                 "bytes INTEGER NOT NULL, until REAL NOT NULL)")
"""Uploads arriving now and the bytes each may still bring (a table an older aigrid ignores: it counts none)."""
_RESULTS = ("CREATE TABLE IF NOT EXISTS batch_results (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, "
            "bytes INTEGER NOT NULL)")
"""Running (or stopped) batches' output and error files as written so far, not yet indexed as files: counted with
their tenant's files by every other batch's check and every upload (a table an older aigrid ignores)."""
_RESULT_FILES = ("CREATE TABLE IF NOT EXISTS batch_result_files (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, "
                 "files INTEGER NOT NULL)")
"""How many files (its output, its error file) each running (or stopped) batch has made, not yet indexed: counted in
its tenant's `storage_files` as `batch_results` is in its bytes (a table of its own, which an older aigrid ignores,
so that its rows of `batch_results` keep the columns it writes)."""


@dataclass(frozen=True, slots=True)
class Reservation:
    """The room one upload holds while it arrives: at most `bytes`; `quota` True when that is what the tenant's
    storage quota left (less than the per-file limit), so that passing it is StorageFull, not a file too large."""

    id: str
    tenant: str
    bytes: int
    quota: bool
    limit: StorageLimit | None
    """None: the store has no storage quota (the room is held for its disk's floor only)."""
    held: tuple[int, int]
    """(bytes, files) the tenant held, other uploads arriving included, when the room was set aside."""
    narrowed: bool = False
    """Held for a key narrowed to some jurisdictions: its refusal names neither the tenant's totals nor the room."""

    def full(self, param: str, size: int | None = None) -> StorageFull:
        """The refusal of an upload that brought more than its room (`size`: how much, when known)."""
        if size is not None:
            adding = f"this one of {size} bytes"
        else:
            adding = "this upload" if self.narrowed else f"this upload, past {self.bytes} bytes,"
        assert self.limit is not None, "a room held for the disk alone is never the quota's"
        return StorageFull(_full_message(param, self.limit, self.held, f"; {adding} would pass it", self.narrowed),
                           param=param)


class FileStore:
    def __init__(self, db: BatchDb, limits: Callable[[str], StorageLimit] | None = None, min_free_bytes: int = 0) -> None:
        """`limits`: each tenant's storage quota (None: no limit). `min_free_bytes`: the free space an upload may not
        take the disk below, every tenant's quota notwithstanding (gateway.batch.min_free_bytes)."""
        self.db = db
        self.root = db.root
        self.limits = limits
        self.min_free_bytes = min_free_bytes
        self._reservations = False

    def check_disk(self, most: int, param: str, reserved: int = 0) -> None:
        """InsufficientStorage when `most` more bytes could leave the disk under `min_free_bytes` free, `reserved`
        (what the uploads and message batches arriving now may still write there) counted as gone: the quotas are
        per tenant, and tenants within theirs could together fill the disk that the audit log writes to."""
        if self.min_free_bytes <= 0:
            return
        free = self.disk_free()
        if free - reserved - most < self.min_free_bytes:
            log.warning("refused an upload of up to %d bytes: %d bytes free under %s, %d of them held by uploads "
                        "arriving, %d kept free (gateway.batch.min_free_bytes)", most, free, self.root, reserved,
                        self.min_free_bytes)
            raise InsufficientStorage(f"{param}: the gateway's disk has too little free space for this upload now "
                                      f"(up to {most} bytes); try again later or ask the grid's operator",
                                      param=param)

    def disk_free(self) -> int:
        """The free bytes of the disk the store writes to (blocking: a statvfs)."""
        where = self.root
        while not where.exists() and where != where.parent:  # made with the first file: its disk is its parent's
            where = where.parent
        return shutil.disk_usage(where).free

    async def check_output(self, tenant: str, bid: str, written: int, size: int, files: int = 0, *,
                           jurisdictions: frozenset[str] | None = None, result: str | None = None) -> None:
        """Before `size` more bytes of batch `bid`'s results are written (`written`: what its output and error files
        hold so far, indexed only when it ends): InsufficientStorage when they would leave the disk with less than
        `min_free_bytes` free (the rooms of the uploads arriving counted as written, as an upload's check counts
        them), StorageFull when the tenant's files would pass its storage quota, the other batches' results written
        so far counted (`batch_results`, where this batch's `written` + `size` is kept now, in the transaction that
        read the others': `keep_results` hands it over to its files). The batch's `errors` say which, never how
        much the disk, other tenants' uploads (logged instead) or, for a batch made under some `jurisdictions`
        (None: every one; read by keys that may not see every file otherwise), the tenant's other files hold.
        `files`: how many result files (output, error) the batch has with this line; one more than it had (the
        line makes a file) is StorageFull when the tenant's files would number more than its `storage_files` (the
        other batches' result files counted, `batch_result_files`, as their bytes are); `result`: the file the line
        goes to ("output", "error"), which that StorageFull names (before, it said "output" for the batch's first
        file even when the line made its error file)."""
        narrowed = jurisdictions is not None
        limit = None if self.limits is None else self.limits(tenant)
        if limit is None and self.min_free_bytes <= 0:
            return
        await self._ready()
        results = [f"{tenant_folder(tenant)}/{bid}_{kind}.jsonl" for kind in ("output", "error")]  # batch_output's

        def look(db: sqlite3.Connection) -> tuple[int, int, tuple[int, int], int, int]:
            reserved = db.execute("SELECT COALESCE(SUM(bytes), 0) FROM upload_reservations WHERE until > ?",
                                  (time.time(),)).fetchone()[0]
            free = self.disk_free() if self.min_free_bytes > 0 else 0
            if limit is None:
                return int(reserved), free, (0, 0), 0, 0
            held = _held(db, tenant, but=bid)
            db.execute("INSERT INTO batch_results VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET bytes = excluded.bytes",
                       (bid, tenant, written + size))
            # a file already indexed (a batch that ended once, resumed after) is counted with the tenant's files
            indexed = db.execute("SELECT COUNT(*) FROM files WHERE tenant = ? AND path IN (?, ?)",
                                 (tenant, *results)).fetchone()[0]
            row = db.execute("SELECT files FROM batch_result_files WHERE id = ?", (bid,)).fetchone()
            had, mine = (row[0] if row else 0), max(files - int(indexed), 0)
            if mine > had:
                db.execute("INSERT INTO batch_result_files VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                           "files = excluded.files", (bid, tenant, mine))
            return int(reserved), free, held, had, mine

        reserved, free, held, had, mine = await self.db.write(look)
        if self.min_free_bytes > 0 and free - reserved - size < self.min_free_bytes:
            log.warning("a batch's results of tenant %r stopped: %d more bytes would have left %d bytes free under %s, "
                        "%d of them held by uploads arriving, %d kept free (gateway.batch.min_free_bytes)", tenant,
                        size, free, self.root, reserved, self.min_free_bytes)
            raise InsufficientStorage(
                "this batch's results could not all be written: the gateway's disk has too little free space left "
                "(gateway.batch.min_free_bytes); the lines already answered are in its output and error files")
        if limit is not None and held[0] + written + size > limit.bytes:
            counts = "" if narrowed else (f"; {held[0]} bytes held, other running batches' results included, "
                                          f"{written} written by this batch, {size} more")
            raise StorageFull(
                f"this batch's results could not all be written: with them this tenant's files would hold more than "
                f"its storage quota of {limit.bytes} bytes (quotas.storage_bytes{counts}); the lines already "
                "answered are in its output and error files; delete files (DELETE /v1/files/{file_id}) to make room")
        if limit is not None and mine > had and held[1] + mine > limit.files:
            counts = "" if narrowed else f"; {held[1]} files held, other running batches' results included"
            raise StorageFull(
                f"this batch's results could not all be written: with its "
                f"{f'{result} file' if result else 'output and error files'} this "
                f"tenant's files would number more than its storage quota of {limit.files} files "
                f"(quotas.storage_files{counts}); the lines already answered are in its output and error files; "
                "delete files (DELETE /v1/files/{file_id}) to make room")

    async def _ready(self) -> None:
        """The tables of uploads arriving and of batches' results written, once per process (before the first sum
        that counts them)."""
        if not self._reservations:
            def create(db: sqlite3.Connection) -> None:
                db.execute(_RESERVATIONS)
                db.execute(_RESULTS)
                db.execute(_RESULT_FILES)

            await self.db.write(create)
            self._reservations = True

    async def keep_results(self, tenant: str, bid: str, results: Sequence[tuple[Path, str]], expires_at: int | None,
                           *, jurisdictions: frozenset[str] | None = None) -> list[str | None]:
        """Batch `bid`'s output and error files (each path with its purpose) indexed as the tenant's files, made under
        its creator's `jurisdictions`, and its results no longer counted as written (`batch_results`), in one
        transaction: all of it or, when the index refuses any part, none (the results stay counted, the batch ends
        again at its resume). A file already indexed (a batch whose final status was not written after it) keeps its
        row, so a batch that ends twice is counted once, its bytes set to the file's size now: a batch resumed after
        that wrote more lines to it, which its row counted nowhere (storage quota). Each file's id; None: the batch
        wrote no line to it."""
        sizes = await asyncio.to_thread(lambda: [p.stat().st_size if p.exists() else 0 for p, _ in results])
        await self._ready()

        def keep(db: sqlite3.Connection) -> list[str | None]:
            ids: list[str | None] = []
            for (path, purpose), size in zip(results, sizes, strict=True):
                rel = path.relative_to(self.root).as_posix()
                known = db.execute("SELECT id FROM files WHERE tenant = ? AND path = ?", (tenant, rel)).fetchone()
                if known is not None:
                    db.execute("UPDATE files SET bytes = ? WHERE id = ?", (size, known[0]))
                    ids.append(str(known[0]))
                    continue
                if not size:
                    ids.append(None)
                    continue
                f = StoredFile(new_file_id(), tenant, purpose, path.name, size, int(time.time()), expires_at, rel,
                               jurisdictions)
                _insert(db, f)
                ids.append(f.id)
            db.execute("DELETE FROM batch_results WHERE id = ?", (bid,))
            db.execute("DELETE FROM batch_result_files WHERE id = ?", (bid,))
            return ids

        return await self.db.write(keep)

    async def reserve(self, tenant: str, param: str, most: int, least: int, hold_s: float, *,
                      jurisdictions: frozenset[str] | None = None) -> Reservation | None:
        """Room set aside for one upload of at most `most` bytes: what the tenant has left, up to `most`, held for
        `hold_s` (its deadline) or until `add` or `release`; StorageFull naming `param` when it has no room, or
        less than `least` (what the upload says it brings); InsufficientStorage when the disk would be left with less
        than `min_free_bytes` free, the rooms other uploads hold (any tenant, any worker process) counted as written:
        read and set aside in one transaction, so uploads side by side cannot together pass the floor. None: this
        store has neither a storage quota nor a floor. `jurisdictions`: those of the uploading key (None: every
        one); a key narrowed to some is refused without being told what the tenant's files hold (it may not see
        them all)."""
        narrowed = jurisdictions is not None
        if self.limits is None and self.min_free_bytes <= 0:
            return None
        limit = None if self.limits is None else self.limits(tenant)
        await self._ready()
        rid = new_file_id().replace("file-", "upload-")

        def take(db: sqlite3.Connection) -> Reservation:
            now = time.time()
            db.execute("DELETE FROM upload_reservations WHERE until <= ?", (now,))  # their processes died
            if self.min_free_bytes > 0:
                reserved = db.execute("SELECT COALESCE(SUM(bytes), 0) FROM upload_reservations").fetchone()[0]
                self.check_disk(most, param, int(reserved))
            if limit is None:
                room, held = most, (0, 0)
            else:
                held = _held(db, tenant)
                _refuse_past(limit, held, least, param, narrowed)
                room = min(most, limit.bytes - held[0])
            db.execute("INSERT INTO upload_reservations VALUES (?, ?, ?, ?)", (rid, tenant, room, now + hold_s))
            return Reservation(rid, tenant, room, room < most, limit, held, narrowed)

        return await self.db.write(take)

    async def release(self, reservation: Reservation) -> None:
        """The room given back (an upload refused, failed or kept: deleting it twice is nothing)."""
        await self.db.write(lambda db: db.execute("DELETE FROM upload_reservations WHERE id = ?", (reservation.id,)))

    def folder(self, tenant: str) -> Path:
        return self.root / tenant_folder(tenant)

    def spool(self, tenant: str) -> tuple[Path, BinaryIO]:
        """A new file in the tenant's folder for an upload's bytes as they arrive (blocking): on the disk the floor
        watches, and made the file by a rename (`add` given its path). Its caller deletes it unless it is added."""
        folder = self.folder(tenant)
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=SPOOL_PREFIX, suffix=".part", dir=folder)
        return Path(name), os.fdopen(fd, "w+b")

    def disk_refused(self, tenant: str, param: str, what: str, e: OSError) -> InsufficientStorage:
        """The refusal of a tenant's `what` (a file, an upload, a batch) whose bytes the disk did not take (full, the
        gateway user's disk quota): logged with the disk's error, the API's 503 naming `param`."""
        log.warning("refused a %s of tenant %r: the disk under %s did not take its bytes: %s", what, tenant,
                    self.root, e)
        return InsufficientStorage(f"{param}: the gateway's disk could not take this {what} now; try again later or "
                                   "ask the grid's operator", param=param)

    def disk_path(self, f: StoredFile) -> Path:
        return self.root / f.path

    async def add(self, tenant: str, filename: str, purpose: str, src: IO[bytes] | Path,
                  expires_at: int | None = None, *, param: str = "file",
                  reservation: Reservation | None = None, jurisdictions: frozenset[str] | None = None) -> StoredFile:
        """Copy `src` (read from its start) into the tenant's folder and index it, or, given the path of a spool of
        the tenant's (`spool`, written and closed), rename it into place; made under `jurisdictions` (its maker's
        allowed ones; None: every one). StorageFull naming `param` when the tenant's files would hold more than its
        storage quota (checked before the copy, unless `reservation` holds its room, and again, atomically, with the
        row's insert, which takes the reservation's place: the bytes are deleted then); InsufficientStorage when
        the disk refuses the copy (nothing of it left)."""
        fid = new_file_id()
        rel = f"{tenant_folder(tenant)}/{fid}.jsonl"
        limit = None if self.limits is None else self.limits(tenant)
        if limit is not None and reservation is None:
            if isinstance(src, Path):
                size = (await asyncio.to_thread(src.stat)).st_size
            else:
                size = src.seek(0, os.SEEK_END)
            await self.check_room(tenant, param, size, limit=limit, jurisdictions=jurisdictions)

        def copy() -> int:
            target = self.root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(src, Path):
                src.replace(target)
                return target.stat().st_size
            part = target.with_name(target.name + ".part")
            src.seek(0)
            try:
                with part.open("wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            except OSError:
                part.unlink(missing_ok=True)
                raise
            size = part.stat().st_size
            part.replace(target)
            return size

        try:
            size = await asyncio.to_thread(copy)
        except OSError as e:
            raise self.disk_refused(tenant, param, "file", e) from e
        stored = StoredFile(fid, tenant, purpose, filename, size, int(time.time()), expires_at, rel, jurisdictions)
        try:
            return await self._index(stored, limit, param, reservation)
        except StorageFull:  # refused: the bytes go with the row that was not written
            await asyncio.to_thread((self.root / rel).unlink, missing_ok=True)
            raise

    async def check_room(self, tenant: str, param: str, size: int = 0, *, files: int = 1,
                         limit: StorageLimit | None = None, jurisdictions: frozenset[str] | None = None) -> None:
        """StorageFull naming `param` unless the tenant's files leave room for `files` more files, `size` bytes in
        all (`size` 0: the tenant is not at its limit; asked before a batch is created, `files` 2: its output and
        its error file; 3 for a message batch: its requests file too);
        `jurisdictions`: those of the key that asks (None: every one); a key narrowed to some is refused naming no
        totals."""
        narrowed = jurisdictions is not None
        if limit is None and self.limits is not None:
            limit = self.limits(tenant)
        if limit is None:
            return
        await self._ready()
        held = await self.db.read(lambda db: _held(db, tenant))
        _refuse_past(limit, held, size, param, narrowed, files)

    async def register(self, tenant: str, path: Path, filename: str, purpose: str, size: int,
                       expires_at: int | None = None, *, jurisdictions: frozenset[str] | None = None) -> StoredFile:
        """A file the gateway wrote itself under the tenant's folder (a batch's output, made under its creator's
        `jurisdictions`), indexed as is."""
        rel = path.relative_to(self.root).as_posix()
        return await self._index(StoredFile(new_file_id(), tenant, purpose, filename, size, int(time.time()),
                                            expires_at, rel, jurisdictions))

    async def _index(self, f: StoredFile, limit: StorageLimit | None = None, param: str = "file",
                     reservation: Reservation | None = None) -> StoredFile:
        """The row written; with a `limit`, in the transaction that read the tenant's sum, so that no upload
        racing this one (in any process) is counted on the same sum (the `reservation` it replaces, not). Its
        refusal is told to the file's maker: without the totals when it was narrowed to some jurisdictions."""
        if limit is not None:
            await self._ready()

        def insert(db: sqlite3.Connection) -> None:
            if reservation is not None:
                db.execute("DELETE FROM upload_reservations WHERE id = ?", (reservation.id,))
            if limit is not None:
                _refuse_past(limit, _held(db, f.tenant), f.bytes, param, f.jurisdictions is not None)
            _insert(db, f)

        await self.db.write(insert)
        return f

    async def get(self, tenant: str, fid: str, *, hidden: bool = False, allowed: frozenset[str] | None = None,
                  expired: bool = False) -> StoredFile | None:
        """The tenant's file (`hidden`: a message batch's file too) if a key allowed the jurisdictions `allowed`
        (None: every one) may see it; `expired`: one whose expiry has passed too, while its bytes are kept (the input
        of a batch that has not ended: `sweep`)."""
        visible = "" if hidden else f" AND {_VISIBLE}"
        seen, seen_args = visible_to(allowed)
        live = "1" if expired else _LIVE

        def find(db: sqlite3.Connection) -> StoredFile | None:
            r = db.execute(f"SELECT * FROM files WHERE id = ? AND tenant = ? AND {live}{visible} AND {seen}",
                           (fid, tenant, *(() if expired else (int(time.time()),)), *seen_args)).fetchone()
            return None if r is None else _row(r)

        return await self.db.read(find)

    async def list(self, tenant: str, *, purpose: str | None, after: str | None, limit: int,
                   ascending: bool, allowed: frozenset[str] | None = None) -> tuple[list[StoredFile], bool] | None:
        """A page of the tenant's files a key allowed `allowed` may see, by creation time, and whether more follow;
        None: no such file `after`. The database returns the page itself (limit + 1 rows after the cursor), never
        all the tenant's files."""
        seen, seen_args = visible_to(allowed)
        mine = f"tenant = ? AND {_LIVE} AND {_VISIBLE} AND (? IS NULL OR purpose = ?) AND {seen}"
        way, past = ("ASC", ">") if ascending else ("DESC", "<")

        def page(db: sqlite3.Connection) -> tuple[list[StoredFile], bool] | None:
            args: tuple[Any, ...] = (tenant, int(time.time()), purpose, purpose, *seen_args)
            cursor = ""
            if after is not None:
                r = db.execute(f"SELECT created_at, rowid FROM files WHERE id = ? AND {mine}", (after, *args)).fetchone()
                if r is None:
                    return None
                cursor = f" AND (created_at {past} ? OR (created_at = ? AND rowid {past} ?))"
                args = (*args, r[0], r[0], r[1])
            rows = [_row(r) for r in db.execute(f"SELECT * FROM files WHERE {mine}{cursor} "
                                                f"ORDER BY created_at {way}, rowid {way} LIMIT ?", (*args, limit + 1))]
            return rows[:limit], len(rows) > limit

        return await self.db.read(page)

    async def delete(self, tenant: str, fid: str, *, hidden: bool = False, allowed: frozenset[str] | None = None,
                     unused: bool = False) -> StoredFile | None:
        """The file's row removed and its bytes deleted; None when the tenant has no such file that a key allowed
        `allowed` may see (`hidden`: a message batch's file too). `unused`: InputInUse, nothing deleted, when it is
        the input of a batch that has not ended, asked in the transaction that removes the row (a batch's row is
        written only while its file's is there: BatchStore.create), so a create racing the delete never makes a batch
        whose input is gone."""
        visible = "" if hidden else f" AND {_VISIBLE}"
        seen, seen_args = visible_to(allowed)

        def remove(db: sqlite3.Connection) -> StoredFile | None:
            r = db.execute(f"SELECT * FROM files WHERE id = ? AND tenant = ?{visible} AND {seen}",
                           (fid, tenant, *seen_args)).fetchone()
            if r is None:
                return None
            if unused and db.execute(f"SELECT 1 FROM files WHERE id = ? AND {_IN_USE}", (fid,)).fetchone():
                raise InputInUse(f"file_id: {fid!r} is the input of a batch, which has not ended; cancel it first "
                                 "(POST /v1/batches/{batch_id}/cancel)", param="file_id")
            db.execute("DELETE FROM files WHERE id = ?", (fid,))
            return _row(r)

        found = await self.db.write(remove)
        if found is not None:
            await asyncio.to_thread(self.disk_path(found).unlink, missing_ok=True)
        return found

    async def sweep(self) -> int:
        """Delete the files whose expiry has passed (rows and bytes), but the input of a batch that has not ended
        (kept for it, as DELETE refuses to remove it: found by `get(expired=True)` only, deleted by the first sweep
        after it ends); how many."""
        def expired(db: sqlite3.Connection) -> list[StoredFile]:
            rows = [_row(r) for r in db.execute(
                f"SELECT * FROM files WHERE expires_at IS NOT NULL AND expires_at <= ? AND NOT {_IN_USE}",
                (int(time.time()),))]
            db.executemany("DELETE FROM files WHERE id = ?", [(f.id,) for f in rows])
            return rows

        gone = await self.db.write(expired)
        for f in gone:
            await asyncio.to_thread(self.disk_path(f).unlink, missing_ok=True)
        await asyncio.to_thread(self._sweep_spools)
        return len(gone)

    def _sweep_spools(self) -> None:
        """The spools of uploads whose process died (untouched for SPOOL_STALE_S) deleted (blocking)."""
        stale = time.time() - SPOOL_STALE_S
        for path in self.root.glob(f"*/{SPOOL_PREFIX}*.part"):
            try:
                if path.stat().st_mtime < stale:
                    path.unlink()
                    log.info("deleted %s, the spool of an upload that never ended", path)
            except FileNotFoundError:
                continue


def _insert(db: sqlite3.Connection, f: StoredFile) -> None:
    db.execute("INSERT INTO files (id, tenant, purpose, filename, bytes, created_at, expires_at, path, jurisdictions) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (f.id, f.tenant, f.purpose, f.filename, f.bytes, f.created_at,
                                                      f.expires_at, f.path, encode(f.jurisdictions)))


def _held(db: sqlite3.Connection, tenant: str, *, but: str | None = None) -> tuple[int, int]:
    """(bytes, files) the tenant's live files hold (an expired one kept as a batch's input too: `sweep`), every
    purpose, the uploads of it arriving now, and the results its batches have written but not yet indexed (bytes
    only; `but`: a batch whose own are counted apart)."""
    now = time.time()
    r = db.execute(f"SELECT COALESCE(SUM(bytes), 0), COUNT(*) FROM files WHERE tenant = ? AND ({_LIVE} OR {_IN_USE})",
                   (tenant, int(now))).fetchone()
    u = db.execute("SELECT COALESCE(SUM(bytes), 0), COUNT(*) FROM upload_reservations WHERE tenant = ? AND until > ?",
                   (tenant, now)).fetchone()
    b = db.execute("SELECT COALESCE(SUM(bytes), 0) FROM batch_results WHERE tenant = ? AND id IS NOT ?",
                   (tenant, but)).fetchone()
    f = db.execute("SELECT COALESCE(SUM(files), 0) FROM batch_result_files WHERE tenant = ? AND id IS NOT ?",
                   (tenant, but)).fetchone()
    return int(r[0]) + int(u[0]) + int(b[0]), int(r[1]) + int(u[1]) + int(f[0])


def _refuse_past(limit: StorageLimit, held: tuple[int, int], size: int, param: str, narrowed: bool = False,
                 files: int = 1) -> None:
    used, count = held
    if used + max(size, 1) > limit.bytes or count + files > limit.files:  # a new file needs a byte of room at least
        # a batch's files named only where they pass the count (a tenant at its bytes was told they would, not so)
        over = count + files > limit.files
        adding = (f"; this one of {size} bytes would pass it" if size else
                  f"; a batch's {files} result files (output and error) would pass it" if over and files == 2 else
                  f"; a message batch's {files} files (its requests, results and errors) would pass it"
                  if over and files > 2 else "")
        raise StorageFull(_full_message(param, limit, held, adding, narrowed), param=param)


def _full_message(param: str, limit: StorageLimit, held: tuple[int, int], adding: str, narrowed: bool = False) -> str:
    """What a refusal for the storage quota says: what the tenant's files hold, to a key that sees them all; to a
    key narrowed to some jurisdictions (`narrowed`), only the quota (it may not know what the tenant's other keys
    keep)."""
    used, count = held
    holds = ("this tenant's files are at" if narrowed else
             f"this tenant's files hold {used} bytes in {count} files (uploads arriving included; running "
             "batches' results too),")
    return (f"{param}: {holds} its storage quota of {limit.bytes} bytes (quotas.storage_bytes) and {limit.files} "
            f"files (quotas.storage_files){adding}; delete files (DELETE /v1/files/{{file_id}}) or ended message "
            "batches to make room")
