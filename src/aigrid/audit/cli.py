"""Command-line helpers the CLI mounts as `aigrid audit verify DB --public-key PEM` and `aigrid audit keygen`."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from aigrid.audit.signing import generate_keypair, load_public_key
from aigrid.audit.verify import verify


def verify_command(db_path: Path, public_key_path: Path, echo: Callable[[str], None] = print) -> int:
    """Print a verification report; returns the exit code (0 intact, 1 tampered, 2 unusable input)."""
    try:
        public_key = load_public_key(public_key_path)
        report = verify(db_path, public_key)
    except (OSError, ValueError) as e:
        echo(f"cannot verify: {e}")
        return 2
    except sqlite3.Error as e:  # a directory, another file, another database
        echo(f"cannot verify: {db_path} is not an audit database ({e})")
        return 2
    echo(f"{db_path}: {report.records} records, {report.checkpoints} signed checkpoints "
         f"(last at record {report.last_checkpoint_seq}, {report.unsigned_tail} records after it)")
    if report.ok:
        echo("OK: the chain is intact and every checkpoint signature is valid")
        return 0
    echo(f"TAMPERED: first bad record {report.first_bad_seq}")
    for problem in report.problems[:20]:
        echo(f"  - {problem}")
    if len(report.problems) > 20:
        echo(f"  ... and {len(report.problems) - 20} more")
    return 1


def keygen_command(private_path: Path, public_path: Path, echo: Callable[[str], None] = print) -> int:
    """Write the pair (making both folders); returns the exit code (0 written, 2 not)."""
    if private_path.exists():
        echo(f"{private_path} exists; refusing to overwrite a signing key")
        return 2
    try:
        for folder in {private_path.parent, public_path.parent}:
            folder.mkdir(parents=True, exist_ok=True)
        kid = generate_keypair(private_path, public_path)
    except FileExistsError:
        echo(f"{private_path} exists; refusing to overwrite a signing key")
        return 2
    except OSError as e:
        if private_path.is_file():  # this call made it (it did not exist above): half a pair would refuse the
            private_path.unlink()   # next try ("exists"), whatever failed after it
        echo(f"cannot write the key pair: {e.filename or private_path}: {e.strerror or e}")
        return 2
    echo(f"wrote {private_path} (keep secret) and {public_path} (give to auditors); key id {kid}")
    return 0
