"""What the tests of the placement scripts share (scripts/plan_without.py, scripts/plan_sweep.py): a script loaded as
a module by its path, the demand they read, and a plan of six sites, one H100 replica of llama-3.1-8b each."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEMAND = ROOT / "examples" / "plan" / "global.yaml"
SITES = ["mx-central-1", "eu-central-1", "eu-north-1", "eu-south-2", "ap-south-1", "ap-east-1"]


def script(name: str, module: str) -> ModuleType:
    """scripts/`name`.py, loaded as the module `module` (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location(module, ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def plan_doc() -> dict[str, Any]:
    """A plan's JSON (plan_without.py's input, plan_sweep.py's plan.json): each of SITES an H100 site, chunk 2,048,
    $2.50 a device-hour, one replica of llama-3.1-8b; no checks."""
    sites = [{"id": s, "city": s, "lat": 0.0, "lon": 0.0, "country": "XX", "jurisdiction": "XX", "hardware": "h100",
              "chunk_tokens": 2048, "gpus_per_replica": 1, "usd_per_device_hour": 2.5,
              "replicas": {"llama-3.1-8b": 1}} for s in SITES]
    return {"plan": {"sites": sites}, "checks": []}
