"""Redis over TLS (redis_client.py): every Redis of a gateway (shared state, abuse relay, quota counters, stores)
over rediss:// against a REAL redis-server that serves TLS only (--port 0 --tls-port P), its certificate signed
by a CA made here with `cryptography`; the server checked against the CA the URL's ssl_ca_certs names. A server
signed by another CA, or checked against the system's CAs, is refused; a plain redis:// URL to the TLS port
fails; a missing or non-PEM CA file stops the gateway naming the parameter; ssl_cert_reqs=none is refused."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError

from aigrid.errors import ConfigError
from aigrid.gateway.app import build_app
from aigrid.redis_client import TLS_HINT, connect
from aigrid.security.quotas_redis import RedisQuotaBackend
from aigrid.spec.models import GridSpec
from tests.gateway.conftest import spec_in
from tests.gateway.test_redis_password import build, close
from tests.security.redis_server import redis_server

PASSWORD = "tls-Redis-pw-41a9"
ENV = "AIGRID_TEST_REDIS_TLS_PASSWORD"
IN_EU = {"x-aigrid-client-location": "Tokyo", "x-aigrid-residency": "EU"}


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA the gateway is told to trust
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path  # another CA, which signed nothing of the server's


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(folder: Path, stem: str, subject: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
           *, server: bool = False) -> tuple[x509.Name, ec.EllipticCurvePrivateKey]:
    """A key and certificate written as folder/stem.crt and .key: a CA (issuer None, self-signed) or a leaf."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    signer_name, signer_key = issuer or (_name(subject), key)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(signer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    cert = builder.sign(signer_key, hashes.SHA256())
    (folder / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{stem}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    return _name(subject), key


def make_pki(folder: Path) -> Pki:
    """A CA, a server certificate it signed (for localhost and 127.0.0.1), a client one, and another CA."""
    ca = _issue(folder, "ca", "aigrid test CA", None)
    _issue(folder, "server", "redis", ca, server=True)
    _issue(folder, "client", "aigrid-gateway", ca)
    _issue(folder, "rogue", "someone else's CA", None)
    return Pki(folder / "ca.crt", folder / "server.crt", folder / "server.key", folder / "client.crt",
               folder / "client.key", folder / "rogue.crt")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def answers_tls(ca: Path, client: tuple[Path, Path] | None = None) -> Callable[[int], bool]:
    """redis_server's readiness check for a TLS-only Redis: a TLS handshake with it (checked against `ca`, with
    the `client` certificate and key if given), then PING, gets an answer."""
    context = ssl.create_default_context(cafile=str(ca))
    if client:
        context.load_cert_chain(str(client[0]), str(client[1]))

    def ready(port: int) -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith((b"-NOAUTH", b"+PONG"))

    return ready


def tls_redis(workdir: Path, args: Callable[[int], list[str]], ca: Path,
              client: tuple[Path, Path] | None = None) -> AbstractContextManager[int]:
    """A real redis-server started with `args(port)` on a free 127.0.0.1 port, stopped on the way out."""
    return redis_server(workdir, args=args, ready=answers_tls(ca, client))


def _tls_server(tmp_path_factory: pytest.TempPathFactory, pki: Pki, auth_clients: str) -> Iterator[int]:
    def args(port: int) -> list[str]:
        return ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(pki.server_cert),
                "--tls-key-file", str(pki.server_key), "--tls-ca-cert-file", str(pki.ca),
                "--tls-auth-clients", auth_clients, "--requirepass", PASSWORD]

    with tls_redis(tmp_path_factory.mktemp("redis-tls"), args, pki.ca, (pki.client_cert, pki.client_key)) as port:
        yield port


@pytest.fixture(scope="module")
def tls_port(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[int]:
    """A TLS-only Redis that does not ask for a client certificate."""
    yield from _tls_server(tmp_path_factory, pki, "no")


@pytest.fixture(scope="module")
def mtls_port(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[int]:
    """A TLS-only Redis that wants a client certificate signed by the CA (redis-server's default)."""
    yield from _tls_server(tmp_path_factory, pki, "yes")


def tls_url(port: int, ca: Path, extra: str = "") -> str:
    return f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}{extra}"


def grid(tmp: Path, url: str) -> GridSpec:
    """The demo grid with every Redis the gateway has at `url`, validated as a spec file is."""
    tmp.mkdir(parents=True, exist_ok=True)
    raw = spec_in(tmp).model_dump(mode="json", exclude_unset=True)
    raw["gateway"].update(shared_state_url=url, stores={"EU": url, "unbound": url}, redis_password_env=ENV)
    raw["security"].update(quotas_redis_url=url, abuse={"action": "flag"})
    return GridSpec.model_validate(raw)


async def test_every_redis_of_the_gateway_works_over_rediss_checked_against_the_named_ca(
        tmp_path: Path, pki: Pki, tls_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared state and the abuse relay over it, the quota counters and the EU store, each writing over TLS
    what a direct TLS client then reads."""
    monkeypatch.setenv(ENV, PASSWORD)
    direct = redis.Redis(port=tls_port, password=PASSWORD, ssl=True, ssl_ca_certs=str(pki.ca))
    direct.set("tls:probe", 7)
    gw = build(grid(tmp_path, tls_url(tls_port, pki.ca)))
    try:
        sync, relay, backend = gw.sync, gw.guard._abuse_relay, gw.guard.quotas.backend
        assert sync is not None and relay is not None and isinstance(backend, RedisQuotaBackend)
        assert await sync.sync_once() and await relay.relay([]) == [] and await backend.value("tls:probe") == 7
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            r = await c.post("/v1/responses", json={"model": "smollm2-135m", "input": "hi"}, headers=IN_EU)
        assert r.status_code == 200, r.text
        written = {k.decode() for k in direct.keys("aigrid:demo:*")}
        assert {"aigrid:demo:gateways", f"aigrid:demo:resp:EU:{{default}}:{r.json()['id']}"} <= written, written
    finally:
        await close(gw)
        direct.close()


@pytest.mark.parametrize("which", ["rogue", "system"])
async def test_a_server_not_signed_by_the_named_ca_is_refused(pki: Pki, tls_port: int, which: str) -> None:
    """Named another CA, or none (the system's CAs, redis-py's default ssl_cert_reqs=required): the handshake
    fails; nothing is sent over plain TCP instead (the server has no plain port, and the client tries no other)."""
    url = tls_url(tls_port, pki.rogue_ca) if which == "rogue" else f"rediss://127.0.0.1:{tls_port}/0"
    client = connect(url, None, socket_timeout=2.0, socket_connect_timeout=2.0)
    try:
        with pytest.raises(RedisConnectionError, match="certificate verify failed"):
            await client.ping()
    finally:
        await client.aclose()


@pytest.mark.parametrize("auth", [f":{PASSWORD}@", ""])
@pytest.mark.parametrize("pool_size", [None, 2])
async def test_a_plain_redis_url_to_the_tls_port_fails_saying_use_rediss(tls_port: int, auth: str,
                                                                          pool_size: int | None) -> None:
    """redis-py's bare "Connection closed by server" / "reset by peer" (the first exchange: AUTH with a password,
    else the PING) comes with the hint; once, on every attempt."""
    client = connect(f"redis://{auth}127.0.0.1:{tls_port}/0", None, pool_size=pool_size, socket_timeout=2.0,
                     socket_connect_timeout=2.0)
    try:
        for _ in range(2):
            with pytest.raises(RedisConnectionError, match="(Connection closed by server|reset by peer).*") as e:
                await client.ping()
            assert str(e.value).count(TLS_HINT) == 1, e.value
    finally:
        await client.aclose()


async def test_a_client_certificate_from_the_url_is_sent_mutual_tls(pki: Pki, mtls_port: int) -> None:
    without = connect(tls_url(mtls_port, pki.ca, f"&password={PASSWORD}"), None, socket_timeout=2.0,
                      socket_connect_timeout=2.0)
    with_cert = connect(tls_url(mtls_port, pki.ca, f"&ssl_certfile={pki.client_cert}&ssl_keyfile={pki.client_key}"),
                        None, password=PASSWORD, socket_timeout=2.0, socket_connect_timeout=2.0)
    try:
        with pytest.raises(RedisConnectionError):  # the server wants a certificate the client does not have
            await without.ping()
        assert await with_cert.ping()
    finally:
        await without.aclose()
        await with_cert.aclose()


def test_a_ca_file_that_cannot_be_used_stops_the_gateway_naming_the_parameter(
        tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, PASSWORD)
    missing = tmp_path / "nope" / "ca.crt"
    with pytest.raises(ConfigError, match=f"gateway.shared_state_url.*ssl_ca_certs={missing} cannot be used"):
        build(grid(tmp_path / "a", tls_url(6379, missing)))  # before any connection is tried
    not_pem = tmp_path / "not-pem.crt"
    not_pem.write_text("hello\n")
    with pytest.raises(ConfigError, match="ssl_ca_certs=.*not-pem.crt cannot be used"):
        connect(tls_url(6379, not_pem), None)
    with pytest.raises(ConfigError, match="ssl_certfile=.*client.crt cannot be used"):  # another's key
        connect(tls_url(6379, pki.ca, f"&ssl_certfile={pki.client_cert}&ssl_keyfile={pki.server_key}"), None)


@pytest.mark.parametrize(("query", "message"), [
    ("?ssl_cert_reqs=none", "ssl_cert_reqs=none would accept a server whose certificate is not checked"),
    ("?ssl_cert_reqs=optional", "ssl_cert_reqs=optional would accept"),
    ("?ssl_ca_certs=ca.crt", "ssl_ca_certs='ca.crt' must be an absolute path"),
    ("?ssl_ca_certs=/ca.crt&ssl_certfile=/c.crt", "ssl_certfile and ssl_keyfile .* go together"),
    # redis-py passes any ssl_* query parameter to its SSL context: these turned checks off before (Review R3)
    ("?ssl_ca_certs=/ca.crt&ssl_check_hostname=false", "ssl_check_hostname=false would accept a certificate "
                                                       "issued for another host"),
    ("?ssl_check_hostname=0", "ssl_check_hostname=0 would accept"),
    ("?ssl_exclude_verify_flags=VERIFY_X509_STRICT", "ssl_exclude_verify_flags: not accepted"),
    ("?ssl_min_version=2&ssl_ciphers=NULL", "ssl_ciphers, ssl_min_version: not accepted"),
])
def test_tls_settings_that_do_not_check_the_server_or_cannot_be_read_are_refused(query: str, message: str) -> None:
    for field in ("shared_state_url", "quotas_redis_url", "stores"):
        raw = spec_in(Path("/nonexistent")).model_dump(mode="json", exclude_unset=True)
        url = f"rediss://redis:6379/0{query}"
        if field == "quotas_redis_url":
            raw["security"]["quotas_redis_url"] = url
        else:
            raw["gateway"][field] = {"unbound": url} if field == "stores" else url
        with pytest.raises(ValidationError, match=message):
            GridSpec.model_validate(raw)


def test_tls_settings_on_a_plain_url_are_refused_and_rediss_with_a_ca_passes() -> None:
    raw = spec_in(Path("/nonexistent")).model_dump(mode="json", exclude_unset=True)
    raw["gateway"]["shared_state_url"] = "redis://redis:6379/0?ssl_ca_certs=/ca.crt"
    with pytest.raises(ValidationError, match="ssl_ca_certs are TLS settings, for a rediss:// URL"):
        GridSpec.model_validate(raw)
    url = "rediss://aigrid@redis:6379/0?ssl_ca_certs=/etc/aigrid/redis-tls/ca.crt&ssl_cert_reqs=required"
    raw["gateway"]["shared_state_url"] = url
    assert GridSpec.model_validate(raw).gateway.shared_state_url == url
    url += "&ssl_check_hostname=true"  # the default, said
    raw["gateway"]["shared_state_url"] = url
    assert GridSpec.model_validate(raw).gateway.shared_state_url == url
