"""Tamper-evident audit log: one hash-chained record per request in SQLite, Ed25519-signed checkpoints."""
