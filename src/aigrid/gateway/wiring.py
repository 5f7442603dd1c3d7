"""Engine adapters for every endpoint of a spec: embedded engines by their local URL, external ones by theirs."""

from __future__ import annotations

import logging
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from aigrid.engines.openai_compat import OpenAICompatEngine
from aigrid.engines.protocol import Engine
from aigrid.engines.stop_words import VERBOSE_KINDS, StopWordEngine
from aigrid.engines.upstream_transport import Http1Transport
from aigrid.errors import ConfigError, EngineBuildError
from aigrid.gateway.usage import whole_max_bytes
from aigrid.spec.models import GridSpec
from aigrid.userinfo import without_userinfo

EMBEDDED_KIND = "llamacpp"
"""The embedded engine is llama.cpp's own llama-server, so it is reached like any llama.cpp server."""

log = logging.getLogger("aigrid.wiring")


UPSTREAM_TIMEOUT = httpx.Timeout(connect=3.0, read=300.0, write=30.0, pool=10.0)
"""How long an engine connection waits: the read timeout is `gateway.stream_idle_s`'s default (upstream_timeout)."""


def upstream_timeout(spec: GridSpec | None) -> httpx.Timeout:
    """UPSTREAM_TIMEOUT, its read timeout the spec's `gateway.stream_idle_s`: the silence an answer may keep between
    two reads once begun (its head has the first-byte deadline instead, a whole answer's whole_max_s)."""
    if spec is None:
        return UPSTREAM_TIMEOUT
    return httpx.Timeout(connect=UPSTREAM_TIMEOUT.connect, read=spec.gateway.stream_idle_s,
                         write=UPSTREAM_TIMEOUT.write, pool=UPSTREAM_TIMEOUT.pool)


@dataclass(frozen=True)
class Upstream:
    """How the gateway reaches its engines: one pooled client (health probes, scrapes, https:// engines) and
    the HTTP/1.1 transport it mounts for plain-HTTP engines, which proxied POSTs use directly, without httpx's
    client layer (request building, URL merging, cookies, redirects: a tenth of the gateway's CPU per
    request). `http1` None: every request goes through the client (a measurement variant only)."""

    client: httpx.AsyncClient
    http1: Http1Transport | None

    async def aclose(self) -> None:
        await self.client.aclose()  # closes the mounted transports too


TLS_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=200)


def upstream(spec: GridSpec | None = None, environ: Mapping[str, str] = os.environ) -> Upstream:
    """Plain-HTTP engines on aigrid's HTTP/1.1 transport (httpcore's pool bookkeeping was 60% of the gateway's
    CPU at 200 streams, docs/benchmarks.md), https:// ones (remote regions, hosted providers) on httpx's own,
    checked against the public certificate authorities, or, for an origin whose endpoint says so, against its
    own (`tls_ca_file`, an internal CA) and through its `proxy` (with the credentials of its `proxy_auth_env`);
    the read timeout (`gateway.stream_idle_s`, upstream_timeout) bounds each silence of an answer's body. Raises
    ConfigError naming the field when a CA file or the proxy's credentials cannot be used."""
    http1 = Http1Transport()
    public_tls = httpx.create_ssl_context()  # the CA bundle read once (~20 ms of CPU): the client's own default
    # transport below, which no request reaches (both schemes are mounted), is built over the same context
    public = httpx.AsyncHTTPTransport(verify=public_tls, limits=TLS_LIMITS)
    ways = https_origins(spec, environ) if spec is not None else {}
    https = OriginRouter(public, {origin: httpx.AsyncHTTPTransport(verify=way.context or True, proxy=way.proxy,
                                                                   limits=TLS_LIMITS)
                                  for origin, way in ways.items()})
    client = httpx.AsyncClient(mounts={"http://": http1, "https://": https}, timeout=upstream_timeout(spec),
                               trust_env=False, verify=public_tls)
    return Upstream(client, http1)


Origin = tuple[str, int]
"""(host as httpx.URL gives it, lower case and without IPv6 brackets; port, 443 when the URL gives none)."""


def origin_of(url: httpx.URL) -> Origin:
    return url.host.lower(), url.port or 443


class OriginRouter(httpx.AsyncBaseTransport):
    """https requests to the transport of their exact origin (host and port), others to `default`. Not httpx's
    mount patterns: one for port 443 matches the host at every port, and an IPv6 host needs its brackets."""

    def __init__(self, default: httpx.AsyncBaseTransport, by_origin: Mapping[Origin, httpx.AsyncBaseTransport]):
        self._default = default
        self._by_origin = dict(by_origin)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self._by_origin.get(origin_of(request.url), self._default) if self._by_origin else self._default
        return await transport.handle_async_request(request)

    async def aclose(self) -> None:
        for transport in (self._default, *self._by_origin.values()):
            await transport.aclose()


@dataclass(frozen=True)
class HttpsWay:
    """How one https origin is reached: the authorities its certificate is checked against (None: the public
    ones) and the proxy in between (None: directly), with its credentials when it has any."""

    context: ssl.SSLContext | None
    proxy: httpx.Proxy | None


def https_origins(spec: GridSpec, environ: Mapping[str, str] = os.environ) -> dict[Origin, HttpsWay]:
    """(host, port) -> how it is reached, for every https origin an endpoint gives a `tls_ca_file` or a
    `proxy`. Raises ConfigError naming the field: a CA file that cannot be used, a `proxy_auth_env` that is
    unset or not user:password, or two endpoints at one origin that say different things, one of them nothing
    (one origin is one connection pool)."""
    said: dict[Origin, tuple[str | None, str | None, str | None, int]] = {}
    for i, ep in enumerate(spec.endpoints):
        if not (ep.url or "").startswith("https://"):
            continue
        origin = origin_of(httpx.URL(ep.url or ""))
        first = said.setdefault(origin, (ep.tls_ca_file, ep.proxy, ep.proxy_auth_env, i))
        if first[:3] != (ep.tls_ca_file, ep.proxy, ep.proxy_auth_env):
            host = f"[{origin[0]}]" if ":" in origin[0] else origin[0]
            raise ConfigError(f"endpoints[{i}]: tls_ca_file, proxy and proxy_auth_env differ from "
                              f"endpoints[{first[3]}]'s at the same origin https://{host}:{origin[1]}: one origin, "
                              "one way to reach it")
    return {origin: HttpsWay(_authorities(ca_file, f"endpoints[{i}].tls_ca_file"),
                             _proxy(spec, proxy, auth_env, i, environ))
            for origin, (ca_file, proxy, auth_env, i) in said.items() if ca_file is not None or proxy is not None}


def _proxy(spec: GridSpec, url: str | None, auth_env: str | None, i: int,
           environ: Mapping[str, str]) -> httpx.Proxy | None:
    """The proxy of endpoints[i], with the user:password its `proxy_auth_env` holds (sent as Proxy-Authorization
    to the proxy only, never to the engine)."""
    if url is None:
        return None
    if auth_env is None:
        return httpx.Proxy(url)
    field = f"endpoints[{i}].proxy_auth_env"
    if auth_env in own_secrets(spec):
        raise ConfigError(f"{field}: {auth_env} holds one of the gateway's own secrets (security.secret_env, "
                          "security.jwt.secret_env); the proxy's credentials are another variable")
    value = environ.get(auth_env, "").rstrip("\r\n")  # a secret file's last line break; a password's spaces kept
    if not value.strip():
        raise ConfigError(f"{field}: environment variable {auth_env} (the proxy's user:password) is not set or empty")
    user, colon, password = value.partition(":")
    user = user.strip()  # a password's spaces are its own; a user name's are not
    if not colon or not user or any(c in value for c in "\r\n\0"):
        raise ConfigError(f"{field}: the value of {auth_env} is not user:password (one line, a colon after the user)")
    return httpx.Proxy(url, auth=(user, password))


def own_secrets(spec: GridSpec) -> set[str]:
    """The environment variables holding the gateway's own secrets: never an engine's or a proxy's."""
    jwt = spec.security.jwt
    return {spec.security.secret_env, *([jwt.secret_env] if jwt is not None and jwt.secret_env else [])}


def _authorities(ca_file: str | None, field: str) -> ssl.SSLContext | None:
    if ca_file is None:
        return None
    try:
        return ssl.create_default_context(cafile=ca_file)
    except ssl.SSLError as e:  # an OSError too: first
        raise ConfigError(f"{field}: {ca_file} holds no usable PEM certificate ({e.reason})") from e
    except OSError as e:
        raise ConfigError(f"{field}: cannot read {ca_file}: {e.strerror or e}") from e


KEY_TEXT = re.compile(r"[\x21-\x7e]+")
"""What a key sent in a header may be: printable ASCII, no space (a line break would split the request)."""


def engine_keys(spec: GridSpec, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Each external endpoint's key (`api_key_env`), read from the environment. Raises ConfigError naming the
    field when a variable is unset or empty: checked before any engine starts, so a grid never comes up
    sending unauthenticated requests that every engine answers with 401."""
    keys: dict[str, str] = {}
    own = own_secrets(spec)
    for i, ep in enumerate(spec.endpoints):
        if ep.api_key_env is None:
            continue
        if ep.api_key_env in own:
            raise ConfigError(f"endpoints[{i}].api_key_env: {ep.api_key_env} holds one of the gateway's own secrets "
                              "(security.secret_env, security.jwt.secret_env); an engine's key is another variable")
        key = environ.get(ep.api_key_env, "").strip()
        if not key:
            raise ConfigError(f"endpoints[{i}].api_key_env: environment variable {ep.api_key_env} (the key of "
                              f"endpoint {ep.id!r}) is not set or empty")
        if not KEY_TEXT.fullmatch(key):  # it goes into a header line as is
            raise ConfigError(f"endpoints[{i}].api_key_env: the value of {ep.api_key_env} is not a key: printable "
                              "ASCII without spaces")
        keys[ep.id] = key
    return keys


def build_engines(spec: GridSpec, embedded_urls: Mapping[str, str], up: Upstream, *,
                  embedded_key: str | None = None, environ: Mapping[str, str] = os.environ) -> dict[str, Engine]:
    """One adapter per endpoint. `embedded_key`: the key the embedded engines were started with (one per
    `aigrid up`), sent to them; an external endpoint's key comes from its `api_key_env`."""
    keys = engine_keys(spec, environ)
    with_userinfo = [f"endpoints[{i}] ({ep.id})" for i, ep in enumerate(spec.endpoints)
                     if ep.url and without_userinfo(ep.url) != ep.url]
    if with_userinfo:  # once per start; sent as HTTP basic auth, never written (userinfo.without_userinfo)
        log.warning("the url of %s holds a user and password: they are sent as HTTP basic auth and never written to a "
                    "log, an audit record or a decision, but a key is better given by the endpoint's api_key_env "
                    "(docs/security.md)", ", ".join(with_userinfo))
    engines: dict[str, Engine] = {}
    for ep in spec.endpoints:
        if ep.engine == "embedded":
            url = embedded_urls.get(ep.id)
            if url is None:
                raise EngineBuildError(f"endpoint {ep.id}: embedded engine was not started")
            kind, key, source = EMBEDDED_KIND, embedded_key, "the embedded engine's key of this run"
        else:
            assert ep.url is not None  # the spec validator guarantees it
            url, kind, key = ep.url, ep.engine, keys.get(ep.id)
            source = f"${ep.api_key_env}, the endpoint's api_key_env"
        headers = {"authorization": f"Bearer {key}"} if key else None
        engine: Engine = OpenAICompatEngine(kind, url, up.client, power_url=ep.power_metrics_url, gpus=ep.gpus,
                                            headers=headers, key_source=source, transport=up.http1,
                                            head_timeout_s=spec.gateway.first_byte_timeout.whole_max_s)
        # llama.cpp names the stop string that ended an answer only when asked (engines/stop_words.py)
        engines[ep.id] = StopWordEngine(engine, whole_max_bytes(spec.models[ep.model].context)) \
            if kind in VERBOSE_KINDS else engine
    return engines
