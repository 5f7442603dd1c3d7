"""Verify an audit database: recompute the hash chain and check every signed checkpoint.

Pinpoints the first bad record when a row was changed (its hash no longer matches), deleted (a gap in
the sequence) or reordered (a record's hash commits to its position and predecessor). If an attacker
rewrote a record and recomputed every later hash, the chain is consistent again but the signed
checkpoint is not: the report then names the range between the last good checkpoint and the first bad
one. Records after the last checkpoint are only hash-chained: the report says how many.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from aigrid.audit.chain import GENESIS, checkpoint_message, entry_hash


@dataclass(slots=True)
class VerifyReport:
    records: int = 0
    checkpoints: int = 0
    last_checkpoint_seq: int = 0
    unsigned_tail: int = 0
    first_bad_seq: int | None = None
    bad_range: tuple[int, int] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def _bad(self, seq: int, problem: str) -> None:
        self.problems.append(problem)
        if self.first_bad_seq is None or seq < self.first_bad_seq:
            self.first_bad_seq = seq


def verify(db_path: Path, public_key: Ed25519PublicKey, *, require_checkpoint: bool = True) -> VerifyReport:
    """Check the whole log. Without any signed checkpoint nothing proves the records were not rewritten,
    so a non-empty log without one fails unless require_checkpoint is False."""
    if not db_path.exists():
        raise FileNotFoundError(f"no audit database at {db_path}")
    report = VerifyReport()
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        checkpoints = db.execute("SELECT seq, hash, signature FROM audit_checkpoints ORDER BY seq").fetchall()
        wanted = {int(seq) for seq, _, _ in checkpoints}
        chained: dict[int, str] = {}
        expected, prev = 1, GENESIS
        for seq, _ts, body, prev_hash, stored in db.execute(
                "SELECT seq, ts, body, prev_hash, hash FROM audit_records ORDER BY seq"):
            report.records += 1
            if seq != expected:
                report._bad(expected, f"records {expected}..{seq - 1} are missing (deleted)")
            elif prev_hash != prev:
                report._bad(seq, f"record {seq}: link to record {seq - 1} is broken (changed or reordered)")
            elif entry_hash(seq, prev_hash, body) != stored:
                report._bad(seq, f"record {seq}: content does not match its hash (changed)")
            prev, expected = stored, seq + 1
            if seq in wanted:
                chained[seq] = entry_hash(seq, prev_hash, body)
        last_seq = expected - 1
        good_until = 0
        for seq, signed_hash, signature in checkpoints:
            report.checkpoints += 1
            try:
                public_key.verify(bytes(signature), checkpoint_message(int(seq), str(signed_hash)))
            except InvalidSignature:
                report._bad(good_until + 1, f"checkpoint {seq}: signature invalid (wrong key or forged checkpoint)")
                continue
            if seq > last_seq:
                report._bad(last_seq + 1, f"checkpoint {seq} is signed but the log ends at {last_seq} "
                                          f"(records {last_seq + 1}..{seq} deleted)")
            elif chained.get(seq) != signed_hash:
                report._bad(good_until + 1, f"records {good_until + 1}..{seq} do not match the signed checkpoint "
                                            f"{seq} (rewritten)")
                if report.bad_range is None:
                    report.bad_range = (good_until + 1, int(seq))
            else:
                good_until = int(seq)
            report.last_checkpoint_seq = max(report.last_checkpoint_seq, int(seq))
        report.unsigned_tail = max(0, last_seq - report.last_checkpoint_seq)
        if require_checkpoint and report.records and not report.checkpoints:
            report._bad(1, "no signed checkpoint: the records could have been rewritten wholesale")
    finally:
        db.close()
    return report
