"""Verify an audit database: recompute the hash chain and check every signed checkpoint.

Pinpoints the first bad record when a row was changed (its hash no longer matches, or its `ts` column no
longer says the time its hashed body says), deleted (a gap in the sequence) or reordered (a record's hash
commits to its position and predecessor). If an attacker rewrote a record and recomputed every later hash,
the chain is consistent again but the signed checkpoint is not: the report then names the range between the
last good checkpoint and the first bad one. Records after the last checkpoint are only hash-chained: the
report says how many.

The file is read as an attacker may have left it: a value of another type than the writer's (NULL, a BLOB, a
number, bytes that are not UTF-8), a dropped checkpoint table, a damaged page: each is a problem naming its
record or checkpoint, never a traceback. A checkpoint's `key_id` column is not signed; it says which of the
given public keys (several after a key rotation) to check it with, and a checkpoint whose signature holds for
another given key than the one it names is reported (its key id was changed). An `anchor` (seq, hash) kept
elsewhere from an earlier run (the CLI prints it) catches what the file alone cannot: the tail deleted
together with its checkpoints, the file replaced by an older copy, an empty log or another log signed with
the same key. The head file beside the log (`<log>-head`, audit/head.py: the last record its writer put on disk,
signed after each batch) finds, without an anchor, a log cut at its end together with its checkpoints, and a log
put back without its head; what it cannot find is an older copy of both files put back together (the anchor does).
A missing head file fails a log whose valid checkpoints say their writer keeps one (the v2 statement,
chain.checkpoint_message: signed only once the head is on disk at its record), and so does a head before the last
of them (an older head put back); a log none of whose checkpoints say so (written before 6 Dec 2026) without a
head gets a note only.

Memory is bounded on a log of any length: the records and the checkpoints are read as two cursors walked
together in seq order (each checkpoint is checked when the walk reaches its record; nothing is kept per
record or per checkpoint), and at most MAX_KEPT problems are kept (the rest counted: `more`). So is it on a
log with a large record (a huge prompt kept as text): each body is read through SQLite's incremental blob I/O;
one of at most MAX_PARSED bytes is read whole and parsed, a larger one is hashed as it streams (BODY_CHUNK bytes
at a time) and its ts read from its last key, where the writer puts it (its keys sorted: `ts` last): the whole
record is never in memory (a 200 MiB body took 854 MiB of peak RSS, now 57 MiB). A log whose SQLite text
encoding is not UTF-8 (the writer's is; only a file made elsewhere) has each body read whole, as UTF-8, as before.
"""

from __future__ import annotations

import heapq
import json
import re
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from aigrid.audit.chain import GENESIS, OPENED_UNSIGNED, checkpoint_message, entry_hash, entry_hasher
from aigrid.audit.head import head_message, head_path, read_head
from aigrid.audit.signing import key_id
from aigrid.audit.store import check_format
from aigrid.cli_error import agreeing
from aigrid.printable import printable

_KEY_ID = re.compile(r"[0-9a-f]{16}")
MAX_KEPT = 10_000
"""Problems kept in a report (a wrong key on a year's log is one per checkpoint: millions); the rest are counted."""
_Checkpoint = tuple[int, str, str, object]
MAX_PARSED = 16 << 20
"""A body of at most this many bytes is read whole and parsed; a larger one is hashed as it streams and its ts
read from its end (the writer's bodies end with it). A record's note (OPENED_UNSIGNED) is read from a parsed
body only: the writer's own are ~1 KB."""
BODY_CHUNK = 1 << 20
_TAIL = 128
"""The bytes at the end of a streamed body its ts is read from (`,"ts":1700000000.123456}` is ~30)."""
_TS_AT_END = re.compile(rb'[,{]"ts":(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|null)\}\s*\Z')
_NOT_TEXT = {"null": "NULL", "integer": "a int", "real": "a float"}


class NotAnAuditLog(ValueError):
    """The file is an SQLite database without the audit log's records table."""


@dataclass(slots=True)
class _Problem:
    seq: int
    """The first record it concerns (the report is sorted by it)."""
    text: str
    kind: str = ""
    """Problems of one kind on consecutive records are reported as one range (`kind` set)."""
    end: int = 0
    why: str = ""


@dataclass(slots=True)
class VerifyReport:
    records: int = 0
    checkpoints: int = 0
    last_checkpoint_seq: int = 0
    """The last checkpoint whose signature holds (0: none)."""
    last_checkpoint_hash: str = ""
    """Its hash: with last_checkpoint_seq, the anchor to keep elsewhere (verify(anchor=...) next time)."""
    head_kept_from: int = 0
    """The first valid checkpoint whose statement says its writer keeps a head file (v2; 0: none, an older
    writer's log): from there on the head file must be there."""
    head_kept_until: int = 0
    """The last valid checkpoint whose statement says its writer keeps a head file (v2; 0: none): the head file
    must be at or past it (its writer signed it only once the head was on disk at its record, and a head only
    moves forward), so a head behind it is an older one put back, perhaps with the records after it cut."""
    unsigned_tail: int = 0
    first_bad_seq: int | None = None
    first_break: int | None = None
    """The first record where the chain itself breaks (a row changed, deleted, reordered, unreadable); the
    first bad record may be earlier when a signed checkpoint no longer matches (a rewritten prefix)."""
    bad_range: tuple[int, int] | None = None
    notes: list[str] = field(default_factory=list)
    """What the log says of itself, not a problem: a writer that opened it with records after its last
    checkpoint, which it did not write and does not vouch for (a crash, or records added to the file). Only a
    note at or before the last valid checkpoint is quoted (its control characters escaped); one in the unsigned
    tail needs no key to write, so it is only counted as there, and so is one inside the records a later quoted
    note disclaims (a forged note the next start signed with the rest of the tail it found). A quoted note's
    disclaimed records are narrowed to those after the last valid checkpoint of any given key before it (after a
    key rotation the new key's writer disclaims what the old key signed)."""
    damaged: bool = False
    """Reading the records stopped at a page that cannot be read (its problem says from which record)."""
    more: int = 0
    """Problems found past the MAX_KEPT kept (not in `problems`)."""
    _found: list[tuple[int, int, _Problem]] = field(default_factory=list)
    """The problems kept, a heap whose top is the one to give up first (-seq, -found): the MAX_KEPT first by
    record, not by walk order (a checkpoint's problem names records the walk passed long before), so the first
    bad record the report names is among them."""
    _chain_last: _Problem | None = None
    """The last problem of the chain (a range the next record may extend), kept or not."""
    _said: list[tuple[int, str, tuple[int, int] | None, int]] = field(default_factory=list)
    """The writers' notes read (seq, text escaped, the records it disclaims, the last valid checkpoint of any
    given key before it): only those a valid checkpoint signs and no later shown note disclaims are shown."""

    @property
    def problems(self) -> list[str]:
        """One line per problem, ordered by the first record each concerns; consecutive records with the same
        problem (every record after a renumbered one) in one line."""
        return [p.text if p.end == p.seq else f"{records_span(p.seq, p.end)}: {p.why}"
                for _, _, p in sorted(self._found, reverse=True)]

    @property
    def ok(self) -> bool:
        return not self._found and not self.more

    def _bad(self, seq: int, problem: str) -> _Problem:
        found = _Problem(seq, problem, end=seq)
        kept = (-seq, -(len(self._found) + self.more), found)
        if len(self._found) < MAX_KEPT:
            heapq.heappush(self._found, kept)
        else:
            self.more += 1
            if kept[:2] > self._found[0][:2]:  # before the last kept one: kept, that one given up
                heapq.heapreplace(self._found, kept)
        if self.first_bad_seq is None or seq < self.first_bad_seq:
            self.first_bad_seq = seq
        return found

    def _broken(self, seq: int, kind: str, problem: str, many: str) -> None:
        """A problem of the chain at record `seq`; `many`: its wording for a range of records."""
        last = self._chain_last
        if last is not None and last.kind == kind and last.end == seq - 1:
            last.end = seq
            return
        self._chain_last = self._bad(seq, problem)
        self._chain_last.kind, self._chain_last.why = kind, many
        if self.first_break is None:
            self.first_break = seq


def check_path(db_path: Path) -> None:
    """FileNotFoundError when nothing is at `db_path`; NotAnAuditLog when a folder is (SQLite said only "disk I/O
    error" of a folder: `aigrid audit verify .aigrid` named no cause)."""
    if not db_path.exists():
        raise FileNotFoundError(f"no audit database at {db_path}")
    if db_path.is_dir():
        raise NotAnAuditLog(f"{db_path} is a folder, not an audit database (name the database file: the spec's "
                            "security.audit.path, by default .aigrid/audit.db)")


def verify(db_path: Path, public_key: Ed25519PublicKey | Sequence[Ed25519PublicKey], *,
           require_checkpoint: bool = True, anchor: tuple[int, str] | None = None) -> VerifyReport:
    """Check the whole log. Without any signed checkpoint nothing proves the records were not rewritten,
    so a non-empty log without one fails unless require_checkpoint is False. `public_key`: the key, or every
    key that signed checkpoints of this log (a rotation); `anchor`: a (seq, hash) of this log kept elsewhere.
    Raises NotAnAuditLog (neither of the log's tables), sqlite3.Error when the file cannot be read as a database
    at all; a checkpoint table without the records table is tampering (a problem), not NotAnAuditLog."""
    check_path(db_path)
    keys = {key_id(k): k for k in ([public_key] if isinstance(public_key, Ed25519PublicKey) else public_key)}
    report = VerifyReport()
    head = _signed_head(db_path, keys)  # before the log is read: the writer writes it after the log's commit
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    db.text_factory = bytes  # what is stored, as stored: a body that is not UTF-8 is a bad record, not a crash
    try:
        check_format(db)  # a newer aigrid's log: one line saying so (exit 2), not findings in a format not known
        tables = {_text(name) for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "audit_records" not in tables:
            if "audit_checkpoints" not in tables:
                raise NotAnAuditLog(f"{db_path} is not an audit database (it has no audit_records table)")
            report.checkpoints = sum(1 for _ in _checkpoints(db, report))
            report._bad(1, "the records table is gone (dropped or renamed) but the checkpoint table is there: the "
                           "records were removed")
            return report
        if "audit_checkpoints" in tables:
            checkpoints: Iterator[_Checkpoint] = _checkpoints(db, report)
        else:
            checkpoints = iter(())
            report._bad(1, "the checkpoint table is gone (dropped): nothing proves the records")
        check = _CheckpointCheck(keys, report)
        wanted = {position[0] for position in (anchor, head) if isinstance(position, tuple)}
        chained, last_seq = _chain(db, report, checkpoints, check, wanted)
        for checkpoint in checkpoints:  # those past the last record read
            check.one(checkpoint, None, last_seq)
        if anchor is not None:
            _check_anchor(anchor, chained, last_seq, report)
        if isinstance(head, tuple):
            _check_head(db_path, head, chained, last_seq, report)
        elif head is not None:
            report._bad(last_seq + 1, head)
        elif report.head_kept_from:
            report._bad(last_seq + 1, f"its head file {head_path(db_path).name} is missing, but checkpoint "
                                      f"{report.head_kept_from} says its writer keeps one (written before each "
                                      "checkpoint it signs): it was deleted, perhaps with records cut from the "
                                      "log's end; restore it from the backup taken with the log, or verify with "
                                      "--anchor (the last anchor kept) to find a cut before it")
        report.unsigned_tail = max(0, last_seq - report.last_checkpoint_seq)
        report.notes.extend(_notes(report))
        if head is None and report.records and not report.head_kept_from:  # a log no head-keeping writer signed
            report.notes.append(f"no head file {head_path(db_path).name} beside the log: a cut at its end is not "
                                "seen (no valid checkpoint says its writer keeps one: the log was last written "
                                "by an aigrid before 6 Dec 2026, whose writer's next start writes one; or it was "
                                "cut back to before its first such checkpoint and the file deleted: only --anchor "
                                "finds that cut)")
        if require_checkpoint and report.records and not report.checkpoints and "audit_checkpoints" in tables:
            report._bad(1, "no signed checkpoint: the records could have been rewritten wholesale (a fresh log's "
                           "writer signs its first within checkpoint_after_s; one that stopped before it, a crash, "
                           "signs them at its next start, after a note saying it does not vouch for them)")
    finally:
        db.close()
    return report


def _notes(report: VerifyReport) -> list[str]:
    """The report's lines for the writers' notes, in order. Read from the last: a note a valid checkpoint signs
    is shown unless a later shown note disclaims its record (its `unsigned` range): the next start signs the
    whole tail it found, a forged note in it too, and says first that it does not vouch for it."""
    lines: list[str] = []
    disclaimed: list[tuple[int, int]] = []
    for seq, said, unsigned, signed in reversed(report._said):
        if seq > report.last_checkpoint_seq:
            lines.append(f"record {seq}: a writer's note in the unsigned tail (no valid checkpoint signs it, anyone "
                         "could have added it: not shown)")
        elif any(first <= seq <= last for first, last in disclaimed):
            lines.append(f"record {seq}: a note in records a later writer did not vouch for: not shown")
        else:
            lines.append(f"record {seq}: the writer opening the log said: {said}{_narrowed(signed, unsigned)}")
            if unsigned is not None:
                disclaimed.append(unsigned)
    return lines[::-1]


def records_span(first: int, last: int) -> str:
    """`record 7` or `records 7..9`: a range of sequence numbers as a finding names it (never `records 7..7`)."""
    return f"record {first}" if first == last else f"records {first}..{last}"


def _narrowed(signed: int, unsigned: tuple[int, int] | None) -> str:
    """What a note's disclaimed records leave once the valid checkpoints of every given key are counted (`signed`:
    the last before the note): the writer only knew its own key's."""
    if unsigned is None:
        return ""
    first, last = unsigned
    if signed < first:
        return ""
    said = f" (verify: of {records_span(first, last)}, "
    if signed >= last:
        return f"{said}none follow the last checkpoint of any given key ({signed}): it signs them all)"
    follow = f"{signed + 1 if signed + 1 == last else f'{signed + 1}..{last}'} {agreeing(last - signed, 'follows', 'follow')}"
    return f"{said}{follow} the last checkpoint of any given key ({signed}))"


def _chain(db: sqlite3.Connection, report: VerifyReport, checkpoints: Iterator[_Checkpoint],
           check: _CheckpointCheck, wanted: set[int]) -> tuple[dict[int, str], int]:
    """Walk the records in order, each checkpoint checked as the walk reaches its record (`checkpoints`, in seq
    order, is left at the first past the last record read); returns the recomputed hashes of the `wanted` records
    and the last sequence number read."""
    chained: dict[int, str] = {}
    expected, prev = 1, GENESIS
    waiting = next(checkpoints, None)

    def reached(seq: int, computed: str | None) -> _Checkpoint | None:
        """Check the waiting checkpoints up to record `seq` (those before it name a missing record)."""
        nonlocal waiting
        while waiting is not None and waiting[0] <= seq:
            check.one(waiting, computed if waiting[0] == seq else None, seq)
            waiting = next(checkpoints, None)
        return waiting

    try:
        bodies = _Bodies(db)
        for seq, ts, kind, prev_hash, stored, *whole in db.execute(  # the body only when _Bodies cannot read it
                f"SELECT {bodies.columns} FROM audit_records ORDER BY seq"):
            report.records += 1
            seq = int(seq)
            reached(seq - 1, None)
            prev_hash, stored, kind = _text(prev_hash), _text(stored), _text(kind)
            if seq != expected:
                missing = f"{records_span(expected, seq - 1)} {agreeing(seq - expected, 'is', 'are')}"
                report._broken(expected, f"gap{seq}", f"{missing} missing (deleted)", "")
            if kind not in ("text", "blob"):
                report._broken(seq, "body", f"record {seq}: its body is {_NOT_TEXT.get(kind, kind)}, not text "
                                            "(changed)", "their bodies are not text (changed)")
                prev, expected = stored, seq + 1
                reached(seq, None)
                continue
            computed, body = bodies.hashed(seq, prev_hash, whole)
            if seq != expected:
                pass  # the gap is the problem; the link from the missing record cannot be checked
            elif prev_hash != prev:
                report._broken(seq, "link", f"record {seq}: link to record {seq - 1} is broken (changed or "
                                            "reordered)", "their links to the record before are broken (changed or "
                                                          "reordered)")
            elif computed != stored:
                report._broken(seq, "hash", f"record {seq}: content does not match its hash (changed)",
                               "content or position does not match their hashes (changed, or renumbered)")
            elif isinstance(body, bytes):
                _check_ts(seq, ts, body, report)
            else:
                _check_streamed_ts(seq, ts, body, report)
            prev, expected = stored, seq + 1
            reached(seq, computed)
            if seq in wanted:
                chained[seq] = computed
    except sqlite3.DatabaseError as e:  # a damaged page: what was read before it stands
        report._broken(expected, "damaged", f"records from {expected} on cannot be read: the file is damaged ({printable(str(e))})",
                       "")
        report.damaged = True
    if waiting is not None:  # the first checkpoint past the last record read, taken off the cursor
        check.one(waiting, None, expected - 1)
    return chained, expected - 1


class _Bodies:
    """Each record's body as stored, read with SQLite's incremental blob I/O: whole up to MAX_PARSED bytes, else
    in BODY_CHUNK pieces fed to the hash (its first byte and last _TAIL bytes kept for the ts)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.streamed = _text(db.execute("PRAGMA encoding").fetchone()[0]) == "UTF-8" and _seq_is_rowid(db)
        """Blob I/O reads the stored bytes (the column's text in a UTF-8 database only) of the row with a given
        rowid (the walk's row only while seq is the rowid): else each body comes whole with its row, as before."""
        self.columns = "seq, ts, typeof(body), prev_hash, hash" + ("" if self.streamed else ", body")

    def hashed(self, seq: int, prev_hash: str, whole: list[object]) -> tuple[str, bytes | _Streamed]:
        """(the recomputed hash of record `seq`, its body: bytes, or what is kept of a streamed one); `whole`: the
        row's body when it was selected (text or a blob: bytes)."""
        if whole:
            body = whole[0]
            assert isinstance(body, bytes)
            return entry_hash(seq, prev_hash, body), body
        with self.db.blobopen("audit_records", "body", seq, readonly=True) as blob:
            size = len(blob)
            if size <= MAX_PARSED:
                body = blob.read()
                return entry_hash(seq, prev_hash, body), body
            h = entry_hasher(seq, prev_hash)
            first = b""
            while piece := blob.read(BODY_CHUNK):
                first = first or piece[:1]
                h.update(piece)
            blob.seek(size - _TAIL)
            return h.hexdigest(), _Streamed(size, first, blob.read(_TAIL))


def _seq_is_rowid(db: sqlite3.Connection) -> bool:
    """Is `seq` the table's rowid, its INTEGER PRIMARY KEY, as the writer makes it? Not for a table someone made
    anew with `seq INT PRIMARY KEY`, `INTEGER PRIMARY KEY DESC` or WITHOUT ROWID (each has a primary-key index)."""
    try:
        keys = [(_text(name), _text(kind).upper())
                for _, name, kind, _, _, pk in db.execute("PRAGMA table_info(audit_records)") if pk]
        pk_index = any(_text(row[3]) == "pk" for row in db.execute("PRAGMA index_list(audit_records)"))
    except sqlite3.DatabaseError:
        return False
    return keys == [("seq", "INTEGER")] and not pk_index


@dataclass(slots=True, frozen=True)
class _Streamed:
    """What is kept of a body too large to read whole."""
    size: int
    first: bytes
    tail: bytes


def _check_streamed_ts(seq: int, ts: object, body: _Streamed, report: VerifyReport) -> None:
    """_check_ts for a body past MAX_PARSED: the writer's body is an object whose last key is `ts` (sorted)."""
    found = _TS_AT_END.search(body.tail) if body.first == b"{" else None
    if found is None:
        report._broken(seq, "json", f"record {seq}: its body ({body.size} bytes, past the {MAX_PARSED} verify "
                                    "parses) is not an audit record (not a JSON object ending with its ts)",
                       "their bodies are not audit records (not JSON objects)")
        return
    said = orjson.loads(found.group(1))
    if not isinstance(ts, int | float) or isinstance(ts, bool) or said != ts:
        report._broken(seq, "ts", f"record {seq}: its ts column ({_shown(ts)}) is not the time in its hashed body "
                                  f"({_shown(said)}) (changed)",
                       "their ts columns are not the times in their hashed bodies (changed)")


def _check_ts(seq: int, ts: object, body: bytes, report: VerifyReport) -> None:
    """The `ts` column is outside the hash: it must say the time the hashed body says (a reader selecting
    records by time reads the column)."""
    try:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:  # orjson refuses an escaped lone surrogate, which a record may hold
            parsed = json.loads(body)
        said = parsed.get("ts")
    except (ValueError, AttributeError):  # not JSON, not UTF-8, not an object
        report._broken(seq, "json", f"record {seq}: its body is not an audit record (not a JSON object)",
                       "their bodies are not audit records (not JSON objects)")
        return
    except RecursionError:  # nested deeper than the writer can write (orjson: 255), json.loads's fallback gives up
        report._broken(seq, "deep", f"record {seq}: its body is not an audit record (JSON nested too deep to read)",
                       "their bodies are not audit records (JSON nested too deep to read)")
        return
    if parsed.get("outcome") == OPENED_UNSIGNED:
        extra = parsed.get("extra") if isinstance(parsed.get("extra"), dict) else {}
        unsigned = extra.get("unsigned")
        if not (isinstance(unsigned, list) and len(unsigned) == 2
                and all(isinstance(n, int) and not isinstance(n, bool) for n in unsigned)
                and 0 < unsigned[0] <= unsigned[1] < seq):
            unsigned = None
        report._said.append((seq, printable(str(extra.get("message"))[:600]),
                             None if unsigned is None else (unsigned[0], unsigned[1]), report.last_checkpoint_seq))
    if not isinstance(ts, int | float) or isinstance(ts, bool) or said != ts:
        report._broken(seq, "ts", f"record {seq}: its ts column ({_shown(ts)}) is not the time in its hashed body "
                                  f"({_shown(said)}) (changed)",
                       "their ts columns are not the times in their hashed bodies (changed)")


def _checkpoints(db: sqlite3.Connection, report: VerifyReport) -> Iterator[_Checkpoint]:
    """The checkpoint rows in seq order, one at a time; a page that cannot be read ends them (a problem)."""
    try:
        for seq, h, kid, sig in db.execute("SELECT seq, hash, key_id, signature FROM audit_checkpoints ORDER BY seq"):
            yield int(seq), _text(h), _text(kid), sig
    except sqlite3.DatabaseError as e:
        report._bad(1, f"the checkpoints cannot be read: the file is damaged ({printable(str(e))})")


class _CheckpointCheck:
    """Checks the checkpoints one by one in seq order, each with the recomputed hash of its record."""

    def __init__(self, keys: dict[str, Ed25519PublicKey], report: VerifyReport) -> None:
        self.keys, self.report = keys, report
        self.given = ", ".join(keys)
        self.good_until = 0
        """The last valid checkpoint so far (0: none): a problem of a later one concerns the records after it."""

    def one(self, checkpoint: _Checkpoint, computed: str | None, last_seq: int) -> None:
        """`computed`: the recomputed hash of its record (None: missing, or not read); `last_seq`: the last
        record read (the log's end once the walk is over)."""
        report, good_until = self.report, self.good_until
        seq, signed_hash, named, signature = checkpoint
        report.checkpoints += 1
        named_shown = named if _KEY_ID.fullmatch(named) else "(not a key id)"
        if not isinstance(signature, bytes):
            report._bad(good_until + 1, f"checkpoint {seq}: its signature is {_kind(signature)}, not bytes (changed)")
            return
        head_kept = True  # the v2 statement (this version's writer), then v1 (an older writer's)
        signer = _signer(signature, checkpoint_message(seq, signed_hash, head_kept=True), self.keys, named)
        if signer is None:
            head_kept = False
            signer = _signer(signature, checkpoint_message(seq, signed_hash, head_kept=False), self.keys, named)
        if signer is None:
            if named in self.keys:
                why = f"signature invalid for key {named}, the key it names (a forged or changed checkpoint)"
            else:
                why = (f"signature invalid: it names key {named_shown}, not the given key {self.given} (the wrong "
                       "--public-key, or a checkpoint forged with another key)")
            report._bad(good_until + 1, f"checkpoint {seq}: {why}")
            return
        if signer != named:
            report._bad(good_until + 1, f"checkpoint {seq}: names key {named_shown} but is signed by key {signer} "
                                        "(its key id was changed)")
        if seq > last_seq and report.damaged:  # the damage hides what it signs: already reported
            return
        if seq > last_seq:
            report._bad(last_seq + 1, f"checkpoint {seq} is signed but the log ends at {last_seq} "
                                      f"({records_span(last_seq + 1, seq)} deleted)")
        elif computed != signed_hash:
            report._bad(good_until + 1, f"{records_span(good_until + 1, seq)} "
                                        f"{agreeing(seq - good_until, 'does', 'do')} not match the signed "
                                        f"checkpoint {seq} (rewritten)")
            if report.bad_range is None:
                report.bad_range = (good_until + 1, seq)
        else:
            self.good_until = seq
            report.last_checkpoint_seq, report.last_checkpoint_hash = seq, signed_hash
            if head_kept:
                report.head_kept_until = seq
                if not report.head_kept_from:
                    report.head_kept_from = seq


def _signer(signature: bytes, message: bytes, keys: dict[str, Ed25519PublicKey], named: str) -> str | None:
    """The id of the given key the signature holds for, the key the checkpoint names tried first."""
    for kid in sorted(keys, key=lambda k: k != named):
        try:
            keys[kid].verify(signature, message)
        except InvalidSignature:
            continue
        return kid
    return None


def _check_anchor(anchor: tuple[int, str], chained: dict[int, str], last_seq: int, report: VerifyReport) -> None:
    seq, anchored = anchor
    _check_held(seq, anchored, chained, last_seq, report, f"the anchor {seq}",
                "deleted, or the file was replaced by an older copy or another log",
                "the anchor (the log was rewritten, or the file replaced by another log)")


def _check_held(seq: int, record_hash: str, chained: dict[int, str], last_seq: int, report: VerifyReport,
                before: str, gone: str, match: str) -> None:
    """The log must reach record `seq` (the anchor's, the head file's) and hold `record_hash` there: past its end,
    "the log ends at record L, before {before}: records L+1..seq were {gone}"; a hash unlike it, "record seq does not
    match {match}"."""
    if seq > last_seq:
        report._bad(last_seq + 1, f"the log ends at record {last_seq}, before {before}: "
                                  f"{records_span(last_seq + 1, seq)} {agreeing(seq - last_seq, 'was', 'were')} {gone}")
    elif chained.get(seq) != record_hash:
        report._bad(seq, f"record {seq} does not match {match}")


def _signed_head(db_path: Path, keys: dict[str, Ed25519PublicKey]) -> tuple[int, str] | str | None:
    """The head file's (seq, hash) when a given key signed it; else the problem with it (None: there is none)."""
    name = head_path(db_path).name
    try:
        head = read_head(head_path(db_path))
    except ValueError as e:
        return f"the head file {e}"
    except OSError as e:
        return f"the head file {name} cannot be read ({e.strerror or e})"
    if head is None:
        return None
    seq, record_hash, named, signature = head
    if _signer(signature, head_message(seq, record_hash), keys, named) is None:
        return (f"the head file {name}: its signature is invalid for every given key (forged or changed, or the "
                "wrong --public-key)")
    return seq, record_hash


def _check_head(db_path: Path, head: tuple[int, str], chained: dict[int, str], last_seq: int,
                report: VerifyReport) -> None:
    """The log must hold the head file's record (a crash between the log's commit and the head's write leaves
    the head behind the log: not a problem), and the head must be at or past the first checkpoint saying its
    writer keeps one (the writer signs it only once the head is on disk there, and a head only moves forward: a
    head behind the last such checkpoint, even one past the first, is an older one put back)."""
    seq, record_hash = head
    name = head_path(db_path).name
    if seq < report.head_kept_until:
        report._bad(seq + 1, f"the head file {name} (record {seq}) is before checkpoint {report.head_kept_until}, "
                             "signed only once the head was at or past it: an older head file was put back, perhaps "
                             "with records cut from the log's end; restore the log and its head file together from "
                             "the same backup, or verify with --anchor (the last anchor kept) to find a cut")
    _check_held(seq, record_hash, chained, last_seq, report, f"its head file {name} (record {seq})",
                "cut (truncated), or the log was replaced by an older copy",
                f"the head file {name} (the log was rewritten, or replaced by another log)")


def _text(value: object) -> str:
    """A column the writer stores as ASCII text (a hash, a key id, a table name), whatever is there now."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return "" if value is None else str(value)


def _kind(value: object) -> str:
    return "NULL" if value is None else f"a {type(value).__name__}"


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
