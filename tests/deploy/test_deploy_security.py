"""deploy/ as a platform security review reads it (Pod Security "restricted", CIS Kubernetes 5.2/5.3, Docker best
practice), checked offline over the YAML and the Dockerfiles: every pod runs as a fixed non-root UID/GID with
no privilege escalation, no capabilities, seccomp RuntimeDefault, a read-only root filesystem and bounded
resources; the namespace enforces "restricted"; the network is deny-by-default with each pod's egress named;
images and pip packages are pinned to exact versions; every image has a non-root USER and a HEALTHCHECK."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from aigrid.spec.load import parse_spec
from tests.deploy.manifests import dockerfile_lines

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
DOCKER = ROOT / "deploy" / "docker"
Doc = dict[str, Any]

DOCS: list[Doc] = [d for p in sorted(KUBE.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
DEPLOYMENTS = [d for d in DOCS if d["kind"] in ("Deployment", "StatefulSet")]
POLICIES = [d for d in DOCS if d["kind"] == "NetworkPolicy"]
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}
"""The volume types Pod Security "restricted" admits (no hostPath, ...)."""
EXACT_TAG = re.compile(r"(@sha256:[0-9a-f]{64}|:v?\d+\.\d+\.\d+[\w.-]*|^debian:\d+\.\d+(-slim)?)$")
"""An image by digest, or by a tag that names a patch release (python:3.11-slim or redis:7.2 move under you;
Debian's point releases are 12.8)."""


def pod(dep: Doc) -> Doc:
    return dict(dep["spec"]["template"]["spec"])


def labels(dep: Doc) -> dict[str, str]:
    return dict(dep["spec"]["template"]["metadata"]["labels"])


def named(name: str) -> Doc:
    return next(d for d in DEPLOYMENTS if d["metadata"]["name"] == name)


def ids(docs: list[Doc]) -> list[str]:
    return [d["metadata"]["name"] for d in docs]


def test_the_namespace_enforces_pod_security_restricted() -> None:
    (ns,) = [d for d in DOCS if d["kind"] == "Namespace"]
    assert ns["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") == "restricted"


@pytest.mark.parametrize("dep", DEPLOYMENTS, ids=ids(DEPLOYMENTS))
def test_every_pod_meets_restricted_with_a_fixed_uid(dep: Doc) -> None:
    spec = pod(dep)
    name = dep["metadata"]["name"]
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(host, False), f"{name}: {host}"
    assert spec.get("automountServiceAccountToken") is False, name  # no pod here talks to the API server
    for vol in spec.get("volumes", []):
        assert set(vol) - {"name"} <= RESTRICTED_VOLUMES, f"{name}: volume {vol['name']}"
    pod_sc = spec.get("securityContext", {})
    for c in spec["containers"] + spec.get("initContainers", []):
        sc = {**pod_sc, **c.get("securityContext", {})}
        where = f"{name}/{c['name']}"
        assert sc.get("runAsNonRoot") is True, where
        assert isinstance(sc.get("runAsUser"), int) and sc["runAsUser"] > 0, f"{where}: no fixed UID"
        assert isinstance(sc.get("runAsGroup"), int) and sc["runAsGroup"] > 0, f"{where}: no fixed GID"
        assert sc.get("seccompProfile", {}).get("type") in ("RuntimeDefault", "Localhost"), where
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert not sc.get("privileged", False), where
        assert sc.get("capabilities", {}).get("drop") == ["ALL"] and not sc["capabilities"].get("add"), where
        assert sc.get("readOnlyRootFilesystem") is True, where
        assert all("hostPort" not in p for p in c.get("ports", [])), where
        res = c.get("resources", {})
        assert {"cpu", "memory"} <= set(res.get("requests", {})), f"{where}: requests"
        assert {"cpu", "memory"} <= set(res.get("limits", {})), f"{where}: limits"


def test_each_writable_mount_is_a_volume_the_process_writes() -> None:
    """The root filesystem is read-only: what a process writes goes to a named volume (the gateway's state:
    audit log, batches; the engines' caches; /tmp), and the spec and keys are mounted read-only."""
    (gateway,) = pod(named("aigrid-gateway"))["containers"]
    mounts = {m["mountPath"]: m for m in gateway["volumeMounts"]}
    assert not mounts["/var/lib/aigrid"].get("readOnly")  # WORKDIR: .aigrid/ audit log, batches
    assert mounts["/etc/aigrid"].get("readOnly") is True
    (vllm,) = pod(named("aigrid-site-fra-vllm"))["containers"]
    env = {e["name"]: e.get("value") for e in vllm["env"]}
    writable = {m["mountPath"] for m in vllm["volumeMounts"] if not m.get("readOnly")}
    # vLLM, torch and triton write under $HOME/.cache and /tmp: both on volumes, as the UID has no home
    assert env.get("HOME", "").startswith("/cache") and "/cache" in writable and "/tmp" in writable


def test_no_secret_is_literal_in_a_manifest() -> None:
    """A variable that names a key, token, secret or password comes from a Secret (secretKeyRef), never a value."""
    secretish = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.I)
    for dep in DEPLOYMENTS:
        for c in pod(dep)["containers"]:
            for e in c.get("env", []):
                if secretish.search(e["name"]):
                    assert "secretKeyRef" in e.get("valueFrom", {}), f"{dep['metadata']['name']}: {e['name']}"
    assert not [d for d in DOCS if d["kind"] == "Secret"], "a Secret object in deploy/ ships its value"


def test_the_gateway_answers_only_keys_and_its_secrets_come_from_secrets() -> None:
    """The shipped spec ran keyless (security.enforce off): any pod of the cluster, or anyone the Service is
    exposed to, used the models past quotas and read the dashboard's feed and /metrics. Now every request
    needs a key; the key-hashing secret comes from a Secret, and keys.json and the audit signing key from
    Secret volumes mounted read-only (files 0440, the pod's fsGroup), one signing key for every replica."""
    (cm,) = [d for d in DOCS if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "aigrid-grid"]
    sec = parse_spec(yaml.safe_load(cm["data"]["grid.yaml"])).security
    assert sec.enforce and sec.metrics == "operator"
    dep = named("aigrid-gateway")
    (gateway,) = pod(dep)["containers"]
    env = {e["name"]: e.get("valueFrom", {}) for e in gateway["env"]}
    assert "secretKeyRef" in env.get(sec.secret_env, {}), f"{sec.secret_env} not from a Secret"
    volumes = {v["name"]: v for v in pod(dep)["volumes"]}
    assert sec.audit is not None and sec.audit.signing_key is not None
    for path in (sec.keys_file, sec.audit.signing_key):
        (mount,) = [m for m in gateway["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
        secret = volumes[mount["name"]].get("secret")
        assert secret and mount.get("readOnly") is True, path
        assert secret.get("defaultMode", 0o644) & 0o007 == 0, f"{path}: readable by every user of the pod"
        assert not secret.get("optional"), path


def policies_for(dep: Doc) -> list[Doc]:
    return [p for p in POLICIES if p["spec"]["podSelector"].get("matchLabels", {}).items() <= labels(dep).items()]


def test_the_namespace_denies_all_traffic_by_default() -> None:
    deny = [p for p in POLICIES if p["spec"]["podSelector"] == {}
            and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    assert deny, "no default-deny NetworkPolicy (podSelector: {}, Ingress and Egress, no rules)"


def egress_rules(dep: Doc) -> list[Doc]:
    return [r for p in policies_for(dep) if "Egress" in p["spec"]["policyTypes"] for r in p["spec"].get("egress", [])]


def is_dns(rule: Doc) -> bool:
    return {p["port"] for p in rule.get("ports", [])} == {53} and all(
        peer.get("podSelector", {}).get("matchLabels", {}).get("k8s-app") == "kube-dns" for peer in rule["to"])


def test_every_egress_rule_names_its_peers_and_ports() -> None:
    """No allow-all egress: every rule says to whom and on which ports. An ipBlock (the internet: another
    region's gateway, Hugging Face) leaves out the private ranges and the cloud metadata address."""
    for dep in DEPLOYMENTS:
        for rule in egress_rules(dep):
            where = dep["metadata"]["name"]
            assert rule.get("to") and rule.get("ports"), f"{where}: an egress rule without peers or ports"
            for peer in rule["to"]:
                if "ipBlock" in peer:
                    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(
                        peer["ipBlock"].get("except", [])), where
                    assert {p["port"] for p in rule["ports"]} == {443}, where


def test_the_gateway_reaches_dns_redis_and_the_engines_and_redis_nothing() -> None:
    gateway = named("aigrid-gateway")
    rules = egress_rules(gateway)
    assert any(is_dns(r) for r in rules)
    targets = {(tuple(sorted(peer["podSelector"]["matchLabels"].items())), p["port"])
               for r in rules for peer in r["to"] if "podSelector" in peer and "namespaceSelector" not in peer
               for p in r["ports"]}
    assert ((("app.kubernetes.io/name", "aigrid-redis"),), 6379) in targets
    for dep in DEPLOYMENTS:
        if dep["metadata"]["name"].startswith("aigrid-site-"):
            (engine,) = pod(dep)["containers"]
            port = engine["ports"][0]["containerPort"]
            assert any(dict(sel).items() <= labels(dep).items() and p == port for sel, p in targets), \
                dep["metadata"]["name"]
    assert egress_rules(named("aigrid-redis")) == []  # Redis starts no connection
    assert egress_rules(named("aigrid-site-fra-llamacpp")) == []  # the GGUF is in the image


def test_redis_requires_the_password_of_a_secret_that_the_gateway_reads_through_its_spec() -> None:
    """Redis ran without a password, fenced by the network policy alone (a password could only be written in a
    Redis URL of the ConfigMap, in plain text). Now redis-server runs with --requirepass from a Secret, its
    readiness probe authenticates (REDISCLI_AUTH from the same Secret, never on a command line, and PONG is
    the check: redis-cli exits 0 on NOAUTH), and the gateway reads the same Secret through the variable its
    spec names (gateway.redis_password_env); no Redis URL of the spec carries a password."""
    (redis,) = pod(named("aigrid-redis"))["containers"]
    env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in redis.get("env", [])}
    args = redis["args"]
    assert "--requirepass" in args, "redis-server runs without a password"
    ref = args[args.index("--requirepass") + 1]
    assert re.fullmatch(r"\$\((\w+)\)", ref), f"--requirepass {ref!r}: not a variable (from a Secret)"
    secret = env.get(ref[2:-1])
    assert secret, f"{ref} does not come from a Secret"
    assert env.get("REDISCLI_AUTH") == secret, "the readiness probe does not authenticate with the same Secret"
    probe = " ".join(redis["readinessProbe"]["exec"]["command"])
    assert "redis-cli" in probe and "PONG" in probe and "-a " not in probe, probe
    (cm,) = [d for d in DOCS if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "aigrid-grid"]
    spec = parse_spec(yaml.safe_load(cm["data"]["grid.yaml"]))
    variable = spec.gateway.redis_password_env
    assert variable, "gateway.redis_password_env is not set: the gateway connects without the password"
    (gateway,) = pod(named("aigrid-gateway"))["containers"]
    gateway_env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in gateway["env"]}
    assert gateway_env.get(variable) == secret, f"{variable}: not the Secret Redis requires"
    urls = [spec.gateway.shared_state_url, spec.security.quotas_redis_url, *spec.gateway.stores.values()]
    assert all(urlsplit(u).password is None for u in urls if u), "a password in a Redis URL of the ConfigMap"


def test_the_redis_of_the_quota_counters_evicts_nothing() -> None:
    """Every quota counter has a TTL (quotas_redis.py: its window's end plus a minute), so an evicting policy,
    allkeys-lru or volatile-lru alike, may pick a counter a tenant spent and left idle: its minute begins again at 0.
    Measured with redis-server 3mb and RedisQuotaBackend (a scratch script): tenant-a refused at 10 of 10, then other
    tenants' charges filled the memory and tenant-a was admitted 10 more in the same minute under both; under
    noeviction the others' charges were refused (OOM: the gateway's 503) and tenant-a stayed at 10."""
    (cm,) = [d for d in DOCS if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "aigrid-grid"]
    spec = parse_spec(yaml.safe_load(cm["data"]["grid.yaml"]))
    assert spec.security.quotas_redis_url is not None
    assert str(urlsplit(spec.security.quotas_redis_url).hostname).startswith("aigrid-redis.")  # this manifest's Redis
    (redis,) = pod(named("aigrid-redis"))["containers"]
    args = redis["args"]
    policy = args[args.index("--maxmemory-policy") + 1] if "--maxmemory-policy" in args else "noeviction"
    assert policy == "noeviction", policy


def test_the_gateway_takes_ingress_on_its_api_port_only() -> None:
    gateway = named("aigrid-gateway")
    rules = [r for p in policies_for(gateway) if "Ingress" in p["spec"]["policyTypes"]
             for r in p["spec"].get("ingress", [])]
    assert rules and all({p["port"] for p in r["ports"]} == {"http"} for r in rules)


def test_every_image_is_pinned_to_a_release() -> None:
    images = [c["image"] for d in DEPLOYMENTS for c in pod(d)["containers"]]
    images += [ln.split()[1] for p in DOCKERFILES for ln in dockerfile_lines(p) if ln.startswith("FROM ")]
    loose = [i for i in images if not EXACT_TAG.search(i)]
    assert not loose, f"not pinned to a patch release or digest: {loose}"


FIXED_IN = {"redis": ((7, 2, 11), "CVE-2025-49844, the Lua use-after-free any client that may run EVAL reaches")}
"""Images whose pin must carry a published fix (behind Redis's password, still any pod that holds it may EVAL)."""


def test_pinned_images_carry_the_known_fixes() -> None:
    images = [c["image"] for d in DEPLOYMENTS for c in pod(d)["containers"]]
    for name, (least, why) in FIXED_IN.items():
        (image,) = [i for i in images if i.split(":")[0] == name]
        found = re.search(r":(\d+)\.(\d+)\.(\d+)", image)
        assert found and tuple(map(int, found.groups())) >= least, f"{image}: older than {least} ({why})"


@pytest.mark.parametrize("path", DOCKERFILES, ids=[p.name for p in DOCKERFILES])
def test_dockerfile_pins_pip_runs_as_a_fixed_user_and_checks_health(path: Path) -> None:
    lines = dockerfile_lines(path)
    final = lines[max(i for i, ln in enumerate(lines) if ln.startswith("FROM ")):]
    users = [ln.split()[1] for ln in final if ln.startswith("USER ")]
    # uid:gid, both numeric and the manifests' (useradd --system alone picks a system group, 999 or so)
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), f"{path.name}: no numeric non-root USER uid:gid"
    assert any(ln.startswith("HEALTHCHECK ") for ln in final), f"{path.name}: no HEALTHCHECK"
    for ln in lines:
        for cmd in re.findall(r"pip (?:install|download)([^&;]*)", ln):
            names = [a.strip("'\"") for a in cmd.split() if not a.startswith(("-", "/"))]
            assert all("==" in n for n in names), f"{path.name}: unpinned pip package in {cmd.strip()!r}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=[p.name for p in DOCKERFILES])
def test_the_ignore_file_keeps_secrets_git_and_tests_out(path: Path) -> None:
    """Each ignore file starts from `*` (nothing) and lets through only named paths: .git, tests, .aigrid (keys,
    audit log), .env files and keys are never among them."""
    rules = [ln.strip() for ln in Path(f"{path}.dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert rules[0] == "*"
    allowed = [r[1:] for r in rules if r.startswith("!")]
    for bad in (".git", "tests", ".aigrid", ".env", ".venv"):
        assert not any(a.rstrip("/") == bad or a.startswith(bad + "/") for a in allowed), (path.name, bad)
    assert {"**/.aigrid", "**/*.pem", "**/.env"} <= set(rules), f"{path.name}: a let-through folder may carry keys"


def test_the_gateway_image_installs_the_dependency_versions_the_tests_ran() -> None:
    """`pip wheel .` resolved aigrid's dependencies (pydantic>=2.7, starlette>=0.37, cryptography>=42, ...) to
    whatever was newest on the day of the build: two builds of one commit could differ, and a release of any of
    them went into the image untested. The build installs under the constraints file the tests ran with
    (deploy/docker/gateway-constraints.txt, `pip freeze` of the virtualenv), which pins every runtime
    dependency."""
    lines = dockerfile_lines(DOCKER / "gateway.Dockerfile")
    (wheel,) = [ln for ln in lines if "pip wheel" in ln]
    constraints = DOCKER / "gateway-constraints.txt"
    assert f"-c {constraints.relative_to(ROOT)}" in wheel, wheel
    pins = {re.split(r"[=\[]", ln)[0].lower().replace("_", "-"): ln
            for ln in constraints.read_text().splitlines() if ln and not ln.startswith("#")}
    assert all("==" in ln for ln in pins.values())
    project = (ROOT / "pyproject.toml").read_text()
    deps = re.search(r"^dependencies = \[(.*?)^\]", project, re.S | re.M)
    assert deps is not None
    names = [re.match(r"[A-Za-z0-9_.-]+", d).group(0).lower().replace("_", "-")  # type: ignore[union-attr]
             for d in re.findall(r'"([^"]+)"', deps.group(1))]
    assert names and not [n for n in names if n not in pins], [n for n in names if n not in pins]


def test_the_gateways_audit_log_outlives_its_pod() -> None:
    """The audit log (security.audit.path, under the WORKDIR /var/lib/aigrid) and the batches were on an
    emptyDir: a pod rescheduled, evicted or rolled by an update took its whole audit trail with it, and the
    next pod began a new chain that could not show anything was missing. Each gateway replica keeps its
    /var/lib/aigrid on a volume claim of its own (a StatefulSet), retained when the set scales down or goes."""
    gw = named("aigrid-gateway")
    assert gw["kind"] == "StatefulSet"
    (gateway,) = pod(gw)["containers"]
    (work,) = [m for m in gateway["volumeMounts"] if m["mountPath"] == "/var/lib/aigrid"]
    claims = {c["metadata"]["name"]: c for c in gw["spec"].get("volumeClaimTemplates", [])}
    assert work["name"] in claims and work["name"] not in {v["name"] for v in pod(gw).get("volumes", [])}
    retention = gw["spec"].get("persistentVolumeClaimRetentionPolicy", {})
    assert retention.get("whenScaled", "Retain") == "Retain" and retention.get("whenDeleted", "Retain") == "Retain"
