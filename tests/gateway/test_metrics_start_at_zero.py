"""The series the alert rules count are shown at 0 from the gateway's start (GatewayMetrics.start_at_zero, called by
app.build_gateway). A labelled prometheus-client counter has no series until its first inc(): the series appeared at
1 with no sample before it, and increase() / rate() over it read 0: a gateway's first count of each series after its
start was lost. Where one count pages, it never did: one 503 quota_unavailable after a restart (AigridQuotaUnavailable,
rate > 0 for 2m: promtool, review RV2: fires at 4m from a series at 0, quiet from one born at 1); elsewhere an alert
saw a gateway's first shed of a class, or an endpoint's first failed attempt, one count later (a single shed never
pages: AigridLoadShedding's for: 5m). tests/deploy/test_prometheus_rules.py checks every rule's counters against it."""

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
    REQUEST_OUTCOMES,
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
        for e in spec.endpoints:
            for outcome in REQUEST_OUTCOMES:
                assert at(first, "aigrid_requests_total", site=e.site, endpoint=e.id, outcome=outcome) == 0.0
            for histogram in ("aigrid_ttft_seconds_count", "aigrid_tpot_seconds_count"):
                assert at(first, histogram, site=e.site) == 0.0, (histogram, e.site)
        # the only endpoint the residency allows fails: its first failed attempts and the request's 502 are counted
        # from the 0 already scraped (an increase() of 1 and 2), not new series whose first sample is their count
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
m.start_at_zero({"fra-1": "fra", "nrt-1": "nrt"})
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
        assert at(text, "aigrid_requests_total", site="nrt", endpoint="nrt-1", outcome="broke_mid_stream") == 0.0
        assert at(text, "aigrid_ttft_seconds_count", site="nrt") == 0.0
        assert at(text, "aigrid_requests_rejected_total", code="quota_unavailable") == 0.0

    check(scrape().decode())
    for pid in pids:
        retire_worker(pid, tmp_path)
    check(scrape().decode())
