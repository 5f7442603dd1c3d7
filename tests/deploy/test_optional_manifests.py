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
from tests.deploy.manifests import OLDEST_SUPPORTED, Doc, of_kind

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


def applied_by_kubectl(folder: Path) -> list[Doc]:
    """The documents `kubectl apply -f FOLDER` sends: its own .yaml, .yml and .json files, not its subfolders'
    (no --recursive)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml", ".json"))
    return [doc for path in files for doc in yaml.safe_load_all(path.read_text()) if doc]


def optional_ones_applied(folder: Path) -> list[str]:
    """The optional documents (or ones of their kind and name other than the HPA they replace, or a second HPA, or
    an HPA on requests in flight) that `kubectl apply -f FOLDER` would send."""
    applied = applied_by_kubectl(folder)
    found = [f"{d['kind']}/{d['metadata']['name']}" for _, d in DOCS if d in applied]
    hpa, cm = inflight_docs()
    key = (cm["kind"], cm["metadata"].get("namespace"), cm["metadata"]["name"])
    found += [f"{key} by name" for d in applied if (d["kind"], d["metadata"].get("namespace"),
                                                    d["metadata"]["name"]) == key]
    hpas = [d for d in applied if d["kind"] == "HorizontalPodAutoscaler"]
    found += [f"{len(hpas)} HorizontalPodAutoscalers"] if len(hpas) != 1 else []
    found += [f"HPA {d['metadata']['name']} on Pods metrics" for d in hpas
              if any(m["type"] == "Pods" for m in d["spec"]["metrics"])]
    return found


def test_kubectl_apply_of_the_manifest_folder_leaves_the_optional_ones_out(tmp_path: Path) -> None:
    """`kubectl apply -f deploy/kubernetes/` reads that folder alone (no --recursive): two HPAs of one name would
    fight. (It checked that the files of optional/ were in optional/, which the glob that found them made true.)"""
    folder = ROOT / "deploy" / "kubernetes"
    assert OPTIONAL and applied_by_kubectl(folder)
    assert optional_ones_applied(folder) == []
    # the check sees an optional file put beside the shipped ones (a copy of the folder, the HPA's file moved up)
    copy = tmp_path / "kubernetes"
    copy.mkdir()
    for path in folder.iterdir():
        if path.is_file():
            (copy / path.name).write_bytes(path.read_bytes())
    (copy / INFLIGHT.name).write_bytes(INFLIGHT.read_bytes())
    assert optional_ones_applied(copy) != []
