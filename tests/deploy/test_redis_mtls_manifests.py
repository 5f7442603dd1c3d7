"""deploy/kubernetes/optional/redis-mtls/: mutual TLS to Redis, as two strategic merge patches of the shipped
manifests. Both applied (merged here as kubectl merges them: containers and volumes by name, volume mounts by path,
other lists replaced) still match the Kubernetes schemas; the gateway's client certificate comes from a Secret of
its own, mounted with nothing of Redis's; and a REAL redis-server run with the patched arguments and probe refuses
the shipped URL and answers it with the documented query added (tests/test_redis_client_tls.py's PKI)."""

from __future__ import annotations

import copy
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import pytest
import yaml
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.deploy.manifests import OLDEST_SUPPORTED, Doc, containers, deployment
from tests.deploy.test_redis_tls_manifests import ENV, PASSWORD, flag, ping, redis_urls, secret_mounts
from tests.test_redis_client_tls import make_pki, tls_redis

kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (a dev dependency)")

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "deploy" / "kubernetes" / "optional" / "redis-mtls"
MERGE_KEYS = {"containers": "name", "volumes": "name", "volumeMounts": "mountPath"}
CLIENT_SECRET = "aigrid-redis-client-tls"


def merge(base: Any, patch: Any, key: str = "") -> Any:
    """Kubernetes' strategic merge for what the patches touch: maps merged, lists of containers and volumes by name
    and of mounts by path, any other list replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = merge(base[k], v, k) if k in base else v
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        by = MERGE_KEYS[key]
        out_list = [copy.deepcopy(item) for item in base]
        for item in patch:
            at = next((i for i, b in enumerate(out_list) if b[by] == item[by]), None)
            if at is None:
                out_list.append(item)
            else:
                out_list[at] = merge(out_list[at], item)
        return out_list
    return patch


def patched(name: str, patch_file: str) -> Doc:
    return dict(merge(deployment(name), yaml.safe_load((FOLDER / patch_file).read_text())))


def redis_args(redis: Doc, folder: Path) -> Callable[[int], list[str]]:
    """The patched Redis container's arguments for a local redis-server on `port` (tls_redis's `args`): its password
    filled in and the files of its mounted TLS folder read from `folder` instead."""
    mount = flag(redis["args"], "--tls-ca-cert-file").rpartition("/")[0]

    def args(port: int) -> list[str]:
        out = [a.replace("$(REDIS_PASSWORD)", PASSWORD).replace(mount + "/", f"{folder}/") for a in redis["args"]]
        out[out.index("--tls-port") + 1] = str(port)
        return out

    return args


def url_query() -> str:
    """The query gateway-patch.yaml says to add to every rediss:// URL."""
    (query,) = re.findall(r"^# URL: (\S+)$", (FOLDER / "gateway-patch.yaml").read_text(), re.M)
    return str(query)


@pytest.mark.parametrize("version", [OLDEST_SUPPORTED, kv.latest_version()])
@pytest.mark.parametrize(("name", "patch_file"), [("aigrid-gateway", "gateway-patch.yaml"),
                                                  ("aigrid-redis", "redis-patch.yaml")])
def test_each_patched_workload_still_matches_the_kubernetes_schema(name: str, patch_file: str, version: str) -> None:
    kv.validate(patched(name, patch_file), version, strict=True)


def test_the_gateway_s_certificate_and_key_come_from_a_secret_of_its_own_with_nothing_of_redis_s() -> None:
    dep = patched("aigrid-gateway", "gateway-patch.yaml")
    (gateway,) = containers(dep)
    mounts = secret_mounts(dep, gateway)
    shipped = secret_mounts(deployment("aigrid-gateway"), containers(deployment("aigrid-gateway"))[0])
    assert shipped.items() <= mounts.items()  # every shipped mount kept
    query = parse_qs(url_query().lstrip("&"))
    assert set(query) == {"ssl_certfile", "ssl_keyfile"}
    for (path,) in query.values():
        folder, _, file = path.rpartition("/")
        volume = mounts[folder]
        assert volume["secretName"] == CLIENT_SECRET and file in {i["path"] for i in volume["items"]}
        assert volume["defaultMode"] == 0o440
    assert {i["key"] for i in mounts[folder]["items"]} == {"tls.crt", "tls.key"}


def test_redis_s_patch_changes_only_the_client_certificate_flag() -> None:
    (shipped,) = containers(deployment("aigrid-redis"))
    (mtls,) = containers(patched("aigrid-redis", "redis-patch.yaml"))
    assert flag(shipped["args"], "--tls-auth-clients") == "no" and flag(mtls["args"], "--tls-auth-clients") == "yes"
    at = shipped["args"].index("--tls-auth-clients") + 1
    assert mtls["args"][:at] == shipped["args"][:at] and mtls["args"][at + 1:] == shipped["args"][at + 1:]
    assert {k: v for k, v in mtls.items() if k not in ("args", "readinessProbe")} == \
           {k: v for k, v in shipped.items() if k not in ("args", "readinessProbe")}


async def test_the_patched_redis_wants_the_certificate_and_the_url_with_the_documented_query_shows_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pki = make_pki(tmp_path)
    tls = tmp_path / "tls"
    tls.mkdir()
    for src, name in ((pki.server_cert, "tls.crt"), (pki.server_key, "tls.key"), (pki.ca, "ca.crt")):
        (tls / name).write_bytes(src.read_bytes())
    (redis,) = containers(patched("aigrid-redis", "redis-patch.yaml"))
    mount = flag(redis["args"], "--tls-ca-cert-file").rpartition("/")[0]
    monkeypatch.setenv(ENV, PASSWORD)
    with tls_redis(tmp_path, redis_args(redis, tls), pki.ca, (pki.client_cert, pki.client_key)) as port:
        probe = [c.replace(mount + "/", f"{tls}/").replace("redis-cli ", f"redis-cli -p {port} ")
                 for c in redis["readinessProbe"]["exec"]["command"]]
        done = subprocess.run(probe, env={**os.environ, "REDISCLI_AUTH": PASSWORD}, timeout=10, check=False)
        assert done.returncode == 0, "the patched readiness probe does not get PONG"
        parts = urlsplit(redis_urls()[0])
        shipped = urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}", query=parts.query.replace(
            parse_qs(parts.query)["ssl_ca_certs"][0], str(pki.ca))))
        with pytest.raises(RedisConnectionError):  # the shipped URL has no certificate to show
            await ping(shipped)
        query = url_query().replace("/run/secrets/aigrid-redis-client/tls.crt", str(pki.client_cert)) \
                           .replace("/run/secrets/aigrid-redis-client/tls.key", str(pki.client_key))
        assert await ping(shipped + query)
