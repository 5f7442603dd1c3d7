"""The aigrid command: clear errors (never a traceback) and the key and audit sub-commands."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aigrid.audit.log import AuditLog
from aigrid.audit.record import AuditRecord
from aigrid.audit.signing import generate_keypair, load_private_key
from aigrid.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def test_spec_check_ok_and_bad(tmp_path: Path) -> None:
    r = runner.invoke(app, ["spec", "check", str(ROOT / "examples" / "demo.yaml")])
    assert r.exit_code == 0 and "4 sites, 4 endpoints" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "examples" / "demo.yaml").read_text().replace("lat: 50.11", "lat: 500"))
    r = runner.invoke(app, ["spec", "check", str(bad)])
    assert r.exit_code == 2 and "sites.fra.lat" in r.output and "Traceback" not in r.output


def test_gateway_refuses_embedded_endpoints() -> None:
    r = runner.invoke(app, ["gateway", str(ROOT / "examples" / "demo.yaml")])
    assert r.exit_code == 2 and "use `aigrid up`" in r.output


def test_keys_create_list_revoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = tmp_path / "keys.json"
    r = runner.invoke(app, ["keys", "create", "eu-bank", "--keys-file", str(keys), "--jurisdiction", "EU"])
    assert r.exit_code == 2 and "AIGRID_KEY_SECRET" in r.output  # no secret: a clear error
    monkeypatch.setenv("AIGRID_KEY_SECRET", "0123456789abcdef-test")
    r = runner.invoke(app, ["keys", "create", "eu-bank", "--keys-file", str(keys), "--jurisdiction", "EU"])
    assert r.exit_code == 0 and "api key: aig_" in r.output
    secret = r.output.split("api key: ")[1].split()[0]
    assert secret not in keys.read_text()  # only the digest is stored
    key_id = r.output.split("key id:")[1].split()[0]
    r = runner.invoke(app, ["keys", "list", "--keys-file", str(keys)])
    assert key_id in r.output and "active" in r.output
    assert runner.invoke(app, ["keys", "revoke", key_id, "--keys-file", str(keys)]).exit_code == 0
    assert "revoked" in runner.invoke(app, ["keys", "list", "--keys-file", str(keys)]).output


def test_audit_verify_intact_then_tampered(tmp_path: Path) -> None:
    priv, pub, db = tmp_path / "a.pem", tmp_path / "a.pub.pem", tmp_path / "audit.db"
    generate_keypair(priv, pub)

    async def write() -> None:
        log = AuditLog(db, load_private_key(priv))
        await log.start()
        for i in range(5):
            await log.append(AuditRecord(ts=float(i), request_id=f"r{i}", tenant="t", key_id="k", model="m"))
        await log.stop()

    asyncio.run(write())
    r = runner.invoke(app, ["audit", "verify", str(db), "--public-key", str(pub)])
    assert r.exit_code == 0 and "OK" in r.output
    import sqlite3

    with sqlite3.connect(db) as c:
        c.execute("DROP TRIGGER audit_records_no_update")  # an attacker holding the file can do this
        c.execute("UPDATE audit_records SET body = replace(body, '\"tenant\":\"t\"', '\"tenant\":\"x\"') WHERE seq = 3")
    r = runner.invoke(app, ["audit", "verify", str(db), "--public-key", str(pub)])
    assert r.exit_code == 1 and "first bad record 3" in r.output


def test_up_fails_fast_when_the_port_is_taken() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = runner.invoke(app, ["up", str(ROOT / "examples" / "demo.yaml"), "--port", str(port)])
    assert r.exit_code == 2 and "is another gateway running" in r.output
