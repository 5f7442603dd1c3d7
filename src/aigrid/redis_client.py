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
"""

from __future__ import annotations

import os
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis

from aigrid.errors import ConfigError

PASSWORD_FIELD = "gateway.redis_password_env"


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
    if password is not None:
        options["password"] = password
    if pool_size is None:
        return Redis.from_url(url, **options)
    return Redis(connection_pool=BlockingConnectionPool.from_url(url, max_connections=pool_size,
                                                                 timeout=pool_wait_s, **options))
