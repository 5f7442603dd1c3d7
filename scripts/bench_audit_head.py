"""The audit writer's cost of its head file (docs/security.md, "Limits"): 300 one-record batches, each followed by
a signed checkpoint (which makes the head durable first), three rounds, in a temporary folder.

    .venv/bin/python scripts/bench_audit_head.py

Before/after a change: run it with PYTHONPATH set to a `git archive REV src` of the other tree."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aigrid.audit.store import AuditStore


def main() -> None:
    key = Ed25519PrivateKey.generate()
    for _ in range(3):
        with tempfile.TemporaryDirectory() as folder:
            store = AuditStore(Path(folder) / "audit.db", key)
            store.open()
            started = time.perf_counter()
            for _ in range(300):
                store.append([(1.0, '{"ts":1.0}')])
                store.checkpoint()
            print(f"300 batches each with a checkpoint: {time.perf_counter() - started:.2f} s")
            store.close()


if __name__ == "__main__":
    main()
