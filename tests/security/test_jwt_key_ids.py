"""A token's key id carries its tenant (authenticate.jwt_key_id): it was `jwt:` + sub, so the same `sub` in two
tenants' tokens was one caller to what knows callers by key id: the abuse signals (one tenant's user throttled the
other's), an audit query by key."""

from __future__ import annotations

import time

import jwt
import pytest

from aigrid.errors import AuthenticationError
from aigrid.security.authenticate import Authenticator
from aigrid.security.firewall.abuse import AbuseMonitor, AbuseRules, RequestTraits
from aigrid.security.jwt_bearer import JwtSettings
from aigrid.security.keys import KeyRing
from aigrid.security.principal import Principal, Tenant

JWT_KEY = "jwt-test-secret-0123456789abcdef-0123"
TENANTS = {name: Tenant(name) for name in ("bank", "shop", "a/b", "a")}


def _principal(tenant: str, sub: str) -> Principal:
    auth = Authenticator(KeyRing(b"0123456789abcdef-server-secret"), TENANTS, jwt=JwtSettings(
        issuer="https://idp.example", audience="aigrid", key=JWT_KEY, algorithms=("HS256",)))
    claims = {"iss": "https://idp.example", "aud": "aigrid", "sub": sub, "tenant": tenant, "exp": int(time.time()) + 600}
    return auth.authenticate(f"Bearer {jwt.encode(claims, JWT_KEY, algorithm='HS256')}")


def test_one_sub_in_two_tenants_is_two_key_ids() -> None:
    bank, shop = _principal("bank", "alice"), _principal("shop", "alice")
    assert (bank.key_id, shop.key_id) == ("jwt:bank/alice", "jwt:shop/alice")
    # a tenant named with a slash is not another tenant's subject with a slash
    assert _principal("a/b", "c").key_id != _principal("a", "b/c").key_id


def test_one_tenants_user_does_not_spend_anothers_abuse_window() -> None:
    """The abuse signals count by key id: bank's alice sending 5 requests no longer fills shop's alice's window."""
    monitor = AbuseMonitor(AbuseRules(max_requests=3))
    bank, shop = _principal("bank", "alice"), _principal("shop", "alice")
    for i in range(5):
        monitor.observe(bank.key_id, RequestTraits(prompt=f"prompt {i}"))
    assert monitor.verdict(bank.key_id).signals == ("volume",)
    assert monitor.verdict(shop.key_id).requests_in_window == 0


@pytest.mark.parametrize("sub", ["", "   "])
def test_a_token_with_an_empty_sub_is_refused(sub: str) -> None:
    """PyJWT requires `sub` to be there, not to say anything: every token of an empty `sub` was one key id."""
    with pytest.raises(AuthenticationError, match="empty 'sub'"):
        _principal("bank", sub)
