"""An identity provider's signing keys, from its JWKS URL (OpenID Connect's `jwks_uri`: Okta, Auth0, Entra ID,
Keycloak, Google, Dex ...), for the JWT bearer tokens of jwt_bearer.py.

The keys are fetched when the gateway starts and again every `refresh_s`, in the background: a token is
checked against the keys in memory and never waits on the network. A token signed with a key id (`kid`) the
set does not hold is refused (401) and asks for an early refresh (at most one every `min_refetch_s`), so a
provider that rotates its key is followed within seconds even between refreshes; providers publish a new key
before they sign with it, so the periodic refresh normally has it already. While the provider cannot be
reached the last keys stay in use (logged); before the first fetch succeeds every token is refused.

Only asymmetric keys are used (RSA, EC, OKP), each with the algorithms of its type (the JWK's own `alg` when
it names one): a token cannot choose HS256 and be checked with a public key as its secret, nor `none`. An RSA key
under 2048 bits is not used (MIN_RSA_BITS).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from jwt import PyJWK, PyJWKSet

from aigrid.content_coding import IDENTITY, read_identity

log = logging.getLogger("aigrid.jwks")

MAX_BYTES = 1 << 20
"""A key set is a few kilobytes; a larger answer is not one."""
FETCH_TIMEOUT_S = 15.0
"""The whole fetch, however slowly the provider sends it."""
RETRY_S = 5.0
"""How soon a failed fetch is tried again."""
ALGORITHMS_BY_KTY: dict[str, tuple[str, ...]] = {
    "RSA": ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    "EC": ("ES256", "ES384", "ES512"),
    "OKP": ("EdDSA",),
}
MIN_RSA_BITS = 2048
"""An RSA key shorter than this is not used (NIST SP 800-131A; RSA-512 is factored in hours): PyJWT only warns."""


class JwksKeys:
    def __init__(self, url: str, *, refresh_s: float = 300.0, min_refetch_s: float = 30.0,
                 fetch: Callable[[str], Awaitable[bytes]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.refresh_s = refresh_s
        self.min_refetch_s = min_refetch_s
        self._fetch = fetch or _fetch
        self._clock = clock
        self._keys: dict[str | None, PyJWK] = {}
        self._last_attempt = float("-inf")
        self._wake = asyncio.Event()
        self.fetched = 0
        """Key sets fetched successfully."""

    def key_for(self, kid: str | None) -> PyJWK | None:
        """The key that signs tokens with this `kid`; a token without one uses the set's only key. An unknown
        kid asks the refresher for an early fetch."""
        if kid is None:
            only = list(self._keys.values())
            return only[0] if len(only) == 1 else None
        key = self._keys.get(kid)
        if key is None and self._clock() - self._last_attempt >= self.min_refetch_s:
            self._wake.set()
        return key

    @staticmethod
    def algorithms(key: PyJWK) -> list[str]:
        """What a token signed with `key` may use: the JWK's own `alg`, else every algorithm of its type."""
        allowed = ALGORITHMS_BY_KTY.get(str(key.key_type), ())
        named = _named_alg(key)
        return [named] if named is not None else list(allowed)

    async def refresh(self) -> bool:
        """Fetch the set once; True when it was read. A failure of any kind keeps the keys held (logged); a set
        the provider serves empty (an emergency revocation) is taken as it is: every token refused."""
        self._last_attempt = self._clock()
        try:
            data = json.loads(await asyncio.wait_for(self._fetch(self.url), FETCH_TIMEOUT_S))
            if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
                raise ValueError('not a key set: expected {"keys": [...]}')
            keys = _usable(PyJWKSet.from_dict(data)) if data["keys"] else {}
        except Exception as e:  # noqa: BLE001 - whatever the provider answers, the refresher carries on
            log.error("JWKS %s: cannot read the signing keys (%s: %s); %s", self.url, type(e).__name__, e,
                      f"keeping the {len(self._keys)} held" if self._keys else "every bearer token is refused")
            return False
        if not keys:
            log.error("JWKS %s holds no RSA, EC or OKP signing key: every bearer token is refused", self.url)
        elif set(keys) != set(self._keys):
            log.warning("JWKS %s: signing keys %s", self.url, sorted(str(k) for k in keys))
        self._keys = keys
        self.fetched += 1
        return True

    async def run(self, *, fetch_first: bool = True) -> None:
        """Refresh every `refresh_s` (every 5 s while failing), or early when a token names an unknown key (at
        most once every `min_refetch_s`). Nothing ends it but cancellation."""
        ok = not fetch_first
        while True:
            if fetch_first:
                try:
                    ok = await self.refresh()
                except Exception:  # refresh catches the provider's errors: this would be a bug of ours
                    log.exception("JWKS %s: the refresh failed", self.url)
                    ok = False
            fetch_first = True
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.refresh_s if ok else min(RETRY_S, self.refresh_s))
            except TimeoutError:
                continue
            wait = self.min_refetch_s - (self._clock() - self._last_attempt)  # woken by an unknown kid
            if wait > 0:
                await asyncio.sleep(wait)


def _named_alg(key: PyJWK) -> str | None:
    data: dict[str, Any] = key._jwk_data  # PyJWK keeps the JWK's members there; `alg` has no accessor
    alg = data.get("alg")
    return alg if isinstance(alg, str) else None


def _usable(keys: PyJWKSet) -> dict[str | None, PyJWK]:
    """The set's signing keys of an asymmetric type (an `oct` secret, an encryption key or an `alg` foreign to
    the key's type is left out); a key without a `kid` only when it is the only one (tokens name the others)."""
    usable = [key for key in keys.keys
              if ALGORITHMS_BY_KTY.get(str(key.key_type)) and key.public_key_use in (None, "sig")
              and (_named_alg(key) is None or _named_alg(key) in ALGORITHMS_BY_KTY[str(key.key_type)])
              and not _weak(key)]
    if len(usable) > 1:
        usable = [key for key in usable if key.key_id is not None]
    return {key.key_id: key for key in usable}


def _weak(key: PyJWK) -> bool:
    """An RSA key under MIN_RSA_BITS (logged: a token signed with it is refused as by a key the set does not hold)."""
    bits = getattr(key.key, "key_size", None) if str(key.key_type) == "RSA" else None
    if bits is None or bits >= MIN_RSA_BITS:
        return False
    log.error("JWKS: RSA key %r is %d bits, under %d: not used", key.key_id, bits, MIN_RSA_BITS)
    return True


async def _fetch(url: str) -> bytes:
    # no redirects: a key set fetched from wherever a redirect points could be anyone's. Asked as `identity`, and an
    # answer compressed anyway refused unread: httpx's decoder inflates each 64 KiB piece whole (66 MB of gzip's)
    # before the bound below could count it (50 KB of gzip held 135 MB at every refresh)
    async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as client, \
            client.stream("GET", url, headers={"accept-encoding": IDENTITY}) as r:
        r.raise_for_status()
        body = await read_identity(r, MAX_BYTES)  # Encoded (a ValueError) when it came compressed
        if body is None:
            raise ValueError(f"the answer is over {MAX_BYTES} bytes: not a key set")
        return body
