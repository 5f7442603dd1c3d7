"""An engine behind https, for real (another region's gateway, a hosted provider, an engine behind a TLS
proxy): the ENGINE EMULATOR served over TLS on loopback with a certificate of a private authority. With the
endpoint's `tls_ca_file` the gateway streams from it; without it, the certificate is refused and the decision
says what to set; a CA file that cannot be used stops the start, naming the field. An endpoint's `proxy` (an
egress proxy) carries the TLS connection through CONNECT: a real forward proxy on loopback here, which may
require credentials (`proxy_auth_env`: read from the environment, sent to the proxy only)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import json
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aigrid.engines.emulator import EmulatorServer, bound_port
from aigrid.engines.emulator_model import EmulatorConfig
from aigrid.errors import ConfigError, SpecError
from aigrid.gateway.app import build_app, build_gateway
from aigrid.gateway.wiring import OriginRouter, build_engines, upstream
from aigrid.spec.load import parse_spec
from aigrid.spec.models import GridSpec

BODY = {"model": "emulated", "stream": True, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def private_authority(tmp: Path) -> tuple[Path, ssl.SSLContext]:
    """A CA (its PEM file, what tls_ca_file names) and a server context with a certificate it signed for
    127.0.0.1."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("aigrid test CA")).issuer_name(_name("aigrid test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(_name("engine")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.IPAddress(ipaddress.ip_address("::1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file, cert_file, key_file = tmp / "ca.pem", tmp / "engine.pem", tmp / "engine.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    return ca_file, server


@contextlib.asynccontextmanager
async def tls_emulator(context: ssl.SSLContext, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """The engine emulator behind TLS on `host`; yields its https base URL."""
    emulator = EmulatorServer(EmulatorConfig(decode_base_ms=5, prefill_base_ms=1))
    server = await asyncio.get_running_loop().create_server(emulator.protocol, host, 0, ssl=context)
    try:
        yield f"https://{'[' + host + ']' if ':' in host else host}:{bound_port(server)}"
    finally:
        server.close()


def grid(url: str, ca_file: Path | None, proxy: str | None = None, more: tuple[dict, ...] = (),
         auth_env: str | None = None) -> GridSpec:
    endpoint = {"id": "remote", "site": "fra", "model": "emulated", "engine": "openai", "url": url, "slots": 8,
                **({"tls_ca_file": str(ca_file)} if ca_file else {}), **({"proxy": proxy} if proxy else {}),
                **({"proxy_auth_env": auth_env} if auth_env else {})}
    return parse_spec({"name": "tls", "gateway": {"network": "none", "scrape_interval_s": 60},
                       "models": {"emulated": {"family": "emulated", "params_b": 1.0}},
                       "sites": {"fra": {"name": "Frankfurt", "lat": 50.1, "lon": 8.7, "jurisdiction": "EU"}},
                       "endpoints": [endpoint, *more], "security": {"audit": None}}, "tls")


@contextlib.asynccontextmanager
async def forward_proxy(credentials: str | None = None,
                        authorizations: list[str] | None = None) -> AsyncIterator[tuple[str, list[str]]]:
    """An HTTP forward proxy on 127.0.0.1 that answers CONNECT and pipes bytes both ways (what an egress proxy
    does for https); yields its URL and the targets it was asked to connect to. With `credentials`
    (user:password) a CONNECT without them in Proxy-Authorization: Basic is answered 407; each request's
    Proxy-Authorization (or "") goes into `authorizations`."""
    targets: list[str] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        given = next((line.split(":", 1)[1].strip() for line in lines[1:]
                      if line.lower().startswith("proxy-authorization:")), "")
        if authorizations is not None:
            authorizations.append(given)
        if credentials is not None and given != "Basic " + base64.b64encode(credentials.encode()).decode():
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic\r\n"
                         b"content-length: 0\r\n\r\n")
            writer.close()
            return
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            writer.close()
            return
        targets.append(target)
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", targets
    finally:
        server.close()


async def stream_through_gateway(spec: GridSpec) -> tuple[int, str, str]:
    """(status, the streamed text, the decision's record of the attempt)"""
    up = upstream(spec)
    try:
        gw = build_gateway(spec, build_engines(spec, {}, up))
        transport = httpx.ASGITransport(app=build_app(gw))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=30) as client:
            r = await client.post("/v1/chat/completions", json=BODY)
            text = r.text
            record = gw.decisions.get(r.headers["x-aigrid-decision"]) if "x-aigrid-decision" in r.headers else None
        return r.status_code, text, str(record.attempts if record is not None else "")
    finally:
        await up.aclose()


async def test_an_engine_with_a_private_authoritys_certificate_streams_with_tls_ca_file(tmp_path: Path) -> None:
    ca_file, context = private_authority(tmp_path)
    async with tls_emulator(context) as url:
        status, text, _ = await stream_through_gateway(grid(url, ca_file))
        assert status == 200, text
        assert text.count(" tok") == 5 and text.rstrip().endswith("data: [DONE]")

        up = upstream(grid(url, ca_file))  # the probes ride the same trust
        try:
            assert await build_engines(grid(url, ca_file), {}, up)["remote"].health() is True
        finally:
            await up.aclose()


async def test_without_tls_ca_file_the_certificate_is_refused_and_the_decision_says_what_to_set(
        tmp_path: Path) -> None:
    _, context = private_authority(tmp_path)
    async with tls_emulator(context) as url:
        status, text, attempts = await stream_through_gateway(grid(url, None))
    assert status in (502, 503), text
    assert "CERTIFICATE_VERIFY_FAILED" in attempts and "tls_ca_file" in attempts, attempts
    # the client hears why, not where: the engine's address stays in the decision and the log
    assert "CERTIFICATE_VERIFY_FAILED" in text and url.removeprefix("https://") not in text, text
    assert url.removeprefix("https://") in attempts


def test_a_ca_file_that_cannot_be_used_names_the_field(tmp_path: Path) -> None:
    url = "https://127.0.0.1:9443"
    with pytest.raises(ConfigError, match=r"endpoints\[0\]\.tls_ca_file: cannot read .*missing\.pem"):
        upstream(grid(url, tmp_path / "missing.pem"))
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"endpoints\[0\]\.tls_ca_file: .*junk\.pem holds no usable PEM"):
        upstream(grid(url, tmp_path / "junk.pem"))


def test_tls_ca_file_is_for_an_https_url(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="tls_ca_file is for an https url"):
        grid("http://127.0.0.1:9000", tmp_path / "ca.pem")


async def test_an_endpoints_proxy_carries_its_tls_connection_through_connect(tmp_path: Path) -> None:
    ca_file, context = private_authority(tmp_path)
    async with tls_emulator(context) as url, forward_proxy() as (proxy, targets):
        status, text, _ = await stream_through_gateway(grid(url, ca_file, proxy))
    assert status == 200, text
    assert text.count(" tok") == 5
    assert targets and set(targets) == {url.removeprefix("https://")}  # through the proxy, end to end TLS


async def test_a_proxy_that_requires_credentials_gets_them_from_proxy_auth_env(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca_file, context = private_authority(tmp_path)
    monkeypatch.setenv("EGRESS_AUTH", "gateway:pa:ss w0rd")  # a password may hold colons and spaces
    seen: list[str] = []
    async with tls_emulator(context) as url, forward_proxy("gateway:pa:ss w0rd", seen) as (proxy, targets):
        status, text, _ = await stream_through_gateway(grid(url, ca_file, proxy, auth_env="EGRESS_AUTH"))
        assert status == 200, text
        assert text.count(" tok") == 5 and targets == [url.removeprefix("https://")]
        # without the variable the proxy refuses the CONNECT: the attempt fails, naming no credentials
        status, text, attempts = await stream_through_gateway(grid(url, ca_file, proxy))
    assert status != 200 and "pa:ss" not in text and "pa:ss" not in attempts, (status, text, attempts)
    assert seen == ["Basic " + base64.b64encode(b"gateway:pa:ss w0rd").decode(), ""]
    assert len(targets) == 1  # the refused CONNECT reached nothing


def test_proxy_auth_env_unset_or_not_user_password_stops_the_start_naming_the_field(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from aigrid.gateway.server import secret_variables
    from aigrid.gateway.wiring import https_origins

    spec = grid("https://127.0.0.1:9443", None, "http://127.0.0.1:3128", auth_env="EGRESS_AUTH")
    for value in (None, "", "   ", "no-colon", ":password-without-user"):
        environ = {} if value is None else {"EGRESS_AUTH": value}
        with pytest.raises(ConfigError, match=r"endpoints\[0\]\.proxy_auth_env: .*EGRESS_AUTH") as caught:
            https_origins(spec, environ)
        assert "password-without" not in str(caught.value)  # the value is never quoted
    assert "EGRESS_AUTH" in secret_variables(spec)  # an embedded engine's process does not inherit it
    # a password's spaces are its own (a secret file's last line break is not); a user name's are dropped
    (way,) = https_origins(spec, {"EGRESS_AUTH": " gateway: s3cr3t \n"}).values()
    assert way.proxy is not None and way.proxy.auth == ("gateway", " s3cr3t ")
    own = grid("https://127.0.0.1:9443", None, "http://127.0.0.1:3128", auth_env="AIGRID_KEY_SECRET")
    with pytest.raises(ConfigError, match="one of the gateway's own secrets"):
        https_origins(own, {"AIGRID_KEY_SECRET": "u:p"})


def test_proxy_auth_env_needs_a_proxy_without_credentials_of_its_own() -> None:
    with pytest.raises(SpecError, match="proxy_auth_env is for a proxy"):
        grid("https://127.0.0.1:9000", None, auth_env="EGRESS_AUTH")
    with pytest.raises(SpecError, match="keep one") as caught:
        grid("https://127.0.0.1:9000", None, "http://egress:s3cr3t@proxy.internal:3128", auth_env="EGRESS_AUTH")
    assert "s3cr3t" not in str(caught.value)


def test_two_endpoints_at_one_origin_must_be_reached_one_way(tmp_path: Path) -> None:
    ca_file, _ = private_authority(tmp_path)
    url = "https://127.0.0.1:9443"
    twin = {"id": "twin", "site": "fra", "model": "emulated", "engine": "openai", "url": url + "/other",
            "tls_ca_file": str(ca_file), "proxy": "http://127.0.0.1:3128"}
    with pytest.raises(ConfigError, match=r"endpoints\[1\]: tls_ca_file, proxy and proxy_auth_env differ from endpoints\[0\]'s"):
        upstream(grid(url, ca_file, more=(twin,)))


def test_a_proxy_is_for_an_https_url_and_is_itself_a_url() -> None:
    with pytest.raises(SpecError, match="proxy is for an https url"):
        grid("http://127.0.0.1:9000", None, "http://127.0.0.1:3128")
    with pytest.raises(SpecError, match=r"endpoints\[0\]\.proxy"):
        grid("https://127.0.0.1:9000", None, "proxy.internal:3128")


async def test_an_ipv6_engine_with_its_own_authority_streams(tmp_path: Path) -> None:
    ca_file, context = private_authority(tmp_path)
    try:
        socket.socket(socket.AF_INET6).close()
        async with tls_emulator(context, "::1") as url:
            status, text, _ = await stream_through_gateway(grid(url, ca_file))
    except OSError as e:  # no IPv6 loopback on this machine
        pytest.skip(f"no ::1 here: {e}")
    assert status == 200, text
    assert text.count(" tok") == 5


async def test_the_public_authorities_are_read_once_per_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    """A TLS context reads the whole CA bundle (~20 ms of CPU, at every gateway start): the public https transport
    and the client's own default transport, which no request reaches (both schemes are mounted), share one."""
    made: list[ssl.SSLContext] = []
    real = ssl.create_default_context

    def counted(*a: object, **k: object) -> ssl.SSLContext:
        made.append(real(*a, **k))  # type: ignore[arg-type]
        return made[-1]

    monkeypatch.setattr(ssl, "create_default_context", counted)
    up = upstream()
    try:
        assert len(made) == 1
    finally:
        await up.aclose()


async def test_an_origin_on_the_default_port_does_not_claim_the_hosts_other_ports() -> None:
    """httpx's mount pattern for https://host:443 matched the host at every port: an endpoint at
    https://h:8443 with nothing set went through the 443 endpoint's authority and proxy."""
    seen: list[str] = []

    class Named(httpx.AsyncBaseTransport):
        def __init__(self, name: str) -> None:
            self.name = name

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(self.name)
            return httpx.Response(200)

    router = OriginRouter(Named("public"), {("vllm.internal", 443): Named("internal CA")})
    async with httpx.AsyncClient(transport=router) as client:
        for url in ("https://vllm.internal/health", "https://vllm.internal:443/x", "https://VLLM.internal/y",
                    "https://vllm.internal:8443/health", "https://other.internal/health"):
            await client.get(url)
    assert seen == ["internal CA", "internal CA", "internal CA", "public", "public"]


def test_an_endpoint_that_says_nothing_at_an_origin_another_configures_is_refused(tmp_path: Path) -> None:
    ca_file, _ = private_authority(tmp_path)
    bare = {"id": "bare", "site": "fra", "model": "emulated", "engine": "openai",
            "url": "https://127.0.0.1:9443/other"}
    with pytest.raises(ConfigError, match=r"endpoints\[1\]: tls_ca_file, proxy and proxy_auth_env differ from endpoints\[0\]'s"):
        upstream(grid("https://127.0.0.1:9443", ca_file, more=(bare,)))


def test_a_proxys_password_is_not_quoted_in_a_spec_error() -> None:
    with pytest.raises(SpecError) as caught:
        grid("https://127.0.0.1:9000", None, "http://egress:s3cr3t@proxy.internal:99999")
    assert "s3cr3t" not in str(caught.value) and "egress:***@proxy.internal:99999" in str(caught.value)


def test_a_relative_tls_ca_file_is_the_spec_files_neighbour(tmp_path: Path) -> None:
    from aigrid.spec.load import load_spec

    ca_file, _ = private_authority(tmp_path)
    raw = grid("https://127.0.0.1:9443", ca_file).model_dump(mode="json", exclude_none=True)
    raw["endpoints"][0]["tls_ca_file"] = "ca.pem"
    (tmp_path / "grid.yaml").write_text(json.dumps(raw))  # JSON is YAML
    assert load_spec(tmp_path / "grid.yaml").endpoints[0].tls_ca_file == str(tmp_path / "ca.pem")
