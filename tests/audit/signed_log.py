"""A signed audit log as the audit tests write and attack it: the signing key, a record numbered i, a log of n records
written through AuditLog, and tampering with its file as an attacker who has it would (its triggers dropped first)
(test_audit_log.py, test_head.py, test_query.py, test_verify_*.py share these)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aigrid.audit.log import AuditLog
from aigrid.audit.record import AuditRecord, prompt_digest

KEY = Ed25519PrivateKey.generate()


def record(i: int) -> AuditRecord:
    return AuditRecord(ts=1_700_000_000.0 + i, request_id=f"r{i}", tenant="bank", key_id="k1", model="llama-3-8b",
                       decision={"chosen": {"site": "fra", "jurisdiction": "EU"}, "candidates": [{"total": 0.9}]},
                       firewall=[{"check": "pii", "action": "redacted"}], outcome="ok", prompt_tokens=12,
                       completion_tokens=30, prompt_hmac=prompt_digest(b"s" * 32, f"prompt {i}"))


async def write_log(path: Path, n: int, every: int = 10, batch_max: int = 7) -> None:
    log = AuditLog(path, KEY, checkpoint_every=every, batch_max=batch_max)
    await log.start()
    await asyncio.gather(*(log.append(record(i)) for i in range(n)))
    await log.stop()


def tamper(path: Path, *sql: str) -> None:
    db = sqlite3.connect(path)
    for name in ("audit_records_no_update", "audit_records_no_delete", "audit_checkpoints_no_delete"):
        db.execute(f"DROP TRIGGER {name}")  # an attacker with the file can do this
    for statement in sql:
        db.execute(statement)
    db.commit()
    db.close()
