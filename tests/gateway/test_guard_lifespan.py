"""Guard.start/stop (the gateway's lifespan) and what Guard reads of security.jwt at start."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from aigrid.errors import AuthenticationError, ConfigError
from aigrid.gateway.app import build_gateway
from aigrid.gateway.guard import _jwt, _secret
from aigrid.spec.models import JwtSpec, SecuritySpec, TenantSpec
from tests.gateway.conftest import _no_sleep, spec_in
from tests.gateway.fake_engine import FakeEngine

JWT_SECRET = "jwt-test-secret-that-is-long-enough-for-hs256"


def _writers() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "aigrid-audit-writer" and not t.done()]


async def test_a_second_start_opens_nothing_and_stop_closes_the_one_audit_log(
        tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    """A test started the guard and then its app's lifespan started it again: each start built and opened an audit log
    of its own, and stop() closed the second only, the first's writer left running (twenty-third session)."""
    guard = build_gateway(spec_in(tmp_path), fakes, rng=random.Random(3), sleep=_no_sleep).guard
    await guard.start()
    first = guard.audit
    assert first is not None and len(_writers()) == 1
    await guard.start()
    assert guard.audit is first and len(_writers()) == 1
    await guard.stop()
    assert not first.accepting() and _writers() == []


@pytest.mark.parametrize("form", ["public", "private"])
def test_a_jwt_key_file_rsa_key_under_2048_bits_is_refused_at_start(tmp_path: Path, form: str) -> None:
    """A JWKS's RSA key under 2048 bits is left out of the set (jwks.MIN_RSA_BITS), but a `security.jwt.key_file` of
    1024 bits was taken, its tokens accepted (PyJWT only warns). Now the gateway does not start; 2048 bits and an EC
    key do."""
    def pem_of(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
        if form == "private":
            return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
        return key.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)

    def settings(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> object:
        path = tmp_path / "idp.pem"
        path.write_bytes(pem_of(key))
        return _jwt(SecuritySpec(jwt=JwtSpec(issuer="https://idp.example", audience="aigrid", key_file=str(path))))

    with pytest.raises(ConfigError, match=r"security\.jwt\.key_file: .*1024-bit RSA key.*2048"):
        settings(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    assert settings(rsa.generate_private_key(public_exponent=65537, key_size=2048)) is not None
    assert settings(ec.generate_private_key(ec.SECP256R1())) is not None


@pytest.mark.parametrize(("listed", "may"), [(None, {"eu-bank", "default"}), (["*"], {"eu-bank", "default"}),
                                             (["ops*"], set()), (["ops", "eu-*"], {"ops", "eu-bank"})])
def test_a_token_names_an_operator_tenant_only_where_security_jwt_tenants_names_it(
        tmp_path: Path, fakes: dict[str, FakeEngine], monkeypatch: pytest.MonkeyPatch, listed: list[str] | None,
        may: set[str]) -> None:
    """An operator tenant reads every tenant's decisions and the dashboard. A grid that left `security.jwt.tenants`
    out (or matched it by a pattern) let the identity provider mint tokens naming it, accepted as that operator. Now
    only its exact name in the list lets a token name it; the other tenants are as before (401 invalid_token naming
    the setting, as any tenant the list leaves out)."""
    monkeypatch.setenv("AIGRID_KEY_SECRET", "k" * 32)
    monkeypatch.setenv("AIGRID_TEST_JWT", JWT_SECRET)
    spec = spec_in(tmp_path, enforce=True, jwt=JwtSpec(issuer="https://idp.example", audience="aigrid",
                                                       secret_env="AIGRID_TEST_JWT", tenants=listed))
    spec = spec.model_copy(update={"tenants": {**spec.tenants, "ops": TenantSpec(operator=True)}})
    guard = build_gateway(spec, fakes, rng=random.Random(3), sleep=_no_sleep).guard
    for tenant in ("ops", "eu-bank", "default"):
        claims = {"iss": "https://idp.example", "aud": "aigrid", "sub": "svc", "tenant": tenant,
                  "exp": int(time.time()) + 600}
        bearer = f"Bearer {jwt.encode(claims, JWT_SECRET, algorithm='HS256')}"
        if tenant in may:
            assert guard.principal(bearer, None).tenant == tenant
            if tenant == "ops":  # the operator reads every tenant's decisions
                assert guard.reader(bearer) is None
            continue
        with pytest.raises(AuthenticationError) as e:
            guard.principal(bearer, None)
        assert e.value.status == 401 and e.value.code == "invalid_token", tenant
        assert "security.jwt.tenants" in e.value.message


@pytest.mark.parametrize(("value", "says"), [(None, "AIGRID_KEY_SECRET is not set"), ("short-secret", "it holds 12 bytes")])
def test_the_gateways_short_secret_is_said_to_be_short_never_shown(
        monkeypatch: pytest.MonkeyPatch, value: str | None, says: str) -> None:
    """(7 Dec 2026, thirty-second session) With security.enforce on and a secret under 16 bytes, the gateway said
    "set AIGRID_KEY_SECRET to a random secret of at least 16 bytes", as if it were unset. Now it says how many bytes
    it holds (or that it is not set) and the minimum, never the secret."""
    if value is None:
        monkeypatch.delenv("AIGRID_KEY_SECRET", raising=False)
    else:
        monkeypatch.setenv("AIGRID_KEY_SECRET", value)
    with pytest.raises(ConfigError) as raised:
        _secret(SecuritySpec(enforce=True))
    said = str(raised.value)
    assert says in said and "at least 16 bytes" in said, said
    assert value is None or value not in said, said
