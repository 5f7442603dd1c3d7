"""The fixed sets of series the alert rules count are shown at 0 from the gateway's start (GatewayMetrics.start_at_zero, called by
app.build_gateway). A labelled prometheus-client counter has no series until its first inc(): the series appeared at
1 with no sample before it, and increase() / rate() over it read 0: a gateway's first count of each series after its
start was lost. Where one count pages, it never did: one 503 quota_unavailable after a restart (AigridQuotaUnavailable,
rate > 0 for 2m: promtool, review RV2: fires at 4m from a series at 0, quiet from one born at 1); elsewhere an alert
saw a gateway's first shed of a class, or an endpoint's first failed attempt, one count later (a single shed never
pages: AigridLoadShedding's for: 5m). Only the fixed sets are (review ZC2): nothing per endpoint or site, read only by
ratios and quantiles gated by 20 attempts, where one count missed changes no alert; creating them grew /metrics with the
grid. tests/deploy/test_prometheus_rules.py checks every rule's counters against it."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from aigrid.core.urgency import LEVELS
from aigrid.errors import ApiError
from aigrid.gateway.app import build_app, build_gateway
from aigrid.gateway.metrics import (
    ADMISSION_OUTCOMES,
    REJECTED_CODES,
    GatewayMetrics,
    retire_worker,
)
from aigrid.gateway.routes import INTERNAL
from tests.gateway.conftest import _no_sleep, spec_in
from tests.gateway.fake_engine import FakeEngine

CHAT = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16}
JP_ONLY = {"x-aigrid-client-location": "Tokyo", "x-aigrid-residency": "JP"}


def samples(text: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """`name{...}`'s series in a /metrics text: its labels -> its value."""
    out = {}
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head.startswith(name + "{"):
            labels = frozenset(tuple(pair.split("=", 1)) for pair in head[len(name) + 1:-1].replace('"', "").split(","))
            assert labels not in out, f"{head} shown twice"
            out[labels] = float(value)
    return out


def at(text: str, name: str, **labels: str) -> float | None:
    return samples(text, name).get(frozenset(labels.items()))


async def test_a_fresh_gateway_shows_each_series_its_alerts_count_at_0_and_a_first_refusal_counts_from_it(
        tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    spec = spec_in(tmp_path)
    gw = build_gateway(spec, fakes, rng=random.Random(7), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as client:
        first = (await client.get("/metrics")).text
        for level in LEVELS:  # AigridLoadShedding's series, each class's (and the other outcomes)
            for outcome in ADMISSION_OUTCOMES:
                assert at(first, "aigrid_admission_total", priority_class=level, outcome=outcome) == 0.0, (level, outcome)
        for code in REJECTED_CODES:
            assert at(first, "aigrid_requests_rejected_total", code=code) == 0.0, code
        for e in spec.endpoints:  # one circuit opening pages (AigridEndpointCircuitReopening): count_circuits'
            assert at(first, "aigrid_endpoint_circuit_opens_total", site=e.site, endpoint=e.id) == 0.0, e.id
        # the only endpoint the residency allows fails: the request's 502 is counted from the 0 already scraped (an
        # increase() of 1), not a new series whose first sample is its count; the failed attempts are counted too
        fakes["nrt-smollm2"].down = True
        assert (await client.post("/v1/chat/completions", json=CHAT, headers=JP_ONLY)).status_code == 502
        then = (await client.get("/metrics")).text
        assert at(then, "aigrid_requests_rejected_total", code="upstream_failed") == 1.0
        failed = at(then, "aigrid_requests_total", site="nrt", endpoint="nrt-smollm2", outcome="failed_before_first_byte")
        assert failed is not None and failed >= 1.0
        assert at(then, "aigrid_admission_total", priority_class="interactive", outcome="shed") == 0.0


def test_the_codes_shown_at_0_are_every_refusal_the_grid_causes() -> None:
    """routes.refused's rule: a 429 or a 5xx is the grid's, counted on every route, and a 500 internal_error for a bug;
    an error class added to aigrid.errors with such a status is shown at 0 too (or this fails)."""
    classes, found = [ApiError], set()
    while classes:
        cls = classes.pop()
        classes.extend(cls.__subclasses__())
        if cls.code is not None and (cls.status == 429 or cls.status >= 500):
            found.add(cls.code)
    assert set(REJECTED_CODES) == found | {INTERNAL}


WORKER = """
import sys
from aigrid.gateway.metrics import GatewayMetrics
m = GatewayMetrics()
m.start_at_zero()
if sys.argv[1] == "shed":
    m.admission.labels("interactive", "shed").inc()
    m.requests.labels("fra", "fra-1", "ok").inc(2)
print(__import__("os").getpid())
"""


def worker(folder: Path, act: str) -> int:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder), "PYTHONPATH": "src"}
    proc = subprocess.run([sys.executable, "-c", WORKER, act], env=env, check=True, cwd=Path(__file__).parents[2],
                          capture_output=True, text=True)
    return int(proc.stdout)


def test_with_workers_each_worker_s_zeros_add_nothing_and_its_counts_stay_summed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every worker (--workers N: prometheus-client's multiprocess files) creates the series at 0 in its own file:
    /metrics shows each once, the workers' counts summed, and a dead worker's zeros fold into the archive."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    pids = [worker(tmp_path, "shed"), worker(tmp_path, "idle"), worker(tmp_path, "shed")]
    scrape = GatewayMetrics().exposition

    def check(text: str) -> None:
        shed = samples(text, "aigrid_admission_total")  # asserts no series is shown twice
        assert shed[frozenset({("priority_class", "interactive"), ("outcome", "shed")})] == 2.0
        assert shed[frozenset({("priority_class", "batch"), ("outcome", "shed")})] == 0.0
        assert len(shed) == len(LEVELS) * len(ADMISSION_OUTCOMES)
        assert at(text, "aigrid_requests_total", site="fra", endpoint="fra-1", outcome="ok") == 4.0
        assert at(text, "aigrid_requests_rejected_total", code="quota_unavailable") == 0.0

    check(scrape().decode())
    for pid in pids:
        retire_worker(pid, tmp_path)
    check(scrape().decode())


STARTED = ("aigrid_requests_total", "aigrid_requests_rejected_total", "aigrid_admission_total", "aigrid_ttft_seconds",
           "aigrid_tpot_seconds")
"""The families start_at_zero wrote into (aigrid_requests_total per endpoint and the histograms per site until
review ZC2)."""


def grid(tmp_path: Path, copies: int) -> tuple[int, int]:
    """A fresh gateway of the demo spec with each site and endpoint copied `copies` times: its number of endpoints,
    and the number of series of STARTED its /metrics shows."""
    spec = spec_in(tmp_path)
    sites = {f"{name}{i}": site for i in range(copies) for name, site in spec.sites.items()}
    endpoints = [e.model_copy(update={"id": f"{e.id}-{i}", "site": f"{e.site}{i}"})
                 for i in range(copies) for e in spec.endpoints]
    spec = spec.model_copy(update={"sites": sites, "endpoints": endpoints})
    gw = build_gateway(spec, {e.id: FakeEngine(e.id) for e in endpoints})
    shown = [line for line in gw.metrics.exposition().decode().splitlines()
             if not line.startswith("#") and line.startswith(STARTED)]
    return len(endpoints), len(shown)


def test_the_series_shown_at_start_do_not_grow_with_the_grid(tmp_path: Path) -> None:
    """Review RV2 (scratch script): 1,000 endpoints / 500 sites -> 25,067 series at start (1.6 MB /metrics, 0.54 s a
    scrape with workers), 8,800 / 4,400 -> 220,067. A fresh gateway shows the same fixed sets (REJECTED_CODES, each
    class x ADMISSION_OUTCOMES) whatever its size; only aigrid_endpoint_circuit_opens_total is per endpoint."""
    small, at_small = grid(tmp_path / "small", 1)
    large, at_large = grid(tmp_path / "large", 25)
    assert large == 25 * small
    assert at_small == at_large == len(REJECTED_CODES) + len(LEVELS) * len(ADMISSION_OUTCOMES)
