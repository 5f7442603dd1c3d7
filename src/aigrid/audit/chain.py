"""The hash chain and the checkpoint statement: the only definitions the writer and verify share.

    hash(n) = SHA-256("aigrid-audit-v1" | n | hash(n-1) | body(n)),  hash(0) = GENESIS
A checkpoint signs (n, hash(n)) with Ed25519; since hash(n) commits to every earlier record, one valid
signature vouches for the whole prefix up to n. Its statement also says whether its writer keeps a head file
(`<log>-head`, audit/head.py): v2, every checkpoint a writer since 6 Dec 2026 signs, written only once the head
file is on disk at or past its record; v1, an older writer's. A log with a valid v2 checkpoint must have its head
file, at or past the first one (verify): deleting the head with a cut tail no longer hides the cut.
"""

from __future__ import annotations

import hashlib

GENESIS = "0" * 64
OPENED_UNSIGNED = "audit:opened_unsigned"
"""The outcome of the record a writer writes first when it opens a log with records after its last checkpoint,
which it did not write and does not vouch for (AuditLog.start); verify prints it as a note."""


def entry_hash(seq: int, prev_hash: str, body: str | bytes) -> str:
    """`body` as the writer has it (str), or as verify reads it back (its stored bytes)."""
    h = entry_hasher(seq, prev_hash)
    h.update(body if isinstance(body, bytes) else body.encode("utf-8"))
    return h.hexdigest()


def entry_hasher(seq: int, prev_hash: str) -> hashlib._Hash:
    """The hash of record `seq` before its body: verify feeds a large body in pieces (its memory bounded)."""
    h = hashlib.sha256()
    h.update(f"aigrid-audit-v1\n{seq}\n{prev_hash}\n".encode())
    return h


def checkpoint_message(seq: int, record_hash: str, *, head_kept: bool) -> bytes:
    """What a checkpoint signs. `head_kept`: the v2 statement (its writer keeps a head file), else v1 (an older
    writer's): a signature of one never holds for the other, so a v2 checkpoint cannot be passed off as v1."""
    if head_kept:
        return f"aigrid-audit-checkpoint-v2\nhead-kept\n{seq}\n{record_hash}".encode()
    return f"aigrid-audit-checkpoint-v1\n{seq}\n{record_hash}".encode()
