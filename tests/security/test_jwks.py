"""JWT bearer tokens checked with an identity provider's JWKS (security/jwks.py): a real HTTP server on
loopback plays the provider; keys rotate, the provider goes away, tokens try other algorithms."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterator

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from jwt.warnings import InsecureKeyLengthWarning

from aigrid.errors import AuthenticationError
from aigrid.security.jwks import JwksKeys
from aigrid.security.jwt_bearer import JwtSettings, verify_jwt

ISSUER, AUDIENCE = "https://idp.example", "aigrid"


class Provider:
    """An identity provider's JWKS endpoint on 127.0.0.1: serves `keys`, counts requests, can go down."""

    def __init__(self) -> None:
        self.keys: list[dict] = []
        self.requests = 0
        self.down = False
        self.gzipped: bytes | None = None
        """Set: sent as the key set with `content-encoding: gzip`, whatever was asked."""
        self.asked: list[str | None] = []
        """Each request's accept-encoding."""
        provider = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                provider.requests += 1
                provider.asked.append(self.headers.get("accept-encoding"))
                if provider.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                body = json.dumps({"keys": provider.keys}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                if provider.gzipped is not None:
                    body = provider.gzipped
                    self.send_header("content-encoding", "gzip")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def provider() -> Iterator[Provider]:
    p = Provider()
    yield p
    p.server.shutdown()


def rsa_key(kid: str) -> tuple[rsa.RSAPrivateKey, dict]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    return private, {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


def token(private: object, kid: str | None, alg: str = "RS256", **claims: object) -> str:
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "svc-1", "tenant": "bank", "exp": time.time() + 300, **claims}
    return jwt.encode(body, private, algorithm=alg, headers={"kid": kid} if kid else None)  # type: ignore[arg-type]


def hs256_by_hand(header: dict, claims: dict, secret: bytes) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def settings(keys: JwksKeys) -> JwtSettings:
    return JwtSettings(ISSUER, AUDIENCE, None, jwks=keys)


async def test_tokens_are_checked_with_the_key_their_kid_names(provider: Provider) -> None:
    first, jwk1 = rsa_key("k1")
    ec_private = ec.generate_private_key(ec.SECP256R1())
    jwk2 = {**json.loads(ECAlgorithm.to_jwk(ec_private.public_key())), "kid": "k2"}
    provider.keys = [jwk1, jwk2]
    keys = JwksKeys(provider.url)
    assert await keys.refresh()
    assert verify_jwt(token(first, "k1"), settings(keys)).tenant == "bank"
    assert verify_jwt(token(ec_private, "k2", "ES256"), settings(keys)).subject == "svc-1"
    other, _ = rsa_key("k1")  # the right kid, another key: the signature fails
    with pytest.raises(AuthenticationError, match="invalid bearer token"):
        verify_jwt(token(other, "k1"), settings(keys))


async def test_a_token_cannot_pick_hs256_with_the_public_key_as_its_secret(provider: Provider) -> None:
    private, jwk = rsa_key("k1")
    provider.keys = [{k: v for k, v in jwk.items() if k != "alg"}]  # no alg named: the type's algorithms
    keys = JwksKeys(provider.url)
    assert await keys.refresh()
    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    forged = hs256_by_hand({"alg": "HS256", "typ": "JWT", "kid": "k1"},  # PyJWT itself refuses to make one
                           {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "tenant": "bank", "exp": time.time() + 60}, pem)
    with pytest.raises(AuthenticationError, match="invalid bearer token"):
        verify_jwt(forged, settings(keys))
    unsigned = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "tenant": "bank", "exp": time.time() + 60},
                          None, algorithm="none", headers={"kid": "k1"})
    with pytest.raises(AuthenticationError, match="invalid bearer token"):
        verify_jwt(unsigned, settings(keys))


async def test_a_rotated_key_is_fetched_early_and_a_provider_outage_keeps_the_keys(provider: Provider,
                                                                                  caplog: pytest.LogCaptureFixture) -> None:
    old, jwk_old = rsa_key("2026-11")
    new, jwk_new = rsa_key("2026-12")
    provider.keys = [jwk_old]
    keys = JwksKeys(provider.url, refresh_s=3600, min_refetch_s=0.0)
    runner = asyncio.create_task(keys.run())
    try:
        while keys.fetched < 1:
            await asyncio.sleep(0.01)
        assert verify_jwt(token(old, "2026-11"), settings(keys)).tenant == "bank"
        provider.keys = [jwk_old, jwk_new]  # the provider rotates: a token with the new kid arrives first
        with pytest.raises(AuthenticationError, match="does not hold"):
            verify_jwt(token(new, "2026-12"), settings(keys))
        deadline = time.monotonic() + 10
        while keys.fetched < 2:  # ... and wakes the refresher, without waiting the hour
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert verify_jwt(token(new, "2026-12"), settings(keys)).tenant == "bank"
        provider.down = True
        assert not await keys.refresh()
        assert "cannot read the signing keys" in caplog.text and "keeping the 2 held" in caplog.text
        assert verify_jwt(token(old, "2026-11"), settings(keys)).tenant == "bank"
    finally:
        runner.cancel()


async def test_before_the_first_fetch_every_token_is_refused(provider: Provider) -> None:
    private, jwk = rsa_key("k1")
    provider.down = True
    keys = JwksKeys(provider.url)
    assert not await keys.refresh()
    with pytest.raises(AuthenticationError, match="could not be fetched yet"):
        verify_jwt(token(private, "k1"), settings(keys))
    provider.down = False
    provider.keys = [jwk, {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}]  # a shared secret is never used
    assert await keys.refresh()
    assert keys.key_for("hmac") is None and keys.key_for("k1") is not None
    assert verify_jwt(token(private, None), settings(keys)).tenant == "bank"  # no kid: the one signing key


async def test_whatever_the_provider_answers_the_refresher_carries_on(provider: Provider,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A review's finding: '[]', a string or a deep nest raised out of refresh() and ended the refresher for good
    (no rotation followed after it, and the gateway's stop() re-raised it before closing the audit log)."""
    private, jwk = rsa_key("k1")
    provider.keys = [jwk]
    keys = JwksKeys(provider.url, refresh_s=3600, min_refetch_s=0.0)
    assert await keys.refresh()
    real = keys._fetch
    for answer in (b"[]", b'"abc"', b"[" * 100_000 + b"]" * 100_000, b'{"keys": "x"}'):
        async def fetch(url: str, answer: bytes = answer) -> bytes:
            return answer

        keys._fetch = fetch
        assert not await keys.refresh()
        assert verify_jwt(token(private, "k1"), settings(keys)).tenant == "bank"  # the keys held stay
    runner = asyncio.create_task(keys.run())
    await asyncio.sleep(0.05)
    assert not runner.done()
    runner.cancel()
    keys._fetch = real
    provider.keys = []  # the provider empties its set (an emergency revocation): taken as it is
    assert await keys.refresh()
    with pytest.raises(AuthenticationError, match="does not hold"):
        verify_jwt(token(private, "k1"), settings(keys))


async def test_redirects_are_not_followed_and_keyless_keys_only_alone(provider: Provider) -> None:
    moved = Provider()
    try:
        moved.keys = [rsa_key("k9")[1]]
        import http.server

        class Redirect(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(302)
                self.send_header("location", moved.url)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        provider.server.RequestHandlerClass = Redirect
        keys = JwksKeys(provider.url)
        assert not await keys.refresh() and moved.requests == 0  # a key set from wherever a redirect points: no
    finally:
        moved.server.shutdown()
    a, jwk_a = rsa_key("a")
    b, jwk_b = rsa_key("b")
    for jwk in (jwk_a, jwk_b):
        del jwk["kid"]
    other = Provider()
    try:
        other.keys = [jwk_a, jwk_b]  # two keys without kid: neither can be told apart, neither is used
        keys = JwksKeys(other.url)
        await keys.refresh()
        assert keys.key_for(None) is None
        with pytest.raises(AuthenticationError):
            verify_jwt(token(a, None), settings(keys))
    finally:
        other.server.shutdown()


def test_a_keys_algorithms_are_its_types_only() -> None:
    _, jwk = rsa_key("k1")
    from jwt import PyJWK

    assert JwksKeys.algorithms(PyJWK({**jwk})) == ["RS256"]
    no_alg = PyJWK({k: v for k, v in jwk.items() if k != "alg"})
    assert set(JwksKeys.algorithms(no_alg)) == {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}


async def test_a_compressed_key_set_is_not_inflated(provider: Provider) -> None:
    """The key set was read with httpx's decoder, which inflates each 64 KiB piece read off the network whole before
    the 1 MiB bound was counted: a provider (or whatever answers at its address) sending 50 KB of gzip had the
    gateway hold 135 MB at every refresh. It is asked for `identity`, and an answer compressed anyway is refused
    (the keys held are kept), its body not read."""
    import tracemalloc

    from aigrid.security import jwks

    provider.gzipped = gzip.compress(b" " * (50 * 2**20), 9)  # 50 KB
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="content-encoding 'gzip'"):
            await jwks._fetch(provider.url)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert provider.asked == ["identity"] and peak < 8_000_000, (provider.asked, f"{peak / 1e6:.0f} MB held")


async def test_an_rsa_key_under_2048_bits_is_not_used(provider: Provider, caplog: pytest.LogCaptureFixture) -> None:
    """A set serving a short RSA key (an old provider's, or one an attacker who can write the set factored): PyJWT
    only warns (InsecureKeyLengthWarning) and every token it signed was accepted (twenty-third session)."""
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # cryptography makes none shorter
    weak_jwk = {**json.loads(RSAAlgorithm.to_jwk(weak.public_key())), "kid": "weak", "alg": "RS256"}
    private, jwk = rsa_key("k1")
    provider.keys = [weak_jwk, jwk]
    keys = JwksKeys(provider.url, refresh_s=3600, min_refetch_s=3600)
    assert await keys.refresh()
    with pytest.warns(InsecureKeyLengthWarning):
        forged = token(weak, "weak")
    with pytest.raises(AuthenticationError, match="does not hold"):
        verify_jwt(forged, settings(keys))
    assert "1024 bits" in caplog.text
    assert verify_jwt(token(private, "k1"), settings(keys)).tenant == "bank"
    with pytest.raises(AuthenticationError) as e:  # a kid of any length is quoted 100 characters at most
        verify_jwt(token(private, "../../etc/passwd' OR 1=1--" + "A" * 5000), settings(keys))
    assert len(str(e.value)) < 300
