"""The gateway's security and governance stages, in pipeline order, built once from the spec.

    authenticate -> authorize (scopes) -> field types -> audit writer accepting? -> quota -> abuse signals
    -> firewall choke point (every text the model reads) -> [route, proxy] -> firewall (output)
    -> finish: settle quota with real usage + audit record (exactly once, in the route's `finally`)

Each stage is a library in aigrid.security / aigrid.audit; this module only wires them to the spec and to
one request's Exchange. Errors are the ApiError subclasses those libraries raise (401, 403, 429, 400
firewall_blocked, 503 audit_unavailable).
"""

from __future__ import annotations

import asyncio
import dataclasses
import glob
import logging
import os
import sqlite3
from collections.abc import Callable, Collection, Coroutine, Mapping, MutableMapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from jwt.algorithms import RSAAlgorithm
from jwt.exceptions import InvalidKeyError
from pydantic import TypeAdapter, ValidationError
from starlette.types import Scope

from aigrid.audit.log import AuditLog, AuditSink
from aigrid.audit.record import AuditRecord, decision_summary, prompt_digest
from aigrid.audit.signing import generate_keypair, load_private_key
from aigrid.core.urgency import parse_level
from aigrid.errors import (
    AuditUnavailable,
    ConfigError,
    InvalidRequest,
    PermissionDenied,
    QuotaUnavailable,
    RateLimited,
)
from aigrid.gateway.abuse_sync import AbuseExchange, AbuseSync, redis_exchange
from aigrid.gateway.browsers import BrowserGuard
from aigrid.gateway.envelope import bounded_message
from aigrid.gateway.exchange import Exchange
from aigrid.gateway.model_texts import apply
from aigrid.gateway.request_info import DEFAULT_OUTPUT_TOKENS
from aigrid.logs import shortened
from aigrid.security.authenticate import Authenticator
from aigrid.security.authorize import RESIDENCY_HEADER, authorize, shown_jurisdictions
from aigrid.security.firewall.abuse import AbuseMonitor, AbuseRules, RequestTraits
from aigrid.security.firewall.abuse_shared import SharedAbuseMonitor
from aigrid.security.firewall.cascade import load_cascade
from aigrid.security.firewall.injection import InjectionModel
from aigrid.security.firewall.pipeline import Action, Firewall, FirewallPolicy
from aigrid.security.firewall.reader import PROMPT_READER_PATH
from aigrid.security.firewall.screen import Screen
from aigrid.security.firewall.texts import ModelText
from aigrid.security.jwks import MIN_RSA_BITS, JwksKeys
from aigrid.security.jwt_bearer import JwtSettings
from aigrid.security.keys import KeyRing
from aigrid.security.principal import DEFAULT_TENANT, Principal, Scopes, Tenant
from aigrid.security.quota_backend import MemoryQuotaBackend, QuotaBackend
from aigrid.security.quotas import QuotaLimits, QuotaRules, Quotas, Reservation
from aigrid.spec.models import AbuseSpec, AuditSpec, FirewallSpec, GridSpec, QuotaSpec, SecuritySpec

if TYPE_CHECKING:  # redis (about 12 MB of each process's memory) is imported only where a spec names it
    from aigrid.security.firewall.abuse_redis import RedisAbuseRelay
    from aigrid.security.quotas_redis import RedisQuotaBackend

ANONYMOUS_SECRET = b"aigrid-demo-grid-without-enforcement"
"""Enforcement off and no secret set: no key can be verified anyway; this only keys the prompt hashes."""


log = logging.getLogger("aigrid.guard")
T = TypeVar("T")
AUDIT_WAIT_S = 2.0
"""How long a request may wait for room in the audit writer's queue before it is refused (503)."""
MIN_TURN_OUTPUT = 16
"""The fewest output tokens a tool loop's turn is sent with where the quota has no room for its whole max_tokens
(Guard.extend; what admission reserves of a loop's first turn's output): less room than that (after its prompt) ends
the loop, stop "token_budget"."""


_NUMBER: TypeAdapter[float] = TypeAdapter(float)
_INTEGER: TypeAdapter[int] = TypeAdapter(int)


def _typed(body: Mapping[str, Any], name: str, kind: type, adapter: TypeAdapter[Any]) -> Any:
    """`body[name]` as `kind` (None when absent), by pydantic's lax rules (`"0.5"` read as 0.5, `true` as 1): a value
    that is not one is the client's 400 naming the field, never a TypeError (500) further on. Laxer than the request
    schemas, which refuse a string or a boolean for a number (schemas.number_fields) before this reads their bodies:
    the leniency reaches only a body without a schema (/v1/embeddings, whose engine reads no sampling field)."""
    value = body.get(name)
    if value is None or type(value) is kind:
        return value
    try:
        return adapter.validate_python(value)
    except ValidationError as e:
        raise InvalidRequest(f"invalid value for '{name}': {e.errors()[0]['msg']}", param=name) from e


def request_traits(body: Mapping[str, Any], prompt: str) -> RequestTraits:
    """What the abuse signals read of a request body, type-checked here for every audited route: the
    completion routes' schemas do not know top_logprobs, and /v1/embeddings bodies have no schema at all."""
    legacy = body.get("logprobs")  # a completion's `logprobs: N` asks for the N most likely tokens, as top_logprobs
    if isinstance(legacy, float) and legacy.is_integer():
        legacy = int(legacy)  # 5.0: the schema (lax int) and the engines read it as 5
    legacy_n = legacy if isinstance(legacy, int) and not isinstance(legacy, bool) else 0
    # vLLM's `prompt_logprobs: N`: the N most likely tokens at every position of the prompt, the same distribution
    prompt_n = _typed(body, "prompt_logprobs", int, _INTEGER) or 0
    return RequestTraits(prompt=prompt, temperature=_typed(body, "temperature", float, _NUMBER),
                         logprobs=bool(legacy) or prompt_n > 0,
                         top_logprobs=max(_typed(body, "top_logprobs", int, _INTEGER) or 0, legacy_n, prompt_n),
                         logit_bias=bool(body.get("logit_bias")))


def _limits(q: QuotaSpec | None) -> QuotaLimits:
    if q is None:
        return QuotaLimits()
    return QuotaLimits(q.requests_per_min, q.tokens_per_min, q.token_budget, q.budget_period_s)


def abuse_rules(a: AbuseSpec) -> AbuseRules:
    return AbuseRules(window_s=a.window_s, min_requests=a.min_requests, max_requests=a.max_requests)


def abuse_relay(spec: GridSpec) -> RedisAbuseRelay | None:
    """The Redis relay of abuse digests to the other gateways of the grid (`gateway.shared_state_url`), or
    None: no shared state, or abuse signals off. A lone gateway's Guard and a worker pool's hub both use it."""
    if not spec.gateway.shared_state_url or spec.security.abuse.action == "off":
        return None
    from aigrid.security.firewall.abuse_redis import RedisAbuseRelay

    return RedisAbuseRelay.from_url(spec.gateway.shared_state_url, spec.name,
                                    password_env=spec.gateway.redis_password_env)


def _policy(f: FirewallSpec) -> FirewallPolicy:
    return FirewallPolicy(injection=Action(f.injection), pii_input=Action(f.pii_input), pii_output=Action(f.pii_output),
                          tool_descriptions=Action(f.tool_descriptions))


def injection_detector(sec: SecuritySpec) -> InjectionModel:
    """The shipped n-gram heads with the cascades the spec turns on (each None without torch: logged once)."""
    return InjectionModel.load().with_cascade(
        load_cascade() if sec.injection_cascade else None,
        load_cascade(PROMPT_READER_PATH, field="security.prompt_cascade") if sec.prompt_cascade else None)


def _secret(sec: SecuritySpec) -> bytes:
    value = os.environ.get(sec.secret_env, "")
    if len(value.encode()) >= 16:
        return value.encode()
    if sec.enforce:  # how long the secret is, never the secret
        held = f"it holds {len(value.encode())} bytes" if value else f"{sec.secret_env} is not set"
        raise ConfigError(f"security.enforce is on: {sec.secret_env} must be a random secret of at least 16 bytes "
                          f"({held}; e.g. `openssl rand -hex 32`), the one the keys were created with")
    return ANONYMOUS_SECRET


HS256_MIN_BYTES = 32
"""An HS256 secret as long as its hash's output (RFC 7518, 3.2)."""


def _token_tenants(patterns: list[str] | None, grid: Collection[str], operators: Collection[str]) -> tuple[str, ...] | None:
    """The tenants a token may name (`security.jwt.tenants`, glob patterns; None: any): an operator tenant (every
    tenant's decisions, the dashboard) only where the list names it exactly, never by default nor by a pattern (before,
    a grid that left `tenants` out let the identity provider mint operator tokens). With operators, the grid's tenants
    a token may name, each written as a pattern matching itself alone."""
    if not operators:
        return None if patterns is None else tuple(patterns)

    def may_name(tenant: str) -> bool:
        if tenant in operators:
            return patterns is not None and tenant in patterns
        return patterns is None or any(fnmatchcase(tenant, p) for p in patterns)

    return tuple(glob.escape(t) for t in sorted(grid) if may_name(t))


def _jwt(sec: SecuritySpec, tenants: Collection[str] = (), operators: Collection[str] = ()) -> JwtSettings | None:
    """`tenants`: the grid's tenant names; `operators`: those of its operator tenants (_token_tenants)."""
    j = sec.jwt
    if j is None:
        return None
    limits: dict[str, Any] = {"tenant_claim": j.tenant_claim, "max_lifetime_s": j.max_lifetime_s,
                              "tenants": _token_tenants(j.tenants, tenants, operators)}
    if j.jwks_url is not None:
        return JwtSettings(j.issuer, j.audience, None, jwks=JwksKeys(j.jwks_url, refresh_s=j.jwks_refresh_s), **limits)
    if j.key_file is not None:
        try:
            key: str | bytes = Path(j.key_file).read_bytes()
        except OSError as e:
            raise ConfigError(f"security.jwt.key_file: cannot read {j.key_file}: {e.strerror}") from e
        bits = _rsa_bits(key)
        if bits is not None and bits < MIN_RSA_BITS:  # PyJWT only warns (InsecureKeyLengthWarning), per token
            raise ConfigError(f"security.jwt.key_file: {j.key_file} is a {bits}-bit RSA key; tokens are accepted only "
                              f"under RSA keys of at least {MIN_RSA_BITS} bits (as from a JWKS: security/jwks.py)")
        return JwtSettings(j.issuer, j.audience, key, **limits)
    secret = os.environ.get(j.secret_env or "", "")
    if not secret:
        raise ConfigError(f"security.jwt.secret_env: environment variable {j.secret_env} is empty")
    if len(secret.encode()) < HS256_MIN_BYTES:  # one token is enough to guess a short one offline
        raise ConfigError(f"security.jwt.secret_env: {j.secret_env} holds {len(secret.encode())} bytes; an HS256 "
                          f"secret must be at least {HS256_MIN_BYTES} bytes (RFC 7518, 3.2: e.g. `openssl rand -hex "
                          "32`), else it can be guessed from a single token and any tenant's token forged")
    return JwtSettings(j.issuer, j.audience, secret, algorithms=("HS256",), **limits)


def _rsa_bits(pem: str | bytes) -> int | None:
    """The size of the RSA key PyJWT reads from `pem` (a public key, a private one, an ssh-rsa line), or None: not an
    RSA key (an EC or Ed25519 one; a file PyJWT cannot read, refused with every token)."""
    try:
        return RSAAlgorithm(RSAAlgorithm.SHA256).prepare_key(pem).key_size
    except (InvalidKeyError, TypeError, ValueError):
        return None


def audit_log(a: AuditSpec) -> AuditLog:
    """The spec's audit log (not started), its signing key created on first use."""
    key = None
    if a.signing_key is not None:
        priv = Path(a.signing_key)
        pub = priv.with_suffix(".pub.pem")
        if not priv.exists() and pub.exists():
            # a new pair would write its public key over the one the log's earlier checkpoints verify with, and
            # `aigrid audit verify` would then call an intact log tampered with
            raise ConfigError(f"security.audit.signing_key: {priv} does not exist but its public key {pub} does: the "
                              f"key that signed this grid's audit log is missing. Restore {priv}, or move {pub} "
                              "aside to start a new key (the records signed before verify with the old public key)")
        try:
            if not priv.exists():
                priv.parent.mkdir(parents=True, exist_ok=True)
                generate_keypair(priv, pub)
            key = load_private_key(priv)
        except (OSError, ValueError) as e:
            raise ConfigError(f"security.audit.signing_key: cannot read or create {priv}: {e}") from e
    try:
        Path(a.path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"security.audit.path: cannot create the folder of {a.path}: {e}") from e
    return AuditLog(Path(a.path), key, checkpoint_every=a.checkpoint_every,
                    checkpoint_after_s=a.checkpoint_after_s, queue_max=a.queue_max)


async def _uncut(call: Coroutine[Any, Any, T], keep: Callable[[T], None]) -> T:
    """Await a quota store call that charges (a reservation made or grown on Redis or the hub) so that a cancel
    (a whole-answer timeout, a shutdown, a hedge's losing copy) cannot lose what it charged: the call runs on as
    a task; cancelled meanwhile, this waits for it to end, hands what it returned to `keep` (put on the
    exchange, which finish settles) and then re-raises the cancel. `call` logs its own failures."""
    task = asyncio.ensure_future(call)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():  # a store call ends within its socket timeout; a second cancel waits too
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:
                continue
        if not task.cancelled() and task.exception() is None:  # raised: nothing charged (logged by `call`)
            keep(task.result())
        raise


def _kept(_: object) -> None:
    """What a close returned to a cancelled finish: nothing more to keep (logged, counted by _close)."""


async def start_audit(log: AuditSink) -> None:
    """Open the audit log: a path that cannot be opened (a folder, no permission) is a ConfigError naming the
    field, not sqlite's 'unable to open database file' traceback."""
    try:
        await log.start()
    except (OSError, sqlite3.Error) as e:
        where = getattr(getattr(log, "store", None), "path", None)
        raise ConfigError(f"security.audit.path: cannot open the audit log{f' {where}' if where else ''}: {e}") from e


class Guard:
    def __init__(self, spec: GridSpec, *, quota_backend: QuotaBackend | None = None,
                 injection_model: InjectionModel | None = None, audit_sink: AuditSink | None = None,
                 abuse_exchange: AbuseExchange | None = None) -> None:
        """`audit_sink`: where a gateway worker's records go (its hub, the audit log's one writer) instead of
        the log this guard would open itself. `abuse_exchange`: a worker's way to its hub's abuse verdicts
        over all workers (abuse_sync.py); without it, a gateway with `gateway.shared_state_url` shares its
        abuse digests with the other gateways through Redis, and any other counts its own requests."""
        sec = spec.security
        self._secret = _secret(sec)
        self._prices = {ep.id: (ep.price_in_per_mtok, ep.price_out_per_mtok) for ep in spec.endpoints}
        """USD per million tokens (in, out) by endpoint: each record's cost as charged (`extra.cost_usd`)."""
        self.jurisdictions = frozenset(site.jurisdiction for site in spec.sites.values())
        """The grid's: a request whose x-aigrid-residency names none of them can run nowhere (authorize: 400)."""
        tenants = {name: Tenant(name, Scopes(
            models=None if t.models is None else frozenset(t.models),
            jurisdictions=None if t.allowed_jurisdictions is None else frozenset(t.allowed_jurisdictions),
            sites=None if t.allowed_sites is None else frozenset(t.allowed_sites), policy=None,
            max_priority=parse_level(t.priority.max), tools=None if t.tools is None else frozenset(t.tools)),
            store_prompts=t.store_prompts) for name, t in spec.tenants.items()}
        tenants.setdefault(DEFAULT_TENANT, Tenant(DEFAULT_TENANT))
        self.tenants = tenants
        try:
            keys = KeyRing.watching(Path(sec.keys_file), self._secret)
        except (OSError, ValueError) as e:  # a folder, no permission, not the key file's JSON
            raise ConfigError(f"security.keys_file: cannot read {sec.keys_file}: {e}") from e
        self._operators = frozenset(name for name, t in spec.tenants.items() if t.operator)
        self.authenticator = Authenticator(keys, tenants,
                                           enforce=sec.enforce, jwt=_jwt(sec, tenants, self._operators))
        self._quota_redis: RedisQuotaBackend | None = None  # the one this guard made (closed by stop)
        if quota_backend is None and sec.quotas_redis_url:
            from aigrid.redis_client import connect
            from aigrid.security.quotas_redis import RedisQuotaBackend

            # a socket timeout as the other Redis clients have: a Redis that hangs is a 503 within it (_reserve)
            self._quota_redis = RedisQuotaBackend(connect(sec.quotas_redis_url, spec.gateway.redis_password_env,
                                                          pool_size=64, pool_wait_s=2, socket_timeout=1.0,
                                                          socket_connect_timeout=1.0))
            quota_backend = self._quota_redis
        backend = quota_backend or MemoryQuotaBackend()
        self.quotas = Quotas(self._quota_rules(spec), backend)
        self._store_pauses: bool = getattr(backend, "pauses", True)
        """A store that awaits mid-call (Redis, the hub): its charges run through _uncut. The in-memory one never
        pauses, so a plain await keeps a task and two loop turns off every request (about 11 us)."""
        a = sec.abuse
        self.abuse: AbuseMonitor | SharedAbuseMonitor = AbuseMonitor(abuse_rules(a))
        self.abuse_sync: AbuseSync | None = None
        self._abuse_relay: RedisAbuseRelay | None = None
        if abuse_exchange is not None and a.action != "off":
            shared = SharedAbuseMonitor(AbuseMonitor(abuse_rules(a)))
            self.abuse, self.abuse_sync = shared, AbuseSync(shared, abuse_exchange, a.share_interval_s)
        elif (relay := abuse_relay(spec)) is not None:  # a lone gateway among others: via Redis
            shared = SharedAbuseMonitor(AbuseMonitor(abuse_rules(a)))
            self._abuse_relay = relay
            self.abuse = shared
            self.abuse_sync = AbuseSync(shared, redis_exchange(shared, self._abuse_relay), a.share_interval_s,
                                        peer="Redis")
        self.abuse_action = a.action
        model = injection_model or injection_detector(sec)
        policies = {name: _policy(t.firewall) for name, t in spec.tenants.items() if t.firewall is not None}
        self.firewall = Firewall(model, policies, _policy(sec.firewall))
        self.screen = Screen(self.firewall)
        self.audit_failures = 0
        """Records lost (each logged): the audit log could not take them within AUDIT_WAIT_S after the answer
        was sent, their request finished after stop(), or stop() gave up on writing them to a failing disk."""
        self.settle_failures = 0
        """Reservations the quota store (Redis, the workers' hub) failed to settle (logged; they stand as charged)."""
        self.audit: AuditSink | None = None
        self._appending: set[asyncio.Task[None]] = set()
        """Records of closes cancelled while they waited for room in the audit log (_append_later)."""
        self._audit_stopped = False
        """stop() closed the audit log: unlike a grid without one (audit None from the start), a request
        finishing now has a record and nowhere to write it."""
        self._audit_spec = sec.audit
        self._audit_sink = audit_sink if sec.audit is not None else None
        self._enforce = sec.enforce
        self._browsers = BrowserGuard(spec.gateway.allowed_hosts)
        self._jwks_task: asyncio.Task[None] | None = None
        self._started = False
        """start() ran and stop() has not since: a second start() does nothing (a test's, then its app's lifespan:
        each built and opened an audit log of its own, and stop() closed the last one only)."""

    @staticmethod
    def _quota_rules(spec: GridSpec) -> QuotaRules:
        sec = spec.security
        return QuotaRules(tenants={n: _limits(t.quotas) for n, t in spec.tenants.items() if t.quotas is not None},
                          default_tenant=_limits(sec.default_quotas), default_key=_limits(sec.key_quotas))

    # lifespan ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the abuse sync, the JWKS refresher and the audit log, once: called again before stop(), nothing
        (what the first call started is what stop() stops)."""
        if self._started:
            return
        self._started = True  # before any await: a start that fails half-way is stop()'s to undo (app.start)
        if self.abuse_sync is not None:
            await self.abuse_sync.start()
        jwks = self.authenticator.jwt.jwks if self.authenticator.jwt is not None else None
        if jwks is not None:  # the identity provider's keys, fetched now (bounded) and kept fresh in the background
            fetched = await jwks.refresh()
            self._jwks_task = asyncio.create_task(jwks.run(fetch_first=not fetched), name="jwks refresh")
        if self._audit_spec is None:
            return
        sink: AuditSink = self._audit_sink or audit_log(self._audit_spec)
        await start_audit(sink)
        self.audit = sink

    async def stop(self) -> None:
        self._started = False
        if self._jwks_task is not None:
            self._jwks_task.cancel()
            try:
                await self._jwks_task
            except asyncio.CancelledError:
                pass
            except Exception:  # logged: the audit log below is closed whatever happened to the refresher
                log.exception("the JWKS refresher ended with an error")
            self._jwks_task = None
        if self.abuse_sync is not None:
            await self.abuse_sync.stop()
        if self._abuse_relay is not None:
            await self._abuse_relay.aclose()
        await self.quotas.aclose()  # failed charges still waiting for their release: given up (logged)
        if self._quota_redis is not None:
            await self._quota_redis.aclose()
        self.screen.close()
        if self.audit is not None:
            await self._appended()
            await self.audit.stop()
            self.audit_failures += self.audit.lost
            self.audit = None
            self._audit_stopped = True
            await self._appended()  # those of closes cancelled while the log stopped: to a stopped log, logged lost

    async def _appended(self) -> None:
        """Wait for the records of cancelled closes (_append_later), each within AUDIT_WAIT_S (written, or logged
        and counted lost), including those of closes cancelled meanwhile: a snapshot of the set left those unawaited."""
        while self._appending:
            await asyncio.gather(*self._appending, return_exceptions=True)

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

    async def admit(self, ex: Exchange, body: dict[str, Any], prompt: str, tokens: int,
                    policy: str | None = None, jurisdictions: frozenset[str] | None = None) -> None:
        """Scopes (model, the jurisdictions the request asked for, a key's bound policy), the audit writer,
        quota and abuse signals; the reservation and abuse verdict go on the exchange (settled by finish)."""
        assert ex.principal is not None
        principal = ex.principal
        self.authorize(ex, policy, jurisdictions)
        traits = request_traits(body, prompt)  # a malformed body is refused before it costs any quota
        self._audit_accepting()
        hangup = ex.hangup
        if hangup is not None:  # a reservation on Redis or the hub cut mid-reply would stay charged: never cut it
            hangup.hold()
        try:
            ex.reservation = await self._charge(self._reserve(principal, tokens),
                                                lambda r: setattr(ex, "reservation", r))
        finally:  # refused (429, 503) or cancelled too: a hold left standing would keep the watcher off for good
            if hangup is not None:
                hangup.resume()  # the client left meanwhile: cancelled here, the reservation on the exchange to settle
        if self.abuse_action != "off":
            ex.abuse = self.abuse.observe(principal.key_id, traits)
            if self.abuse_action == "throttle":
                ex.abuse.raise_if_throttled()

    async def extend(self, ex: Exchange, prompt_tokens: int, output_tokens: int) -> int | None:
        """Reserve a model call of the exchange's request (a tool loop's turn: routes._tool_loop; admission reserved
        the first one's prompt and MIN_TURN_OUTPUT), its prompt's estimate and its max_tokens, on the exchange's quota: charged past what the reservation holds unused
        (an earlier turn's max_tokens it did not write), with what its finished turns used past the reservation where
        the engines counted more (ex.loop_usage: an estimate's error is made up before the next turn, so a loop never
        runs past its limits by more than one turn's error; a loop whose turns' count is unknown, ex.loop_usage {}: the
        turn charged in full). Where a token limit has room for the prompt but not the
        whole max_tokens, the turn is given what there is, down to MIN_TURN_OUTPUT (or its own max_tokens, if
        fewer). Returns the turn's max_tokens (the reservation grown on the exchange, settled once by finish), or
        None when a token limit has no room for that (nothing charged: the loop ends with what it has) or the quota
        store cannot be asked (logged: the turn is not run unreserved). An exchange with no reservation (not
        admitted: a test's) has nothing to grow."""
        if ex.reservation is None:
            return output_tokens
        counts = ex.loop_usage
        # the loop's finished turns' count; {}: a turn came without one (unknown): this turn is charged in full
        used = None if counts == {} else sum(int((counts or {}).get(k) or 0) for k in ("prompt_tokens", "completion_tokens"))
        grown = await self._grow(ex, prompt_tokens + output_tokens, used, max(0, output_tokens - MIN_TURN_OUTPUT),
                                 "reserve a further model turn of %s %s; the loop ends there")
        return None if grown is None else output_tokens - grown

    async def widen(self, ex: Exchange, tokens: int, floor: int = 0) -> int:
        """Reserve up to `tokens` more output of an admitted request that set no output limit of its own, on top of
        what admission reserved for it (request_info.DEFAULT_OUTPUT_TOKENS a choice): as much as its token limits
        have room for, down to none. Returns how many were reserved (the reservation grown on the exchange, settled
        once by finish): the engine is sent no larger a max_tokens than the request reserved (routes.route). Until
        the thirty-seventh session (brief ATK6) the engine got the grid's limit (4,096) while the request reserved
        256: seven such requests at once of a tenant allowed 2,000 tokens a minute were served 28,336. A request
        without token limits, or without a reservation, is given all of `tokens` (nothing to charge); a store that
        fails is logged and gives none (the request runs within what admission reserved). `floor`: of `tokens`, how
        many it must have (a vLLM `min_tokens` past the default: the engine refuses a max_tokens below it, and decodes
        at least that many): where the limits have no room for them, nothing is charged and the request is the quota's
        429 naming min_tokens."""
        reservation = ex.reservation
        if tokens <= 0 or reservation is None or not reservation.token_counters:
            return max(0, tokens)
        floor = min(max(0, floor), tokens)
        short = await self._grow(ex, tokens, None, tokens - floor,
                                 "reserve the output of %s %s past its default; " + ("refused (503)" if floor
                                                                                     else "sent that"),
                                 must=floor > 0)
        if short is None and floor:  # too large for a limit (no retry), or Retry-After (Quotas.refuse_growth)
            raise self.quotas.refuse_growth(
                reservation, floor, f"the min_tokens this request asks for past the {DEFAULT_OUTPUT_TOKENS:,} reserved")
        return 0 if short is None else tokens - short

    async def _grow(self, ex: Exchange, tokens: int, used: int | None, give: int, failed: str,
                    must: bool = False) -> int | None:
        """Quotas.extend of the exchange's reservation by `tokens` (`used`, `give`: as there), the grown reservation
        kept on the exchange even where a hang-up cuts the call short: how many of `tokens` were left out, or None
        (nothing charged: no room for `tokens` less `give`, or the store failed: logged as `failed` says, with the
        exchange's route and request id). `must`: the request cannot run without them (widen's min_tokens): a store
        that fails is the 503 quota_unavailable admission answers (it was read as no room, a 429, until the
        thirty-seventh session's review, brief RV1)."""
        reservation = ex.reservation
        assert reservation is not None
        hangup = ex.hangup
        if hangup is not None:  # as in admit: a charge on Redis or the hub cut mid-reply would stay charged
            hangup.hold()

        async def grow() -> tuple[Reservation, int] | None:
            try:
                return await self.quotas.extend(reservation, tokens, used=used, give=give)
            except Exception:  # whatever the store raised: nothing is run without its reservation
                log.exception("quota store failed to " + failed, ex.route, ex.request_id)
                if must:
                    raise QuotaUnavailable("the quota store did not answer; the request was not served, try again",
                                           headers={"retry-after": "1"}) from None
                return None

        def keep(grown: tuple[Reservation, int] | None) -> None:
            if grown is not None:
                ex.reservation = grown[0]  # what finish settles

        try:
            grown = await self._charge(grow(), keep)
            keep(grown)  # before resume() may raise
        finally:
            if hangup is not None:
                hangup.resume()  # the client left meanwhile: cancelled here
        return None if grown is None else grown[1]

    def authorize(self, ex: Exchange, policy: str | None = None, jurisdictions: frozenset[str] | None = None) -> None:
        """Scopes: the model, the jurisdictions the request asked for and a key's bound policy (403; 400 for
        jurisdictions no site of the grid is in, which no scope could admit). The model
        routes call it as soon as the request is read, before any work for it (the context check, fetching its
        image URLs); admit() checks again."""
        assert ex.principal is not None
        self.authorize_scopes(ex.principal, ex.model, policy, jurisdictions)

    def authorize_scopes(self, principal: Principal, model: str | None, policy: str | None = None,
                         jurisdictions: frozenset[str] | None = None, kept: str | None = None) -> None:
        """authorize's checks for a caller; `model` None checks no model (a batch's create checks the headers its
        lines will be sent with: batch_line.kept_headers); `kept`: what a storing call keeps (authorize)."""
        if jurisdictions is not None and jurisdictions.isdisjoint(self.jurisdictions):
            # a typo or another grid's name: the client's mistake, not a 503 no_eligible_endpoint "by residency"
            # a name that is not printable is shown as repr (ATK7, thirty-seventh session: it came back raw)
            named = shown_jurisdictions(jurisdictions) or "the jurisdictions it names (none)"
            raise InvalidRequest(f"{RESIDENCY_HEADER}: no site of this grid is in {named}; its jurisdictions: "
                                 f"{', '.join(sorted(self.jurisdictions))}", param=RESIDENCY_HEADER)
        authorize(principal, model, jurisdictions=jurisdictions, policy=policy if principal.scopes.policy else None,
                  kept=kept)

    def residency_within(self, principal: Principal, asked: frozenset[str] | None, kept: str
                         ) -> frozenset[str] | None:
        """The jurisdictions a call's x-aigrid-residency asks for (`asked`, request_info.residency; None: none
        asked) that a site of the grid is in, checked as the model doors check them (authorize_scopes: naming none
        of the grid's, or none at all, `,`: 400; one outside the key's: 403): what the files and conversations
        doors keep their data within, the one check of the header for every door; its 403 names what they keep
        (`kept`: files, conversations)."""
        if asked is None:
            return None
        self.authorize_scopes(principal, None, None, asked, kept)
        return asked & self.jurisdictions

    async def admit_call(self, ex: Exchange, *, counted: bool = True) -> None:
        """A call that reads no prompt but reads or changes what the tenant keeps (files, batches, stored
        responses, conversations: routes.authenticate) is admitted like a request: not served while the audit
        log cannot take its record (503); `counted` (a call that writes: creates, changes, deletes), counted in
        requests per minute (429; no tokens), settled by finish like any reservation. A read is not counted,
        so that polling a background response or a batch does not spend the tenant's requests; a read whose
        cost grows with what the tenant stored is (routes.authenticate's `heavy`)."""
        assert ex.principal is not None
        self._audit_accepting()
        if counted:
            ex.reservation = await self._charge(self._reserve(ex.principal, 0, requests_only=True),
                                                lambda r: setattr(ex, "reservation", r))

    async def _charge(self, call: Coroutine[Any, Any, T], keep: Callable[[T], None]) -> T:
        """A quota store call that charges: shielded (_uncut) where the store pauses mid-call, else awaited."""
        return await (_uncut(call, keep) if self._store_pauses else call)

    async def _reserve(self, principal: Principal, tokens: int, requests_only: bool = False) -> Reservation:
        """`Quotas.admit`; the store failing (a Redis that refuses or hangs past its socket timeout, the workers' hub
        gone: its UpstreamFailed too) is the client's 503 `quota_unavailable` (logged), never a 500 nor a request
        served uncounted."""
        try:
            return await self.quotas.admit(principal, tokens, requests_only=requests_only)
        except RateLimited:
            raise
        except Exception:  # whatever the store raised
            log.exception("quota store failed to reserve a request of tenant %s; refused (503)",
                          shortened(principal.tenant, 200))
            raise QuotaUnavailable("the quota store did not answer; the request was not served, try again",
                                   headers={"retry-after": "1"}) from None

    def audit_accepting(self) -> bool:
        """Whether the audit log can take a record now (none configured: always, until the gateway stops)."""
        return not self._audit_stopped and (self.audit is None or self.audit.accepting())

    def _audit_accepting(self) -> None:
        """503 audit_unavailable unless the audit log can take a record now."""
        if not self.audit_accepting():
            raise AuditUnavailable("the audit log cannot take records now; the request was not served")

    async def screen_request(self, ex: Exchange, body: MutableMapping[str, Any], texts: list[ModelText]) -> None:
        """The choke point for a request's own texts: verdicts onto the exchange, 400 when blocked,
        redactions written back into `body`; more texts than the firewall reads in one request, a 400 before any is
        read (screen.MAX_TOGETHER)."""
        assert ex.principal is not None
        screened = await self.screen.check(ex.principal.tenant, texts)
        ex.verdicts.extend(screened.verdicts)
        screened.raise_if_blocked()
        apply(body, texts, screened)

    def reader(self, authorization: str | None) -> str | None:
        """Who may read decisions: None for everyone (enforcement off, or an operator tenant's key), else the
        one tenant whose decisions this caller may see. Raises 401 for missing or bad credentials."""
        if not self._enforce:
            return None
        return self.reader_of(self.authenticator.authenticate(authorization))

    def derived_key(self, purpose: str) -> bytes:
        """A 32-byte key of its own for `purpose` (HKDF-SHA256 of the gateway's secret, security.secret_env): the
        same in every worker and gateway that shares the secret, and telling nothing of the secret or of another
        purpose's key. Without a secret (a demo grid, enforcement off) it derives from ANONYMOUS_SECRET, which
        anyone can read here: nothing keyed by it is private there."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"aigrid/{purpose}".encode()).derive(self._secret)

    @property
    def enforcing(self) -> bool:
        """Authentication is enforced (the spec's security.enforce)."""
        return self._enforce

    def check_browser(self, scope: Scope) -> None:
        """Without keys, a request a browser sent for another site's page, or under another name than the
        gateway's own (DNS rebinding), is a 403 (browsers.py); with keys enforced nothing is checked."""
        if not self._enforce:
            self._browsers.check(scope)

    def reader_of(self, principal: Principal) -> str | None:
        """Guard.reader for a caller already authenticated (an audited read's, on its exchange). An operator tenant's
        key reads every tenant's only where it is the tenant's whole key: one narrowed (a key made with `--jurisdiction`,
        `--model`, `--site`, `--policy`, `--max-priority`; a token's scope claims) reads as its tenant's, as any
        tenant's key does (its tenant's decisions routed within its scopes, the part of the grid that may serve it, no
        engine address), and the operators' reads (the dashboard, /metrics, /healthz's details) refuse it (operator_of).
        Before, the narrowing was ignored here: a key of the operator tenant narrowed to the EU read every tenant's
        decisions, the US's included, the whole grid with its engines' addresses, and the dashboard."""
        if not self._enforce:
            return None
        return None if principal.tenant in self._operators and not self.narrowing(principal) else principal.tenant

    def narrowing(self, principal: Principal) -> str:
        """How the principal's key (or token) narrows its tenant's scopes, as `aigrid keys list` writes scopes
        (`jurisdictions=EU models=small-*`); empty for a key of the tenant's whole scopes (Scopes.narrowing_of)."""
        tenant = self.tenants.get(principal.tenant)
        return principal.scopes.narrowing_of(tenant.scopes if tenant is not None else Scopes())

    def operator_of(self, principal: Principal, what: str) -> None:
        """Operators only, for a caller already authenticated (the dashboard's data, /healthz's details, /metrics
        with security.metrics: operator): a 403 naming `what` unless enforcement is off or the principal is an
        operator tenant's whole key. (Guard.operator, which authenticated the credentials again, went in the
        thirty-third session: the dashboard authenticated each request twice.)"""
        if self.reader_of(principal) is None:
            return
        if principal.tenant in self._operators:  # a key of the operator tenant, narrowed: not the operator's
            raise PermissionDenied(f"{what}: it needs an operator tenant's key that is not narrowed; key "
                                   f"{principal.key_id} of operator tenant {principal.tenant!r} is narrowed "
                                   f"({self.narrowing(principal)}) and reads as its tenant's only", code="operator_only")
        raise PermissionDenied(f"{what}: it needs an operator tenant's key", code="operator_only")

    def stores_prompts(self, tenant: str) -> bool:
        t = self.tenants.get(tenant)
        return t is not None and t.store_prompts

    async def finish(self, ex: Exchange) -> bool:
        """Settle the quota and write the audit record, once per exchange, whatever its exit; a failed
        settle does not stop the record. False when the record was lost (logged, counted): the audit log
        could not take it within AUDIT_WAIT_S, or it had already stopped (the gateway shutting down). With a store
        that pauses mid-call (Redis, the hub), a cancel landing meanwhile (a second one: a shutdown during the
        request's close) is waited out (_uncut): the settlement applied and the record written, then it goes on."""
        if ex.closed:
            return True
        ex.closed = True
        if ex.reservation is not None and self._store_pauses:
            return await _uncut(self._close(ex), _kept)
        return await self._close(ex)

    async def _close(self, ex: Exchange) -> bool:
        if ex.reservation is not None:
            await self._settle(ex)
        audit = self.audit
        if audit is None:
            return not self._audit_stopped or self._lost(ex, "the audit log has stopped")
        record = self._record(ex)
        try:
            await audit.append(record, timeout=AUDIT_WAIT_S)
        except AuditUnavailable as e:
            return self._lost(ex, str(e), record)
        except asyncio.CancelledError:  # cut while it waited for room (the queue full): appended after, then raised on
            self._append_later(ex, record, audit)
            raise
        return True

    def _append_later(self, ex: Exchange, record: AuditRecord, audit: AuditSink) -> None:
        """A close cancelled while its record waited for room in the audit writer's queue (the in-process quota store:
        its close is not shielded, _uncut costing a task per request): the record is appended by a task of its own,
        within AUDIT_WAIT_S like any, or logged and counted lost; stop() waits for it. Before, it was dropped unlogged.
        The sink is the one the close used: a task that first runs after stop() let go of it (a close cancelled while
        the log stopped) gets the stopped log's refusal, logged and counted lost; before, it failed an assert, unlogged."""
        async def append() -> None:
            try:
                await audit.append(record, timeout=AUDIT_WAIT_S)
            except AuditUnavailable as e:
                self._lost(ex, str(e), record)
            except asyncio.CancelledError:
                self._lost(ex, "the gateway stopped while it waited for room in the audit log", record)
                raise

        task = asyncio.get_running_loop().create_task(append(), name="aigrid-audit-after-cancel")
        self._appending.add(task)
        task.add_done_callback(self._appending.discard)

    async def _settle(self, ex: Exchange) -> None:
        """Replace the reservation by the real usage. The quota store failing (Redis down, the workers' hub
        gone: UpstreamFailed) leaves the reservation charged as it stands: logged, counted, marked on the
        exchange and its audit record, which is still written."""
        assert ex.reservation is not None
        try:
            await self.quotas.settle(ex.reservation, ex.used_tokens())
        except Exception:  # whatever the store raised: the audit record below must still be written
            ex.unsettled = True
            self.settle_failures += 1
            log.exception("quota not settled for %s %s (the reservation stands)", ex.route, ex.request_id)

    def _lost(self, ex: Exchange, why: str, record: AuditRecord | None = None) -> bool:
        self.audit_failures += 1
        record = record or self._record(ex)
        if record.prompt_text is not None:  # kept in the audit log where store_prompts says so, never in the logs
            record = dataclasses.replace(record, prompt_text=f"<{len(record.prompt_text)} characters, not logged>")
        log.error("audit record lost for %s %s: %s; record: %s", ex.route, ex.request_id, why, record.body())
        return False

    def _record(self, ex: Exchange) -> AuditRecord:
        p = ex.principal
        usage = ex.final_usage() or {}
        body = ex.body
        prompt = body.get("messages", body.get("prompt", body.get("input", "")))
        served = ex.record.served_by if ex.record is not None else None
        extra: dict[str, Any] = {"route": ex.route, **ex.notes}
        if ex.abuse is not None and ex.abuse.signals:
            extra["abuse"] = ex.abuse.to_dict()
        if (failure := ex.failure()) is not None:
            # the message the client was told (envelope.bounded_message: each quoted value at SHOWN_CHARS, the whole
            # at ERROR_MESSAGE_CHARS): a 400 echoes the value it refuses (an unknown `include`, a `tool_choice`, a
            # schema's number check), and a client's 2 MB value was 2 MB of audit record each time; cut apart from
            # the client's (the head at 4,096 characters) a schema's 400 kept 4,096 of the value after 4874100d
            extra.update(status=failure.status, message=bounded_message(failure.message))
        if ex.ticket is not None:
            extra["urgency"] = ex.ticket.to_dict()
        if ex.unsettled:
            extra["quota"] = "unsettled"
        if ex.loop_stop is not None:  # why its tool loop ended: an `ok` loop cut short is told from one that answered
            extra["loop_stop"] = ex.loop_stop
        if ex.tool_runs:  # which server-side tools acted for it (a query, a fetch, an MCP tool), with what arguments
            keep = p is not None and self.stores_prompts(p.tenant)  # in clear where its prompts are kept, else keyed
            extra["tools"] = [{**{k: v for k, v in run.items() if k != "arguments"}, "ok": run.get("ok"),
                               "arguments_hmac": prompt_digest(self._secret, run["arguments"]),
                               **({"arguments": run["arguments"]} if keep else {})} for run in ex.tool_runs]
        prompt_in, out = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        if ex.reservation is not None and (charged := ex.used_tokens()) != prompt_in + out:
            extra["charged_tokens"] = charged  # not (only) the engines' count: what the quota was charged
            extra["charged_from"] = ex.charged_from()  # which count: delivered, reservation, prompt, tool_loop
            if usage:  # a tool loop's finished turns and the prompt of the turn its engine held
                prompt_in = charged - out
            else:  # the prompt an engine held; the reservation's rest when an engine answered without a count
                prompt_in = min(charged, ex.record.prompt_tokens if ex.record is not None else 0)
                out = charged - prompt_in
        endpoint = (served or "").split(" -> ")[-1] or (ex.record.left_at if ex.record is not None else None)
        if endpoint in self._prices and (usage or prompt_in or out):  # at the prices of the endpoint that ended the answer
            price_in, price_out = self._prices[endpoint]  # (or held the request when its client left), today's
            extra["cost_usd"] = round((prompt_in * price_in + out * price_out) / 1e6, 9)
        return AuditRecord(
            ts=ex.started, request_id=ex.request_id,
            tenant=p.tenant if p else "?", key_id=p.key_id if p else "unauthenticated", model=ex.model,
            decision=decision_summary(ex.decision, (served or "").split(" -> ")[-1] or None) if ex.decision else {},
            firewall=[v.to_dict() for v in ex.all_verdicts()], outcome=ex.final_outcome(),
            prompt_tokens=int(usage.get("prompt_tokens") or 0), completion_tokens=int(usage.get("completion_tokens") or 0),
            prompt_hmac=prompt_digest(self._secret, prompt),
            prompt_text=str(prompt) if p is not None and self.stores_prompts(p.tenant) else None, extra=extra)
