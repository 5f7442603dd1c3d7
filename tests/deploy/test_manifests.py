"""deploy/, checked offline: every Kubernetes manifest against the official JSON schemas (kubernetes-validate
ships them), then what a schema cannot see: Services that select their pods, probes on the right paths,
Prometheus annotations on real ports, the grid spec in the ConfigMap (a valid aigrid spec whose endpoints
are the manifests' Services), and Dockerfiles that copy files that exist and run the flags the engine has."""

from __future__ import annotations

import math
import re
import shlex
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from aigrid.engines.llama_server import has_flag
from aigrid.engines.model_files import find_llama_server
from aigrid.errors import EngineBuildError
from aigrid.spec.load import parse_spec
from tests.deploy.manifests import (
    DOCKERFILES,
    DOCS,
    OLDEST_SUPPORTED,
    ROOT,
    Doc,
    containers,
    deployment,
    dockerfile_lines,
    grid_spec_text,
    of_kind,
    workloads,
)

kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (a dev dependency)")

def test_there_is_something_to_check() -> None:
    kinds = {doc["kind"] for _, doc in DOCS}
    assert {"Namespace", "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler"} <= kinds
    assert len(DOCKERFILES) == 2


@pytest.mark.parametrize("version", [OLDEST_SUPPORTED, kv.latest_version()])
@pytest.mark.parametrize(("path", "doc"), DOCS, ids=[f"{p.name}:{d['kind']}/{d['metadata']['name']}" for p, d in DOCS])
def test_manifest_matches_the_kubernetes_schema(path: Path, doc: Doc, version: str) -> None:
    try:
        kv.validate(doc, version, strict=True)  # strict: an unknown (misspelt) field fails too
    except kv.ValidationError as exc:
        pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']} at {list(exc.path)}: {exc.message}")


def test_the_validator_refuses_a_misspelt_field() -> None:
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"selectr": {"a": "b"}}}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, OLDEST_SUPPORTED, strict=True)


def test_every_service_selects_one_deployment_on_a_named_port() -> None:
    for svc in of_kind("Service"):
        selector = svc["spec"]["selector"]
        matches = [d for d in workloads()
                   if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matches) == 1, (svc["metadata"]["name"], [m["metadata"]["name"] for m in matches])
        port_names = {p["name"] for c in containers(matches[0]) for p in c["ports"]}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in port_names, (svc["metadata"]["name"], port)
    for dep in workloads():
        assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()


def test_probes_ask_the_gateway_and_the_engines_the_right_question() -> None:
    (gateway,) = containers(deployment("aigrid-gateway"))
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/livez"  # never restarted for its engines' sake
    for dep in workloads():
        if dep["metadata"]["name"].startswith("aigrid-site-"):
            (engine,) = containers(dep)
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert engine[probe]["httpGet"]["path"] == "/health", (dep["metadata"]["name"], probe)
    for dep in workloads():
        for c in containers(dep):
            assert "readinessProbe" in c and "livenessProbe" in c, dep["metadata"]["name"]


def test_a_busy_gpu_engine_stays_in_its_service() -> None:
    """vLLM answers /health late while saturated (its API server's event loop busy with the batch: deployments
    elsewhere report missed 1-2 s deadlines, and llm-d's benchmark raised its probes to 15 s). Its readiness probe gave up after 3 misses of 3 s, which took the site's only pod out of
    the Service, every request of the gateway then refused while the engine was busiest; liveness after 4 of 5 s
    restarted it (the weights loaded again). Each check now waits 10 s, and a minute of misses or more is needed."""
    (vllm,) = containers(deployment("aigrid-site-fra-vllm"))
    for name, at_least_s in (("readinessProbe", 60), ("livenessProbe", 120)):
        probe = vllm[name]
        assert probe.get("timeoutSeconds", 1) >= 10, (name, probe)
        assert probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3) >= at_least_s, (name, probe)


def keys_its_metrics(dep: Doc) -> bool:
    """A llama.cpp engine with a key: its /metrics needs the key too; the gateway's under security.metrics:
    operator needs an operator tenant's key."""
    if dep["metadata"]["name"] == "aigrid-gateway":
        return parse_spec(yaml.safe_load(grid_spec_text())).security.metrics == "operator"
    return any("LLAMA_API_KEY" in secret_env(c) for c in containers(dep))


def test_prometheus_scrapes_the_gateway_and_every_engine_on_a_real_port() -> None:
    """By annotation, except an engine whose /metrics needs its key: a shared annotation job given the key would
    send it to every annotated pod, so that engine carries none (a job of its own scrapes it)."""
    for dep in workloads():
        if dep["metadata"]["name"] == "aigrid-redis":
            continue
        if keys_its_metrics(dep):
            assert "prometheus.io/scrape" not in dep["spec"]["template"]["metadata"].get("annotations", {})
            continue
        ann = dep["spec"]["template"]["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/path"] == "/metrics"
        ports = {p["containerPort"] for c in containers(dep) for p in c["ports"]}
        assert int(ann["prometheus.io/port"]) in ports, dep["metadata"]["name"]


def test_the_vllm_site_gets_a_gpu_and_the_llamacpp_site_none() -> None:
    (vllm,) = containers(deployment("aigrid-site-fra-vllm"))
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert vllm["resources"]["requests"]["nvidia.com/gpu"] == "1"
    (llama,) = containers(deployment("aigrid-site-fra-llamacpp"))
    assert "nvidia.com/gpu" not in llama["resources"]["limits"]


def test_images_are_pinned() -> None:
    for dep in workloads():
        for c in containers(dep):
            assert re.search(r":[\w.-]+$", c["image"]) and not c["image"].endswith(":latest"), c["image"]


def test_the_hpa_scales_the_gateway() -> None:
    (hpa,) = of_kind("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", "aigrid-gateway")
    assert hpa["spec"]["minReplicas"] >= 2


def test_a_drain_takes_one_gateway_at_a_time_even_while_none_is_ready() -> None:
    """The PDB's budget at the HPA's bounds: `minAvailable: 1` allowed a drain to evict 9 of 10 gateways at once,
    the load of 10 on the one left. And the gateways are unready whenever they see no healthy engine (/healthz 503):
    under the default unhealthyPodEvictionPolicy (IfHealthyBudget) a budget not met refuses every eviction, so while
    the engines were down no node that runs a gateway could be drained."""
    (pdb,) = [p for p in of_kind("PodDisruptionBudget")
              if p["spec"]["selector"]["matchLabels"].items()
              <= deployment("aigrid-gateway")["spec"]["template"]["metadata"]["labels"].items()]
    (hpa,) = of_kind("HorizontalPodAutoscaler")
    spec = pdb["spec"]
    for replicas in (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]):
        allowed = spec["maxUnavailable"] if "maxUnavailable" in spec else replicas - spec["minAvailable"]
        assert allowed == 1, (replicas, spec)
    assert spec.get("unhealthyPodEvictionPolicy") == "AlwaysAllow", spec


def test_the_gateways_spread_over_nodes_as_well_as_zones() -> None:
    """A pod that names topologySpreadConstraints of its own gets none of the cluster's default ones (which spread
    over hostnames): with the zone alone, a cluster of one zone could put both replicas on one node, one node's
    failure then every gateway."""
    spec = deployment("aigrid-gateway")["spec"]["template"]["spec"]
    keys = {c["topologyKey"] for c in spec["topologySpreadConstraints"]
            if c["labelSelector"]["matchLabels"].items() <= deployment("aigrid-gateway")["spec"]["template"]["metadata"]["labels"].items()}
    assert {"topology.kubernetes.io/zone", "kubernetes.io/hostname"} <= keys, keys


def test_each_gateway_pod_runs_the_workers_its_cpu_request_pays_for() -> None:
    """Without --workers a gateway runs one worker per core it may use (aigrid.cores), and a pod without a CPU
    limit may use every core of its node: 32 workers on a 32-core node, in a pod of 1 GiB. Its args say how many."""
    (gateway,) = containers(deployment("aigrid-gateway"))
    args = gateway["args"]
    assert "--workers" in args, "the gateway's args do not pin --workers: one worker per node core"
    workers = int(args[args.index("--workers") + 1])
    cpu = str(gateway["resources"]["requests"]["cpu"])
    cores = int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    assert 1 <= workers <= max(1, math.ceil(cores))


def test_the_gateway_image_health_check_asks_only_whether_the_process_answers() -> None:
    """/livez: /metrics answers 401 to a check without a key under `security.metrics: operator`, and /healthz
    answers 503 while every engine is down; neither says the gateway process is unwell."""
    lines = dockerfile_lines(ROOT / "deploy" / "docker" / "gateway.Dockerfile")
    (check,) = [ln for ln in lines if ln.startswith("HEALTHCHECK ")]
    assert "/livez" in check and "/metrics" not in check


def test_the_pod_s_grace_outlasts_the_gateway_s_own_stop() -> None:
    """Kubernetes kills a pod terminationGracePeriodSeconds after its SIGTERM. The gateway's stop may take up to
    workers.reap_wait_s (grace, cut requests, drain, hub and MCP waits: 40 s for this grid since the twenty-seventh
    session); the manifest's 30 s would have killed a stop still draining batch lines or writing its last records."""
    from aigrid.gateway.workers import reap_wait_s
    spec = parse_spec(yaml.safe_load(grid_spec_text()), "deploy/kubernetes/gateway.yaml:aigrid-grid")
    grace = deployment("aigrid-gateway")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    (gateway,) = containers(deployment("aigrid-gateway"))
    hook_s = pre_stop_sleep_s(gateway)  # the grace counts from the hook's start, before the SIGTERM
    assert grace > hook_s + reap_wait_s(spec), (grace, hook_s, reap_wait_s(spec))


def pre_stop_sleep_s(container: Doc) -> float:
    """The seconds a container's preStop hook sleeps (`sleep N` or Kubernetes' own sleep action); 0 without one."""
    hook = container.get("lifecycle", {}).get("preStop")
    if hook is None:
        return 0.0
    if "sleep" in hook:
        return float(hook["sleep"]["seconds"])
    command = hook["exec"]["command"]
    assert command[0] in ("sleep", "/bin/sleep") and len(command) == 2, command
    return float(command[1])


def test_the_docs_give_the_manifest_s_stop_arithmetic() -> None:
    """docs/reliability.md ("Stopping cleanly") and docs/deploy.md say the pod's grace and its preStop hook's sleep:
    the same figures as the manifest (reliability.md still said 45 s after the hook raised the grace to 50)."""
    (gateway,) = containers(deployment("aigrid-gateway"))
    grace = deployment("aigrid-gateway")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    reliability = (ROOT / "docs" / "reliability.md").read_text()
    deploy = " ".join((ROOT / "docs" / "deploy.md").read_text().split())
    said = re.findall(r"`deploy/kubernetes/gateway\.yaml`: (\d+) s", reliability)
    assert said == [str(grace)], said
    assert re.findall(r"`terminationGracePeriodSeconds`, (\d+)", deploy) == [str(grace)]
    (hook,) = re.findall(r"preStop hook,? (?:which )?sleeps (\d+) s", " ".join(reliability.split()))
    assert float(hook) == pre_stop_sleep_s(gateway)
    assert re.findall(r"preStop hook sleeps (\d+) s", deploy) == [hook]


def test_a_stopping_gateway_serves_until_the_service_no_longer_sends_it_connections() -> None:
    """Kubernetes removes a stopping pod from the Service's endpoints as it runs the pod's stop, and kube-proxy,
    Ingress controllers and load balancers see it later (a second or more); the gateway closes its listening socket
    at SIGTERM (uvicorn's stop). Without a preStop hook that waits, the connections sent to it in between were
    refused at each rolling update, scale-down or drain."""
    (gateway,) = containers(deployment("aigrid-gateway"))
    assert pre_stop_sleep_s(gateway) >= 5, gateway.get("lifecycle")


def test_liveness_waits_for_the_gateway_s_start() -> None:
    """/livez answers only once the gateway listens, after its start (audit log, site documents embedded, batches
    resumed); liveness without a startup probe restarts a pod whose start takes more than its failures allow."""
    (gateway,) = containers(deployment("aigrid-gateway"))
    startup, liveness = gateway.get("startupProbe"), gateway["livenessProbe"]
    assert startup is not None and startup["httpGet"]["path"] == "/livez", startup
    startup_s = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
    liveness_s = liveness.get("periodSeconds", 10) * liveness.get("failureThreshold", 3)
    assert startup_s >= 120 > liveness_s, (startup_s, liveness_s)


def test_behind_the_service_one_address_may_hold_the_whole_connection_bound() -> None:
    """Clients reach the pods through the Service (and an Ingress or load balancer): a few proxy or node addresses
    bring every one of them, and the default share (0.5 of the bound per address, for a gateway reached directly)
    held each to half the bound (503 too_many_connections with room left). The ConfigMap sets it to 1."""
    spec = parse_spec(yaml.safe_load(grid_spec_text()), "deploy/kubernetes/gateway.yaml:aigrid-grid")
    assert spec.gateway.connection_share_per_address == 1
    assert "connection_share_per_address: 1" in grid_spec_text()


def test_the_configmap_holds_a_valid_grid_whose_endpoints_are_the_services() -> None:
    spec = parse_spec(yaml.safe_load(grid_spec_text()), "deploy/kubernetes/gateway.yaml:aigrid-grid")
    assert spec.gateway.host == "0.0.0.0" and spec.gateway.network == "none"
    (gateway,) = containers(deployment("aigrid-gateway"))
    assert spec.gateway.port in {p["containerPort"] for p in gateway["ports"]}
    services = {(s["metadata"]["name"], s["metadata"]["namespace"]): {p["port"] for p in s["spec"]["ports"]}
                for s in of_kind("Service")}
    in_cluster = [ep for ep in spec.endpoints if ".svc.cluster.local" in (ep.url or "")]
    assert len(in_cluster) >= 2
    # the replicas share their quota counters (security.quotas_redis_url), else each counts a tenant on its own
    assert spec.security.quotas_redis_url is not None
    for url in [ep.url for ep in in_cluster] + [spec.gateway.shared_state_url, spec.security.quotas_redis_url]:
        parts = urlsplit(url or "")
        name, namespace = (parts.hostname or "").split(".")[:2]
        assert parts.port in services.get((name, namespace), set()), f"{url}: no such Service port"
    engines = {ep.engine for ep in spec.endpoints}
    assert {"vllm", "llamacpp"} <= engines


ENGINE_KEY_VARIABLE = {"vllm": "VLLM_API_KEY", "llamacpp": "LLAMA_API_KEY"}
"""The variable each engine reads its --api-key from."""


def secret_env(container: Doc) -> dict[str, tuple[str, str]]:
    """The container's variables that come from a Secret -> (secret, key)."""
    return {e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}


def test_every_engine_answers_only_the_gateway_with_the_same_key() -> None:
    """Each endpoint names a key (api_key_env) that the gateway's container gets from a Secret, and each engine
    in the cluster reads the same Secret's key as its own --api-key: no pod reaches a model past the gateway."""
    spec = parse_spec(yaml.safe_load(grid_spec_text()), "deploy/kubernetes/gateway.yaml:aigrid-grid")
    (gateway,) = containers(deployment("aigrid-gateway"))
    gateway_secrets = secret_env(gateway)
    services = {s["metadata"]["name"]: s["spec"]["selector"] for s in of_kind("Service")}
    for ep in spec.endpoints:
        assert ep.api_key_env in gateway_secrets, f"{ep.id}: api_key_env {ep.api_key_env} not set from a Secret"
        host = urlsplit(ep.url or "").hostname or ""
        if not host.endswith(".svc.cluster.local"):
            continue
        selector = services[host.split(".")[0]]
        (engine_dep,) = [d for d in workloads()
                         if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        (engine,) = containers(engine_dep)
        own = secret_env(engine).get(ENGINE_KEY_VARIABLE[ep.engine])
        assert own == gateway_secrets[ep.api_key_env], f"{ep.id}: the engine's key is not the gateway's"


def test_only_the_gateways_reach_the_engines_and_redis() -> None:
    """Keys are not a boundary for every engine (vLLM's guards /v1 only): a NetworkPolicy admits only the
    gateway's pods (and Prometheus to the engines) to every engine and Redis pod."""
    policies = of_kind("NetworkPolicy")
    gateway = deployment("aigrid-gateway")["spec"]["template"]["metadata"]["labels"]
    for dep in workloads():
        if dep["metadata"]["name"] == "aigrid-gateway":
            continue
        labels = dep["spec"]["template"]["metadata"]["labels"]
        (policy,) = [p for p in policies if "Ingress" in p["spec"]["policyTypes"] and p["spec"].get("ingress")
                     and p["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()]
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        sources = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
        assert any("namespaceSelector" not in peer and peer["podSelector"]["matchLabels"].items() <= gateway.items()
                   for peer in sources), dep["metadata"]["name"]
        assert all(peer["podSelector"]["matchLabels"] for peer in sources)  # nobody else: no empty selector


def test_no_policy_lets_in_a_pod_of_any_namespace_by_a_label_its_owner_chose() -> None:
    """A peer of another namespace is named by that namespace's kubernetes.io/metadata.name, which the API server
    sets (a namespace's other labels are its creator's). `namespaceSelector: {}` with a pod label let in a pod of that
    label (app.kubernetes.io/name: prometheus) from any namespace, on every port of every engine: whoever may create
    a pod anywhere in the cluster reached vLLM's routes that need no key (/invocations, /tokenize, ...)."""
    for policy in of_kind("NetworkPolicy"):
        for rule in policy["spec"].get("ingress", []) + policy["spec"].get("egress", []):
            for peer in rule.get("from", []) + rule.get("to", []):
                if "namespaceSelector" in peer:
                    names = peer["namespaceSelector"].get("matchLabels", {})
                    assert set(names) == {"kubernetes.io/metadata.name"}, (policy["metadata"]["name"], peer)


@pytest.mark.parametrize("path", DOCKERFILES, ids=[p.name for p in DOCKERFILES])
def test_dockerfile_copies_what_exists_and_its_ignore_file_lets_through(path: Path) -> None:
    lines = dockerfile_lines(path)
    assert lines[0].startswith("FROM ") and all(":" in ln.split()[1] for ln in lines if ln.startswith("FROM "))
    allowed = [ln[1:].rstrip("/") for ln in Path(f"{path}.dockerignore").read_text().splitlines()
               if ln.startswith("!")]
    for line in lines:
        if line.startswith("COPY ") and "--from=" not in line:
            *sources, _dest = shlex.split(line)[1:]
            for src in sources:
                assert (ROOT / src).exists(), f"{path.name}: COPY {src}: no such file in the repository"
                assert any(src.rstrip("/") == a or src.startswith(a + "/") for a in allowed), (path.name, src)


def test_the_site_image_builds_the_engine_with_the_project_script_and_runs_the_manifest_args() -> None:
    lines = dockerfile_lines(ROOT / "deploy" / "docker" / "llamacpp-site.Dockerfile")
    assert any("bash scripts/build_llama_server.sh" in ln for ln in lines)
    cmd = next(ln for ln in lines if ln.startswith("CMD "))
    image_args = yaml.safe_load(cmd[len("CMD "):])
    (llama,) = containers(deployment("aigrid-site-fra-llamacpp"))
    assert image_args == llama["args"]
    assert "--metrics" in image_args  # /metrics is how the gateway and Prometheus see its load
    assert any(ln.startswith("EXPOSE 8080") for ln in lines)


def test_each_llamacpp_slot_holds_the_context_the_grid_spec_promises() -> None:
    """llama-server's --ctx-size is the total, split evenly over its --parallel slots (engines/llama_server.py). The
    manifest ran 8192 over 4 slots, 2048 a slot, while the ConfigMap's model says context 8192 and its endpoint 4
    slots: the gateway's context check let through prompts of 2048-8192 tokens that the engine then refused (400),
    each counted a failure of the site. The embedded engines had the same fault, fixed earlier (embedded_config)."""
    spec = parse_spec(yaml.safe_load(grid_spec_text()), "deploy/kubernetes/gateway.yaml:aigrid-grid")
    (llama,) = containers(deployment("aigrid-site-fra-llamacpp"))
    args = llama["args"]
    total, slots = int(args[args.index("--ctx-size") + 1]), int(args[args.index("--parallel") + 1])
    alias = args[args.index("--alias") + 1]
    (endpoint,) = [e for e in spec.endpoints if e.engine == "llamacpp" and (e.served_model or e.model) == alias]
    assert endpoint.slots == slots, (endpoint.slots, slots)
    assert total // slots == spec.models[endpoint.model].context, (total, slots, spec.models[endpoint.model].context)


# llama-server's RSS with the manifest's args, by (--ctx-size, --parallel), SmolLM2-135M, after a chat in each slot:
# measured on 6 Dec 2026, twenty-eighth session, with the manifest's flags on 127.0.0.1 (847 MiB after start,
# 864 after the chats). Another context or slot count is not measured: measure it and add it here.
MEASURED_LLAMACPP_RSS_MIB = {(32768, 4): 864}
HEADROOM = 1.25  # the request covers what was measured and a quarter more (prompt batches, another build)
BINARY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def memory_bytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", str(quantity)).groups()  # type: ignore[union-attr]
    return int(number) * BINARY_UNITS.get(unit or "", 1)


def test_the_llamacpp_site_requests_the_memory_its_context_holds() -> None:
    """--ctx-size 32768 over 4 slots is 4 x 8192 tokens of KV cache: 847 MiB RSS after start, against a request of
    1Gi, so the scheduler placed the pod on a node with room for 1 GiB and it took (and kept growing to) most of it.
    The request covers the measured figure with headroom, the limit the request."""
    (llama,) = containers(deployment("aigrid-site-fra-llamacpp"))
    args = llama["args"]
    key = (int(args[args.index("--ctx-size") + 1]), int(args[args.index("--parallel") + 1]))
    assert key in MEASURED_LLAMACPP_RSS_MIB, f"{key}: not measured; measure llama-server's RSS with these args"
    request = memory_bytes(llama["resources"]["requests"]["memory"])
    assert request >= MEASURED_LLAMACPP_RSS_MIB[key] * HEADROOM * 2**20, (request, key)
    assert memory_bytes(llama["resources"]["limits"]["memory"]) >= request


def test_the_engine_knows_every_flag_the_manifest_passes() -> None:
    try:
        binary = find_llama_server()
    except EngineBuildError as exc:
        pytest.skip(f"llama-server is not built (run `make engine`): {exc}")
    help_text = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=60).stdout
    (llama,) = containers(deployment("aigrid-site-fra-llamacpp"))
    for flag in (a for a in llama["args"] if a.startswith("--")):
        assert has_flag(help_text, flag), f"llama-server {binary} has no {flag}"
