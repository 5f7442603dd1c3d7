"""deploy/kubernetes/optional/: manifests an operator may add, kept out of the folder `kubectl apply -f
deploy/kubernetes/` reads. The in-flight HPA (prometheus-adapter): each document against the Kubernetes schemas, the
HPA against the shipped one (same target and bounds, CPU kept), the adapter's rule against the metric the gateway
exports and the labels the docs' scrape job writes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import Gauge

from aigrid.gateway.metrics import GatewayMetrics
from tests.deploy.test_manifests import OLDEST_SUPPORTED, Doc, of_kind

kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (a dev dependency)")

ROOT = Path(__file__).resolve().parents[2]
OPTIONAL = sorted((ROOT / "deploy" / "kubernetes" / "optional").glob("*.yaml"))
DOCS = [(path, doc) for path in OPTIONAL for doc in yaml.safe_load_all(path.read_text()) if doc]
INFLIGHT = ROOT / "deploy" / "kubernetes" / "optional" / "gateway-hpa-inflight.yaml"


def inflight_docs() -> tuple[Doc, Doc]:
    docs = [d for p, d in DOCS if p == INFLIGHT]
    (hpa,) = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    return hpa, cm


@pytest.mark.parametrize("version", [OLDEST_SUPPORTED, kv.latest_version()])
@pytest.mark.parametrize(("path", "doc"), DOCS, ids=[f"{p.name}:{d['kind']}/{d['metadata']['name']}" for p, d in DOCS])
def test_optional_manifest_matches_the_kubernetes_schema(path: Path, doc: Doc, version: str) -> None:
    try:
        kv.validate(doc, version, strict=True)
    except kv.ValidationError as exc:
        pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']} at {list(exc.path)}: {exc.message}")


def test_the_inflight_hpa_replaces_the_shipped_one_keeping_its_target_bounds_and_cpu() -> None:
    hpa, _ = inflight_docs()
    (shipped,) = of_kind("HorizontalPodAutoscaler")
    for key in ("scaleTargetRef", "minReplicas", "maxReplicas", "behavior"):
        assert hpa["spec"][key] == shipped["spec"][key], key
    assert hpa["metadata"] == shipped["metadata"]
    assert all(m in hpa["spec"]["metrics"] for m in shipped["spec"]["metrics"])  # CPU kept
    assert [m["type"] for m in hpa["spec"]["metrics"]].count("Pods") == 1


def test_the_adapter_serves_the_metric_the_hpa_asks_for_from_a_gauge_the_gateway_exports() -> None:
    hpa, cm = inflight_docs()
    (rule,) = yaml.safe_load(cm["data"]["config.yaml"])["rules"]
    (pods,) = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert rule["name"]["as"] == pods["metric"]["name"]
    series = re.fullmatch(r"(\w+)\{([^}]*)\}", rule["seriesQuery"])
    assert series, rule["seriesQuery"]
    assert re.fullmatch(rule["name"]["matches"], series.group(1))
    gauges = {m._name: m for m in vars(GatewayMetrics()).values() if isinstance(m, Gauge)}
    assert series.group(1) in gauges  # a gauge: summed per pod, not rate()d
    # the rule's labels are the pod's and namespace's, which the gateway's own labels must not be
    labels = set(rule["resources"]["overrides"])
    assert labels == {"namespace", "pod"} and not labels & set(gauges[series.group(1)]._labelnames)
    assert set(re.findall(r"(\w+)!=", series.group(2))) == labels
    assert "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)" == rule["metricsQuery"]


def scrape_job() -> Doc:
    """The `aigrid-gateway` scrape job docs/deploy.md ("Gateway keys") gives."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    m = re.search(r"```yaml\n(\s*- job_name: aigrid-gateway\n.*?)\n\s*```", text, re.S)
    assert m, "no aigrid-gateway scrape job in docs/deploy.md"
    (job,) = yaml.safe_load(m.group(1))
    return dict(job)


def test_the_docs_scrape_job_writes_the_labels_the_adapter_maps_to_pods() -> None:
    _, cm = inflight_docs()
    (rule,) = yaml.safe_load(cm["data"]["config.yaml"])["rules"]
    written = {r["target_label"]: r["source_labels"] for r in scrape_job()["relabel_configs"] if "target_label" in r}
    assert written.get("namespace") == ["__meta_kubernetes_namespace"]
    assert written.get("pod") == ["__meta_kubernetes_pod_name"]
    assert set(rule["resources"]["overrides"]) <= set(written)


def test_kubectl_apply_of_the_manifest_folder_leaves_the_optional_ones_out() -> None:
    """`kubectl apply -f deploy/kubernetes/` reads that folder alone (no --recursive): two HPAs of one name would
    fight."""
    assert OPTIONAL and all(p.parent.name == "optional" for p in OPTIONAL)
    assert len(of_kind("HorizontalPodAutoscaler")) == 1
