"""Fakes shared by the two-site move tests (test_pair_moves.py) and the calibrated screen's (test_calibrate.py): a
placement of two single-H100 sites, the small demand with an RTX PRO 6000 offered, and a backend whose verdict on
a whole placement and check is written by the test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from aigrid.plan.demand import Demand, DemandError, parse_demand
from aigrid.plan.placement import Placement, PlannedSite
from aigrid.plan.runs import Job, Outcome
from aigrid.plan.traffic import Traffic, build_traffic
from aigrid.sim.geography import load_cities
from aigrid.spec.load import read_yaml

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "examples" / "plan" / "small.yaml"
MODEL = "llama-3.1-8b"


def site(sid: str, hardware: str = "h100", n: int = 1) -> PlannedSite:
    price = {"h100": 2.5, "rtx-pro-6000": 1.4, "l40s": 0.9}[hardware]
    return PlannedSite(sid, sid, 50.0, 8.0, "DE", "EU", hardware, 1, price, ((MODEL, n),))


TWO = Placement("t", (site("fra"), site("iad")))


class Fake:
    """Every tenant 100% within the SLO and each site 90% used, except where `fails(hardware, check)` says the
    placement misses that check (then 50%)."""

    name = "fake"

    def __init__(self, fails: Callable[[list[dict[str, Any]], dict[str, Any]], bool]) -> None:
        self.fails = fails
        self.scenarios: list[dict[str, Any]] = []
        self.checks: list[dict[str, Any]] = []

    def map(self, jobs: list[Job], done: Callable[[], None] | None = None) -> list[Outcome]:
        out = []
        for j in jobs:
            sc = j["scenario"]
            self.scenarios.append(sc)
            self.checks.append(j["check"])
            share = 0.5 if self.fails(sc["sites"], j["check"]) else 1.0
            out.append({"check": j["check"], "requests": 100, "within": int(100 * share), "rejected": 0,
                        "residency_violations": 0, "ttft_p99_ms": 500.0, "tpot_p99_ms": 50.0, "tpot_max_ms": 60.0,
                        "tenants": {t["name"].split("/")[0]: {"requests": 10, "within": int(10 * share),
                                                              "attainment": share} for t in sc["tenants"]},
                        "sites": {s["id"]: {"served": 10, "bad": 0 if share == 1.0 else 10, "slow_ttft": 0,
                                            "slow_tpot": 0, "utilization": 0.9} for s in sc["sites"]}})
            if done is not None:
                done()
        return out

    def close(self) -> None:
        pass


def hw_count(sites: list[dict[str, Any]], hardware: str) -> int:
    return sum(s["replicas"] for s in sites if s["hardware"] == hardware)


def small(**verify: int) -> tuple[Demand, Traffic]:
    raw = read_yaml(SMALL, DemandError, "demand file")
    assert isinstance(raw, dict)
    raw["supply"]["hardware"]["rtx-pro-6000"] = {"usd_per_hour": 1.40}
    raw["verify"] = {**raw["verify"], **verify}
    d = parse_demand(raw, str(SMALL), base=SMALL.parent)
    return d, build_traffic(d, load_cities(), d.verify.window_s)


def one_rtx_or_any_l40s(sites: list[dict[str, Any]], check: dict[str, Any]) -> bool:
    """Every single-site move of TWO fails (one RTX PRO 6000, or an L40S); two RTX PRO 6000 pass."""
    return hw_count(sites, "l40s") > 0 or hw_count(sites, "rtx-pro-6000") == 1
