"""The gateway's security and governance stages, in pipeline order, built once from the spec.

    authenticate -> authorize (scopes) -> quota -> abuse signals -> firewall (input) -> [route, proxy]
    -> firewall (output, output_filter.py) -> settle quota with real usage -> audit record

Each stage is a library in aigrid.security / aigrid.audit; this module only wires them to the spec and to
one request. Errors are the ApiError subclasses those libraries raise (401, 403, 429, 400 firewall_blocked).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis

from aigrid.audit.log import AuditLog
from aigrid.audit.record import AuditRecord, decision_summary, prompt_digest
from aigrid.audit.signing import generate_keypair, load_private_key
from aigrid.core.types import Decision
from aigrid.errors import ApiError, ConfigError, InvalidRequest, PermissionDenied
from aigrid.security.authenticate import Authenticator
from aigrid.security.authorize import authorize
from aigrid.security.firewall.abuse import AbuseMonitor, AbuseRules, AbuseVerdict, RequestTraits
from aigrid.security.firewall.injection import InjectionModel
from aigrid.security.firewall.pipeline import Action, Firewall, FirewallPolicy, Verdict
from aigrid.security.jwt_bearer import JwtSettings
from aigrid.security.keys import KeyRing
from aigrid.security.principal import Principal, Scopes, Tenant
from aigrid.security.quota_backend import MemoryQuotaBackend, QuotaBackend
from aigrid.security.quotas import QuotaLimits, QuotaRules, Quotas, Reservation
from aigrid.security.quotas_redis import RedisQuotaBackend
from aigrid.spec.models import FirewallSpec, GridSpec, QuotaSpec, SecuritySpec

ANONYMOUS_SECRET = b"aigrid-demo-grid-without-enforcement"
"""Enforcement off and no secret set: no key can be verified anyway; this only keys the prompt hashes."""


@dataclass(slots=True)
class Admission:
    """What the guard learned about one request before routing."""

    principal: Principal
    reservation: Reservation
    verdicts: list[Verdict] = field(default_factory=list)
    abuse: AbuseVerdict | None = None
    started: float = 0.0


def _limits(q: QuotaSpec | None) -> QuotaLimits:
    if q is None:
        return QuotaLimits()
    return QuotaLimits(q.requests_per_min, q.tokens_per_min, q.token_budget, q.budget_period_s)


def _policy(f: FirewallSpec) -> FirewallPolicy:
    return FirewallPolicy(injection=Action(f.injection), pii_input=Action(f.pii_input), pii_output=Action(f.pii_output))


def _secret(sec: SecuritySpec) -> bytes:
    value = os.environ.get(sec.secret_env, "")
    if len(value.encode()) >= 16:
        return value.encode()
    if sec.enforce:
        raise ConfigError(f"security.enforce is on: set {sec.secret_env} to a random secret of at least 16 "
                          "bytes (e.g. `openssl rand -hex 32`), the one the keys were created with")
    return ANONYMOUS_SECRET


def _jwt(sec: SecuritySpec) -> JwtSettings | None:
    j = sec.jwt
    if j is None:
        return None
    if j.key_file is not None:
        try:
            key: str | bytes = Path(j.key_file).read_bytes()
        except OSError as e:
            raise ConfigError(f"security.jwt.key_file: cannot read {j.key_file}: {e.strerror}") from e
        return JwtSettings(j.issuer, j.audience, key, tenant_claim=j.tenant_claim)
    secret = os.environ.get(j.secret_env or "", "")
    if not secret:
        raise ConfigError(f"security.jwt.secret_env: environment variable {j.secret_env} is empty")
    return JwtSettings(j.issuer, j.audience, secret, algorithms=("HS256",), tenant_claim=j.tenant_claim)


class Guard:
    def __init__(self, spec: GridSpec, *, quota_backend: QuotaBackend | None = None,
                 injection_model: InjectionModel | None = None) -> None:
        sec = spec.security
        self._secret = _secret(sec)
        tenants = {name: Tenant(name, Scopes(
            models=None if t.models is None else frozenset(t.models),
            jurisdictions=None if t.allowed_jurisdictions is None else frozenset(t.allowed_jurisdictions),
            sites=None if t.allowed_sites is None else frozenset(t.allowed_sites), policy=None),
            store_prompts=t.store_prompts) for name, t in spec.tenants.items()}
        tenants.setdefault("default", Tenant("default"))
        self.tenants = tenants
        self.authenticator = Authenticator(KeyRing.load(Path(sec.keys_file), self._secret), tenants,
                                           enforce=sec.enforce, jwt=_jwt(sec))
        if quota_backend is None and sec.quotas_redis_url:
            pool = BlockingConnectionPool.from_url(sec.quotas_redis_url, max_connections=64, timeout=2)
            quota_backend = RedisQuotaBackend(Redis(connection_pool=pool))
        self.quotas = Quotas(self._quota_rules(spec), quota_backend or MemoryQuotaBackend())
        a = sec.abuse
        self.abuse = AbuseMonitor(AbuseRules(window_s=a.window_s, min_requests=a.min_requests,
                                             max_requests=a.max_requests))
        self.abuse_action = a.action
        model = injection_model or InjectionModel.load()
        policies = {name: _policy(t.firewall) for name, t in spec.tenants.items() if t.firewall is not None}
        self.firewall = Firewall(model, policies, _policy(sec.firewall))
        self.audit: AuditLog | None = None
        self._audit_spec = sec.audit
        self._enforce = sec.enforce
        self._operators = frozenset(name for name, t in spec.tenants.items() if t.operator)

    @staticmethod
    def _quota_rules(spec: GridSpec) -> QuotaRules:
        sec = spec.security
        return QuotaRules(tenants={n: _limits(t.quotas) for n, t in spec.tenants.items() if t.quotas is not None},
                          default_tenant=_limits(sec.default_quotas), default_key=_limits(sec.key_quotas))

    # lifespan ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        a = self._audit_spec
        if a is None:
            return
        key = None
        if a.signing_key is not None:
            priv = Path(a.signing_key)
            if not priv.exists():
                priv.parent.mkdir(parents=True, exist_ok=True)
                generate_keypair(priv, priv.with_suffix(".pub.pem"))
            key = load_private_key(priv)
        Path(a.path).parent.mkdir(parents=True, exist_ok=True)
        self.audit = AuditLog(Path(a.path), key, checkpoint_every=a.checkpoint_every)
        await self.audit.start()

    async def stop(self) -> None:
        if self.audit is not None:
            await self.audit.stop()
            self.audit = None

    # per request -------------------------------------------------------------------------------------
    def principal(self, authorization: str | None, tenant_hint: str | None) -> Principal:
        """Who is calling. Without enforcement an anonymous caller may name its tenant (x-aigrid-tenant)."""
        principal = self.authenticator.authenticate(authorization)
        if principal.method != "anonymous" or tenant_hint is None:
            return principal
        tenant = self.tenants.get(tenant_hint)
        if tenant is None:
            raise InvalidRequest(f"unknown tenant {tenant_hint!r}", param="x-aigrid-tenant")
        return Principal(tenant.id, principal.key_id, tenant.scopes, "anonymous")

    async def admit(self, principal: Principal, body: dict[str, Any], model: str, prompt: str,
                    tokens: int, policy: str | None = None, jurisdictions: frozenset[str] | None = None) -> Admission:
        """Scopes (model, the jurisdictions the request asked for, a key's bound policy), quota, abuse signals
        and the input firewall; may redact body["messages"] in place."""
        authorize(principal, model, jurisdictions=jurisdictions,
                  policy=policy if principal.scopes.policy else None)
        reservation = await self.quotas.admit(principal, tokens)
        abuse = None
        if self.abuse_action != "off":
            abuse = self.abuse.observe(principal.key_id, RequestTraits(
                prompt=prompt, temperature=body.get("temperature"), logprobs=bool(body.get("logprobs")),
                top_logprobs=int(body.get("top_logprobs") or 0), logit_bias=bool(body.get("logit_bias"))))
        try:
            if abuse is not None and self.abuse_action == "throttle":
                abuse.raise_if_throttled()
            verdicts: list[Verdict] = []
            if isinstance(body.get("messages"), list):
                result = self.firewall.check_input(principal.tenant, body["messages"])
                verdicts = result.verdicts
                result.raise_if_blocked()
                body["messages"] = result.messages
        except BaseException:
            await self.quotas.settle(reservation, 0)
            raise
        return Admission(principal, reservation, verdicts, abuse, time.time())

    def reader(self, authorization: str | None) -> str | None:
        """Who may read decisions: None for everyone (enforcement off, or an operator tenant's key), else the
        one tenant whose decisions this caller may see. Raises 401 for missing or bad credentials."""
        if not self._enforce:
            return None
        principal = self.authenticator.authenticate(authorization)
        return None if principal.tenant in self._operators else principal.tenant

    def operator(self, authorization: str | None) -> None:
        """The dashboard shows every tenant's traffic: operators only when enforcement is on (401 / 403)."""
        if self.reader(authorization) is not None:
            raise PermissionDenied("the dashboard shows every tenant's traffic: it needs an operator tenant's key",
                                   code="operator_only")

    def stores_prompts(self, tenant: str) -> bool:
        t = self.tenants.get(tenant)
        return t is not None and t.store_prompts

    async def complete(self, admission: Admission, decision: Decision | None, served_by: str | None, model: str,
                       outcome: str, usage: Mapping[str, Any] | None, body: Mapping[str, Any],
                       extra_verdicts: Sequence[Verdict] = ()) -> None:
        """After the answer: settle the quota with real usage and write the audit record."""
        prompt_tokens = int((usage or {}).get("prompt_tokens") or 0)
        completion_tokens = int((usage or {}).get("completion_tokens") or 0)
        used = prompt_tokens + completion_tokens if usage else admission.reservation.reserved_tokens
        await self.quotas.settle(admission.reservation, used)
        if self.audit is None:
            return
        p = admission.principal
        prompt = body.get("messages", body.get("prompt", ""))
        await self.audit.append(AuditRecord(
            ts=admission.started, request_id=decision.request_id if decision else "", tenant=p.tenant,
            key_id=p.key_id, model=model,
            decision=decision_summary(decision, (served_by or "").split(" -> ")[-1] or None) if decision else {},
            firewall=[v.to_dict() for v in [*admission.verdicts, *extra_verdicts]],
            outcome=outcome, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            prompt_hmac=prompt_digest(self._secret, prompt),
            prompt_text=str(prompt) if self.stores_prompts(p.tenant) else None,
            extra={"abuse": admission.abuse.to_dict()} if admission.abuse and admission.abuse.signals else {},
        ))

    async def reject(self, principal: Principal | None, error: ApiError, model: str, body: Mapping[str, Any]) -> None:
        """Audit a request refused before routing (401, 403, 429, firewall block)."""
        if self.audit is None:
            return
        prompt = body.get("messages", body.get("prompt", ""))
        await self.audit.append(AuditRecord(
            ts=time.time(), request_id="", tenant=principal.tenant if principal else "?",
            key_id=principal.key_id if principal else "unauthenticated", model=model,
            outcome=f"error:{error.code}", prompt_hmac=prompt_digest(self._secret, prompt),
            extra={"status": error.status, "message": error.message}))
