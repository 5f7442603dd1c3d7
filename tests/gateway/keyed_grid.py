"""The right-size example grid with keys enforced: what the key-scope tests share (test_model_scopes,
test_decision_scopes, test_right_size_scopes, test_operator_narrowed)."""

from __future__ import annotations

from pathlib import Path

from aigrid.security.keys import KeyRing
from aigrid.spec.models import AuditSpec, GridSpec, TenantSpec

SPEC = Path(__file__).resolve().parents[2] / "examples" / "right-size.yaml"  # small-1b and large-70b: family llama
SECRET = "test-secret-0123456789abcdef"


def enforced(spec: GridSpec, tenants: dict[str, TenantSpec], ring: KeyRing, tmp_path: Path) -> GridSpec:
    """`spec` with `tenants`, keys enforced from `ring` (saved under `tmp_path`) and its audit log there."""
    ring.save(tmp_path / "keys.json")
    sec = spec.security.model_copy(update={"enforce": True, "keys_file": str(tmp_path / "keys.json"), "audit": AuditSpec(
        path=str(tmp_path / "audit.db"), signing_key=str(tmp_path / "audit.pem"))})
    return spec.model_copy(update={"tenants": tenants, "security": sec})
