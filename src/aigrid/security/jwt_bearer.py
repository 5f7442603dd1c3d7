"""Optional JWT bearer tokens (PyJWT): signature, issuer, audience and expiry are always checked.

Claims read: `sub` (the key id is `jwt:<tenant>/<sub>`: authenticate.jwt_key_id), the tenant claim (default
"tenant"), and optional scope claims "models", "jurisdictions", "sites" (lists of strings), "policy" (a string)
and "max_priority" (a level), which narrow the tenant's scopes; a claim of another type is a 401 naming it.
"""

from __future__ import annotations

import time
import unicodedata
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import jwt

from aigrid.errors import AuthenticationError
from aigrid.security.jwks import JwksKeys
from aigrid.security.principal import Scopes

MAX_SUBJECT_CHARS = 255
"""OpenID Connect Core 1.0, section 2: a `sub` "MUST NOT exceed 255 ASCII characters in length"."""
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
"""Unicode categories a `sub` may not hold: control and format characters (a newline, ESC, a right-to-left
override), surrogates, line and paragraph separators."""
SHOWN_CHARS = 100
"""How much of what a token says (its `kid`, PyJWT's message naming a header) a 401 quotes."""


@dataclass(frozen=True, slots=True)
class JwtSettings:
    issuer: str
    audience: str
    key: str | bytes | None
    """HMAC secret (HS*) or PEM public key (RS*, ES*, EdDSA); None with `jwks`."""
    algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    tenant_claim: str = "tenant"
    leeway_s: float = 30.0
    required_claims: tuple[str, ...] = field(default=("exp", "iss", "aud", "sub"))
    jwks: JwksKeys | None = None
    """The identity provider's key set (jwks.py): each token is checked with the key its `kid` names."""
    tenants: tuple[str, ...] | None = None
    """Glob patterns of the tenants a token may name; None: every tenant."""
    max_lifetime_s: float | None = None
    """The furthest ahead a token's `exp` may lie (beyond the leeway); None: no limit."""


@dataclass(frozen=True, slots=True)
class JwtIdentity:
    subject: str
    tenant: str
    scopes: Scopes


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("ey")


def verify_jwt(token: str, settings: JwtSettings) -> JwtIdentity:
    """Decode and check a bearer token; any failure is an AuthenticationError (401)."""
    key: Any = settings.key
    algorithms = list(settings.algorithms)
    if settings.jwks is not None:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as e:
            raise AuthenticationError(f"invalid bearer token: {_shown(e)}", code="invalid_token") from e
        jwk = settings.jwks.key_for(kid if isinstance(kid, str) else None)
        if jwk is None and not settings.jwks.fetched:
            raise AuthenticationError("the identity provider's signing keys could not be fetched yet: try again "
                                      "shortly", code="invalid_token")
        if jwk is None:
            raise AuthenticationError("bearer token signed by a key the identity provider's key set does not "
                                      f"hold (kid {_shown(kid)})", code="invalid_token")
        key, algorithms = jwk.key, settings.jwks.algorithms(jwk)
    try:
        claims = jwt.decode(token, key, algorithms=algorithms,
                            audience=settings.audience, issuer=settings.issuer, leeway=settings.leeway_s,
                            options={"require": list(settings.required_claims)})
    except jwt.ExpiredSignatureError as e:
        raise AuthenticationError("bearer token expired", code="token_expired") from e
    except jwt.PyJWTError as e:
        raise AuthenticationError(f"invalid bearer token: {_shown(e)}", code="invalid_token") from e
    if settings.max_lifetime_s is not None:
        ahead = float(claims["exp"]) - time.time()  # decode checked exp is a number
        if ahead > settings.max_lifetime_s + settings.leeway_s:
            raise AuthenticationError(f"bearer token expires {ahead:.0f} s from now, later than this grid accepts "
                                      f"({settings.max_lifetime_s:g} s: security.jwt.max_lifetime_s)",
                                      code="invalid_token")
    subject = claims["sub"]  # decode checked it is there, and a string
    if not isinstance(subject, str) or not subject.strip():
        # every such token would be one caller (one key id) to the abuse signals and a background run's creator
        raise AuthenticationError("bearer token has an empty 'sub' claim", code="invalid_token")
    _check_subject(subject)
    tenant = claims.get(settings.tenant_claim)
    if not isinstance(tenant, str) or not tenant:
        raise AuthenticationError(f"bearer token has no '{settings.tenant_claim}' claim", code="invalid_token")
    check_token_tenant(tenant, settings)
    try:
        scopes = Scopes.from_dict({k: claims.get(k) for k in ("models", "jurisdictions", "sites", "policy",
                                                              "max_priority")})
    except ValueError as e:
        # names the claim: one of the wrong type (a `policy` object, `models: 5`, `jurisdictions: "EU"`), which was
        # turned into a string before (principal.Scopes.from_dict)
        raise AuthenticationError(f"invalid scope claim in bearer token: {e}", code="invalid_token") from e
    return JwtIdentity(subject, tenant, scopes)


def check_token_tenant(tenant: str, settings: JwtSettings) -> None:
    """401 for a tenant tokens may not name (security.jwt.tenants): a token's, and a batch's made with a token when
    its lines run (Authenticator.again)."""
    if settings.tenants is not None and not any(fnmatchcase(tenant, p) for p in settings.tenants):
        raise AuthenticationError(f"bearer token names tenant {tenant!r}, which tokens may not name here "
                                  "(security.jwt.tenants)", code="invalid_token")


def _check_subject(subject: str) -> None:
    """401 for a `sub` the key id (`jwt:<tenant>/<sub>`) cannot carry: it is written as it is into the logs, every
    audit record, the quota store's and the abuse signals' keys. Before, a token (of an identity provider that
    lets a user choose their own subject, or signed with a leaked key) put a newline and terminal escapes in
    each of them, or 100,000 characters in every record."""
    if len(subject) > MAX_SUBJECT_CHARS:
        raise AuthenticationError(f"bearer token's 'sub' claim is {len(subject)} characters long, more than "
                                  f"{MAX_SUBJECT_CHARS} (OpenID Connect's limit)", code="invalid_token")
    bad = next((c for c in subject if unicodedata.category(c) in _UNPRINTABLE), None)
    if bad is not None:
        raise AuthenticationError(f"bearer token's 'sub' claim holds a control or format character "
                                  f"(U+{ord(bad):04X}): key ids, logs and audit records carry it",
                                  code="invalid_token")


def _shown(value: object) -> str:
    """`value` as a 401 quotes it: its repr (a string) or text (an error), at most SHOWN_CHARS characters."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text)} characters)"
