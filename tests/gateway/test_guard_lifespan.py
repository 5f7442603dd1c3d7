"""Guard.start/stop (the gateway's lifespan) and what Guard reads of security.jwt at start."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from aigrid.errors import ConfigError
from aigrid.gateway.app import build_gateway
from aigrid.gateway.guard import _jwt
from aigrid.spec.models import JwtSpec, SecuritySpec
from tests.gateway.conftest import _no_sleep, spec_in
from tests.gateway.fake_engine import FakeEngine


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
