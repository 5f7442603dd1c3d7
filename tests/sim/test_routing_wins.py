"""aigrid's default policy against the simple baselines, on a small deterministic grid under herding.

Four sites on four continents with the mixed hardware of a real grid (an H100, an RTX PRO 6000, L40S pairs),
worldwide users (conversation and bursty code traffic) at about half load, 16 gateways deciding on
2-second-old telemetry. The same traffic for every policy; the default
must beat round robin, least-loaded and power-of-two choices on p99 TTFT and on goodput. (The full table
over every scenario and load is scripts/routing_matrix.py; docs/simulator.md has it.)
"""

from __future__ import annotations

import pytest

from aigrid.core.policies import DEFAULT_POLICY
from aigrid.sim.experiment import Experiment, run_experiment
from aigrid.sim.scenario import Scenario

BASELINES = ["round-robin", "least-loaded", "power-of-two"]


def scenario() -> Scenario:
    return Scenario.model_validate({
        "name": "routing-wins", "seed": 4, "duration_s": 90, "requests": 3600,
        "models": [{"name": "m8", "family": "llama-3", "params_b": 8.03, "kv_bytes_per_token": 131072}],
        "sites": [{"id": s, "city": c, "hardware": hw, "replicas": n, "models": ["m8"]}
                  for s, c, hw, n in (("us", "Ashburn", "h100", 1), ("eu", "Frankfurt am Main", "l40s", 2),
                                      ("jp", "Tokyo", "rtx-pro-6000", 1), ("br", "São Paulo", "l40s", 2))],
        "tenants": [{"name": "chat", "share": 0.8, "trace": "conv", "model": "m8"},
                    {"name": "code", "share": 0.2, "trace": "code", "model": "m8"}],
        "policies": [DEFAULT_POLICY, *BASELINES],
        "gateway": {"count": 16, "telemetry_interval_s": 1.0, "telemetry_lag_s": 2.0},
        "slo": {"ttft_ms": 1000, "tpot_ms": 100}, "write_requests_csv": False,
    })


@pytest.fixture(scope="module")
def experiment() -> Experiment:
    return run_experiment(scenario())


def test_default_beats_the_simple_baselines_on_tail_and_goodput(experiment: Experiment) -> None:
    by = {r.label: r.metrics for r in experiment.runs}
    me = by[DEFAULT_POLICY]
    assert me.mean_utilization > 0.3  # a loaded grid, not an idle one
    for name in BASELINES:
        assert me.ttft_p99_ms < by[name].ttft_p99_ms, (name, me.ttft_p99_ms, by[name].ttft_p99_ms)
        assert me.goodput > by[name].goodput, (name, me.goodput, by[name].goodput)
    assert me.ttft_p50_ms < min(by[name].ttft_p50_ms for name in BASELINES)


def test_prediction_error_and_floor_are_reported(experiment: Experiment) -> None:
    me = next(r.metrics for r in experiment.runs if r.label == DEFAULT_POLICY)
    assert me.pred_err_p50 <= 0.4 and me.pred_err_p90 < 2.0  # a regression guard; the table has the figures
    assert 1.0 <= me.floor_ratio_p50 < me.floor_ratio_p99
    rr = next(r.metrics for r in experiment.runs if r.label == "round-robin")
    assert rr.pred_err_p50 != rr.pred_err_p50  # NaN: a baseline predicts nothing
