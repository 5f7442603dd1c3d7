"""Optional JWT bearer tokens (PyJWT): signature, issuer, audience and expiry are always checked.

Claims read: `sub` (becomes the key id), the tenant claim (default "tenant"), and optional scope claims
"models", "jurisdictions", "sites" (lists), "policy" (string) and "max_priority" (a level), which narrow the
tenant's scopes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jwt

from aigrid.errors import AuthenticationError
from aigrid.security.principal import Scopes


@dataclass(frozen=True, slots=True)
class JwtSettings:
    issuer: str
    audience: str
    key: str | bytes
    """HMAC secret (HS*) or PEM public key (RS*, ES*, EdDSA)."""
    algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    tenant_claim: str = "tenant"
    leeway_s: float = 30.0
    required_claims: tuple[str, ...] = field(default=("exp", "iss", "aud", "sub"))


@dataclass(frozen=True, slots=True)
class JwtIdentity:
    subject: str
    tenant: str
    scopes: Scopes


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("ey")


def verify_jwt(token: str, settings: JwtSettings) -> JwtIdentity:
    """Decode and check a bearer token; any failure is an AuthenticationError (401)."""
    try:
        claims = jwt.decode(token, settings.key, algorithms=list(settings.algorithms),
                            audience=settings.audience, issuer=settings.issuer, leeway=settings.leeway_s,
                            options={"require": list(settings.required_claims)})
    except jwt.ExpiredSignatureError as e:
        raise AuthenticationError("bearer token expired", code="token_expired") from e
    except jwt.PyJWTError as e:
        raise AuthenticationError(f"invalid bearer token: {e}", code="invalid_token") from e
    tenant = claims.get(settings.tenant_claim)
    if not isinstance(tenant, str) or not tenant:
        raise AuthenticationError(f"bearer token has no '{settings.tenant_claim}' claim", code="invalid_token")
    try:
        scopes = Scopes.from_dict({k: claims.get(k) for k in ("models", "jurisdictions", "sites", "policy",
                                                              "max_priority")})
    except ValueError as e:
        raise AuthenticationError(f"invalid scope claim in bearer token: {e}", code="invalid_token") from e
    return JwtIdentity(str(claims["sub"]), tenant, scopes)
