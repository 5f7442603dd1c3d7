"""The right-size example grid with keys enforced: what the key-scope tests share (test_model_scopes,
test_decision_scopes, test_right_size_scopes, test_operator_narrowed, test_stored_models, test_compaction_models)."""

from __future__ import annotations

from pathlib import Path

from aigrid.security.keys import IssuedKey, KeyRing
from aigrid.security.principal import Scopes
from aigrid.spec.load import load_spec
from aigrid.spec.models import AuditSpec, GridSpec, PolicySpec, TenantSpec

SPEC = Path(__file__).resolve().parents[2] / "examples" / "right-size.yaml"  # small-1b and large-70b: family llama
SECRET = "test-secret-0123456789abcdef"


def enforced(spec: GridSpec, tenants: dict[str, TenantSpec], ring: KeyRing, tmp_path: Path) -> GridSpec:
    """`spec` with `tenants`, keys enforced from `ring` (saved under `tmp_path`) and its audit log there."""
    ring.save(tmp_path / "keys.json")
    sec = spec.security.model_copy(update={"enforce": True, "keys_file": str(tmp_path / "keys.json"), "audit": AuditSpec(
        path=str(tmp_path / "audit.db"), signing_key=str(tmp_path / "audit.pem"))})
    return spec.model_copy(update={"tenants": tenants, "security": sec})


def both_models_at_ashburn() -> GridSpec:
    """The example with a small-1b endpoint added at Ashburn beside large-70b, under a policy `exact` without family
    fallback: a request from Ashburn may be served by either model there (a chain stays in one jurisdiction)."""
    spec = load_spec(SPEC)
    small = next(e for e in spec.endpoints if e.model == "small-1b")
    return spec.model_copy(update={"endpoints": [*spec.endpoints, small.model_copy(update={"id": "iad-small",
                                                                                          "site": "iad"})],
                                   "policies": {"exact": PolicySpec(weights={"ttft": 1.0}, allow_family_fallback=False)}})


def narrowed_keys(ring: KeyRing) -> dict[str, IssuedKey]:
    """Tenant default's keys: `full` (unrestricted), `small` (narrowed to small-1b), `auto` (to `auto` alone)."""
    return {"full": ring.issue("default"), "small": ring.issue("default", Scopes(models=frozenset({"small-1b"}))),
            "auto": ring.issue("default", Scopes(models=frozenset({"auto"})))}
