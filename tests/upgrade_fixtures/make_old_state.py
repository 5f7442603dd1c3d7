"""Writes the state an OLD aigrid left in `.aigrid/` as the small text fixtures tests/test_upgrade.py reads.

Run it with an old checkout's sources, never with the current ones (it must be the old code that writes):

    git worktree add /tmp/old 012c30b
    PYTHONPATH=/tmp/old/src .venv/bin/python tests/upgrade_fixtures/make_old_state.py tests/upgrade_fixtures
    git worktree remove /tmp/old --force

It uses the old code's own writers: the audit store (three records and a signed checkpoint, as a stopped
gateway leaves them), the key ring (two keys of tenant acme, one revoked) and the Files/Batch stores (an
uploaded input file, a completed batch and its output file). SQLite databases are kept as their SQL dump
(`sqlite3 .dump`), which keeps the old DDL text and every row; the test rebuilds the files from it.
012c30b (2026-12-03) is the first commit with the Batch API; the audit and key formats are those of the first
commit (9c7f473) plus max_priority.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import sqlite3
import sys
import tempfile
from contextlib import closing
from pathlib import Path

from aigrid.audit.record import AuditRecord
from aigrid.audit.signing import generate_keypair, load_private_key
from aigrid.audit.store import AuditStore
from aigrid.gateway.batch_db import BatchDb
from aigrid.gateway.batch_store import BatchStore
from aigrid.gateway.file_store import FileStore
from aigrid.security.keys import KeyRing

SECRET = b"upgrade-fixture-secret-0123456789"
LINE = {"custom_id": "c0", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "emu", "messages": [{"role": "user", "content": "q0"}], "max_tokens": 5}}


def dump(db_path: Path, out: Path) -> None:
    with closing(sqlite3.connect(db_path)) as db:
        out.write_text("\n".join(db.iterdump()) + "\n")


async def batches(root: Path) -> None:
    db = BatchDb(root)
    files, store = FileStore(db), BatchStore(db)
    f = await files.add("acme", "in.jsonl", "batch", io.BytesIO((json.dumps(LINE) + "\n").encode()))
    obj = {"id": "batch_0123456789abcdef01234567", "object": "batch", "endpoint": "/v1/chat/completions",
           "errors": None, "input_file_id": f.id, "completion_window": "24h", "status": "completed",
           "output_file_id": None, "error_file_id": None, "created_at": 1796375350, "in_progress_at": 1796375351,
           "expires_at": 1796461750, "finalizing_at": 1796375352, "completed_at": 1796375352, "failed_at": None,
           "expired_at": None, "cancelling_at": None, "cancelled_at": None,
           "request_counts": {"total": 1, "completed": 1, "failed": 0}, "metadata": None,
           "usage": {"input_tokens": 2, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 5,
                     "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 7}}
    out_path = files.folder("acme") / f"{obj['id']}_output.jsonl"
    answer = {"id": "batch_req_0", "custom_id": "c0", "response": {"status_code": 200, "request_id": "dec-0",
              "body": {"object": "chat.completion", "choices": [{"message": {"content": " tok"}}]}}, "error": None}
    out_path.write_text(json.dumps(answer) + "\n")
    out = await files.register("acme", out_path, out_path.name, "batch_output", out_path.stat().st_size, None)
    obj["output_file_id"] = out.id
    principal = {"tenant": "acme", "key_id": "0ebfd32a3efe", "method": "api_key",
                 "scopes": {"models": None, "jurisdictions": None, "sites": None, "policy": None, "max_priority": 9}}
    await store.create("acme", obj, principal, {})


def main(dest: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        generate_keypair(state / "audit-signing.pem", state / "audit-signing.pub.pem")
        audit = AuditStore(state / "audit.db", load_private_key(state / "audit-signing.pem"))
        audit.open()
        audit.append([(1796375350.0 + i, AuditRecord(
            ts=1796375350.0 + i, request_id=f"dec-{i:016x}", tenant="acme", key_id="0ebfd32a3efe", model="emu",
            decision={"policy": "balanced", "chosen": {"endpoint": "emu0", "site": "s0", "jurisdiction": "EU"}},
            prompt_tokens=2, completion_tokens=5, extra={"route": "/v1/chat/completions"}).body()) for i in range(3)])
        audit.checkpoint(now=1796375360.0)
        audit.close()
        dump(state / "audit.db", dest / "old_audit.sql")
        shutil.copy(state / "audit-signing.pub.pem", dest / "old_audit.pub.pem")
        shutil.copy(state / "audit-signing.pem", dest / "old_audit.pem")  # a test key: the new writer goes on with it

        ring = KeyRing(SECRET)
        kept, revoked = ring.issue("acme", name="kept"), ring.issue("acme", name="revoked")
        ring.revoke(revoked.record.key_id)
        ring.save(dest / "old_keys.json")
        (dest / "old_api_keys.json").write_text(json.dumps({"kept": kept.api_key, "revoked": revoked.api_key}) + "\n")

        asyncio.run(batches(state / "batches"))
        dump(state / "batches" / "index.sqlite3", dest / "old_batches.sql")
        shutil.rmtree(dest / "batches", ignore_errors=True)
        shutil.copytree(state / "batches" / "acme", dest / "batches" / "acme")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
