"""The grid spec as pydantic models: sites, models, endpoints, policies, tenants, cities, gateway settings.

The YAML mirrors the architecture: a site is a place with a jurisdiction and a power budget, an endpoint is
an engine at a site serving one model, a policy is a weight set over the five axes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Annotated, Literal, cast
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from aigrid.core.geo import DEFAULT_ROUTE_FACTOR
from aigrid.core.policies import DEFAULT_POLICY
from aigrid.core.types import AXES
from aigrid.core.urgency import AdmissionRules, parse_level
from aigrid.spec.builtin_models import EMBEDDING_ALIASES
from aigrid.spec.near import Near, did_you_mean

# Bounds no real deployment reaches: past them a mistyped value (1e308 for 1e3, 1e-308 for 1e3) was taken as written
# and the router's sums and deadlines overflowed to inf or NaN, or a timer spun. The simulator's scenarios and the
# traces use MAX_PARAMS_B and MAX_TOKENS from here.
MAX_PARAMS_B = 100_000.0
"""billions of parameters (the largest models are about 2,000; 1e300 overflowed the simulator's arithmetic)"""
MAX_TOKENS = 2**31 - 1
"""an output or a prompt, in tokens (the simulator holds a trace's counts as 32-bit integers)"""
MAX_CONTEXT = 10_485_760
"""a model's context, in tokens: the largest an open model declares (Llama 4 Scout's max_position_embeddings,
10 x 2**20). Past it an extra zero or two is a typo, refused naming the field: an embedded engine allocates its KV
cache for the context of each slot at start (131,072 x 2 slots is 5.6 GiB on SmolLM2-135M, docs/engines.md),
and the gateway lets through prompts up to the context it is told."""
MIN_TPS, MAX_TPS = 1e-3, 1e9
"""an engine's tokens per second (prefill and decode)"""
MAX_USD = 1e9
"""a price per million tokens, in dollars"""
MAX_WATTS = 1e10
"""a site's power, in watts (the largest data-centre campuses planned are about 5 GW)"""
MAX_COUNT = 2**63 - 1
"""a count or a byte size kept in Redis or SQLite, whose integers are 64-bit"""
MAX_WEIGHT = 1e9
"""a policy's weight (they are summed: two of 1e308 made every score NaN)"""
MAX_MS = 86_400_000.0
"""a latency bound or a wait, in milliseconds (a day)"""
MAX_S = 86_400.0
"""a timeout, interval or wait, in seconds (a day)"""
MAX_PERIOD_S = 10 * 366 * 86_400.0
"""a quota period, in seconds (ten years)"""
MAX_FACTOR = 1000.0
"""a multiple of a predicted time"""

EngineKind = Literal["embedded", "vllm", "sglang", "llamacpp", "ollama", "tgi", "openai"]


class StrictModel(BaseModel):
    # allow_inf_nan: YAML's .inf passed every `gt=0` bound (decode_tps: .inf, params_b: .inf)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def http_url(url: str | None) -> str | None:
    """An engine's or an exporter's URL: http(s), a host, a port from 1 to 65535 if one is given. Without
    this a URL missing its scheme, or with a port out of range, passed `spec check` and `up`, and its endpoint
    only ever showed UNHEALTHY."""
    if url is None:
        return None
    shown = repr(url_without_password(url))
    if "${" in url:
        raise ValueError(f"{shown}: environment variables are not expanded in a grid spec; write the value")
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = 0
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in parts.netloc):
        raise ValueError(f"{shown} is not an http(s) URL (e.g. http://host:8000)")
    if port == 0:
        raise ValueError(f"{shown}: the port must be a number from 1 to 65535")
    return url


ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
"""An environment variable's name as a shell reads it (`$MY-SECRET` is $MY followed by -SECRET): the gateway's banner
prints `aigrid keys create TENANT --secret-env NAME` for one (security.secret_env), unquoted."""
API_ROOT = "/v1"
"""Where an OpenAI-compatible server's API lives under its base URL: the engine adapters add it to each path."""
API_RESOURCES = frozenset({"chat", "completions", "embeddings", "models", "responses", "messages"})
"""What follows /v1/ in a request's path (/v1/chat/completions, /v1/models): a url whose path goes on so past its
last /v1/ is an API path, not a base. Another segment there is a base's own (Cloudflare AI Gateway's
`https://gateway.ai.cloudflare.com/v1/ACCOUNT/GATEWAY/workers-ai`, which serves /v1/chat/completions)."""


def engine_base_url(url: str | None) -> str | None:
    """An endpoint's `url` as its engine's base (http_url's checks first): a trailing `/v1` (or `/v1/`) taken off.
    OpenAI's SDKs, LiteLLM and most clients take the base URL with /v1 (`http://host:8000/v1`, an aigrid gateway's
    banner prints one), and that is what a newcomer pastes; the adapters add `/v1/chat/completions` and probe
    `/v1/models`, so it was asked `/v1/v1/...` and only ever showed UNHEALTHY. An API path past it (`/v1/chat/...`,
    API_RESOURCES) is refused, naming the field; a base with /v1/ inside its own path is kept. So is `/v1/v1`
    (taking one off left a url ending in /v1, which a second reading took off again: the engine's base would depend
    on how often the url was read), and what taking /v1 off leaves must pass the same checks: a url read again is
    the same url (parse(parse(x)) == parse(x))."""
    url = http_url(url)
    if url is None:
        return None
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    given_v1 = path.endswith(API_ROOT)
    if given_v1:
        path = path.removesuffix(API_ROOT)
        if path.rstrip("/").endswith(API_ROOT):
            raise ValueError(f"{url_without_password(url)!r}: /v1 twice; give the server's base URL (e.g. "
                             f"http://host:8000, or with one /v1): the gateway adds /v1/chat/completions and the rest")
    _, root, past = path.rpartition(f"{API_ROOT}/")
    if root and past.split("/")[0] in API_RESOURCES:
        raise ValueError(f"{url_without_password(url)!r}: give the server's base URL (e.g. http://host:8000, or with "
                         f"/v1), not an API path: the gateway adds /v1/chat/completions and the rest")
    return parts._replace(path=path).geturl() if given_v1 else url


def url_without_password(url: str) -> str:
    """The URL as an error may quote it: a password in it (a proxy's user:password@) replaced by ***."""
    scheme, sep, rest = url.partition("://")
    authority = rest.split("/", 1)[0]
    # up to the authority's last `@`, as httpx reads it: `http://u:p@ss@host` sends the password `p@ss`
    userinfo, at, host = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}{rest[len(authority):]}"


_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def redis_url(url: str | None) -> str | None:
    """A Redis URL; its port, if one is given, from 1 to 65535 (redis-py reads it only when the gateway starts:
    a port out of range or not a number was a traceback then)."""
    if url is None:
        return None
    if not url.startswith(_REDIS_SCHEMES):
        raise ValueError(f"{url!r} is not a Redis URL (redis://host:port/db, rediss://... or unix:///path.sock)")
    if not url.startswith("unix://"):
        try:
            port = urlsplit(url).port
        except ValueError:
            port = 0
        if port == 0:
            raise ValueError(f"{url!r}: the port must be a number from 1 to 65535")
    problem = _redis_tls_problem(url)
    if problem:
        raise ValueError(problem)
    return url


REDIS_TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
"""A rediss:// URL's query parameters that name files (redis-py reads them): the CA its server's certificate is
checked against, and the client's certificate and key (mutual TLS). redis_client.connect reads them at startup."""
REDIS_TLS_SETTINGS = (*REDIS_TLS_FILES, "ssl_cert_reqs", "ssl_check_hostname")
"""The only ssl_* query parameters a rediss:// URL may have (ssl_cert_reqs=required, ssl_check_hostname=true)."""


def _redis_tls_problem(url: str) -> str | None:
    """What is wrong with a Redis URL's TLS settings (its `ssl_*` query parameters, which redis-py passes to the
    connection as they are), or None. Verification cannot be turned off: `ssl_cert_reqs` other than `required`
    (redis-py's default) is refused, so is `ssl_check_hostname` other than true, and any other ssl_* (redis-py
    would pass `ssl_exclude_verify_flags`, `ssl_min_version`, ... on); a file is an absolute path (a URL is not
    read relative to the spec)."""
    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    tls = sorted(name for name in query if name.startswith("ssl_"))
    if not tls:
        return None
    shown = repr(url_without_password(url))
    if not url.startswith("rediss://"):
        return f"{shown}: {', '.join(tls)} are TLS settings, for a rediss:// URL (this one is not TLS)"
    unknown = [name for name in tls if name not in REDIS_TLS_SETTINGS]
    if unknown:  # redis-py passes any ssl_* on: ssl_check_hostname=false, ssl_exclude_verify_flags, ssl_min_version
        return (f"{shown}: {', '.join(unknown)}: not accepted (each could weaken the server's certificate "
                f"check); a rediss:// URL takes {', '.join(REDIS_TLS_SETTINGS)}")
    hostname = query.get("ssl_check_hostname", ["true"])[0]
    if hostname.lower() not in ("true", "1", "yes", "y", "t"):
        return (f"{shown}: ssl_check_hostname={hostname} would accept a certificate issued for another host (any "
                "certificate its CA signed); leave it out (the host name is checked)")
    reqs = query.get("ssl_cert_reqs", ["required"])[0].lower()
    if reqs != "required":
        return (f"{shown}: ssl_cert_reqs={reqs} would accept a server whose certificate is not checked (whoever "
                "is on the path reads the password and the state); name the CA that signed the server's "
                "certificate with ssl_ca_certs=/path/ca.crt instead")
    for name in REDIS_TLS_FILES:
        path = query.get(name, [None])[0]
        if path is not None and not path.startswith("/"):
            return f"{shown}: {name}={path!r} must be an absolute path"
    if ("ssl_certfile" in query) != ("ssl_keyfile" in query):
        return f"{shown}: ssl_certfile and ssl_keyfile (the client's certificate, mutual TLS) go together"
    return None


class ModelSpec(StrictModel):
    family: str = Field(min_length=1)
    params_b: float = Field(gt=0, le=MAX_PARAMS_B, description="billions of parameters")
    context: int = Field(default=8192, gt=0, le=MAX_CONTEXT, description="tokens a request may hold (prompt and "
                         "answer); each slot of an embedded engine holds this many")
    vision: bool = Field(default=False, description="the model reads images (its engines run a vision "
                         "projector); image input for a model that does not is refused with a 400")
    tool_calls: Literal["constrained", "native"] = Field(
        default="constrained", description="how the agent loop gets tool calls from this model: JSON-schema "
        "constrained output (small models), or the engine's native tool calling (vLLM, SGLang, llama.cpp --jinja)")


class DocumentSpec(StrictModel):
    path: str = Field(description="a text file or a glob, relative to the spec file")
    tenant: str | None = Field(default=None, description="only this tenant's requests may retrieve it")


class SiteSpec(StrictModel):
    name: str = Field(min_length=1, description="its city: a client location the gateway accepts")
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    jurisdiction: str = Field(min_length=2, description="e.g. EU, US, JP, BR")
    hardware: str = "cpu"
    power_budget_w: float = Field(default=0.0, ge=0, le=MAX_WATTS)
    idle_power_w: float = Field(default=0.0, ge=0, le=MAX_WATTS)
    peak_power_w: float = Field(default=0.0, ge=0, le=MAX_WATTS)
    documents: list[DocumentSpec] = Field(default=[], description="documents for retrieval at this site")


class EndpointSpec(StrictModel):
    id: str = Field(min_length=1)
    site: str
    model: str
    engine: EngineKind = "embedded"
    url: str | None = Field(default=None, description="base URL of an external engine, e.g. http://host:8000 "
                            "(http://host:8000/v1, as OpenAI clients take it, is the same: the /v1 is taken off)")
    served_model: str | None = Field(default=None, min_length=1,
                                     description="model name the engine expects, if different")
    api_key_env: str | None = Field(default=None, pattern=ENV_NAME,
                                    description="environment variable holding the key this engine requires "
                                    "(vLLM/SGLang/llama.cpp --api-key, a hosted provider's or another "
                                    "region's gateway's key), sent as Authorization: Bearer to its URL only")
    tls_ca_file: str | None = Field(default=None, min_length=1, description="PEM file of the certificate "
                                    "authorities this engine's https url is checked against (an internal CA), "
                                    "instead of the public ones")
    proxy: str | None = Field(default=None, description="HTTP proxy this engine's https url is reached through "
                              "(CONNECT), e.g. the egress proxy in front of a hosted provider")
    proxy_auth_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                       description="environment variable holding the proxy's user:password, sent "
                                       "as Proxy-Authorization: Basic to the proxy only (keeps it out of the spec)")
    power_metrics_url: str | None = Field(default=None, description="NVIDIA dcgm-exporter /metrics URL for GPU power")
    gpus: list[str] | None = Field(default=None, description="GPU indices or UUIDs of this endpoint in DCGM metrics")
    slots: int = Field(default=2, ge=1, le=1024, description="concurrent batch slots (-np for llama.cpp)")
    threads: int = Field(default=1, ge=1, le=256, description="CPU threads for an embedded engine")
    price_in_per_mtok: float = Field(default=0.0, ge=0, le=MAX_USD)
    price_out_per_mtok: float = Field(default=0.0, ge=0, le=MAX_USD)
    prefill_tps: float = Field(default=500.0, ge=MIN_TPS, le=MAX_TPS, description="profile estimate until measured")
    decode_tps: float = Field(default=40.0, ge=MIN_TPS, le=MAX_TPS, description="per-request decode tokens/s estimate")

    _urls = field_validator("power_metrics_url", "proxy")(http_url)
    _url = field_validator("url")(engine_base_url)

    @model_validator(mode="after")
    def _url_for_external(self) -> EndpointSpec:
        if self.engine != "embedded" and not self.url:
            raise ValueError(f"endpoint {self.id!r}: engine {self.engine!r} needs a url")
        for name in ("tls_ca_file", "proxy"):
            if getattr(self, name) is not None and not (self.url or "").startswith("https://"):
                raise ValueError(f"endpoint {self.id!r}: {name} is for an https url")
        if self.proxy_auth_env is not None:
            if self.proxy is None:
                raise ValueError(f"endpoint {self.id!r}: proxy_auth_env is for a proxy; set proxy too")
            if "@" in self.proxy.partition("://")[2].partition("/")[0]:
                raise ValueError(f"endpoint {self.id!r}: proxy_auth_env and a user:password in the proxy url both "
                                 "give the proxy's credentials; keep one (the variable keeps them out of the spec)")
        if self.engine == "embedded" and self.api_key_env is not None:
            raise ValueError(f"endpoint {self.id!r}: api_key_env is for external engines; an embedded engine gets "
                             "a random key of its own at every start")
        return self


class PolicySpec(StrictModel):
    weights: dict[str, float]
    tie_tolerance: float = Field(default=0.02, ge=0, le=1)
    ttft_slo_ms: float = Field(default=2000.0, gt=0, le=MAX_MS, description="the p90 TTFT a candidate must predict to meet the SLO")
    tpot_slo_ms: float | None = Field(default=None, gt=0, le=MAX_MS, description="time per output token the tenant needs; "
                                      "an endpoint whose recent TPOT is above it does not meet the SLO")
    allow_family_fallback: bool = True
    cost_reference_usd_per_mtok: float = Field(default=1.0, gt=0, le=MAX_USD, description="price that scores 0.5 on cost")

    @field_validator("weights")
    @classmethod
    def _known_axes(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(AXES))
        if unknown:
            near = did_you_mean(unknown[0], AXES) if len(unknown) == 1 else ""
            raise ValueError(f"unknown axes {', '.join(unknown)}{near}; the axes are {', '.join(AXES)}")
        if any(not 0 <= w <= MAX_WEIGHT for w in v.values()):
            raise ValueError(f"weights must be from 0 to {MAX_WEIGHT:g}")
        if sum(v.values()) <= 0:
            raise ValueError("at least one weight must be > 0")
        return v


FirewallAction = Literal["off", "flag", "redact", "block"]


class QuotaSpec(StrictModel):
    requests_per_min: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    tokens_per_min: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    token_budget: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    budget_period_s: float = Field(default=86_400.0, ge=1, le=MAX_PERIOD_S)
    storage_bytes: int = Field(default=10 * 1024 ** 3, ge=1, le=MAX_COUNT, description=(
        "bytes a tenant's files may hold on the gateway's disk, all its files together (Files API uploads, batch "
        "output and error files, message batches' requests and results): an upload or a message batch past it is "
        "refused (400 storage_quota_exceeded), as is a new batch while the tenant is at it; a tenant's, not a key's"))
    storage_files: int = Field(default=10_000, ge=1, le=MAX_COUNT, description=(
        "files a tenant may keep (counted as storage_bytes; an expired or deleted file counts no more)"))


class FirewallSpec(StrictModel):
    """Defaults change no content: injections are blocked, personal data only flagged, until a tenant opts in."""

    injection: Literal["off", "flag", "block"] = "block"
    pii_input: FirewallAction = "flag"
    pii_output: FirewallAction = "off"
    tool_descriptions: Literal["off", "flag", "block"] = Field(
        default="flag", description="the client's tool definitions (each tool's description and input schema, "
        "read as a model reads them in its tool list): flag by default, since a description is an instruction "
        "about its tool by nature; block where an application passes tools from servers it does not write; not read "
        "where injection is off")

    @field_validator("injection", "pii_input", "pii_output", "tool_descriptions", mode="before")
    @classmethod
    def _yaml_off(cls, v: object) -> object:
        return "off" if v is False else v  # YAML 1.1 reads a bare `off` as false


class EscalateSpec(StrictModel):
    """Try the small model first; when its answer is unsure, ask the next model up (docs/models.md,
    "Escalation"). Non-streamed chat answers only: a streamed one is on its way to the client."""

    below_confidence: float = Field(gt=0, lt=1, description="escalate an answer whose confidence (the geometric "
                                    "mean of its tokens' probabilities) is below this")
    within_ms: float = Field(default=10_000, gt=0, le=MAX_MS, description="only when the small model answered within this "
                             "many ms of the request reaching it; a later answer is returned as it is")


QualityTarget = Annotated[float, Field(ge=0, le=1)]
"""A right-sizing quality target: at most this much below always using the largest model. One definition for the
grid's spec (RightSizeSpec) and the simulator's scenario (sim.scenario.RightSizeDef, which becomes a RightSizeSpec)."""
QualityDrop = Annotated[float, Field(ge=-1, le=2)]
"""A right-sizing per-prompt threshold on the largest model's estimated gain (overrides the quality target); as
QualityTarget, for both."""
DEFAULT_QUALITY_TARGET = 0.02


class RightSizeSpec(StrictModel):
    """`model: "auto"` sends each prompt to the smallest model expected to answer it well (docs/models.md)."""

    models: list[str] | None = Field(default=None, description="the model ladder auto may choose from "
                                     "(default: every model of the grid); ordered by params_b")
    quality_target: QualityTarget = Field(default=DEFAULT_QUALITY_TARGET, description="at most this much below "
                                          "always using the largest model (relative mean quality, as measured out "
                                          "of fold on the estimate's training data)")
    max_quality_drop: QualityDrop | None = Field(default=None, description="per-prompt threshold on the estimated "
                                                 "gain of the largest model (overrides quality_target)")
    escalate: EscalateSpec | None = Field(default=None, description="retry an unsure answer of a smaller model "
                                          "on the next model up before the client sees it")


class PrioritySpec(StrictModel):
    """A tenant's urgency (docs/routing.md, "Urgency"): levels are interactive, standard, batch or 0-9."""

    default: str | int = Field(default="standard", description="the level of a request that names none")
    max: str | int = Field(default="interactive", description="the highest level its requests may ask for "
                           "(x-aigrid-priority or the body's priority); a key may lower it")
    weight: float = Field(default=1.0, gt=0, le=1000, description="its share of busy capacity against other "
                          "tenants waiting at the same level (fair sharing in the admission queue)")

    @field_validator("default", "max")
    @classmethod
    def _level(cls, v: str | int) -> str | int:
        parse_level(v)  # a ValueError names what is accepted
        return v

    @model_validator(mode="after")
    def _default_within_max(self) -> PrioritySpec:
        if parse_level(self.default) > parse_level(self.max):
            raise ValueError(f"default {self.default!r} is above max {self.max!r}")
        return self


class TenantSpec(StrictModel):
    policy: str | None = None
    allowed_jurisdictions: list[str] | None = None
    allowed_sites: list[str] | None = None
    models: list[str] | None = Field(default=None, description="glob patterns of models this tenant may use")
    tools: list[str] | None = Field(default=None, description=(
        "glob patterns of the grid's server-side tools this tenant may have run (calculator, sql, http_fetch, an MCP "
        "server's prefixed tools: crm_*); a request naming another is a 403 tool_not_allowed. None: every one"))
    quotas: QuotaSpec | None = None
    firewall: FirewallSpec | None = None
    store_prompts: bool = Field(default=False, description="keep prompt text in the audit log (opt-in)")
    right_size: RightSizeSpec | None = Field(default=None, description="per-prompt model choice for "
                                             "model: auto (off: auto means any model)")
    operator: bool = Field(default=False, description="may read every tenant's decisions and the dashboard "
                           "when security.enforce is on (others see only their own decisions)")
    priority: PrioritySpec = PrioritySpec()


class AbuseSpec(StrictModel):
    """Model-extraction and abuse signals per key (volume, prompt diversity, logprob sweeps, temperature-0
    enumeration). flag: record them in the audit log; throttle: two signals at once answer 429."""

    action: Literal["off", "flag", "throttle"] = "flag"
    window_s: float = Field(default=300.0, gt=0, le=MAX_S)
    min_requests: int = Field(default=50, ge=1, le=MAX_COUNT)
    max_requests: int = Field(default=1500, ge=1, le=MAX_COUNT, description="more than this per window is the volume signal")
    share_interval_s: float = Field(default=0.25, gt=0, le=10, description="with --workers N: how often each "
                                    "worker sends its requests' digests to the hub and takes back the verdicts "
                                    "over all workers (a verdict misses at most two intervals of the others')")

    @field_validator("action", mode="before")
    @classmethod
    def _yaml_off(cls, v: object) -> object:
        return "off" if v is False else v


class JwtSpec(StrictModel):
    issuer: str
    audience: str
    key_file: str | None = Field(default=None, description="PEM public key (RS256/ES256/EdDSA)")
    secret_env: str | None = Field(default=None, pattern=ENV_NAME,
                                   description="environment variable holding an HS256 secret")
    jwks_url: str | None = Field(default=None, description="the identity provider's JWKS (OpenID Connect jwks_uri):"
                                 " each token checked with the key its kid names; fetched in the background")
    jwks_refresh_s: float = Field(default=300.0, ge=10.0, le=86_400.0, description="how often the JWKS is fetched "
                                  "again (earlier when a token names a key it does not hold)")
    tenant_claim: str = "tenant"
    tenants: list[str] | None = Field(default=None, min_length=1, description="the tenants a token may name (glob "
                                      "patterns, e.g. [\"team-*\"]); left out, every tenant of the grid but an "
                                      "operator one: an operator tenant only where named here exactly, not by a "
                                      "pattern")
    max_lifetime_s: float | None = Field(default=86_400.0, gt=0, allow_inf_nan=False, description="refuse a token "
                                         "whose exp lies further ahead than this (a longer-lived credential is an API "
                                         "key's job: it can be revoked); null: no limit")

    @field_validator("jwks_url")
    @classmethod
    def _jwks_https(cls, url: str | None) -> str | None:
        """The keys that make tokens valid come over https (plain http only from this machine)."""
        url = http_url(url)
        if url is not None and not url.startswith("https://") and \
                urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"{url!r}: a JWKS is fetched over https (anyone on the path could swap the keys of "
                             "plain http); http only for 127.0.0.1, localhost or ::1")
        return url

    @model_validator(mode="after")
    def _one_key(self) -> JwtSpec:
        if sum(x is not None for x in (self.key_file, self.secret_env, self.jwks_url)) != 1:
            raise ValueError("give exactly one of key_file, secret_env or jwks_url")
        return self


class AuditSpec(StrictModel):
    path: str = ".aigrid/audit.db"
    signing_key: str | None = Field(default=".aigrid/audit-signing.pem",
                                    description="Ed25519 private key (PEM); created on first start if missing")
    checkpoint_every: int = Field(default=100, ge=1, le=MAX_COUNT)
    checkpoint_after_s: float = Field(default=10.0, gt=0, le=86_400, description="a written record waits at most "
                                      "this long for its signed checkpoint, however few records follow it")
    queue_max: int = Field(default=10_000, ge=1, le=10_000_000, description="records waiting for the writer; when full, a "
                           "request waits up to 2 s for room, then new requests get 503 audit_unavailable")


class SecuritySpec(StrictModel):
    enforce: bool = Field(default=False, description="every request needs an API key or a JWT")
    keys_file: str = ".aigrid/keys.json"
    secret_env: str = Field(default="AIGRID_KEY_SECRET", pattern=ENV_NAME,
                            description="env var with the key-hashing secret")
    jwt: JwtSpec | None = None
    quotas_redis_url: str | None = Field(default=None, description="share quota counters between gateways")
    default_quotas: QuotaSpec = QuotaSpec()
    key_quotas: QuotaSpec = QuotaSpec()
    firewall: FirewallSpec = FirewallSpec()
    injection_cascade: bool = Field(
        default=False, description="documents and tool results: a fine-tuned transformer re-reads the few windows "
        "the n-gram head finds most suspicious (needs the embeddings extra; off without it). Opt-in: it raises "
        "recall on injections hidden in documents by 11-33 points and document false positives too "
        "(docs/security.md, 'The document cascade')")
    prompt_cascade: bool = Field(
        default=False, description="prompts (user messages, completion prompts): a second fine-tuned transformer "
        "re-reads the prompts whose n-gram score lies in a grey zone below the block threshold and decides them "
        "(needs the embeddings extra; off without it). docs/security.md, 'The prompt cascade'")
    abuse: AbuseSpec = AbuseSpec()
    audit: AuditSpec | None = AuditSpec()
    image_urls: Literal["fetch", "pass", "refuse"] = Field(default="fetch", description=(
        "an image part given as an http(s) URL: the gateway fetches it from public addresses only and sends it "
        "to the engine inline (fetch), sends the URL on for the engine to fetch from its own network (pass: an "
        "engine whose network is fenced off), or refuses it (refuse: inline images only). gateway/image_urls.py"))
    isolate_prefix_cache: bool = Field(default=False, description=(
        "every request to a vLLM or SGLang engine carries its tenant's cache_salt (a keyed hash of the tenant, a client's own "
        "cache_salt folded in), so one tenant's prompts never hit another's cached prefix blocks (a timing side "
        "channel of what others send). Off by default: tenants then no longer share the cache of a common system "
        "prompt. Engines without the field (llama.cpp, the embedded ones, ...) get nothing added. gateway/cache_salt.py"))
    metrics: Literal["open", "operator"] = Field(default="open", description=(
        "who may read /metrics: anyone (open: it holds no tenant's data, only sites, endpoints, models, counts and "
        "latencies), or an operator tenant's key (operator, with enforce: Prometheus sends it with "
        "`authorization: {credentials: KEY}`)"))

    _redis = field_validator("quotas_redis_url")(redis_url)

    @field_validator("key_quotas")
    @classmethod
    def _storage_per_tenant(cls, q: QuotaSpec) -> QuotaSpec:
        """A key's quotas may not set a storage quota; its defaults, as a spec written out in full carries them
        (worker.json did), are no setting."""
        unset = QuotaSpec()
        given = [name for name in ("storage_bytes", "storage_files") if getattr(q, name) != getattr(unset, name)]
        if given:
            raise ValueError(f"{', '.join(given)}: storage is held per tenant (a tenant's files, whichever key wrote "
                             "them); set it in default_quotas or a tenant's quotas")
        return q

    @model_validator(mode="after")
    def _metrics_key(self) -> SecuritySpec:
        if self.metrics == "operator" and not self.enforce:
            raise ValueError("metrics: operator needs enforce: true (without it no caller has a key to show)")
        return self


class HedgeSpec(StrictModel):
    enabled: bool = Field(default=False, description="hedge every request (a request may turn it off with x-aigrid-hedge)")
    clients_may_ask: bool = Field(default=False, description="a request may turn hedging on with x-aigrid-hedge: on "
                                  "where enabled is false (its second attempt is engine work no quota counts)")
    factor: float = Field(default=2.0, ge=1.0, le=MAX_FACTOR, description="hedge when the first byte is later than factor x predicted TTFT")
    min_ms: float = Field(default=150.0, ge=0, le=MAX_MS, description="... plus this many milliseconds")


class McpServerSpec(StrictModel):
    command: list[str] = Field(min_length=1, description="argv of a stdio MCP server")
    env: dict[str, str] = {}
    prefix: str = Field(default="", description="prepended to its tool names")
    call_timeout_s: float = Field(default=10.0, gt=0, le=MAX_S)
    max_message_bytes: int = Field(default=16 << 20, ge=1 << 10, le=1 << 30, description=(
        "the longest message (one line of its stdout) the server may send: at one longer it is stopped and the "
        "call is a tool error (the mcp SDK reads a line whole, unbounded; agents/mcp_relay.py). A smaller bound "
        "is faster for small answers, a larger one lets a tool send images"))


class SqlDatabaseSpec(StrictModel):
    path: str = Field(description="the SQLite file (read-only), relative to the spec file")
    tenants: list[str] | None = Field(default=None, min_length=1, description=(
        "only these tenants' requests see it in the sql tool's description and may query it (another tenant "
        "naming it is told it is unknown); left out: shared by every tenant allowed the sql tool"))


class GraphSpec(StrictModel):
    edges: list[tuple[str, str, Annotated[float, Field(ge=0)]]] = Field(description=(
        "the graph's edges: (a, b, weight), each weight a distance >= 0 (shortest_path's Dijkstra: a negative one "
        "gave a wrong path or failed every call, and the tool refuses one in a call's own edges)"))
    tenants: list[str] | None = Field(default=None, min_length=1, description=(
        "only these tenants' requests see it in the shortest_path tool's description and may name it (another "
        "tenant naming it is told it is unknown); left out: shared by every tenant allowed the tool"))


class AgentsSpec(StrictModel):
    max_steps: int = Field(default=6, ge=1, le=16, description=(
        "tool runs per request when the request does not say (aigrid_max_steps)"))
    max_steps_limit: int = Field(default=16, ge=1, le=16, description=(
        "the most tool runs a request may ask for with aigrid_max_steps (more is the client's 400 naming it); at "
        "least max_steps"))
    tool_timeout_s: float = Field(default=10.0, gt=0, le=300, description=(
        "how long one server-side tool run may take (at most 300 s: a run holds its request, a worker thread or "
        "a connection that long; http_fetch has its own whole-fetch deadline, agents/fetch.py)"))
    graphs: dict[str, GraphSpec] = Field(default={}, description=(
        "named graphs for shortest_path: a list of edges (a, b, weight), shared by every tenant allowed the tool, "
        "or {edges, tenants}"))
    sql: dict[str, SqlDatabaseSpec] = Field(default={}, description=(
        "named SQLite databases (read-only) for the sql tool: a path (shared by every tenant allowed the tool) or "
        "{path, tenants}"))
    http_allow: list[str] = Field(default=[], description=(
        "hosts the http_fetch tool may read: a name (docs.python.org), a subdomain wildcard (*.wikipedia.org) or "
        "an address, each optionally with :port; a name reaches public addresses only (see http_private)"))
    http_private: list[str] = Field(default=[], description=(
        "networks (10.0.0.0/8, fd00::/8) that names on http_allow may resolve to besides public addresses: an "
        "intranet the operator means the agents to read (default none: private, loopback and link-local "
        "addresses such as the cloud's metadata service are refused)"))
    mcp_servers: dict[str, McpServerSpec] = {}

    @field_validator("sql", "graphs", mode="before")
    @classmethod
    def _alone_is_shared(cls, v: object, info: ValidationInfo) -> object:
        """A database given as its path alone, or a graph as its edges alone, is shared: `{path}` or `{edges}`
        with no tenants."""
        if not isinstance(v, dict):
            return v
        key, alone = ("path", str) if info.field_name == "sql" else ("edges", list)
        return {name: {key: x} if isinstance(x, alone) else x for name, x in v.items()}

    @model_validator(mode="after")
    def _steps_within_limit(self) -> AgentsSpec:
        if self.max_steps > self.max_steps_limit:
            raise ValueError(f"max_steps: {self.max_steps} is above max_steps_limit ({self.max_steps_limit}), the "
                             "most a request may ask for")
        return self

    @field_validator("http_private")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for i, net in enumerate(v):
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as e:
                raise ValueError(f"http_private[{i}]: {net!r} is not a network (10.0.0.0/8, fd00::/8): {e}") from e
        return v


class FirstByteSpec(StrictModel):
    factor: float = Field(default=10.0, gt=0, le=MAX_FACTOR, description="wait at most factor x the predicted TTFT ...")
    min_s: float = Field(default=5.0, gt=0, le=MAX_S, description="... but at least this long ...")
    max_s: float = Field(default=120.0, gt=0, le=MAX_S, description="... and at most this long, then try the next site")
    whole_max_s: float = Field(default=600.0, gt=0, le=MAX_S, description=(
        "the ceiling for an answer sent whole (not streamed: its first byte comes after its last token, so its "
        "deadline adds 3 x its max_tokens, or its model's context, x the endpoint's time per output token) "
        "and for a tool loop; 600 s is the OpenAI and Anthropic SDKs' default client timeout"))

    @model_validator(mode="after")
    def _whole_not_shorter(self) -> FirstByteSpec:
        if self.whole_max_s < self.max_s:
            raise ValueError(f"whole_max_s ({self.whole_max_s:g}) must be at least max_s ({self.max_s:g}): an "
                             "answer sent whole has its first byte after its last token")
        return self


class OtelSpec(StrictModel):
    """OpenTelemetry traces (docs/observability.md). Off unless `enabled`, or unless the standard
    OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT variables are set."""

    enabled: bool = False
    endpoint: str | None = Field(default=None, description="OTLP/HTTP endpoint, e.g. http://collector:4318 "
                                 "(default: the OTEL_EXPORTER_OTLP_* variables, else http://localhost:4318)")
    service_name: str = "aigrid-gateway"
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0, description="share of requests traced")
    headers: dict[str, str] = Field(default={}, description="sent with every export (e.g. an API key)")

    _endpoint = field_validator("endpoint")(http_url)


ClassName = Literal["interactive", "standard", "batch"]


class AdmissionLimits(StrictModel):
    """How long each class may wait and how many may wait: the part of the admission queue the gateway
    (AdmissionSpec) and the simulator (sim/scenario.py) share, one AdmissionRules for both."""

    # the core keys its defaults by the same class names, typed as str
    max_wait_s: dict[ClassName, float] = Field(
        default_factory=lambda: cast("dict[ClassName, float]", dict(AdmissionRules().max_wait_s)),
        description="the longest a request of each class may wait")
    max_wait_slo: dict[ClassName, float | None] | None = Field(
        default_factory=lambda: cast("dict[ClassName, float | None]", dict(AdmissionRules().max_wait_slo)),
        description="per class: the longest wait as "
        "a multiple of the request's TTFT SLO (the earlier of this and max_wait_s sheds it); default standard: 1.0, "
        "a class left out keeps its default, null for a class: never shed at the SLO, null for the whole "
        "setting: no class is (only max_wait_s limits the wait)")
    capacity: int = Field(default=AdmissionRules().capacity, ge=1, le=1_000_000,
                          description="requests that may wait at once in a gateway process (each worker "
                                      "of --workers N its own)")
    engine_queue_share: float = Field(
        default=AdmissionRules().engine_queue_share, gt=0.0, le=1.0, description="a request with queue "
        "ahead waits at the gateway while even its optimistic predicted TTFT (p10) is over this share of its "
        "TTFT SLO; 1.0: only while its predicted TTFT misses the whole SLO")

    @field_validator("max_wait_s")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        bad = sorted(k for k, s in v.items() if not 0 < s <= MAX_S)
        if bad:
            raise ValueError(f"must be > 0 and at most {MAX_S:g} seconds (a day) for {bad}")
        return v

    @field_validator("max_wait_slo")
    @classmethod
    def _positive_factor(cls, v: dict[str, float | None] | None) -> dict[str, float | None] | None:
        bad = sorted(k for k, s in (v or {}).items() if s is not None and not 0 < s <= MAX_FACTOR)
        if bad:
            raise ValueError(f"must be > 0 and at most {MAX_FACTOR:g} (a multiple of the TTFT SLO) for {bad}")
        return v

    def rules(self) -> AdmissionRules:
        default = AdmissionRules()
        max_wait_s = dict(default.max_wait_s)
        max_wait_s.update(self.max_wait_s.items())
        by_slo: dict[str, float | None] = {}
        if self.max_wait_slo is not None:
            by_slo.update(default.max_wait_slo)
            by_slo.update(self.max_wait_slo.items())
        return AdmissionRules(max_wait_s, self.capacity, by_slo, self.engine_queue_share)


class AdmissionSpec(AdmissionLimits):
    """The admission queue (docs/routing.md): a request waits there when every eligible endpoint is busy for
    its class, is dispatched by level then fair share as capacity frees, and is shed with 429 + Retry-After
    past its class's longest wait or when the queue is full (lowest level first)."""

    enabled: bool = Field(default=True, description="off: a busy grid answers 503 no_eligible_endpoint at once")
    poll_interval_s: float = Field(default=0.05, gt=0, le=5, description="how often waiting requests are "
                                   "tried again besides when this gateway's own requests finish")


class BatchSpec(StrictModel):
    """The OpenAI Batch API and the Files API it reads (docs/batches.md): files and batches live on the disk of
    the machine that runs the gateway, under `dir`, shared by every worker process there."""

    dir: str = Field(default=".aigrid/batches", description=(
        "where uploaded files, batch outputs and their SQLite index live (relative: to the gateway's working "
        "directory); one folder per tenant. Files stay on this machine: docs/batches.md, 'Residency'"))
    max_file_bytes: int = Field(default=100 * 1024 * 1024, gt=0, le=MAX_COUNT, description="the largest upload (413 above)")
    min_free_bytes: int = Field(default=512 * 1024 * 1024, ge=0, le=MAX_COUNT, description=(
        "an upload or a message batch that could leave less free space than this on the disk of `dir` is refused "
        "(503 insufficient_storage): the audit log, the index and running batches' results keep room to write"))
    max_lines: int = Field(default=50_000, ge=1, le=1_000_000, description="requests one batch may hold")
    concurrency: int = Field(default=4, ge=1, le=256, description="lines of one batch in flight at once")
    max_running: int = Field(default=8, ge=1, le=1024, description="batches one gateway process runs at once")
    max_checking: int = Field(default=2, ge=1, le=64, description=(
        "input files one gateway process reads and checks at once for POST /v1/batches (a create beyond waits its "
        "turn; each is read a line at a time)"))
    max_batches: int = Field(default=10_000, ge=1, le=MAX_COUNT, description=(
        "OpenAI batches one tenant keeps, in any status (a batch that failed validation holds up to 100 errors in "
        "the index, and nothing else counts it): past it a create drops the tenant's oldest ended batch (its output "
        "and error files stay its files), or is refused (429 batch_limit_exceeded) while none has ended"))
    line_attempts: int = Field(default=3, ge=1, le=20, description=(
        "tries of a line refused for capacity or rate (429, 503) before it goes to the error file"))
    retry_s: float = Field(default=5.0, ge=0, le=MAX_S, description="wait before such a line is tried again (x the try)")
    poll_s: float = Field(default=1.0, gt=0, le=60, description=(
        "how often a gateway process renews its claims, reads cancels and claims batches nobody runs"))
    stale_s: float = Field(default=30.0, gt=0, le=MAX_S, description=(
        "a claim not renewed for this long is taken over (its process died): the batch resumes elsewhere"))
    drain_s: float = Field(default=10.0, ge=0, le=MAX_S, description=(
        "on shutdown, how long running lines may finish before they are stopped (they run again on resume)"))

    @model_validator(mode="after")
    def _stale_after_poll(self) -> BatchSpec:
        if self.stale_s <= 2 * self.poll_s:
            raise ValueError(f"stale_s ({self.stale_s}) must be more than twice poll_s ({self.poll_s}), or live "
                             "claims would be taken over")
        return self


class GatewaySpec(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    default_policy: str = DEFAULT_POLICY
    network: Literal["emulate", "netns", "none"] = Field(
        default="emulate", description="how client-to-site distance is made on one machine: emulate (the gateway "
        "sleeps each site's modelled RTT), netns (each embedded site in its own network namespace, the kernel "
        "holds packets for the RTT from gateway.location), none (real deployments)")
    location: str | None = Field(default=None, description="where the gateway is (a city or 'lat,lon'): the "
                                 "origin of netns delays, and the client location when a request gives none")
    route_factor: float = Field(default=DEFAULT_ROUTE_FACTOR, ge=1.0, le=5.0)
    scrape_interval_s: float = Field(default=1.0, ge=0.01, le=MAX_S)
    max_attempts: int = Field(default=3, ge=1, le=10)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0, le=MAX_COUNT)
    max_output_tokens: int = Field(default=4096, gt=0, le=MAX_TOKENS)
    max_sockets: int = Field(default=512, ge=1, le=65_536, description=(
        "WebSockets of the Responses API's WebSocket mode (/v1/responses) one gateway process holds open at once, "
        "every tenant together (each worker of --workers its own); one more is refused at the handshake, 429 "
        "overloaded. Each holds a file descriptor and a task, and at most 2 x max_body_bytes waiting "
        "(docs/responses-api.md, 'WebSocket mode')"))
    max_sockets_per_tenant: int = Field(default=256, ge=1, le=65_536, description=(
        "of those, the sockets one tenant may hold open at once on one gateway process; one more is refused at "
        "the handshake, 429 overloaded"))
    max_sockets_per_key: int = Field(default=128, ge=1, le=65_536, description=(
        "of a tenant's, the sockets one of its API keys (or one JWT subject) may hold open at once on one gateway "
        "process, so that one key (a leaked or runaway one) cannot take all of its tenant's and shut its other "
        "keys out; one more is refused at the handshake, 429 overloaded. Not counted without keys (every "
        "anonymous client of a tenant is one caller: max_sockets_per_tenant bounds them). At or above "
        "max_sockets_per_tenant it bounds nothing more"))
    connection_share_per_address: float = Field(default=0.5, gt=0, le=1, allow_inf_nan=False, description=(
        "the share of one gateway process's client connections (at most half its file-descriptor limit, "
        "docs/reliability.md 'The wire') that one client address may hold, so that one client cannot hold them all; "
        "one more from it is refused as it is accepted, 503 too_many_connections. Loopback addresses are exempt (a "
        "proxy or sidecar on the same host brings every client from one); an IPv6 client is counted by its /64. Behind "
        "a load balancer or proxy on "
        "another host every client comes from its few addresses: set 1 there, which bounds nothing more"))
    shutdown_grace_s: float = Field(default=5.0, ge=0, le=3600, allow_inf_nan=False, description=(
        "on the first SIGINT/SIGTERM, how long the requests running (HTTP, and a WebSocket's response under way) "
        "may take to end before they are cut (503 shutting_down, an error event; docs/reliability.md, 'Stopping "
        "cleanly'); a second signal cuts it short. It counts in how long the --workers parent waits for its "
        "workers (workers.reap_wait_s), which a Kubernetes pod's terminationGracePeriodSeconds must outlast"))
    hedge: HedgeSpec = HedgeSpec()
    first_byte_timeout: FirstByteSpec = FirstByteSpec()
    stream_idle_s: float = Field(default=300.0, gt=0, le=86_400, allow_inf_nan=False, description=(
        "the longest an engine's answer, once begun, may be silent between two reads before it counts as broken "
        "(a stream mid-answer: its in-stream error, or its continuation elsewhere; the rest of a whole answer): "
        "the read timeout of every engine connection. An answer's first byte has the first_byte_timeout above "
        "instead (a whole answer's head whole_max_s), on http and https engines alike"))
    stream_max_s: float = Field(default=3600.0, ge=1, le=604_800, allow_inf_nan=False, description=(
        "the most seconds one streamed answer may take from its first byte, all its engines together (a "
        "continuation's included); past it, its in-stream error stream_interrupted, the engine's failure counted, "
        "not continued. The default, an hour, passes a long answer at a slow pace (32k tokens at 10 a second is "
        "55 minutes); it bounds an engine that sends data events that say nothing (`data: {}`), which neither "
        "stream_idle_s nor the answer's byte bound cuts for days"))
    allowed_hosts: list[str] = Field(default=[], description=(
        "without keys (security.enforce off), the Host names this gateway answers to besides localhost, addresses "
        "written out and this machine's own name (\"gw.internal\", \"*.example.com\"): a request that arrives on a loopback address under "
        "another name is refused (a web page's name re-resolved to it, DNS rebinding), and with this list set, one "
        "arriving on any address is (docs/security.md, 'Browsers and a grid without keys')"))
    forwarded_allow_ips: list[str] = Field(default=[], description=(
        "the addresses or networks (\"127.0.0.1\", \"10.0.0.0/8\") of the proxies in front of this gateway whose "
        "X-Forwarded-For and X-Forwarded-Proto it believes: on a request from one of them the client's address and "
        "scheme are read from those headers (the message batches' results_url then says https behind a proxy that "
        "ends TLS). Default none: neither header is read from anyone, the connection's peer is the client "
        "(docs/security.md, 'Headers the gateway trusts')"))
    shared_state_url: str | None = Field(
        default=None, description=(
            "redis://host:port/db shared by every gateway of this grid (default: in-process). Over TLS: "
            "rediss://host:port/db?ssl_ca_certs=/path/ca.crt checks the server's certificate against that CA "
            "(without it, the system's CAs), &ssl_certfile=...&ssl_keyfile=... adds a client certificate; "
            "the same for security.quotas_redis_url and gateway.stores (docs/deploy.md, 'Redis over TLS')"))
    redis_password_env: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$", description=(
            "the name of the environment variable that holds the password of every Redis this gateway connects "
            "to (shared_state_url, stores, security.quotas_redis_url), e.g. REDIS_PASSWORD from a Kubernetes "
            "Secret, so that no password is written in the spec; read at startup, and a variable that is not set "
            "stops the gateway. A URL's own password comes first; a user name goes in the URL "
            "(redis://aigrid@host:6379/0). Default: none (no password, or the URL's)"))
    shared_sync_interval_s: float = Field(default=0.02, ge=0.001, le=MAX_S, description=(
        "how often this gateway exchanges its in-flight ledger, circuit openings and affinity with its peers "
        "through the shared state (two Redis pipelines each); 0.02 s keeps the work ahead that peers sent "
        "unseen, and the herding it causes, small (docs/routing.md)"))
    stores: dict[str, str] = Field(default={}, description=(
        "jurisdiction -> redis://host:port/db: that jurisdiction's stored Responses and Conversations live in "
        "this Redis, shared by every gateway and worker that names it, and nowhere else; the key `unbound` "
        "holds background-response placeholders and conversations not yet bound to a jurisdiction. A "
        "jurisdiction not named stays in the gateway's memory (the hub's with --workers). "
        "docs/responses-api.md, 'Shared stores'"))
    store_tenant_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024 * 1024, le=MAX_COUNT, description=(
        "what one tenant's records (stored responses, background placeholders and event logs, conversations) may "
        "hold in one Redis of `stores`, as their memory there; past it that tenant's oldest written records are "
        "evicted, never another tenant's. Give each Redis a maxmemory of about this times the tenants that store"))
    store_ttl_days: float = Field(default=30.0, gt=0, le=3650, description=(
        "how long a record lives in a Redis of `stores` after it was last written (a stored response, a "
        "placeholder, a conversation); OpenAI keeps stored responses 30 days"))
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="JSON logs on stderr: info has one access line per request")
    otel: OtelSpec = OtelSpec()
    admission: AdmissionSpec = AdmissionSpec()
    batch: BatchSpec = BatchSpec()

    _redis = field_validator("shared_state_url")(redis_url)

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            name = host.removeprefix("*.")
            if not name or any(c in name for c in "/:@ *") or name.startswith(".") or name != name.strip():
                raise ValueError(f"{host!r} is not a host name: write the name alone (\"gw.internal\", or "
                                 "\"*.example.com\" for every name under it), no scheme, port or path")
        return hosts

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxy_addresses(cls, addresses: list[str]) -> list[str]:
        """Each written as uvicorn's ProxyHeadersMiddleware reads it (it takes an entry it cannot read, or a network
        with host bits set, as a name no peer has: that proxy's headers were never believed, and nothing said so)."""
        written = []
        for address in addresses:
            try:
                written.append(str(ipaddress.ip_network(address.strip(), strict=False)) if "/" in address
                               else str(ipaddress.ip_address(address.strip())))
            except ValueError:
                raise ValueError(f"{address!r} is not an address or a network: write a proxy's IP address "
                                 "(\"127.0.0.1\", \"::1\") or its network (\"10.0.0.0/8\")") from None
        return written


class SloSpec(StrictModel):
    """The grid's latency SLO: what every built-in policy gates on (core/picker.py: a candidate whose p90
    TTFT or TPOT misses it comes last), and each spec policy for what it does not set itself."""

    ttft_ms: float = Field(gt=0, le=MAX_MS, description="the p90 TTFT a candidate must predict to meet the SLO")
    tpot_ms: float | None = Field(default=None, gt=0, le=MAX_MS, description="time per output token; an endpoint whose "
                                  "recent TPOT is above it does not meet the SLO")


class GridSpec(StrictModel):
    name: str = "grid"
    gateway: GatewaySpec = GatewaySpec()
    models: dict[str, ModelSpec] = Field(min_length=1)
    sites: dict[str, SiteSpec] = Field(min_length=1)
    endpoints: list[EndpointSpec] = Field(min_length=1, description="a grid without one has nothing to route to")
    slo: SloSpec | None = Field(default=None, description="the grid's TTFT / TPOT SLO for every policy "
                                "(default: each policy's own, 2 s TTFT for the built-ins, 5 s for cost-first)")
    policies: dict[str, PolicySpec] = {}
    tenants: dict[str, TenantSpec] = {}
    security: SecuritySpec = SecuritySpec()
    agents: AgentsSpec = AgentsSpec()
    cities: dict[str, tuple[float, float]] = {}

    @model_validator(mode="after")
    def _references(self) -> GridSpec:
        problems: list[str] = []
        near = Near()  # hints for the listed problems only
        seen: set[str] = set()
        for i, ep in enumerate(self.endpoints):
            if ep.id in seen:
                problems.append(f"endpoints[{i}].id: duplicate endpoint id {ep.id!r}")
            seen.add(ep.id)
            if ep.site not in self.sites:
                problems.append(f"endpoints[{i}].site: unknown site {ep.site!r}{near(ep.site, self.sites)} "
                                f"(sites: {', '.join(sorted(self.sites))})")
            if ep.model not in self.models:
                problems.append(f"endpoints[{i}].model: unknown model {ep.model!r}"
                                f"{near(ep.model, self.models)} (models: {', '.join(sorted(self.models))})")
        for name, tenant in self.tenants.items():
            for m in (tenant.right_size.models or []) if tenant.right_size else []:
                if m not in self.models:
                    problems.append(f"tenants.{name}.right_size.models: unknown model {m!r}"
                                    f"{near(m, self.models)} (models: "
                                    f"{', '.join(sorted(self.models))})")
            problems += self._tenant_problems(name, tenant, near)
        problems += _store_problems(self.gateway.stores, {site.jurisdiction for site in self.sites.values()}, near)
        problems += [f"cities.{name}: [{lat:g}, {lon:g}] is not [latitude -90..90, longitude -180..180]"
                     for name, (lat, lon) in self.cities.items() if not (-90 <= lat <= 90 and -180 <= lon <= 180)]
        problems += [f"agents.sql.{name}.tenants: unknown tenant {t!r}{near(t, self.tenants)} "
                     f"(tenants: {', '.join(sorted(self.tenants))})"
                     for name, db in self.agents.sql.items() for t in db.tenants or () if t not in self.tenants]
        problems += [f"agents.graphs.{name}.tenants: unknown tenant {t!r}{near(t, self.tenants)} "
                     f"(tenants: {', '.join(sorted(self.tenants))})"
                     for name, g in self.agents.graphs.items() for t in g.tenants or () if t not in self.tenants]
        for sid, site in self.sites.items():
            for i, doc in enumerate(site.documents):
                owner = self.tenants.get(doc.tenant) if doc.tenant is not None else None
                where = f"sites.{sid}.documents[{i}].tenant"
                if doc.tenant is not None and owner is None:
                    problems.append(f"{where}: unknown tenant {doc.tenant!r}{near(doc.tenant, self.tenants)}")
                elif owner is not None and owner.allowed_jurisdictions is not None \
                        and site.jurisdiction not in owner.allowed_jurisdictions:
                    problems.append(f"{where}: tenant {doc.tenant!r} must stay in {owner.allowed_jurisdictions}, "
                                    f"but site {sid!r} is in {site.jurisdiction}")
        if problems:
            raise SpecProblems(problems)
        return self

    def _tenant_problems(self, name: str, tenant: TenantSpec, near: Near) -> list[str]:
        """A tenant's limits must leave it some endpoint: an empty list, a misspelt jurisdiction or model, or
        limits that exclude each other would refuse every request of it, long after `spec check` said ok. A
        jurisdiction or model pattern the grid lacks beside ones it has is accepted (a site yet to come)."""
        return self.limit_problems(tenant, where=f"tenants.{name}", near=near)

    def limit_problems(self, limits: TenantSpec, *, where: str, labels: Mapping[str, str] | None = None,
                       within: tuple[str, TenantSpec] | None = None, near: Near | None = None,
                       refused: str = "; every request of it would be refused") -> list[str]:
        """The one check of limits (allowed_jurisdictions, allowed_sites, models) against the grid: a tenant's (the
        spec's own check), or a key's (`aigrid keys create --spec`) with `within` its tenant's (name, limits), the
        limits every request of it is held to as well (security.authenticate narrows the tenant's scopes by the
        key's). Each field of `limits` is checked against the grid, named `labels[field]` (default
        `{where}.{field}`); then, those fine, that some endpoint is within `limits` and `within`'s together (or,
        where one side allows only the gateway's embedding model, that both allow one): before, a key's limits
        were checked one at a time apart from its tenant's, and `--site iad` for an EU-only tenant made a key every
        request of which was refused (7 Dec 2026, thirty-third session)."""
        near = near if near is not None else Near()
        label = {field: f"{where}.{field}" for field in LIMIT_FIELDS} | dict(labels or {})
        jurisdictions = sorted({site.jurisdiction for site in self.sites.values()})
        served = sorted({ep.model for ep in self.endpoints})
        problems = [f"{label[field]}: an empty list allows nothing; leave it out to allow any"
                    for field in LIMIT_FIELDS if getattr(limits, field) == []]
        allowed_j = limits.allowed_jurisdictions or []
        exact = set(allowed_j) & set(jurisdictions)  # `[EU, eu]` allows EU: a case-only miss is a misspelling
        misspelt = [] if exact else [(j, k) for j in allowed_j for k in jurisdictions  # only when nothing matches
                                     if k.lower() == j.lower() and k != j]
        for j, k in misspelt:
            problems.append(f"{label['allowed_jurisdictions']}: no site is in jurisdiction {j!r}; sites are in "
                            f"{k!r} (jurisdictions are case-sensitive)")
        if allowed_j and not misspelt and not exact:
            problems.append(f"{label['allowed_jurisdictions']}: no site is in {', '.join(allowed_j)}"
                            f"{near(allowed_j[0], jurisdictions)} (jurisdictions: "
                            f"{', '.join(jurisdictions)})")
        for site in limits.allowed_sites or []:
            if site not in self.sites:
                problems.append(f"{label['allowed_sites']}: unknown site {site!r}{near(site, self.sites)} "
                                f"(sites: {', '.join(sorted(self.sites))})")
        patterns = limits.models or []
        if patterns and not _chat(patterns, served) and not _allow_any(patterns, EMBEDDING_ALIASES):
            problems.append(f"{label['models']}: {patterns} match no model an endpoint serves"
                            f"{near(patterns[0], served)} (served: {served})")
        if problems:
            return problems
        # the gateway's own embedding model needs no endpoint: limits allowing only it (an indexer) are fine
        sides = [(limits, label), *([(within[1], {f: f for f in LIMIT_FIELDS})] if within is not None else [])]
        if all(_chat(side.models or [], served) for side, _ in sides):
            left = any(all(_within(side, ep.site, self.sites[ep.site].jurisdiction, ep.model) for side, _ in sides)
                       for ep in self.endpoints if ep.site in self.sites)
        else:
            left = any(all(_allow_any(side.models or ["*"], (m,)) for side, _ in sides) for m in EMBEDDING_ALIASES)
        if not left:
            named = [", ".join(f"{names[field].removeprefix(where + '.')} {getattr(side, field)}"
                               for field in LIMIT_FIELDS if getattr(side, field) is not None) for side, names in sides]
            text = named[0] + (f" and tenant {within[0]}'s {named[1]}" if within is not None and named[1] else "")
            problems.append(f"{where}: no endpoint is within its {text}{refused}")
        return problems


LIMIT_FIELDS = ("allowed_jurisdictions", "allowed_sites", "models")
"""The fields of a tenant's (or a key's) limits that GridSpec.limit_problems checks."""


def _allow_any(patterns: Sequence[str], models: Iterable[str]) -> bool:
    return any(fnmatchcase(m, p) for m in models for p in patterns)


def _chat(patterns: Sequence[str], served: Sequence[str]) -> bool:
    """Whether model patterns allow a chat model: none given, one matching `auto` (the router picks any), or a
    served one."""
    return not patterns or _allow_any(patterns, ("auto", *served))


def _within(limits: TenantSpec, site: str, jurisdiction: str, model: str) -> bool:
    """Whether an endpoint of `model` at `site` in `jurisdiction` is within these limits."""
    patterns = limits.models
    return ((limits.allowed_sites is None or site in limits.allowed_sites)
            and (limits.allowed_jurisdictions is None or jurisdiction in limits.allowed_jurisdictions)
            and (patterns is None or _allow_any(patterns, ("auto", model))))


class SpecProblems(ValueError):
    """Several problems found across the spec at once, each already naming its field (load.parse_spec lists
    them one a line)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


UNBOUND_STORE = "unbound"
"""The key of `gateway.stores` for what has no jurisdiction yet: background placeholders, unbound conversations."""


def _store_problems(stores: dict[str, str], jurisdictions: set[str], near: Near) -> list[str]:
    """`gateway.stores`: each key a jurisdiction some site is in (or `unbound`), each value a Redis URL."""
    problems = []
    for key, url in stores.items():
        where = f"gateway.stores.{key}"
        if key == UNBOUND_STORE and key in jurisdictions:
            problems.append(f"{where}: {UNBOUND_STORE!r} is reserved for what has no jurisdiction yet, but a site "
                            f"is in a jurisdiction named {UNBOUND_STORE!r}; rename that jurisdiction")
        elif key != UNBOUND_STORE and key not in jurisdictions:
            problems.append(f"{where}: no site is in jurisdiction {key!r}{near(key, jurisdictions)} "
                            f"(jurisdictions: {', '.join(sorted(jurisdictions))}, "
                            f"or {UNBOUND_STORE!r} for placeholders and unbound conversations)")
        if not url.startswith(_REDIS_SCHEMES):
            problems.append(f"{where}: {url!r} is not a Redis URL (redis://host:port/db, rediss://... or "
                            "unix:///path.sock)")
        elif problem := _redis_tls_problem(url):
            problems.append(f"{where}: {problem}")
    return problems
