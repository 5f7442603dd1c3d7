"""docs/deploy.md's commands for mutual TLS to Redis, run: the CA and Redis's certificate of the one-region recipe,
the gateway's client certificate and its Secret ('Redis over TLS'). A REAL redis-server with the patched arguments
(deploy/kubernetes/optional/redis-mtls/) and the docs' certificates answers the URL with the documented query and
the docs' client certificate (tests/deploy/test_redis_mtls_manifests.py does the same with test-made ones)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import pytest

from tests.deploy.manifests import containers
from tests.deploy.test_redis_mtls_manifests import CLIENT_SECRET, patched, redis_args, url_query
from tests.deploy.test_redis_tls_manifests import ENV, PASSWORD, ping, redis_urls
from tests.test_redis_client_tls import tls_redis

ROOT = Path(__file__).resolve().parents[2]


def bash_blocks() -> list[list[str]]:
    """docs/deploy.md's bash blocks (list items' too), each as its command lines, continuations joined."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    blocks = []
    for body in re.findall(r"^ *```bash\n(.*?)^ *```", text, re.S | re.M):
        blocks.append([c.strip() for c in re.sub(r"\\\n\s*", " ", body).splitlines() if c.strip()])
    return blocks


def client_secret_commands() -> tuple[list[str], list[str]]:
    """The openssl commands that make the CA and Redis's certificate, and the client block's commands."""
    (client,) = [b for b in bash_blocks() if any(CLIENT_SECRET in c for c in b)]
    (recipe,) = [b for b in bash_blocks() if any("secret generic aigrid-redis-tls" in c for c in b)]
    return [c for c in recipe if c.startswith(("openssl req", "openssl x509"))], client


def test_the_docs_client_secret_holds_the_files_the_patch_mounts() -> None:
    _, client = client_secret_commands()
    (create,) = [shlex.split(c.partition("&&")[0]) for c in client if c.startswith("kubectl")]
    assert create[:6] == ["kubectl", "-n", "aigrid", "create", "secret", "tls"]  # keys tls.crt and tls.key
    assert create[6] == CLIENT_SECRET
    files = dict(a.removeprefix("--").split("=", 1) for a in create[7:])
    assert files == {"cert": "client.crt", "key": "client.key"}


async def test_the_docs_certificates_open_the_patched_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not shutil.which("openssl") or not shutil.which("bash"):
        pytest.skip("openssl and bash run the docs' commands")
    recipe, client = client_secret_commands()
    for command in recipe + [c for c in client if c.startswith("openssl")]:
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=30,
                              check=False)
        assert done.returncode == 0, (command, done.stderr)
    (redis,) = containers(patched("aigrid-redis", "redis-patch.yaml"))
    monkeypatch.setenv(ENV, PASSWORD)
    ca, cert, key = tmp_path / "ca.crt", tmp_path / "client.crt", tmp_path / "client.key"
    with tls_redis(tmp_path, redis_args(redis, tmp_path), ca, (cert, key)) as port:
        parts = urlsplit(redis_urls()[0])
        shipped = urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}", query=parts.query.replace(
            parse_qs(parts.query)["ssl_ca_certs"][0], str(ca))))
        query = url_query().replace("/run/secrets/aigrid-redis-client/tls.crt", str(cert)) \
                           .replace("/run/secrets/aigrid-redis-client/tls.key", str(key))
        assert await ping(shipped + query)
