"""The hash chain and the checkpoint statement: the only definitions the writer and verify share.

    hash(n) = SHA-256("aigrid-audit-v1" | n | hash(n-1) | body(n)),  hash(0) = GENESIS
A checkpoint signs (n, hash(n)) with Ed25519; since hash(n) commits to every earlier record, one valid
signature vouches for the whole prefix up to n.
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


def checkpoint_message(seq: int, record_hash: str) -> bytes:
    return f"aigrid-audit-checkpoint-v1\n{seq}\n{record_hash}".encode()
