"""The repository's Kubernetes manifests and Dockerfiles as the deploy tests read them: every YAML document of
deploy/kubernetes, by kind and name, a workload's containers, the grid spec in the ConfigMap, a Dockerfile's
instructions (test_manifests.py and the other deploy tests share these)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
DOCKERFILES = sorted((ROOT / "deploy" / "docker").glob("*.Dockerfile"))
OLDEST_SUPPORTED = "1.29"
Doc = dict[str, Any]


def load_docs() -> list[tuple[Path, Doc]]:
    return [(path, doc) for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


DOCS = load_docs()


def of_kind(kind: str) -> list[Doc]:
    return [doc for _, doc in DOCS if doc["kind"] == kind]


def workloads() -> list[Doc]:
    """The Deployments and StatefulSets (the gateway is one: each replica keeps its audit log on a claim)."""
    return of_kind("Deployment") + of_kind("StatefulSet")


def deployment(name: str) -> Doc:
    return next(d for d in workloads() if d["metadata"]["name"] == name)


def containers(dep: Doc) -> list[Doc]:
    return list(dep["spec"]["template"]["spec"]["containers"])


def grid_spec_text() -> str:
    cm = next(d for d in of_kind("ConfigMap") if d["metadata"]["name"] == "aigrid-grid")
    return str(cm["data"]["grid.yaml"])


def dockerfile_lines(path: Path) -> list[str]:
    """Instructions with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
