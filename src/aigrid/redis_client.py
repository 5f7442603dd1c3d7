"""The one way aigrid connects to Redis: the shared state (`gateway.shared_state_url`), the abuse relay over it,
the quota counters (`security.quotas_redis_url`) and the shared stores (`gateway.stores`) all call `connect`.

A Redis's password is never written in the spec (a ConfigMap, in plain text): `gateway.redis_password_env` names
the environment variable that holds it (a Kubernetes Secret's key), read here when the client is built, at
startup. Unset (the default): nothing is read, and a password in the URL itself still works. Named but not set
(or empty): ConfigError naming the field and the variable, never a connection without the password. A URL's
own password comes first (redis-py's rule); a user name, not a secret, goes in the URL
(redis://aigrid@host:6379/0) and the password from the variable goes with it.

The password lives only in the client's connection settings: it is not kept on the spec, not logged, and
redis-py's errors ("invalid username-password pair", "Authentication required") and reprs never show it.
redis is imported here, so only a caller that connects pays for it (about 12 MB of each worker's memory).

TLS: a rediss:// URL is TLS, its server's certificate checked (redis-py's default, ssl_cert_reqs=required: the
spec refuses anything else) against the CA its `ssl_ca_certs=` query parameter names, else the system's CAs, and
its host name checked; `ssl_certfile=` and `ssl_keyfile=` add a client certificate (mutual TLS). Those files are
read here, at startup: one that is missing, unreadable or not PEM is a ConfigError naming the parameter, not a
first request that fails. A server whose certificate does not verify is refused (redis-py's ConnectionError,
"certificate verify failed"): there is no fallback to plain TCP. A redis:// URL whose connection is reset or
closed before its first answer (what a TLS-only server does with plain TCP: redis-py's bare "Connection reset by
peer" / "Connection closed by server") fails with TLS_HINT added to redis-py's error, so the log says why.
"""

from __future__ import annotations

import os
import ssl
from typing import Any
from urllib.parse import parse_qs, urlsplit

from redis.asyncio import BlockingConnectionPool, Connection, Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from aigrid.errors import ConfigError


def key_prefix(grid: str) -> str:
    """Every key's start, `aigrid:<grid>:`: the grid as it is, unless it holds `{` or begins with `~`; then `~` and
    its UTF-8 bytes in hex (as stores_redis.tag writes a tenant; no plain name begins with `~`: no two grids share
    keys). A key's hash tag (Redis Cluster) is between its first `{` and the next `}`: grid `g{` made the tag of
    `aigrid:g{:resp:EU:{t}:r1` `:resp:EU:{t`, so a tenant's keys fell in different slots and every script that
    touches several (each write and its ledger) was refused; `{x}` put every tenant in one slot. A `}` before the
    first `{` ends no tag: such a name is kept. The keys of the stores (gateway/stores_redis.py) and of the shared
    state (telemetry/redis_shared.py) begin so."""
    if "{" in grid or grid.startswith("~"):
        grid = "~" + grid.encode().hex()
    return f"aigrid:{grid}:"


PASSWORD_FIELD = "gateway.redis_password_env"
URL_FIELDS = "gateway.shared_state_url, gateway.stores or security.quotas_redis_url"
TLS_HINT = "is the server TLS-only? use rediss:// (docs/deploy.md, Redis over TLS)"
_CUT = ("reset by peer", "closed by server", "Broken pipe")


class _PlainConnection(Connection):
    """A redis:// connection whose first exchange, cut by the server (a TLS-only one reads plain TCP as a bad
    handshake and drops it), raises redis-py's ConnectionError with TLS_HINT added."""

    _answered = False

    async def _connect(self) -> None:  # each new socket: its first exchange again
        self._answered = False
        await super()._connect()

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        try:
            await super().send_packed_command(command, check_health)
        except RedisConnectionError as e:
            raise self._hinted(e) from e

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            response = await super().read_response(*args, **kwargs)
        except RedisConnectionError as e:
            raise self._hinted(e) from e
        self._answered = True
        return response

    def _hinted(self, e: RedisConnectionError) -> RedisConnectionError:
        if self._answered or not any(cut in str(e) for cut in _CUT) or TLS_HINT in str(e):
            return e
        return RedisConnectionError(f"{e} ({TLS_HINT})")


def password_from(env: str | None) -> str | None:
    """The password in the environment variable `env` (None: none named); ConfigError if it is not set."""
    if env is None:
        return None
    password = os.environ.get(env)
    if not password:
        raise ConfigError(f"{PASSWORD_FIELD}: the environment variable {env} (the Redis password) is not set or "
                          "is empty; set it (e.g. from a Kubernetes Secret) or remove the field")
    return password


def connect(url: str, password_env: str | None, *, pool_size: int | None = None, pool_wait_s: float = 2.0,
            **options: Any) -> Redis:
    """A client of the Redis at `url`, authenticated with the password in `password_env` (if named).
    `pool_size`: at most that many connections, a caller waiting up to `pool_wait_s` for one (None: redis-py's
    unbounded pool). `options`: redis-py's connection options (socket_timeout, retry, ...)."""
    password = password_from(password_env)
    check_tls_files(url)
    if password is not None:
        options["password"] = password
    if url.startswith("redis://"):
        options.setdefault("connection_class", _PlainConnection)
    if pool_size is None:
        return Redis.from_url(url, **options)
    return Redis(connection_pool=BlockingConnectionPool.from_url(url, max_connections=pool_size,
                                                                 timeout=pool_wait_s, **options))


def check_tls_files(url: str) -> None:
    """ConfigError if a rediss:// URL's CA (`ssl_ca_certs`) or client certificate and key (`ssl_certfile`,
    `ssl_keyfile`) cannot be read, or are not PEM (or the key is not the certificate's)."""
    if not url.startswith("rediss://"):
        return
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    where = f"{URL_FIELDS}: the Redis at rediss://{parts.hostname}:{parts.port or 6379}"
    context = ssl.create_default_context()
    name = "ssl_ca_certs"
    try:
        if "ssl_ca_certs" in query:
            context.load_verify_locations(cafile=query[name])
        if "ssl_certfile" in query:
            name = "ssl_certfile"
            context.load_cert_chain(query[name], query.get("ssl_keyfile"))
    except (OSError, ssl.SSLError) as e:  # missing, a folder, no permission; not PEM, key of another certificate
        raise ConfigError(f"{where}: {name}={query[name]} cannot be used ({e}); it must be a readable PEM file "
                          + ("of the CA that signed the server's certificate" if name == "ssl_ca_certs" else
                             "with its ssl_keyfile, the client's certificate and key")) from e
