"""Authentication: an Authorization header -> Principal, or AuthenticationError (401).

Accepts `Bearer aig_<id>_<secret>` API keys and, when configured, JWT bearer tokens. With enforcement off
(the demo grid) a request without credentials, or with a placeholder that is not an aigrid key (the OpenAI SDK
insists on sending one), becomes the anonymous principal of the default tenant; an aigrid key (aig_...) or
a JWT that is present is still checked, so a wrong key never silently passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from aigrid.errors import AuthenticationError
from aigrid.security.jwt_bearer import JwtSettings, check_token_tenant, looks_like_jwt, verify_jwt
from aigrid.security.keys import KeyRing, split_key
from aigrid.security.principal import DEFAULT_TENANT, Principal, Scopes, Tenant

JWT_KEY_PREFIX = "jwt:"
"""A token's key id is this, its tenant and its `sub` (`jwt_key_id`; an API key's id is 12 hex digits: the two
never meet)."""

ANONYMOUS_KEY_ID = "anonymous"
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
MISSING_KEY = "missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
"""The 401 of a request without credentials, on every door (one message: each door's own envelope wraps it): both
ways every route reads a key (front_door.with_api_key). Until the twenty-eighth session it named Authorization
alone, on the Anthropic Messages door too, whose clients send `x-api-key` (the Anthropic SDK's `api_key`, Claude
Code's ANTHROPIC_API_KEY)."""


SHOWN_TENANT_CHARS = 100
"""At most this much of an unknown tenant's name is said back in a 401 (a token's claim may be of any length)."""


@dataclass(slots=True)
class Authenticator:
    keys: KeyRing
    tenants: Mapping[str, Tenant]
    enforce: bool = True
    jwt: JwtSettings | None = None
    default_tenant: str = DEFAULT_TENANT

    def authenticate(self, authorization: str | None) -> Principal:
        token = _bearer(authorization)
        if token is not None and not self.enforce and split_key(token) is None \
                and not (self.jwt is not None and looks_like_jwt(token)):
            token = None  # enforcement off: SDKs must send some key ("sk-...", "unused"); only ours are checked
        if token is None:
            if self.enforce:
                raise AuthenticationError(MISSING_KEY, code="missing_api_key", headers=dict(_CHALLENGE))
            return Principal(self.default_tenant, ANONYMOUS_KEY_ID, self._tenant_scopes(self.default_tenant),
                             method="anonymous")
        if self.jwt is not None and looks_like_jwt(token):
            identity = verify_jwt(token, self.jwt)
            tenant = self._known_tenant(identity.tenant)
            return Principal(tenant.id, jwt_key_id(tenant.id, identity.subject),
                             tenant.scopes.narrowed_by(identity.scopes), "jwt")
        record = self.keys.verify(token)
        if record is None:
            raise AuthenticationError("invalid API key", headers=dict(_CHALLENGE))
        tenant = self._known_tenant(record.tenant)
        return Principal(tenant.id, record.key_id, tenant.scopes.narrowed_by(record.scopes))

    def again(self, tenant_id: str, method: str, key_id: str, scopes: Scopes, *, made: str,
              authorization: str | None = None) -> Principal:
        """A caller authenticated earlier, kept without its secret (a batch's creator: batch_line.caller_record), as
        it may ask now, by `authenticate`'s rules: its tenant still on the grid; an API key still in the ring, of
        that tenant, not revoked, with its scopes now; a token's `scopes` (its claims as narrowed then: it cannot
        be verified again) only while tokens are accepted and may name its tenant; either narrowed by the tenant's
        scopes now; without a key (enforcement off then) only while keys are not enforced. 401 otherwise. `made`:
        what the caller made, as the errors name it ("this batch"). Before, the batch runner judged a stored caller
        itself, so a token's batch ran its lines on after the grid stopped accepting tokens naming its tenant.

        `authorization`: the caller's own Authorization header, where it is still at hand (a live request's tool loop,
        routes._tool_loop): a token's is verified again, its `exp` and signature read now (401 `token_expired` once it
        has expired), its claims' scopes those it holds; it must be the same caller's. Until the thirty-seventh
        session (brief AUDSTOP) a live loop of a token ran on past its `exp`: a token cannot be read from `scopes`."""
        tenant = self.tenants.get(tenant_id)
        if tenant is None:
            raise AuthenticationError(f"the tenant {tenant_id!r} that created {made} is no longer on this grid")
        if method == "api_key":
            record = self.keys.get(key_id)
            if record is None or record.revoked or record.tenant != tenant.id:
                raise AuthenticationError(f"the API key {key_id} that created {made} has been revoked")
            return Principal(tenant.id, key_id, tenant.scopes.narrowed_by(record.scopes), method)
        if method == "jwt":
            if self.jwt is None:
                raise AuthenticationError(f"{made} was created with a bearer token, and this grid no longer accepts "
                                          "tokens (security.jwt)", code="invalid_token")
            if authorization is not None:  # the live request's own token: verified again, exp included
                identity = verify_jwt(_bearer(authorization) or "", self.jwt)
                if jwt_key_id(identity.tenant, identity.subject) != key_id:
                    raise AuthenticationError(f"the bearer token of {made} no longer names its caller",
                                              code="invalid_token")
                scopes = identity.scopes
            check_token_tenant(tenant.id, self.jwt)
            return Principal(tenant.id, key_id, tenant.scopes.narrowed_by(scopes), method)
        if self.enforce:
            raise AuthenticationError(f"{made} was created without a key, and keys are now enforced")
        return Principal(tenant.id, key_id, tenant.scopes, method)

    def _known_tenant(self, tenant_id: str) -> Tenant:
        """The tenant of a verified key or token; else a 401 naming the tenant the credentials name (the caller holds
        them, so it learns nothing new; nothing of the grid's own tenants is said). It said only "an unknown tenant":
        a key made for a mistyped tenant had every request refused with no cause to read."""
        tenant = self.tenants.get(tenant_id)
        if tenant is None:
            shown = tenant_id if len(tenant_id) <= SHOWN_TENANT_CHARS else tenant_id[:SHOWN_TENANT_CHARS] + "..."
            raise AuthenticationError(f"credentials belong to the tenant {shown!r}, which this grid does not have "
                                      "(its operator made them for a tenant not in the grid's spec)",
                                      headers=dict(_CHALLENGE))
        return tenant

    def _tenant_scopes(self, tenant_id: str) -> Scopes:
        tenant = self.tenants.get(tenant_id)
        return tenant.scopes if tenant is not None else Scopes()


def jwt_key_id(tenant: str, subject: str) -> str:
    """A token's key id: `jwt:` + its tenant (percent-encoded, so no `/` in it) + `/` + its `sub`. A key id no API key
    has (12 hex digits), so a token whose `sub` is spelled like a key's id is not that key; and one per tenant, so
    the same `sub` in two tenants' tokens is two callers to what counts or compares key ids (the abuse signals, a
    quota's per-key limits, an audit query by key). Before, `jwt:` + sub alone: one `sub` of two tenants shared
    its abuse windows. The issuer is not in it: a grid accepts one (security.jwt.issuer), whose `sub` names one
    subject; an operator who moves to another identity provider whose subjects reuse the old one's names should
    expect their audit records under the same key ids."""
    return f"{JWT_KEY_PREFIX}{quote(tenant, safe='')}/{subject}"


def _bearer(authorization: str | None) -> str | None:
    if authorization is None or not authorization.strip():
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("the Authorization header must be 'Bearer <key>'", headers=dict(_CHALLENGE))
    return token.strip()
