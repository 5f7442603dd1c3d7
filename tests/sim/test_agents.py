"""Agent workloads in the simulator: the loop at the site saves N round trips of N x RTT for a far client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml  # type: ignore[import-untyped]

from aigrid.sim.experiment import Experiment, run_experiment
from aigrid.sim.metrics import SUMMARY_KEYS
from aigrid.sim.report import summary
from aigrid.sim.runner import OK
from aigrid.sim.scenario import Scenario, ScenarioError, load_scenario

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "sim"
MODEL = {"name": "m8", "family": "llama-3", "params_b": 8.03}


def agent(name: str, steps: int, loop: str, countries: list[str]) -> dict[str, Any]:
    return {"name": name, "share": 1, "model": "m8", "countries": countries, "jurisdictions": ["EU"],
            "max_prompt_tokens": 1024, "agent": {"steps": steps, "tool_ms": 20, "loop": loop, "output_tokens": 32}}


def far_and_near() -> Scenario:
    """EU-only agents in Japan (about 140 ms from Frankfurt) and in Germany, each twice: loop at the client and
    at the site. Light load (a few percent), so the difference is mostly the network, not the queue."""
    tenants = [agent(f"{where}-n{n}-{loop}", n, loop, [cc])
               for where, cc, ns in (("jp", "JP", (1, 4, 16)), ("de", "DE", (4,))) for n in ns
               for loop in ("client", "site")]
    return Scenario.model_validate({
        "name": "agents-test", "seed": 3, "duration_s": 120, "requests": 160, "models": [MODEL],
        "sites": [{"id": "eu-fra", "city": "Frankfurt am Main", "hardware": "h100", "replicas": 2, "models": ["m8"]},
                  {"id": "jp-tyo", "city": "Tokyo", "hardware": "h100", "models": ["m8"]}],
        "tenants": tenants, "policies": ["balanced"],
    })


@pytest.fixture(scope="module")
def experiment() -> Experiment:
    return run_experiment(far_and_near())


def sessions(ex: Experiment, tenant: str) -> tuple[np.ndarray, np.ndarray]:
    """(session e2e in s, RTT of its first call in s) for one tenant's sessions, in arrival order."""
    k = ex.workload.tenant_names.index(tenant)
    rows = np.flatnonzero(ex.workload.tenant == k)
    r = ex.runs[0].result
    assert r.session_e2e_s is not None
    return r.session_e2e_s[rows], r.rtt_s[rows]


@pytest.mark.parametrize("steps", [1, 4, 16])
def test_site_loop_saves_about_n_round_trips_for_a_far_client(experiment: Experiment, steps: int) -> None:
    client, rtt = sessions(experiment, f"jp-n{steps}-client")
    site, rtt_site = sessions(experiment, f"jp-n{steps}-site")
    assert len(client) >= 10 and not np.isnan(client).any() and not np.isnan(site).any()
    assert np.array_equal(rtt, rtt_site)  # identical traffic: same sessions, same network draws
    assert 0.13 < np.median(rtt) < 0.16  # Japan to Frankfurt
    saved = client - site
    expected = steps * rtt
    # Each model call shares its engine's steps with other requests' prefills, so a single session's time
    # varies by up to a couple of hundred ms either way (a one-step session can even lose); over the
    # sessions the saving is N round trips, and at 16 steps nearly every session saves most of them.
    # A client-loop call is routed afresh to the replica with the least work ahead, which the pinned site loop
    # cannot do: with one step that choice is worth a good part of the one round trip saved.
    assert (0.5 if steps == 1 else 0.75) < np.median(saved) / np.median(expected) < 1.25
    if steps >= 4:
        assert 0.75 < saved.mean() / expected.mean() < 1.25
    if steps >= 16:
        assert np.quantile(saved / expected, 0.1) > 0.5


def test_a_near_client_saves_next_to_nothing(experiment: Experiment) -> None:
    client, rtt = sessions(experiment, "de-n4-client")
    site, _ = sessions(experiment, "de-n4-site")
    assert np.median(rtt) < 0.02
    assert abs(np.median(client - site)) < 0.05  # against about 570 ms from Japan


def test_round_trips_and_summary_keys(experiment: Experiment) -> None:
    s = summary(experiment)["policies"]["balanced"]  # type: ignore[index]
    assert set(SUMMARY_KEYS) <= set(s)
    by_tenant = s["agent_by_tenant"]
    for n in (1, 4, 16):
        assert by_tenant[f"jp-n{n}-client"]["round_trips"] == n + 1
        assert by_tenant[f"jp-n{n}-site"]["round_trips"] == 1
        assert by_tenant[f"jp-n{n}-site"]["e2e_p50_ms"] < by_tenant[f"jp-n{n}-client"]["e2e_p50_ms"]
    assert s["agent_sessions"] == sum(t["sessions"] for t in by_tenant.values())
    assert s["agent_unfinished"] == 0 and s["residency_violations"] == 0
    assert s["agent_e2e_p50_ms"] <= s["agent_e2e_p99_ms"]


def test_every_model_call_runs_on_an_engine_and_the_site_loop_stays_put(experiment: Experiment) -> None:
    r, w = experiment.runs[0].result, experiment.workload
    plan = r.agents
    assert plan is not None
    steps = plan.steps[: plan.n]
    assert int((r.status == OK).sum()) == int((steps + 1).sum())  # N + 1 engine completions per session
    site_rows = plan.site_loop[plan.session]
    follow = plan.step > 0
    assert np.all(r.endpoint[follow & site_rows] == r.endpoint[plan.session[follow & site_rows]])
    assert np.all(r.attempts[follow & site_rows] == 0) and np.all(r.rtt_s[follow & site_rows] == 0)
    assert np.all(r.attempts[follow & ~site_rows] == 1) and np.all(r.rtt_s[follow & ~site_rows] > 0)
    assert set(experiment.runs[0].grid.endpoints[k].site_id for k in r.endpoint) == {"eu-fra"}
    assert len(w) == plan.n


def test_scenarios_without_agents_report_exactly_the_old_keys() -> None:
    sc = load_scenario(EXAMPLES / "small.yaml").model_copy(update={"duration_s": 20, "requests": 200,
                                                                     "policies": ["nearest"]})
    assert list(summary(run_experiment(sc))["policies"]["nearest"]) == list(SUMMARY_KEYS)  # type: ignore[index]


def test_the_example_replays_identical_sessions_for_its_twins() -> None:
    sc = load_scenario(EXAMPLES / "agents.yaml").model_copy(update={"duration_s": 30, "requests": 120,
                                                                      "policies": ["nearest"]})
    ex = run_experiment(sc)
    w, names = ex.workload, ex.workload.tenant_names
    rows = {name: np.flatnonzero(w.tenant == k) for k, name in enumerate(names)}
    for a, b in (("n1-client", "n1-site"), ("n4-client", "n16-site")):
        assert len(rows[a]) > 0
        for col in (w.t, w.city, w.prompt, w.output, w.jitter_u):
            assert np.array_equal(col[rows[a]], col[rows[b]])


@pytest.mark.parametrize(("agent_spec", "field", "words"), [
    ({"steps": 0}, "tenants[0].agent.steps", "greater than or equal to 1"),
    ({"steps": 2, "loop": "edge"}, "tenants[0].agent.loop", "'client' or 'site'"),
    ({"steps": 2, "tool_ms": -5}, "tenants[0].agent.tool_ms", "greater than or equal to 0"),
    ({"steps": 2, "stepz": 3}, "tenants[0].agent.stepz", "Extra inputs"),
    ({"loop": "site"}, "tenants[0].agent.steps", "Field required"),
    ({"steps": 2, "output_tokens": 0}, "tenants[0].agent.output_tokens", "greater than 0"),
    # validated, then `aigrid sim` was a traceback (OverflowError: the workload's arrays hold 32-bit counts)
    ({"steps": 2, "output_tokens": 10**30}, "tenants[0].agent.output_tokens", "less than or equal to 2147483647"),
    # a typo names the field it is nearly
    ({"steps": 2, "stepz": 3}, "tenants[0].agent.stepz", "(did you mean steps?)"),
])
def test_a_bad_agent_spec_names_its_field(tmp_path: Path, agent_spec: dict[str, Any], field: str,
                                          words: str) -> None:
    raw = {"name": "bad", "duration_s": 10, "requests": 10, "models": [MODEL],
           "sites": [{"id": "s", "city": "Paris", "models": ["m8"]}], "policies": ["nearest"],
           "tenants": [{"name": "a", "share": 1, "model": "m8", "agent": agent_spec}]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert f"{field}: " in str(info.value) and words in str(info.value), str(info.value)


def test_an_agent_output_no_engine_can_hold_is_refused_naming_the_field(tmp_path: Path) -> None:
    """output_tokens: 100,000,000 validated (<= MAX_TOKENS) and `aigrid sim` ran for minutes: no engine's KV
    cache holds that many tokens of one request (the simulator's model of the hardware knows how many it holds)."""
    from aigrid.sim.cli import run_scenario

    raw = {"name": "long", "duration_s": 10, "requests": 10, "models": [MODEL],
           "sites": [{"id": "s", "city": "Paris", "models": ["m8"]}], "policies": ["nearest"],
           "tenants": [{"name": "a", "share": 1, "model": "m8", "agent": {"steps": 2, "output_tokens": 100_000_000}}]}
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ScenarioError, match=r"tenants\[0\]\.agent\.output_tokens: 100,000,000 tokens cannot fit the "
                                            r"KV cache of any engine \(the largest holds [0-9,]+ tokens"):
        run_scenario(path, tmp_path / "out", plots=False, quiet=True, workers=1)
    raw["tenants"][0]["agent"]["output_tokens"] = 64  # within it: runs
    path.write_text(yaml.safe_dump(raw))
    assert run_scenario(path, tmp_path / "out", plots=False, quiet=True, workers=1)
