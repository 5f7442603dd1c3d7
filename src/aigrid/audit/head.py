"""The log's head file, `<log>-head`: the last record the writer put on disk, signed, beside the log.

    SEQ:HASH:KEY_ID:SIGNATURE    (one line; the signature, hex, of head_message(SEQ, HASH) with the writer's key)

The writer rewrites it after each batch it committed (AuditStore.append), atomically (a temporary file written,
fsynced and renamed over it), and only after SQLite's commit is durable (synchronous=FULL): the head never runs
ahead of the log. A crash between the two leaves it behind the log, which verify accepts (the records after it
are chained like any unsigned tail); a log that ends before its head, or whose record at the head's seq is not
the one it names, was cut at its end (truncated) or replaced. The rename after a batch is not followed by an
fsync of the folder: a crash may lose it, which leaves the previous head, again behind the log. Before each
checkpoint the writer makes the head durable at the checkpoint's record (sync_folder): its checkpoints say, signed,
that it keeps a head (chain.checkpoint_message, v2), so verify fails a log that has one and no head file.

It is signed so that whoever cuts the log cannot write a head that agrees: what they can do without the key is
put back an older copy of both files (the log and its head together), which only an anchor kept off the host
finds (`aigrid audit verify --anchor`).
"""

from __future__ import annotations

import errno
import functools
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aigrid.audit.signing import key_id

_HEX = frozenset("0123456789abcdef")


def head_path(db_path: Path) -> Path:
    return db_path.with_name(f"{db_path.name}-head")


def head_message(seq: int, record_hash: str) -> bytes:
    """What the head file's signature signs: not a checkpoint's statement (one cannot be passed for the other)."""
    return f"aigrid-audit-head-v1\n{seq}\n{record_hash}".encode()


def parse_position(text: str) -> tuple[int, str] | None:
    """`SEQ:HASH` (a record number from 1 and a 64-digit SHA-256 in hex) -> (seq, hash); None otherwise."""
    seq, _, digest = text.strip().partition(":")
    if not seq.isdigit() or int(seq) < 1 or len(digest) != 64 or not set(digest) <= _HEX:
        return None
    return int(seq), digest


def read_head(path: Path) -> tuple[int, str, str, bytes] | None:
    """(seq, hash, key id, signature) of the head file at `path`; None when there is none. ValueError: not a
    head file (its text as it is is not shown: it is the attacker's); OSError: cannot be read."""
    try:
        raw = path.read_bytes()[:512]
    except FileNotFoundError:
        return None
    fields = raw.decode("ascii", errors="replace").strip().split(":")
    position = parse_position(":".join(fields[:2])) if len(fields) == 4 else None
    if position is None or len(fields[3]) != 128 or not set(fields[3]) <= _HEX:
        raise ValueError(f"{path.name} is not SEQ:HASH:KEY_ID:SIGNATURE (changed)")
    return position[0], position[1], fields[2], bytes.fromhex(fields[3])


def write_head(path: Path, seq: int, record_hash: str, signing_key: Ed25519PrivateKey) -> None:
    """Replace the head file atomically (a temporary file fsynced, then renamed over it). Called after every batch:
    the key's id is computed once per key, the paths are plain strings (no Path built per call)."""
    signature = signing_key.sign(head_message(seq, record_hash)).hex()
    line = f"{seq}:{record_hash}:{_key_id(signing_key)}:{signature}\n".encode()
    target = os.fspath(path)
    temporary = f"{target}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, target)


@functools.lru_cache(maxsize=8)
def _key_id(signing_key: Ed25519PrivateKey) -> str:
    return key_id(signing_key.public_key())


def sync_folder(path: Path) -> None:
    """fsync the folder holding `path`: a rename into it survives a crash (the head before a checkpoint). A file
    system that cannot sync a folder (EINVAL, ENOTSUP: some FUSE and network ones) is let be, as SQLite does for
    its journal's folder; any other error (EIO) is raised: the checkpoint fails and is tried again."""
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)
