"""Where check runs execute: local processes and a local Ray instance give the same figures."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from aigrid.errors import ConfigError
from aigrid.plan.checks import Check, scenario_for
from aigrid.plan.demand import load_demand
from aigrid.plan.placement import Placement, PlannedSite
from aigrid.plan.runs import LocalBackend, RayBackend
from aigrid.plan.traffic import build_traffic
from aigrid.plan.verify import passes
from aigrid.sim.geography import load_cities

ROOT = Path(__file__).resolve().parents[2]


def jobs() -> list[dict]:  # type: ignore[type-arg]
    d = load_demand(ROOT / "examples" / "plan" / "small.yaml")
    d = d.model_copy(update={"verify": d.verify.model_copy(update={"window_s": 20.0})})
    t = build_traffic(d, load_cities(), d.verify.window_s)
    p = Placement("t", (
        PlannedSite("fra", "Frankfurt", 50.11, 8.68, "DE", "EU", "h100", 1, 2.5, (("llama-3.1-8b", 2),)),
        PlannedSite("iad", "Ashburn", 39.04, -77.49, "US", "US", "h100", 1, 2.5, (("llama-3.1-8b", 1),))))
    return [{"scenario": scenario_for(d, t, p, Check(16, f)).model_dump(),
             "check": {"hour": 16, "failed": f, "label": ""}} for f in (None, "fra")]


def strip(outcomes: list[dict]) -> list[dict]:  # type: ignore[type-arg]
    return [{k: v for k, v in o.items() if k != "wall_s"} for o in outcomes]


def test_local_pool_matches_in_process_and_losing_the_only_eu_site_fails() -> None:
    one = LocalBackend(1).map(jobs())
    pool = LocalBackend(2)
    try:
        two = pool.map(jobs())
    finally:
        pool.close()
    assert strip(one) == strip(two)
    up, down = one
    assert up["residency_violations"] == 0 and down["residency_violations"] == 0
    assert down["tenants"]["eu-bank"]["attainment"] == 0.0 and not passes(down, 0.9)  # no EU site left
    assert down["sites"]["fra"]["served"] == 0


def test_ray_backend_runs_the_same_checks() -> None:
    pytest.importorskip("ray")
    ray = RayBackend("local")
    try:
        got = ray.map(jobs())
    finally:
        ray.close()
    assert strip(got) == strip(LocalBackend(1).map(jobs()))


def test_a_ray_address_where_nothing_answers_is_refused_at_once() -> None:
    """`--ray HOST:PORT` with nothing there: Ray retried for minutes, a warning every few seconds; now a
    ConfigError naming the address within the probe's few seconds."""
    started = time.monotonic()
    for address in ("127.0.0.1:1", "ray://127.0.0.1:1"):
        with pytest.raises(ConfigError, match=f"--ray {address}: nothing answers at 127.0.0.1:1"):
            RayBackend(address)
    assert time.monotonic() - started < 30
