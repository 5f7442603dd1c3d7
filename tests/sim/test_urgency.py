"""Urgency in the simulator: the spike scenario's headline and fair sharing across four gateways."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import yaml

from aigrid.core.urgency import ENGINE_QUEUE_SHARE
from aigrid.sim.experiment import PolicyRun, run_experiment
from aigrid.sim.parallel import Tick, default_workers, run_all
from aigrid.sim.runner import OK, SHED
from aigrid.sim.scenario import Scenario, ScenarioError, load_scenario

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "sim"


def test_spike_keeps_interactive_within_its_slo_and_delays_batch_without_losing_it() -> None:
    sc = load_scenario(EXAMPLES / "spike.yaml").model_copy(update={"policies": ["balanced", "balanced:fcfs"]})
    runs = {r.label: r.metrics for r in run_experiment(sc).runs}
    urgent, fcfs = runs["balanced"], runs["balanced:fcfs"]
    inter = urgent.by_class["interactive"]
    assert inter["goodput"] >= 0.99 and inter["ttft_p99_ms"] <= sc.slo.ttft_ms
    assert urgent.goodput >= fcfs.goodput
    assert urgent.by_class["batch"]["deferred"] > 1000  # batch waited at the gateways through the spike ...
    assert urgent.rejected == urgent.shed == 0  # ... and none was lost
    assert fcfs.by_class["interactive"]["goodput"] < 0.9 and fcfs.deferred == 0


def hammered(gateways: int) -> Scenario:
    """Two tenants of equal weight on one CPU box, one asking three times as much as the other, both far
    more than the box serves."""
    return Scenario.model_validate({
        "name": "hammer", "seed": 3, "duration_s": 60, "requests": 15000,
        "models": [{"name": "m1", "family": "f", "params_b": 1.24, "kv_bytes_per_token": 32768}],
        "sites": [{"id": "box", "city": "Paris", "hardware": "l40s", "models": ["m1"]}],
        "tenants": [{"name": "heavy", "share": 0.75, "model": "m1", "priority": "batch", "continents": ["EU"],
                     "max_prompt_tokens": 512},
                    {"name": "light", "share": 0.25, "model": "m1", "priority": "batch", "continents": ["EU"],
                     "max_prompt_tokens": 512}],
        "policies": ["balanced", "balanced:fcfs"],
        "gateway": {"count": gateways, "telemetry_interval_s": 1.0, "telemetry_lag_s": 1.0,
                    "admission": {"max_wait_s": {"batch": 20.0}}},
        "diurnal": {"peak_to_trough": 1.0},
    })


def test_two_equal_tenants_hammering_one_site_get_equal_service_across_four_gateways() -> None:
    ex = run_experiment(hammered(4))
    w = ex.workload
    fair, fcfs = (next(r.result for r in ex.runs if r.label == label) for label in ("balanced", "balanced:fcfs"))
    busy = w.t < 50.0  # both tenants have requests waiting throughout: count what each got served
    heavy, light = (int(((fair.status == OK) & (w.tenant == k) & busy).sum()) for k in (0, 1))
    assert abs(heavy - light) <= 0.1 * max(heavy, light), (heavy, light)
    assert int((fair.status == SHED).sum()) > 0  # the excess was shed (429), and counted
    # first come, first served gives the heavy tenant its three quarters instead
    f_heavy, f_light = (int(((fcfs.status == OK) & (w.tenant == k) & busy).sum()) for k in (0, 1))
    assert f_heavy > 2 * f_light
    assert np.all(fair.status != 0)  # every request ended served, shed or refused: none left pending


def overloaded(admission: dict[str, object]) -> Scenario:
    """One standard tenant asking a CPU box for about twice what it serves. The engine may hold a request's
    whole SLO of queue (engine_queue_share 1.0) unless the test sets it: the tests of the longest wait compare
    wait limits alone."""
    admission = {"engine_queue_share": 1.0, **admission}
    return Scenario.model_validate({
        "name": "overload", "seed": 5, "duration_s": 40, "requests": 4000,
        "models": [{"name": "m1", "family": "f", "params_b": 1.24, "kv_bytes_per_token": 32768}],
        "sites": [{"id": "box", "city": "Paris", "hardware": "l40s", "models": ["m1"]}],
        "tenants": [{"name": "t", "share": 1.0, "model": "m1", "continents": ["EU"], "max_prompt_tokens": 512}],
        "policies": ["balanced"], "slo": {"ttft_ms": 1000},
        "gateway": {"count": 2, "telemetry_interval_s": 1.0, "telemetry_lag_s": 1.0, "admission": admission},
        "diurnal": {"peak_to_trough": 1.0},
    })


# the overloaded box under each admission setting the two tests below compare ("default": overloaded's own,
# engine_queue_share 1.0; "short queue": the default share)
OVERLOADS: dict[str, dict[str, object]] = {
    "30s": {"max_wait_slo": None}, "30s, per class": {"max_wait_slo": {"standard": None}},
    "2slo": {"max_wait_slo": {"standard": 2.0}},
    "2s": {"max_wait_s": {"standard": 2.0}, "max_wait_slo": {"standard": None}}, "default": {},
    "short queue": {"engine_queue_share": ENGINE_QUEUE_SHARE}}


def _overloaded_run(admission: Mapping[str, object], tick: Tick) -> PolicyRun:
    return run_experiment(overloaded(dict(admission))).runs[0]


@pytest.fixture(scope="module")
def overload_runs() -> dict[str, PolicyRun]:
    """Each setting's run, once for the module (the tests only read them), side by side in worker processes
    (sim/parallel.py, as run_experiment runs its policies): each is one policy's run, which one after the other
    left the second core idle, and the engine-queue test ran "default" a second time."""
    tasks = [partial(_overloaded_run, adm) for adm in OVERLOADS.values()]
    return dict(zip(OVERLOADS, run_all(tasks, workers=default_workers(len(tasks))), strict=True))


def test_the_longest_wait_can_be_set_as_a_multiple_of_the_slo(overload_runs: dict[str, PolicyRun]) -> None:
    runs = overload_runs
    late, slo, secs, default = runs["30s"], runs["2slo"], runs["2s"], runs["default"]
    # the opt-out, for every class or for standard alone: only the 30 s limit
    assert np.array_equal(late.result.status, runs["30s, per class"].result.status)
    assert late.metrics.shed > 0 and late.metrics.deferred > 0  # the box is overloaded: requests wait
    # 2 x a 1 s SLO is a 2 s limit: the same decisions, request for request
    assert np.array_equal(slo.result.status, secs.result.status)
    assert np.array_equal(np.nan_to_num(slo.result.ttft_s), np.nan_to_num(secs.result.ttft_s))
    # shedding earlier: more 429s, and no request served after waiting up to 30 s
    assert slo.metrics.shed > late.metrics.shed
    served = lambda r: r.result.ttft_s[r.result.status == OK]  # noqa: E731
    assert served(slo).max() < served(late).max()
    assert slo.metrics.ttft_p99_ms < late.metrics.ttft_p99_ms
    # the default sheds a standard request once it has waited 1x its SLO (1 s here): earlier still than 2x
    assert default.metrics.shed > slo.metrics.shed
    assert served(default).max() < served(late).max()
    assert default.metrics.goodput > late.metrics.goodput


def test_scenario_rejects_a_wait_limit_that_is_not_positive(tmp_path: Path) -> None:
    raw = overloaded({}).model_dump(mode="json", exclude_defaults=True)
    raw["gateway"]["admission"] = {"max_wait_slo": {"standard": 0}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ScenarioError, match=r"gateway\.admission\.max_wait_slo: must be > 0"):
        load_scenario(path)


def test_a_shorter_queue_at_the_engine_serves_more_within_the_slo(overload_runs: dict[str, PolicyRun]) -> None:
    """The default engine_queue_share (ENGINE_QUEUE_SHARE, 0.5) against the whole SLO queued at the engine
    (1.0), on the overloaded box: the engine's queue stays shorter, the gateway's serves what fits first and
    sheds at the SLO, and more requests meet the SLO, sooner, with a shorter tail."""
    assert overloaded(OVERLOADS["default"]).gateway.admission.engine_queue_share == 1.0
    whole, short = (overload_runs[name].metrics for name in ("default", "short queue"))
    assert short.goodput > whole.goodput
    assert short.ttft_p50_ms < whole.ttft_p50_ms
    assert short.ttft_p99_ms < whole.ttft_p99_ms
