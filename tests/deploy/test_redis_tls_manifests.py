"""The shipped Redis serves TLS only, its certificate from the Secret aigrid-redis-tls, and every Redis URL of the
gateway's spec is rediss:// checked against that Secret's ca.crt, mounted alone in the gateway (never Redis's
key). Then the manifests' own redis-server arguments, readiness probe and gateway URL, run against a REAL
redis-server with a CA and certificate made here (tests/test_redis_client_tls.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import pytest
import yaml
from redis.exceptions import ConnectionError as RedisConnectionError

from aigrid.redis_client import connect
from aigrid.spec.load import parse_spec
from tests.deploy.manifests import Doc, containers, deployment, grid_spec_text
from tests.test_redis_client_tls import make_pki, tls_redis

SECRET = "aigrid-redis-tls"
PASSWORD = "manifest-redis-pw-5c2e"
ENV = "AIGRID_TEST_MANIFEST_REDIS_PASSWORD"


def redis_args() -> list[str]:
    (redis,) = containers(deployment("aigrid-redis"))
    return list(redis["args"])


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def secret_mounts(dep: Doc, container: Doc) -> dict[str, Doc]:
    """mountPath -> the secret volume mounted there."""
    volumes = {v["name"]: v["secret"] for v in dep["spec"]["template"]["spec"]["volumes"] if "secret" in v}
    return {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", []) if m["name"] in volumes}


def redis_urls() -> list[str]:
    spec = parse_spec(yaml.safe_load(grid_spec_text()), "deploy/kubernetes/gateway.yaml:aigrid-grid")
    urls = [spec.gateway.shared_state_url, spec.security.quotas_redis_url, *spec.gateway.stores.values()]
    return [u for u in urls if u]


def test_redis_serves_tls_only_with_its_certificate_from_the_secret() -> None:
    """The shipped Redis served plain TCP (docs/security.md, Limits): the password and the state crossed the pod
    network in clear."""
    dep = deployment("aigrid-redis")
    (redis,) = containers(dep)
    args = redis_args()
    assert flag(args, "--port") == "0", "redis-server still has a plain TCP port"
    assert int(flag(args, "--tls-port")) in {p["containerPort"] for p in redis["ports"]}
    mounts = secret_mounts(dep, redis)
    for name in ("--tls-cert-file", "--tls-key-file", "--tls-ca-cert-file"):
        folder, _, file = flag(args, name).rpartition("/")
        assert mounts.get(folder, {}).get("secretName") == SECRET, f"{name}: not from the Secret {SECRET}"
        assert "items" not in mounts[folder] or file in {i["path"] for i in mounts[folder]["items"]}
    probe = " ".join(redis["readinessProbe"]["exec"]["command"])
    assert "--tls" in probe and f"--cacert {flag(args, '--tls-ca-cert-file')}" in probe, probe


def test_every_redis_url_of_the_gateway_is_tls_checked_against_the_mounted_ca_alone() -> None:
    dep = deployment("aigrid-gateway")
    (gateway,) = containers(dep)
    mounts = secret_mounts(dep, gateway)
    urls = redis_urls()
    assert len(urls) >= 2
    for url in urls:
        assert url.startswith("rediss://"), f"{url}: not TLS"
        (ca,) = parse_qs(urlsplit(url).query)["ssl_ca_certs"]
        folder, _, file = ca.rpartition("/")
        volume = mounts.get(folder, {})
        assert volume.get("secretName") == SECRET, f"{ca}: not the CA of the Secret {SECRET}"
        # only the CA: the gateway never gets Redis's private key
        assert volume.get("items") == [{"key": "ca.crt", "path": file}], volume


async def test_the_manifests_redis_and_gateway_url_work_against_a_real_tls_redis(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-server with the Deployment's own arguments (the Secret's folder, the password and the port
    replaced), its readiness probe, and the ConfigMap's URL (the Service's host replaced by 127.0.0.1)."""
    pki = make_pki(tmp_path)
    tls = tmp_path / "tls"
    tls.mkdir()
    for src, name in ((pki.server_cert, "tls.crt"), (pki.server_key, "tls.key"), (pki.ca, "ca.crt")):
        (tls / name).write_bytes(src.read_bytes())
    mount = flag(redis_args(), "--tls-ca-cert-file").rpartition("/")[0]
    monkeypatch.setenv(ENV, PASSWORD)

    def args(port: int) -> list[str]:
        out = [a.replace("$(REDIS_PASSWORD)", PASSWORD).replace(mount + "/", f"{tls}/") for a in redis_args()]
        out[out.index("--tls-port") + 1] = str(port)
        return out

    with tls_redis(tmp_path, args, pki.ca) as port:
        (redis,) = containers(deployment("aigrid-redis"))
        probe = [c.replace(mount + "/", f"{tls}/").replace("redis-cli ", f"redis-cli -p {port} ")
                 for c in redis["readinessProbe"]["exec"]["command"]]
        done = subprocess.run(probe, env={**os.environ, "REDISCLI_AUTH": PASSWORD}, timeout=10, check=False)
        assert done.returncode == 0, "the readiness probe does not get PONG over TLS"
        parts = urlsplit(redis_urls()[0])
        query = parts.query.replace(parse_qs(parts.query)["ssl_ca_certs"][0], str(pki.ca))
        assert await ping(urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}", query=query)))
        with pytest.raises(RedisConnectionError):  # no plain port: redis:// to it fails
            await ping(f"redis://127.0.0.1:{port}/0")


async def ping(url: str) -> bool:
    client = connect(url, ENV, socket_timeout=2.0, socket_connect_timeout=2.0)
    try:
        return bool(await client.ping())
    finally:
        await client.aclose()
