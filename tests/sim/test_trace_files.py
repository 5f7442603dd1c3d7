"""A tenant's `trace:` may be a trace file of another source (aigrid.traces): its gaps and sizes drive the
workload; a broken file is refused under the field with its line and column, never a traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from aigrid.sim.geography import load_cities
from aigrid.sim.scenario import ScenarioError, load_scenario
from aigrid.sim.workload import build_workload, load_trace

SCENARIO = {
    "name": "w", "seed": 1, "duration_s": 600, "requests": 400,
    "models": [{"name": "m", "family": "f", "params_b": 1.0}],
    "sites": [{"id": "s", "lat": 0.0, "lon": 0.0, "models": ["m"]}],
    "tenants": [{"name": "t", "share": 1.0, "model": "m", "trace": "traces/burst.csv"}], "policies": ["nearest"],
}


def burstgpt(path: Path, rows: int = 200) -> Path:
    """BurstGPT's columns, unsorted, with a request of 0 output tokens and every prompt 100-299 tokens."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(4)
    t = np.cumsum(rng.exponential(2.0, rows)).round(1)
    lines = [f"{t[i]},ChatGPT,{100 + i % 200},{0 if i == 7 else 20 + i % 30},0,Conversation log" for i in range(rows)]
    rng.shuffle(lines)
    path.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n" + "\n".join(lines) + "\n")
    return path


def scenario(tmp_path: Path, trace: str = "traces/burst.csv") -> Path:
    f = tmp_path / "sc.yaml"
    f.write_text(yaml.safe_dump({**SCENARIO, "tenants": [{**SCENARIO["tenants"][0], "trace": trace}]}))
    return f


def test_a_trace_file_relative_to_the_scenario_drives_the_workload(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    burstgpt(tmp_path / "traces" / "burst.csv")
    monkeypatch.chdir("/")  # relative to the scenario file, not to where the command runs
    sc = load_scenario(scenario(tmp_path))
    assert sc.tenants[0].trace == str(tmp_path / "traces" / "burst.csv")
    tr = load_trace(sc.tenants[0].trace)
    assert len(tr.gaps) == 199 and tr.gaps.mean() == pytest.approx(1.0) and tr.gaps.min() >= 0
    w = build_workload(sc, load_cities())
    assert 0.7 * 400 < len(w) < 1.3 * 400
    assert 100 <= w.prompt.min() and w.prompt.max() <= 299 and w.output.min() >= 1


@pytest.mark.parametrize(("body", "named"), [
    ("", "is empty"),
    ("Timestamp,Request tokens,Response tokens\n", "no requests"),
    ("Timestamp,Request tokens\n1,2\n", "no output column"),
    ("Timestamp,Request tokens,Response tokens\n1,2,3\n2,-2,3\n", "line 3, column Request tokens"),
    ("Timestamp,Request tokens,Response tokens\n1,2,3\nsoon,2,3\n", "line 3, column Timestamp"),
    ("Timestamp,Request tokens,Response tokens\n1,2,3\n", "1 requests"),
    ("Timestamp,Request tokens,Response tokens\n1,2,3\n1,2,3\n", "over 0 s"),
    ("Timestamp,Request tokens,Response tokens\n1,2,3\n2,1e19,3\n", "line 3, column Request tokens"),  # was a
    ("Timestamp,Request tokens,Response tokens\n1,2,3\n2,2,3e9\n", "line 3, column Response tokens"),  # traceback
])
def test_a_broken_trace_file_is_refused_under_the_field(tmp_path: Path, body: str, named: str) -> None:
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "burst.csv").write_text(body)
    with pytest.raises(ScenarioError) as e:
        load_scenario(scenario(tmp_path))
    assert "tenants[0].trace" in str(e.value) and "burst.csv" in str(e.value) and named in str(e.value), e.value


def test_an_unknown_name_is_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"tenants\[0\]\.trace: .*convo: cannot read"):
        load_scenario(scenario(tmp_path, "convo"))
