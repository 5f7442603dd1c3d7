"""The audit log's signing key at start (gateway/guard.audit_log): created on first use, never a new pair written over
the public key an existing log verifies with (7 Dec 2026, thirty-third session, found by review RV2)."""

from pathlib import Path

import pytest

from aigrid.errors import ConfigError
from aigrid.gateway.guard import audit_log
from aigrid.spec.models import AuditSpec


def test_a_missing_signing_key_is_created_with_its_public_key(tmp_path: Path) -> None:
    audit_log(AuditSpec(path=str(tmp_path / "audit.db"), signing_key=str(tmp_path / "keys" / "k.pem")))
    assert (tmp_path / "keys" / "k.pem").is_file() and (tmp_path / "keys" / "k.pub.pem").is_file()


def test_a_lost_signing_key_is_refused_where_its_public_key_is_kept(tmp_path: Path) -> None:
    """The private key gone (a volume not mounted, a path mistyped) and its public key there: the gateway wrote a new
    pair over that public key, the only one the log's earlier checkpoints verify with."""
    spec = AuditSpec(path=str(tmp_path / "audit.db"), signing_key=str(tmp_path / "k.pem"))
    audit_log(spec)
    kept = (tmp_path / "k.pub.pem").read_bytes()
    (tmp_path / "k.pem").unlink()
    with pytest.raises(ConfigError, match=r"security.audit.signing_key: .*k.pem does not exist but its public key "
                                          r".*k.pub.pem does"):
        audit_log(spec)
    assert (tmp_path / "k.pub.pem").read_bytes() == kept and not (tmp_path / "k.pem").exists()
