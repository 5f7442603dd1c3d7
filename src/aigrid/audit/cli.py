"""Command-line helpers the CLI mounts as `aigrid audit verify DB --public-key PEM` and `aigrid audit keygen`."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from aigrid.audit import verify as verify_module
from aigrid.audit.head import parse_position
from aigrid.audit.signing import generate_keypair, load_public_key
from aigrid.audit.verify import printable, verify
from aigrid.cli_error import counted


def verify_command(db_path: Path, public_key_path: Path | Sequence[Path], echo: Callable[[str], None] = print,
                   anchor: str | None = None, err: Callable[[str], None] | None = None) -> int:
    """Print a verification report; returns the exit code (0 intact, 1 tampered, 2 unusable input).
    `public_key_path`: one key, or each key that signed this log (a rotation). `anchor`: SEQ:HASH, printed by an
    earlier run and kept elsewhere: the log must still hold that record with that hash, so with an anchor a
    database that is missing or cannot be read as an audit log is exit 1 (the log it vouches for is gone), not
    2. `echo` prints a line as it is (no markup: a path is printed as written, a value read from the file
    escaped); `err` (None: `echo`) prints the `error:` lines, the CLI's on stderr as every other command's (until the
    thirty-third session on stdout, inside the report); the report and its verdict (OK, TAMPERED) go to `echo`."""
    fail = echo if err is None else err
    paths = [public_key_path] if isinstance(public_key_path, Path) else list(public_key_path)
    try:
        anchored = None if anchor is None else parse_anchor(anchor)
    except ValueError as e:
        fail(f"error: cannot verify: {e}")
        return 2
    if _missing(db_path):
        # the database first: it reported the default public key missing, and then (given one) the database
        fail(f"error: cannot verify: no audit database at {db_path}")
        if anchored is None:
            return 2
        echo(f"TAMPERED: the anchor {anchored[0]}:{anchored[1]} vouches for a log that is no longer there (deleted "
             "or replaced)")
        return 1
    try:
        keys = [public_key(p) for p in paths]
    except ValueError as e:
        fail(f"error: cannot verify: {e}")
        return 2
    try:
        report = verify(db_path, keys, anchor=anchored)
    except (OSError, ValueError, sqlite3.Error) as e:  # NotAnAuditLog included
        if isinstance(e, sqlite3.Error):  # a directory, another file, a database whose first page is damaged
            fail(f"error: cannot verify: {db_path} cannot be read as an audit database ({printable(str(e))})")
        else:
            fail(f"error: cannot verify: {e}")
        if anchored is None:
            return 2
        echo(f"TAMPERED: the anchor {anchored[0]}:{anchored[1]} vouches for a log that is no longer there (deleted "
             "or replaced)")
        return 1
    echo(f"{db_path}: {counted(report.records, 'record')}, {counted(report.checkpoints, 'signed checkpoint')} "
         f"(last valid at record {report.last_checkpoint_seq}, {counted(report.unsigned_tail, 'record')} after it)")
    if report.last_checkpoint_seq and report.ok:  # a failed log's last valid checkpoint may be another log's
        kept = f"{report.last_checkpoint_seq}:{report.last_checkpoint_hash}"  # (spliced in with its checkpoints)
        echo(f"anchor: {kept} (keep it off this host; --anchor {kept} then finds what the head file cannot: an "
             "older copy of the log and its head put back, another log)")
    elif report.last_checkpoint_seq:
        echo("anchor: none printed, the log failed (keep the last anchor of a run that passed)")
    if anchored is None and report.ok:  # what the files alone cannot show: an OK does not rule it out
        echo("not checked (no --anchor given): whether this is an older copy of the log put back together with its "
             "head file, or another log signed with the same key; only an anchor kept off this host finds that "
             "(--anchor SEQ:HASH, the last one a run printed)")
    for note in report.notes[:20]:
        echo(f"NOTE: {note}")
    if report.ok:
        echo("OK: the chain is intact and every checkpoint signature is valid")
    else:
        also = "" if report.first_break in (None, report.first_bad_seq) else \
            f" (the chain itself first breaks at record {report.first_break})"
        echo(f"TAMPERED: first bad record {report.first_bad_seq}{also}")
        problems = report.problems
        for problem in problems[:20]:
            echo(f"  - {problem}")
        hidden = len(problems[20:]) + report.more  # `more`: past the problems a report keeps (verify.MAX_KEPT)
        if hidden:
            echo(f"  ... and {hidden} more" + (f" ({report.more} not kept: a report keeps the first "
                                               f"{verify_module.MAX_KEPT} by record)" if report.more else ""))
    return 0 if report.ok else 1


def public_key(path: Path) -> Ed25519PublicKey:
    """The key at `path`, or a ValueError naming --public-key and the path (run from another folder, the
    default .aigrid/audit-signing.pub.pem is not there; a file that is no PEM key)."""
    try:
        return load_public_key(path)
    except OSError as e:
        raise ValueError(f"--public-key {path}: {'no such file' if isinstance(e, FileNotFoundError) else e.strerror or e}"
                         " (give the log's public key: --public-key PEM)") from None
    except ValueError:
        raise ValueError(f"--public-key {path}: not an Ed25519 public key (PEM, as `aigrid audit keygen` "
                         "writes it)") from None


def _missing(path: Path) -> bool:
    """Nothing at `path` (not even a dangling link). Any other failure to look (a name too long, a folder that may
    not be searched) is left to verify, which names it: Path.exists raised it, a traceback."""
    try:
        path.lstat()
    except OSError as e:
        return isinstance(e, FileNotFoundError)
    return False


def parse_anchor(text: str) -> tuple[int, str]:
    """`SEQ:HASH` (a sequence number and a 64-digit SHA-256 in hex) -> (seq, hash); ValueError otherwise."""
    position = parse_position(text)
    if position is None:
        raise ValueError(f"--anchor must be SEQ:HASH (a record number and its 64 hex digits), not {text!r}")
    return position


def keygen_command(private_path: Path, public_path: Path, echo: Callable[[str], None] = print,
                   err: Callable[[str], None] | None = None) -> int:
    """Write the pair (making both folders); returns the exit code (0 written, 2 not). Neither file may exist: a
    rotation's `keygen --private-key new.pem` (the default --public-key) wrote its public key over the old one,
    the one every checkpoint signed before the rotation verifies with (`verify` then said TAMPERED). `err` (None:
    `echo`) prints the `error:` lines (the CLI's on stderr, as verify's)."""
    fail = echo if err is None else err
    if private_path.resolve() == public_path.resolve():  # the public key was written over the private one: lost
        fail(f"error: --private-key and --public-key name the same file ({private_path}): give each its own")
        return 2
    if private_path.exists():
        fail(f"error: {private_path} exists; refusing to overwrite a signing key")
        return 2
    if public_path.exists() and not public_path.is_dir():  # a folder: the write's own error names it
        fail(f"error: {public_path} exists; refusing to overwrite a public key (the checkpoints it signed verify "
             "with it only): give --public-key a new file")
        return 2
    try:
        for folder in {private_path.parent, public_path.parent}:
            folder.mkdir(parents=True, exist_ok=True)
        kid = generate_keypair(private_path, public_path)
    except FileExistsError:
        fail(f"error: {private_path} exists; refusing to overwrite a signing key")
        return 2
    except OSError as e:
        if private_path.is_file():  # this call made it (it did not exist above): half a pair would refuse the
            private_path.unlink()   # next try ("exists"), whatever failed after it
        fail(f"error: cannot write the key pair: {e.filename or private_path}: {e.strerror or e}")
        return 2
    echo(f"wrote {private_path} (keep secret) and {public_path} (give to auditors); key id {kid}")
    return 0
