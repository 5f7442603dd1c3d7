"""The SQLite side of the audit log (synchronous; the async writer runs it in a worker thread).

Tables are append-only by triggers that abort UPDATE and DELETE; that stops mistakes, not an attacker
with the file, which is what the hash chain and the signed checkpoints are for.

Upgrades: the database says its format in SQLite's `user_version` (FORMAT; 0 is a log written before the stamp,
the same tables, and is stamped when a writer opens it: the stamp is in the file's header, outside the chain).
A writer refuses a log of a later format (a newer aigrid's) with a message saying so, before it writes
anything: an older writer must not append records or checkpoints to a log whose format it does not know.
A change of these tables, or of what a record or a checkpoint covers, takes a new FORMAT and a migration here.
Format 2 (6 Dec 2026): the same tables; checkpoints sign the v2 statement (its writer keeps a head file), which an
aigrid of format 1 reads as forged, so it must not open such a log. A log of format 0 or 1 is stamped 2 when a
writer opens it (its old checkpoints stay v1 and verify as before).

One writer per log: a writer holds an exclusive POSIX lock (lockf) on `<log>-writer.lock` while it is open, and
a writer in another process (a second gateway started on the same path) refuses to open it (WriterLocked) rather
than append seqs the first one takes: each then failed the other's next batch ("UNIQUE constraint failed"),
retried it for ever, and lost it at stop. The lock is the process's (POSIX): two stores of one process both open
it, and the kernel drops it when the process dies (a crash leaves no stale lock). Each batch also checks, in its
transaction, that the log's head is the one this writer last wrote (HeadMoved: another store of this process, a
writer on a file system without locks, or rows added to the file while it runs), and is not appended to another
writer's records. On a network file system (NFS, SMB) neither the lock nor SQLite's WAL index holds across
hosts: a writer on another host opens the log too, and SQLite itself may corrupt it; open() warns
(network_file_system), and the log belongs on a local disk.

The head file (`<log>-head`, audit/head.py): after each batch is committed the writer signs the log's new last
record into it, so verify finds a log cut at its end without an anchor. A writer refuses to open a log that ends
before its head file, or whose record there is another (LogCut): appending to it would overwrite the evidence. So is
a head behind the last checkpoint of this key that says it keeps one (an older head put back: that checkpoint was
signed only once the head was at or past it). A head whose signature does not hold for the writer's key is refused
too (LogCut) when it names that key, or when the key's last checkpoint says it keeps one and no other key signed
after it (a head the writer accepted would be signed again at its next batch: a cut hidden). At open, a log without
a head file (written before it existed) gets one at its last checkpoint signed with the writer's key (what it
already vouches for), never at records it did not write. Every checkpoint this writer signs says, signed, that it
keeps a head (v2), and is signed only once the head is on disk at its record (the file and its folder fsynced): a
log whose last checkpoint of this key says so (or, after a key rotation, a log of this format whose later
checkpoints are another key's) and whose head file is gone was cut with its head deleted, perhaps, and the writer
refuses it (LogCut), as verify fails it.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aigrid.audit.chain import GENESIS, checkpoint_message, entry_hash
from aigrid.audit.head import head_message, head_path, read_head, sync_folder, write_head
from aigrid.audit.signing import key_id

log = logging.getLogger(__name__)

FORMAT = 2
"""The audit database's format (PRAGMA user_version): this version reads 0..2 and writes 2 (0: before the stamp;
1: checkpoints of the v1 statement only; 2: v2 checkpoints, its writer keeps a head file)."""
SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_records (
    seq INTEGER PRIMARY KEY, ts REAL NOT NULL, body TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    seq INTEGER PRIMARY KEY, hash TEXT NOT NULL, ts REAL NOT NULL, key_id TEXT NOT NULL, signature BLOB NOT NULL);
CREATE TRIGGER IF NOT EXISTS audit_records_no_update BEFORE UPDATE ON audit_records
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_records_no_delete BEFORE DELETE ON audit_records
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
"""


class WriterLocked(OSError):
    """Another process (or another AuditStore) holds this log's writer lock."""


class HeadMoved(sqlite3.DatabaseError):
    """The log's last record is not the one this writer wrote last: someone else appended to (or cut) it."""


class LogCut(sqlite3.DatabaseError):
    """The log ends before its head file, or its record there is not the one the head names."""


class AuditStore:
    """One writer. Not thread-safe: callers serialise (the async writer does)."""

    def __init__(self, path: Path, signing_key: Ed25519PrivateKey | None = None) -> None:
        self.path = path
        self.signing_key = signing_key
        self._db: sqlite3.Connection | None = None
        self.last_seq = 0
        self.last_hash = GENESIS
        self.last_checkpoint = 0
        self.found_unsigned: tuple[int, int] | None = None
        """Records after the last checkpoint when the store was opened (first, last): the writer that wrote them
        stopped before signing them (a crash), or someone added them to the file. This writer's next checkpoint
        signs whatever precedes it, so it says so first (AuditLog.start: a record of its own). The last checkpoint
        here is the last one signed with this writer's key over the stored record's hash, not the table's last
        row."""
        self.unchecked_checkpoints: list[str] = []
        """The key ids named by checkpoint rows after that one (a key rotation, or rows added to the file)."""
        self._lock: int | None = None
        self._head_at = 0
        """The record the head file was last written at by this writer (0: not yet)."""
        self._head_path = head_path(path)

    def open(self) -> None:
        remote = network_file_system(self.path)
        if remote is not None:
            log.warning("the audit log %s is on a network file system (%s): its writer lock and SQLite's WAL hold on "
                        "one host only, so a gateway on another host can open it too and the log can be corrupted; "
                        "keep it on a local disk, one writer per log", self.path, remote)
        self._take_lock()
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except BaseException:
            self._drop_lock()
            raise
        try:
            found = check_format(db)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(SCHEMA)
            if found != FORMAT:  # a new log, or one written before the stamp (the same tables)
                db.execute(f"PRAGMA user_version = {FORMAT}")
            # in the try: a table these reads refuse (a column gone, a damaged page) closes the log and drops its
            # lock (the lock's descriptor and the connection were left open)
            row = db.execute("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1").fetchone()
            if row is not None:
                self.last_seq, self.last_hash = int(row[0]), str(row[1])
            if self.signing_key is None:
                cp = db.execute("SELECT MAX(seq) FROM audit_checkpoints").fetchone()
                self.last_checkpoint = int(cp[0] or 0)
            else:
                self.last_checkpoint, self.unchecked_checkpoints, head_kept = self._own_checkpoint(db,
                                                                                                   self.signing_key)
                if self.last_seq > self.last_checkpoint:
                    self.found_unsigned = (self.last_checkpoint + 1, self.last_seq)
                self._open_head(db, self.signing_key, head_kept, found)
        except BaseException:
            db.close()
            self._drop_lock()
            raise
        self._db = db

    @staticmethod
    def _own_checkpoint(db: sqlite3.Connection, signing_key: Ed25519PrivateKey) -> tuple[int, list[str], bool]:
        """The last checkpoint this writer can vouch for: its signature holds for this writer's key and its hash
        is the stored record's at that seq (0: none), the key ids named by the later rows passed over, and whether
        it says its writer keeps a head file (v2). A row
        is only a row: anyone with the file can add one at the head (the table's MAX(seq) hid records appended
        to a stopped log, which the next checkpoint then signed as this writer's)."""
        public = signing_key.public_key()
        skipped: list[str] = []
        rows = db.execute("SELECT c.seq, c.hash, c.key_id, c.signature, r.hash FROM audit_checkpoints c "
                          "LEFT JOIN audit_records r ON r.seq = c.seq ORDER BY c.seq DESC")
        for seq, signed_hash, named, signature, stored in rows:
            if (isinstance(seq, int) and isinstance(signed_hash, str) and signed_hash == stored
                    and isinstance(signature, bytes)):
                for head_kept in (True, False):
                    try:
                        public.verify(signature, checkpoint_message(seq, signed_hash, head_kept=head_kept))
                    except InvalidSignature:
                        continue
                    return seq, skipped, head_kept
            skipped.append(named if isinstance(named, str) else repr(named))
        return 0, skipped, False

    def _open_head(self, db: sqlite3.Connection, signing_key: Ed25519PrivateKey, head_kept: bool,
                   log_format: int) -> None:
        """Refuse a log cut before its head file, or without one where its last checkpoint of this key says its
        writer keeps one (`head_kept`), or where another key signed after this key's last checkpoint in a log a
        writer of this format had already opened (`log_format`, read at open: every such writer keeps a head, so
        those checkpoints, which this key cannot check, say so: a key rotation) (LogCut); give a log without one a
        head at its last checkpoint signed with this key (or leave it where it is, when it is past that)."""
        path = head_path(self.path)
        try:
            head = read_head(path)
        except ValueError as e:
            raise LogCut(f"{e}; restore it from the backup taken with the log, or move the log and its head file "
                         "aside (keep them) to start a new one") from None
        if head is not None:
            seq, head_hash, named, signature = head
            try:
                signing_key.public_key().verify(signature, head_message(seq, head_hash))
            except InvalidSignature:
                # another key's head is let be (a rotation: verify checks it with every key it is given) unless
                # this key's last checkpoint says it keeps the head and no other key signed after it
                if named == key_id(signing_key.public_key()) or (head_kept and not self.unchecked_checkpoints):
                    raise LogCut(f"the audit log's head file {path.name} is not signed by this writer's key (forged "
                                 "or changed, perhaps to hide records cut from the log's end): run aigrid audit "
                                 "verify, and restore the head file from the backup taken with the log, or move the "
                                 "log and its head file aside (keep them) to start a new one") from None
                later = db.execute("SELECT MAX(seq) FROM audit_checkpoints WHERE seq > ?",
                                   (max(seq, self.last_checkpoint),)).fetchone()[0]
                if later is not None and log_format >= FORMAT:  # a rotation: the other key's checkpoints say it
                    # kept a head (every writer of this format does), signed only once the head was at or past them
                    raise LogCut(f"the audit log's head file {path.name} (record {seq}, not this key's) is before its "
                                 f"checkpoint {later}, which another key signed in a log whose writers sign one only "
                                 "once the head is at or past it: an older head file was put back, perhaps with "
                                 "records cut from the log's end; run aigrid audit verify with every key "
                                 "(--public-key repeated; with --anchor, the last anchor kept), and restore the log "
                                 "and its head file together from the same backup, or move the log and its head file "
                                 "aside (keep them) to start a new one") from None
            row = db.execute("SELECT hash FROM audit_records WHERE seq = ?", (seq,)).fetchone()
            if row is None or row[0] != head_hash:
                found = (f"ends at record {self.last_seq}, before record {seq}" if row is None
                         else f"holds another record {seq} than the one")
                raise LogCut(f"the audit log {found} its head file {path.name} names: it was cut (truncated) or "
                             "replaced by an older copy; run aigrid audit verify, and move the log and its head "
                             "file aside (keep them) to start a new one") from None
            if seq < self.last_checkpoint and head_kept:
                # signed only once the head was on disk at its record, and a head only moves forward: this one is an
                # older head put back, perhaps with the records after it cut; writing a new one would erase that
                raise LogCut(f"the audit log's head file {path.name} (record {seq}) is before its checkpoint "
                             f"{self.last_checkpoint}, which says its writer keeps a head and was signed only once "
                             "the head was at or past it: an older head file was put back, perhaps with records cut "
                             "from the log's end; run aigrid audit verify (with --anchor, the last anchor kept), and "
                             "restore the log and its head file together from the same backup, or move the log and "
                             "its head file aside (keep them) to start a new one")
            self._head_at = seq
            if seq >= self.last_checkpoint:
                return
        elif head_kept:
            raise LogCut(f"the audit log's head file {path.name} is missing, but its checkpoint {self.last_checkpoint} "
                         "says its writer keeps one: it was deleted, perhaps with records cut from the log's end; run "
                         "aigrid audit verify (with --anchor, the last anchor kept), and restore the head file from "
                         "the backup taken with the log, or move the log aside (keep it) to start a new one")
        elif self.unchecked_checkpoints and log_format >= FORMAT:
            others = ", ".join(sorted(set(self.unchecked_checkpoints)))
            raise LogCut(f"the audit log's head file {path.name} is missing, but the log's checkpoints after this "
                         f"key's last one are signed by another key ({others}), which this writer cannot check, in a "
                         "log whose writers keep a head file (written before each checkpoint they sign: a key "
                         "rotation): it was deleted, perhaps with records cut from the log's end; run aigrid audit "
                         "verify with every key (--public-key repeated; with --anchor, the last anchor kept), and "
                         "restore the head file from the backup taken with the log, or move the log aside (keep it) "
                         "to start a new one")
        if self.last_checkpoint:
            (signed,) = db.execute("SELECT hash FROM audit_records WHERE seq = ?", (self.last_checkpoint,)).fetchone()
            write_head(path, self.last_checkpoint, signed, signing_key)
            self._head_at = self.last_checkpoint

    def _take_lock(self) -> None:
        lock_path = f"{self.path}-writer.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            raise WriterLocked(f"another process writes this audit log (it holds {lock_path}): a log has one "
                               "writer (a gateway's workers write through their hub); stop the other gateway, or "
                               "give this one its own security.audit.path") from None
        except BaseException:
            os.close(fd)
            raise
        self._lock = fd

    def _drop_lock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # releases the lock
            self._lock = None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._drop_lock()

    def append(self, entries: Sequence[tuple[float, str]]) -> int:
        """Append (ts, body) entries in one transaction; returns the last sequence number."""
        db = self._conn()
        seq, prev = self.last_seq, self.last_hash
        rows = []
        for ts, body in entries:
            seq += 1
            h = entry_hash(seq, prev, body)
            rows.append((seq, ts, body, prev, h))
            prev = h
        with db:
            db.execute("BEGIN IMMEDIATE")
            head = db.execute("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1").fetchone()
            if (head or (0, GENESIS)) != (self.last_seq, self.last_hash):
                raise HeadMoved(f"the audit log's last record is {_head(head)}, not record {self.last_seq} this "
                                "writer wrote last: another writer appended to it (one that did not take its "
                                "lock), or its rows were changed while it ran; run aigrid audit verify")
            db.executemany("INSERT INTO audit_records (seq, ts, body, prev_hash, hash) VALUES (?, ?, ?, ?, ?)", rows)
        self.last_seq, self.last_hash = seq, prev
        self._write_head()  # after the commit (durable: synchronous=FULL): the head never runs ahead of the log
        return seq

    def _write_head(self) -> None:
        """The head file at the last record; a failure is logged (the batch is written: not retried), and the
        head stays behind the log, which verify accepts; the next batch writes it again."""
        if self.signing_key is None:
            return
        try:
            write_head(self._head_path, self.last_seq, self.last_hash, self.signing_key)
            self._head_at = self.last_seq
        except OSError as e:
            log.error("audit head file not written (record %d is in the log; the next batch writes it): %s",
                      self.last_seq, e)

    def checkpoint(self, now: float | None = None) -> int | None:
        """Sign the current head; returns its sequence number (None without a key or new records). Its statement
        says this writer keeps a head file (v2), so the head is made durable at this record first (written again
        if the last batch's write failed; the folder fsynced, or a crash could lose its rename): an OSError here
        fails the checkpoint (tried again later), never signs one whose head is not on disk."""
        if self.signing_key is None or self.last_seq == self.last_checkpoint:
            return None
        path = self._head_path
        if self._head_at != self.last_seq:
            write_head(path, self.last_seq, self.last_hash, self.signing_key)
            self._head_at = self.last_seq
        sync_folder(path)
        signature = self.signing_key.sign(checkpoint_message(self.last_seq, self.last_hash, head_kept=True))
        with self._conn() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO audit_checkpoints (seq, hash, ts, key_id, signature) VALUES (?, ?, ?, ?, ?)",
                       (self.last_seq, self.last_hash, time.time() if now is None else now,
                        key_id(self.signing_key.public_key()), signature))
        self.last_checkpoint = self.last_seq
        return self.last_seq

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("audit store is not open (call open() first)")
        return self._db



_NETWORK_FS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre", "gpfs",
                         "afs", "fuse.sshfs", "fuse.glusterfs", "fuse.cephfs", "fuse.s3fs", "fuse.gcsfuse"})
MOUNTS = Path("/proc/self/mountinfo")


def network_file_system(path: Path) -> str | None:
    """The type of the network file system `path` is on (None: a local one, or not known: no /proc).
    A cheap guard, warned about only: POSIX locks (the writer's) and SQLite's WAL index (shared memory) hold on
    one host, so two hosts can both open a log there (SQLite's documentation: WAL does not work over a network
    file system)."""
    try:
        mounts = MOUNTS.read_text()
    except OSError:
        return None
    where = str(path.resolve().parent)
    best, kind = "", None
    for line in mounts.splitlines():
        fields, _, after = line.partition(" - ")
        parts = fields.split()
        if len(parts) < 5 or not after:
            continue
        point = parts[4].replace("\\040", " ")
        if (where == point or where.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, after.split()[0]
    return kind if kind in _NETWORK_FS else None


def _head(row: tuple[object, object] | None) -> str:
    return "none (the log is empty)" if row is None else f"record {row[0]!r}"


def check_format(db: sqlite3.Connection) -> int:
    """The log's format (0: written before the stamp); sqlite3.DatabaseError, one line saying what to do, for a
    later one than this version knows."""
    found = int(db.execute("PRAGMA user_version").fetchone()[0])
    if found > FORMAT:
        raise sqlite3.DatabaseError(f"written by a newer aigrid (audit log format {found}; this version writes "
                                    f"{FORMAT}): run that aigrid or a later one (the file is left as it is)")
    return found
