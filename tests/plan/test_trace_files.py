"""A demand tenant's `trace:` may be a trace file (aigrid.traces), relative to the demand file: its sizes set
the flows' request sizes and the verification scenarios replay it; a broken file is refused under the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from aigrid.plan.demand import DemandError, load_demand
from aigrid.plan.traffic import build_traffic
from aigrid.sim.geography import load_cities
from aigrid.sim.scenario import Tenant

ROOT = Path(__file__).resolve().parents[2]


def demand(tmp_path: Path, trace: str) -> Path:
    raw = yaml.safe_load((ROOT / "examples" / "plan" / "small.yaml").read_text())
    raw["tenants"][0]["trace"] = trace
    f = tmp_path / "demand.yaml"
    f.write_text(yaml.safe_dump(raw))
    return f


def mooncake(path: Path) -> Path:
    path.write_text("\n".join(json.dumps({"timestamp": 500 * i, "input_length": 2000 + i % 2, "output_length": 50,
                                          "hash_ids": [i]}) for i in range(40)) + "\n")
    return path


def test_a_trace_file_sets_the_tenants_sizes(tmp_path: Path) -> None:
    mooncake(tmp_path / "mooncake_trace.jsonl")
    d = load_demand(demand(tmp_path, "mooncake_trace.jsonl"))
    path = str(tmp_path / "mooncake_trace.jsonl")
    assert d.tenants[0].trace == path
    t = build_traffic(d, load_cities())
    flows = [f for f in t.flows if f.tenant == d.tenants[0].name]
    assert flows and all(f.trace == path for f in flows)
    assert all(f.prompt_mean == pytest.approx(2000.5, abs=0.1) and f.output_mean == 50 for f in flows)


def test_the_verification_scenarios_take_the_flows_path(tmp_path: Path) -> None:
    """checks.scenario_for builds the simulator's tenants from the flows (no file to be relative to): the
    absolute path passes the simulator's validation and is what the written check scenarios carry."""
    mooncake(tmp_path / "m.jsonl")
    flow = build_traffic(load_demand(demand(tmp_path, "m.jsonl")), load_cities()).flows[0]
    tenant = Tenant(name=flow.name, share=1.0, trace=flow.trace, model=flow.model)
    assert tenant.trace == str(tmp_path / "m.jsonl")


@pytest.mark.parametrize(("body", "named"), [
    ("", "is empty"),
    ('{"timestamp": 0, "input_length": 5, "output_length": 1}\n{"timestamp": 9, "input_length": 5}\n',
     "line 2: no 'output_length'"),
    ('{"timestamp": 0, "input_length": 5, "output_length": 1}\n{"timestamp": 9, "input_length": 5.5, '
     '"output_length": 1}\n', "line 2, column input_length"),
])
def test_a_broken_trace_file_is_refused_under_the_field(tmp_path: Path, body: str, named: str) -> None:
    (tmp_path / "m.jsonl").write_text(body)
    with pytest.raises(DemandError) as e:
        load_demand(demand(tmp_path, "m.jsonl"))
    assert any(p.startswith("tenants[0].trace:") and named in p for p in e.value.problems), e.value.problems
