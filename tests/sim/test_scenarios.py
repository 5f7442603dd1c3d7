"""Each scenario's headline, in a fast, small form."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from aigrid.core.types import GeoPoint, RequestInfo
from aigrid.sim.cli import run_scenario
from aigrid.sim.experiment import replay, run_experiment
from aigrid.sim.metrics import SUMMARY_KEYS
from aigrid.sim.report import summary
from aigrid.sim.runner import OK
from aigrid.sim.scenario import Fault, Scenario, ScenarioError, load_scenario

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "sim"


def scenario(name: str, **update: object) -> Scenario:
    return load_scenario(EXAMPLES / f"{name}.yaml").model_copy(update=update)


def test_same_seed_gives_an_identical_summary() -> None:
    sc = scenario("small", policies=["balanced", "round-robin"], duration_s=40, requests=400)
    a, b = summary(run_experiment(sc)), summary(run_experiment(sc))
    a.pop("sim_wall_s"), b.pop("sim_wall_s")
    assert a == b
    other = summary(run_experiment(sc.model_copy(update={"seed": 8})))
    assert other["policies"] != a["policies"]


def test_one_region_p99_ttft_grows_non_linearly_with_utilisation() -> None:
    sc = scenario("one-region", duration_s=60, requests=2400, sweep=[0.3, 0.6, 0.95], policies=["balanced"])
    points = run_experiment(sc).sweep["balanced"]
    (u1, m1), (u2, m2), (u3, m3) = ((m.mean_utilization, m) for _, m in points)
    assert u1 < u2 < u3
    # From 0.3 to 0.6 of the load p99 stays within a small factor; near saturation it explodes.
    slope_low = (m2.ttft_p99_ms - m1.ttft_p99_ms) / (u2 - u1)
    slope_high = (m3.ttft_p99_ms - m2.ttft_p99_ms) / (u3 - u2)
    assert slope_high > 10 * max(slope_low, 1.0)
    assert m3.ttft_p99_ms > 5 * m1.ttft_p99_ms


def test_sovereignty_never_violates_residency_and_counts_rejections() -> None:
    faults = [Fault(kind="outage", at_s=20, until_s=100, sites=["eu-fra"]),
              Fault(kind="outage", at_s=40, until_s=70, sites=["eu-par"])]
    sc = scenario("sovereignty", duration_s=120, requests=2400, faults=faults,
                  policies=["balanced", "latency-first", "nearest", "centralized"])
    ex = run_experiment(sc)
    for run in ex.runs:
        assert run.metrics.residency_violations == 0, run.label
        eu = run.metrics.by_tenant_rejected["eu-health"]
        assert eu > 0, run.label  # the EU had no site for 30 s: those requests are counted
        assert run.metrics.rejected == sum(run.metrics.by_tenant_rejected.values())
        served = run.result.status == OK
        eu_tenant = ex.workload.tenant == 0
        sites = {run.grid.endpoints[k].site_id for k in run.result.endpoint[served & eu_tenant]}
        assert sites <= {"eu-fra", "eu-par"}, run.label
    by_label = {r.label: r.metrics for r in ex.runs}
    assert by_label["centralized"].by_tenant_rejected["jp-bank"] > 0  # US-only cannot serve Japan's tenant


def test_an_outage_shifts_traffic_to_other_sites() -> None:
    sc = scenario("small", policies=["balanced", "nearest"], duration_s=60, requests=1000,
                  faults=[Fault(kind="outage", at_s=20, until_s=40, sites=["us-east"])])
    ex = run_experiment(sc)
    t = ex.workload.t
    for run in ex.runs:
        site = np.array([run.grid.endpoints[k].site_id if k >= 0 else "" for k in run.result.endpoint])
        served = run.result.status == OK
        before = served & (t < 20)
        during = served & (t > 24) & (t < 40)  # after the telemetry lag and circuit breakers caught up
        assert (site[before] == "us-east").sum() > 0
        assert (site[during] == "us-east").sum() == 0, run.label
        assert during.sum() > 0


def test_run_scenario_writes_the_reports(tmp_path: Path) -> None:
    sc = scenario("small", duration_s=30, requests=300, policies=["balanced", "least-loaded"])
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps(sc.model_dump()))
    result = run_scenario(path, tmp_path / "out", quiet=True)
    data = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert data == result
    assert set(data) == {"policies", "sim_wall_s", "events"}
    assert set(data["policies"]) == {"balanced", "least-loaded"}
    for figures in data["policies"].values():
        # the summary keys, then the admission queue's figures where a request waited (balanced, here)
        assert tuple(figures)[:len(SUMMARY_KEYS)] == SUMMARY_KEYS
        assert set(tuple(figures)[len(SUMMARY_KEYS):]) <= {"shed", "refused_late", "deferred", "by_class"}
    for name in ("requests.csv", "ttft_cdf.png", "sites_utilization.png", "details.json"):
        assert (tmp_path / "out" / name).stat().st_size > 0


def test_a_bad_scenario_names_the_file_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text((EXAMPLES / "small.yaml").read_text().replace("duration_s: 120", "duration_s: -5"))
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    assert str(path) in str(err.value) and "duration_s" in str(err.value)
    path.write_text("name: x\nduration_s: 10\nrequests: 5\nmodels: []\ntenants: []\npolicies: [nope]\n")
    with pytest.raises(ScenarioError, match="models"):
        load_scenario(path)
    path.write_text((EXAMPLES / "small.yaml").read_text().replace("least-loaded]", "fastest]"))
    with pytest.raises(ScenarioError, match="unknown policy 'fastest'"):
        load_scenario(path)
    path.write_text("{not yaml")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(path)


def test_a_scenario_file_is_read_as_a_grid_spec_is(tmp_path: Path) -> None:
    """The same reader as the grid spec (spec.load.read_yaml): bytes that are not UTF-8 were a
    UnicodeDecodeError's traceback from `aigrid sim`, and a key given twice (a second tenant of the same name
    in a mapping) silently replaced the first."""
    path = tmp_path / "s.yaml"
    path.write_bytes(b"name: x\n\xff\xfe")
    with pytest.raises(ScenarioError, match=r"line 2: not UTF-8 text \(byte 0xff\); save the scenario as UTF-8"):
        load_scenario(path)
    path.write_text((EXAMPLES / "small.yaml").read_text() + "\nduration_s: 30\n")
    with pytest.raises(ScenarioError, match="duration_s"):
        load_scenario(path)
    path.write_text("a: " + "[" * 5000 + "]" * 5000)
    with pytest.raises(ScenarioError, match="nesting depth|nested too deeply"):
        load_scenario(path)
    # YAML's .inf passed every `gt=0` bound (duration_s: .inf was an OverflowError's traceback from aigrid sim)
    path.write_text((EXAMPLES / "small.yaml").read_text().replace("duration_s: 120", "duration_s: .inf"))
    with pytest.raises(ScenarioError, match="duration_s: Input should be a finite number"):
        load_scenario(path)


def test_replay_returns_one_decision_per_request() -> None:
    sc = scenario("small")
    reqs = [(i * 0.1, RequestInfo(id=f"r{i}", model="llama-3.1-8b", prompt_tokens=500, max_output_tokens=50,
                                  client_location=GeoPoint(48.85, 2.35))) for i in range(20)]
    decisions = replay(sc, reqs, "balanced")
    assert [d.request_id for d in decisions] == [f"r{i}" for i in range(20)]
    assert all(d.chosen is not None for d in decisions)
    assert decisions == replay(sc, reqs, "balanced")


def test_a_region_cut_off_is_routed_around_after_timeouts() -> None:
    from aigrid.sim.geography import jurisdiction_of, load_cities

    sc = scenario("small", policies=["balanced"], duration_s=60, requests=1000, faults=[
        Fault(kind="partition", at_s=20, until_s=40, jurisdictions=["JP"])])
    ex = run_experiment(sc)
    cities, run, w = load_cities(), ex.runs[0], ex.workload
    outside = np.array([jurisdiction_of(cities.country[c]) != "JP" for c in w.city])
    site = np.array([run.grid.endpoints[k].site_id if k >= 0 else "" for k in run.result.endpoint])
    window = (w.t > 20) & (w.t < 39)
    assert ((site == "ap-tokyo") & outside & window & (run.result.status == OK)).sum() == 0
    assert (run.result.attempts[window] > 1).sum() > 0  # some timed out at the cut and were re-routed
    assert ((site == "ap-tokyo") & outside & (w.t < 20)).sum() > 0


def test_shared_prefixes_are_cached_and_the_default_keeps_them_warm() -> None:
    """With a few long system prompts the engines' prefix cache cuts time to first token against the same
    prompts drawn from so many prefixes that none repeats; the default policy, which knows where each prefix
    was served last (the affinity axis), gets more of that saving than round robin."""
    sc = scenario("shared-prefix", policies=["balanced", "round-robin"], duration_s=60, requests=1800, sweep=[])
    few = summary(run_experiment(sc))["policies"]
    tenants = [t.model_copy(update={"shared_prefix": t.shared_prefix.model_copy(update={"count": 100000})})
               if t.shared_prefix else t for t in sc.tenants]
    many = summary(run_experiment(sc.model_copy(update={"tenants": tenants})))["policies"]
    assert few["balanced"]["ttft_p50_ms"] < 0.8 * many["balanced"]["ttft_p50_ms"]
    assert few["balanced"]["ttft_p50_ms"] < few["round-robin"]["ttft_p50_ms"]


@pytest.mark.parametrize(("old", "new", "named", "requests"), [
    # each of these validated and then was a traceback (MemoryError, ValueError, OverflowError, pydantic's) from
    # `aigrid sim`, NaN results, or a run without end
    ("requests: 1500", "requests: 1000000000", "requests: Input should be less than or equal to 10000000", 0),
    ("requests: 1500", "requests: 1500\nsweep: [1e9]", "about 1,500,000,000,000 model calls, more than the 10,000,000", 0),
    ("faults:\n", "faults:\n  - {kind: spike, at_s: 0, factor: 1e9}\n", "faults[0].factor", 0),
    ("faults:\n", "faults:\n  - {kind: spike, at_s: 0, factor: 1000}\n", "about 20,000,000 model calls", 20000),
    ("requests: 1500", "requests: 1500\nsweep: [0.5, -1]", "sweep[1]: Input should be greater than 0", 0),
    ("trace: conv, model", "trace: conv, agent: {steps: 1000}, model", "about 10,515,000 model calls", 15000),
    ("duration_s: 120", "duration_s: 1e300", "duration_s: Input should be less than or equal to 172800", 0),
    ("seed: 7", "seed: -1", "seed: Input should be greater than or equal to 0", 0),
    ("share: 0.7", "share: 1e308", "tenants[0].share: Input should be less than or equal to 1000000000", 0),
    ("params_b: 8.03", "params_b: 1e300", "models[0].params_b: Input should be less than or equal to 100000", 0),
    ("sites:\n", "generate_sites: {count: 3, models: [llama-3.1-8b], replicas: 1000000000}\nsites:\n",
     "generate_sites.replicas: Input should be less than or equal to 10000", 0),
    ("telemetry_interval_s: 1.0", "telemetry_interval_s: 1e-300", "gateway.telemetry_interval_s", 0),
    ("telemetry_interval_s: 1.0", "shared_state_s: 1e-300", "gateway.shared_state_s: 0 (not shared) or at least", 0),
    ("policies:", "network: {route_factor: 1e300}\npolicies:", "network.route_factor", 0),
    ("trace: conv, model", "trace: conv, agent: {steps: 2, tool_ms: 1e300}, model", "agent.tool_ms", 0),
    ("trace: conv, model", "trace: conv, max_prompt_tokens: 1000000000000000000000000000000, model",
     "tenants[0].max_prompt_tokens: Input should be less than or equal to 2147483647", 0),
    ("sites:\n", "generate_sites: {count: 20000, models: [llama-3.1-8b], replicas: 10000}\nsites:\n",
     "sites: 200,000,005 engines (replicas x models), more than the 100,000", 0),
    ("policies:", "site_sets:\n  big:\n    - {id: a, city: Paris, replicas: 10000, models: [" + ", ".join(
        ["llama-3.1-8b"] * 11) + "]}\npolicies:", "site_sets.big: 110,000 engines", 0),
    ("policies: [balanced, nearest, least-loaded]", "policies: [" + ", ".join(["balanced"] * 65) + "]",
     "policies: List should have at most 64 items", 0),
    ("requests: 1500", "requests: 1500\nsweep: [" + ", ".join(["1"] * 65) + "]", "sweep: List should have at most 64", 0),
    ("tenants:\n", "tenants:\n" + "".join(f"  - {{name: t{i}, share: 1, model: llama-3.1-8b}}\n" for i in range(1001)),
     "tenants: List should have at most 1000 items", 0),
    ("trace: conv, model", "cities: [" + ", ".join(["Paris"] * 2001) + "], trace: conv, model",
     "tenants[0].cities: List should have at most 2000 items", 0),
])
def test_a_count_rate_or_duration_past_what_can_be_simulated_is_refused_by_field(tmp_path: Path, old: str, new: str,
                                                                                named: str, requests: int) -> None:
    text = (EXAMPLES / "small.yaml").read_text()
    assert old in text
    path = tmp_path / "s.yaml"
    if requests:
        text = text.replace("requests: 1500", f"requests: {requests}")
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ScenarioError, match=re.escape(named)) as err:
        load_scenario(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(("old", "new", "named"), [
    ("  - {name: eu-bank,", "  - {name: chat,", "tenants: 'chat' given more than once"),
    ("sites:\n", "  - {name: llama-3.1-8b, family: llama-3, params_b: 70, kv_bytes_per_token: 1}\nsites:\n",
     "models: 'llama-3.1-8b' given more than once"),
])
def test_a_name_given_twice_is_refused(tmp_path: Path, old: str, new: str, named: str) -> None:
    """Each ran: the last model of a name replaced the other (its size), two tenants of a name shared one row of
    the results."""
    text = (EXAMPLES / "small.yaml").read_text()
    assert old in text
    path = tmp_path / "s.yaml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ScenarioError, match=named):
        load_scenario(path)


def test_every_example_scenario_is_within_the_bounds() -> None:
    for path in EXAMPLES.glob("*.yaml"):
        assert load_scenario(path).expected_requests() <= 10_000_000, path


def test_a_scenario_with_many_unknown_keys_lists_twenty_and_counts_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text((EXAMPLES / "small.yaml").read_text() + "".join(f"junk{k}: 1\n" for k in range(500)))
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    lines = str(err.value).splitlines()
    assert len(lines) == 21 and lines[0].startswith(f"{path}: junk")
    assert lines[-1] == f"{path}: and 480 more"


def test_names_given_twice_are_found_in_linear_time() -> None:
    """Review of e3a25bed: each name was counted over the whole list (quadratic: 40,000 models 24 s of CPU, and an
    8 MiB scenario or demand file holds some 280,000). 200,000 names: well under a second."""
    import time

    from aigrid.sim.scenario import given_twice

    names = [f"m{i}" for i in range(200_000)] + ["m7", "m3", "m7"]
    began = time.process_time()
    assert given_twice(names) == ["m3", "m7"]
    assert time.process_time() - began < 5.0


@pytest.mark.parametrize(("was", "now", "says"), [
    ("hardware: l40s, replicas: 2, models: [llama-3.1-8b]", "hardware: l40s, replicas: 2, models: [llama-3-8b]",
     "sites[1].models[0]: site 'eu-west' serves unknown model 'llama-3-8b'"),
    ("trace: code, model: llama-3.1-8b", "trace: code, model: llama-8b", "tenants[1].model: tenant 'eu-bank' asks for"),
    ("nearest, least-loaded]", "nearest, fastest]", "policies[2]: unknown policy 'fastest'"),
    ("{name: eu-bank,", "{name: chat,", "tenants: 'chat' given more than once"),
    ("requests: 1500", "requests: 1500\nsweep: [1e9]", "requests: 1,500 x load 1e+09")])
def test_a_check_across_the_scenario_names_the_field_it_is_about(
        tmp_path: Path, was: str, now: str, says: str) -> None:
    """The scenario's checks across its fields (a site's model, a tenant's, a policy) said "(top level): site
    'eu-west' serves unknown model ..." (7 Dec 2026, thirty-second session): each now names its field's path."""
    path = tmp_path / "bad.yaml"
    text = (EXAMPLES / "small.yaml").read_text()
    assert text.count(was) == 1, was
    path.write_text(text.replace(was, now))
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    assert says in str(err.value) and "(top level)" not in str(err.value), str(err.value)
