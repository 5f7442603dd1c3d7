"""The telemetry store: engine scrapes and the gateway's own observations become one GridView."""

from __future__ import annotations

import pytest

from aigrid.core.calibration import observe
from aigrid.core.types import Circuit, Endpoint, GeoPoint, Prediction, Site
from aigrid.engines.protocol import EngineStats
from aigrid.telemetry.circuit import CircuitBreaker
from aigrid.telemetry.prefill_book import merge_reports
from aigrid.telemetry.shared import SharedView
from aigrid.telemetry.store import (
    AFFINITY_ENTRIES,
    CALIBRATION_ENTRIES,
    MAX_COUNT,
    MAX_POWER_W,
    MAX_TOKENS,
    REASON_CHARS,
    TelemetryStore,
)
from aigrid.telemetry.window import DeltaMean


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make() -> tuple[TelemetryStore, Clock]:
    clock = Clock()
    site = Site("fra", "Frankfurt", GeoPoint(50, 8), "EU")
    ep = Endpoint("e1", "fra", "m", "f", 1.0, max_concurrency=2)
    return TelemetryStore({"fra": site}, (ep,), {}, clock), clock


def test_scrape_turns_histogram_counters_into_windowed_means() -> None:
    store, clock = make()
    store.record_scrape("e1", True, EngineStats(running=1, waiting=0, ttft_sum_s=10.0, ttft_count=10))
    assert store.state("e1").ttft_s is None  # one scrape is not a window
    clock.t += 1
    store.record_scrape("e1", True, EngineStats(running=2, waiting=3, ttft_sum_s=14.0, ttft_count=12))
    s = store.state("e1")
    assert s.ttft_s == 2.0 and s.running == 2 and s.waiting == 3 and s.age_s == 0.0
    clock.t += 5
    assert store.snapshot().state("e1").age_s == 5.0


def test_gateway_inflight_counts_when_engine_metrics_lag() -> None:
    store, _ = make()
    for _ in range(5):
        store.request_started("e1")
    s = store.snapshot().state("e1")
    assert (s.running, s.waiting) == (2, 3)
    store.request_finished("e1")
    assert store.snapshot().state("e1").waiting == 2


def test_failures_open_circuit_then_half_open_then_close() -> None:
    store, clock = make()
    for _ in range(3):
        store.record_failure("e1", "connection refused")
    assert store.snapshot().state("e1").circuit is Circuit.OPEN
    assert store.state("e1").error_rate > 0.5
    clock.t += 11
    assert store.snapshot().state("e1").circuit is Circuit.HALF_OPEN
    store.record_success("e1", 0.2)
    assert store.snapshot().state("e1").circuit is Circuit.CLOSED


def test_breaker_half_open_failure_reopens() -> None:
    b = CircuitBreaker(failure_threshold=2, cooldown_s=5)
    b.record_failure(0)
    assert b.state(0) is Circuit.CLOSED
    b.record_failure(1)
    assert b.state(2) is Circuit.OPEN and b.state(6) is Circuit.HALF_OPEN
    b.record_failure(6)
    assert b.state(7) is Circuit.OPEN


def test_breaker_says_when_a_failure_opened_it() -> None:
    """What aigrid_endpoint_circuit_opens_total counts: each entry into OPEN, from closed or from half-open, and not
    a failure while already open (another attempt that was under way)."""
    b = CircuitBreaker(failure_threshold=2, cooldown_s=5)
    assert [b.record_failure(0), b.record_failure(1), b.record_failure(2)] == [False, True, False]
    assert b.state(7) is Circuit.HALF_OPEN and b.record_failure(7) is True  # the one let through failed: again
    b.record_success()
    assert [b.record_failure(20), b.record_failure(21)] == [False, True]


def test_counter_reset_clears_the_mean() -> None:
    m = DeltaMean()
    m.update(10, 5)
    assert m.update(20, 10) == 2.0
    assert m.update(1, 1) is None


def test_a_mean_below_zero_is_not_read() -> None:
    """An engine whose histogram sum went down while its count went up: a TTFT of -50 s preferred it without bound."""
    m = DeltaMean()
    m.update(10, 5)
    assert m.update(20, 10) == 2.0
    assert m.update(-230, 15) is None


def test_affinity_is_bounded_and_visible_in_view() -> None:
    store, _ = make()
    store.remember_affinity(("p1", None), "e1")
    assert store.snapshot().prefix_owner["p1"] == "e1"


def test_affinity_is_queued_for_the_other_gateways_only_when_shared_and_stays_bounded() -> None:
    """Without shared state nothing takes the entries, so none are kept (they piled up, about 140 bytes per
    request, until a 10-minute soak found it); with it, a shared state that stays away keeps only the newest."""
    alone, _ = make()
    for i in range(100):
        alone.remember_affinity((f"p{i}",), "e1")
    assert alone.local_report("g", lambda: 0.0).affinity == ()
    assert alone.snapshot().prefix_owner["p99"] == "e1"  # still remembered for this gateway's own decisions
    clock = Clock()
    site = Site("fra", "Frankfurt", GeoPoint(50, 8), "EU")
    shared = TelemetryStore({"fra": site}, (Endpoint("e1", "fra", "m", "f", 1.0),), {}, clock, shares=True)
    for i in range(3 * AFFINITY_ENTRIES):
        shared.remember_affinity((f"p{i}",), "e1")
    report = shared.local_report("g", lambda: 0.0)
    assert len(report.affinity) == 3 * AFFINITY_ENTRIES  # one sync interval's worth goes out whole
    shared.requeue_affinity(report.affinity)  # the exchange failed: back in line, the newest kept
    assert len(shared._affinity_pending) == AFFINITY_ENTRIES
    assert shared._affinity_pending[-1] == (f"p{3 * AFFINITY_ENTRIES - 1}", "e1")


def test_measured_output_length_feeds_the_state() -> None:
    store, _ = make()
    assert store.state("e1").mean_output_tokens is None
    store.record_usage("e1", 20)
    store.record_usage("e1", 40)
    assert store.state("e1").mean_output_tokens == 20 + 0.3 * 20


def test_snapshot_rebuilds_only_what_changed() -> None:
    clock = Clock()
    sites = {"fra": Site("fra", "Frankfurt", GeoPoint(50, 8), "EU")}
    eps = (Endpoint("a", "fra", "m", "f", 1.0), Endpoint("b", "fra", "m", "f", 1.0))
    store = TelemetryStore(sites, eps, {}, clock)
    first = store.snapshot()
    store.request_started("a")
    second = store.snapshot()
    assert second.state("a").running == 1 and first.state("a").running == 0  # earlier views never change
    assert second.state("b") is first.state("b")  # untouched endpoint: not rebuilt


def test_calibration_observations_are_queued_only_when_shared_bounded_and_folded_from_others() -> None:
    """A gateway that shares state queues each outcome its calibration learned from (at most
    CALIBRATION_ENTRIES, the newest kept), and folds the other gateways' outcomes into its own calibration."""
    prediction = Prediction(0.0, 0.0, 0.0, model_ahead_ms=10.0, model_own_ms=100.0)
    alone, _ = make()
    alone.record_success("e1", 0.2, prediction)
    assert alone.calibration("e1").n == 1 and alone.local_report("g", lambda: 0.0).calibration == ()
    clock = Clock()
    site = Site("fra", "Frankfurt", GeoPoint(50, 8), "EU")
    shared = TelemetryStore({"fra": site}, (Endpoint("e1", "fra", "m", "f", 1.0),), {}, clock, shares=True)
    shared.record_success("e1", 0.2, prediction)
    report = shared.local_report("g", lambda: 0.0)
    assert report.calibration == (("e1", 10.0, 100.0, 200.0),)
    assert shared.local_report("g", lambda: 0.0).calibration == ()  # taken once
    for i in range(CALIBRATION_ENTRIES + 5):
        shared.record_success("e1", (i + 1) / 1000.0, prediction)
    shared.requeue_calibration(report.calibration)  # a failed exchange: back in line, the newest kept
    pending = shared.local_report("g", lambda: 0.0).calibration
    assert len(pending) == CALIBRATION_ENTRIES and pending[-1][3] == CALIBRATION_ENTRIES + 5.0
    before = shared.calibration("e1")
    others = (("e1", 10.0, 100.0, 150.0), ("gone", 1.0, 1.0, 1.0), ("e1", 0.0, 50.0, 80.0))
    shared.apply_shared(SharedView(calibration=others), lambda: 0.0)
    expected = observe(observe(before, 10.0, 100.0, 150.0), 0.0, 50.0, 80.0)  # the same pure update
    assert shared.calibration("e1") == expected
    assert shared.snapshot().state("e1").calibration == expected
    assert shared.local_report("g", lambda: 0.0).calibration == ()  # the others' outcomes are not sent back
    # with three other gateways each of their outcomes counts a third of one of this gateway's own
    shared.apply_shared(SharedView(calibration=others[:1], peers=3), lambda: 0.0)
    assert shared.calibration("e1") == observe(expected, 10.0, 100.0, 150.0, weight=1 / 3)


def test_pending_prompts_are_placed_in_time_for_the_predictor() -> None:
    """Each request sent is due at the engine half the measured round trip later; its first token anchors the
    book half a round trip before it came back; every snapshot places them relative to its own time."""
    store, clock = make()
    store.record_rtt("e1", 0.020)  # 10 ms each way
    store.request_started("e1", 800, "r1")
    clock.t += 0.005
    store.request_started("e1", 300, "r2")
    clock.t += 0.045
    q = store.snapshot().state("e1").prefill_queue
    assert q is not None and q.anchor_s is None
    assert q.arrivals == (pytest.approx((-0.040, 800)), pytest.approx((-0.035, 300)))
    clock.t += 0.010  # nothing changed, but the snapshot is 10 ms later: the times move with it
    assert store.snapshot().state("e1").prefill_queue.arrivals[0] == pytest.approx((-0.050, 800))
    store.first_token("e1", 800, "r1")  # produced 10 ms ago; r1 itself arrived 50 ms ago
    q = store.snapshot().state("e1").prefill_queue
    assert q.anchor_s == pytest.approx(-0.010) and q.arrivals == (pytest.approx((-0.045, 300)),)
    store.request_finished("e1", 300, False, "r2")
    assert store.snapshot().state("e1").prefill_queue.arrivals == ()


def test_the_other_gateways_pending_prompts_arrive_in_wall_time() -> None:
    """A's book crosses the shared state in wall time and lands in B's clock: B places A's prompt where A
    does, though the two stores' clocks differ by 900 s."""
    a, clock_a = make()
    b, clock_b = make()
    clock_b.t = clock_a.t + 900.0
    a.request_started("e1", 640, "ra")
    a.reserve("e1", 100, "rb")
    report = a.local_report("gw-a", lambda: 5_000.0)
    b.apply_shared(SharedView(queues=merge_reports([report.queues])), lambda: 5_000.0)
    assert b.snapshot().state("e1").prefill_queue == a.snapshot().state("e1").prefill_queue
    assert len(b.state("e1").prefill_queue.arrivals) == 2
    a.cancel_reservation("e1", 100, "rb")
    assert [t for _, t in a.state("e1").prefill_queue.arrivals] == [640]


def test_a_scrape_ages_with_what_the_gateway_saw_finish() -> None:
    """The engine scraped while 5 of this gateway's requests were there; 3 finish before the next scrape:
    the view counts 2, not the scrape's 5 (one repeated prompt on two engines herded onto the one whose old
    scrape looked idle, docs/routing.md)."""
    store, _ = make()
    for _ in range(5):
        store.request_started("e1")
    store.record_scrape("e1", True, EngineStats(running=2, waiting=3))
    for _ in range(3):
        store.request_finished("e1")
    s = store.snapshot().state("e1")
    assert (s.running, s.waiting) == (2, 0)
    store.request_finished("e1")
    store.request_finished("e1")
    s = store.snapshot().state("e1")
    assert (s.running, s.waiting) == (0, 0)


def test_an_engines_reason_enters_bounded_and_printable() -> None:
    """A health reason or an error text is the engine's words: it reached /v1/grid, the decisions and every
    dashboard each tick as it came (a 10 MB reason, sent to every reader at every tick; control characters)."""
    store, _ = make()
    store.record_scrape("e1", False, None, reason="x" * 10_000_000)
    reason = store.snapshot().state("e1").reason
    assert len(reason) == REASON_CHARS and reason.endswith("…")
    store.record_failure("e1", "bad\x1b[2J\r\nline\x00two\u202e" + "y" * 500)
    reason = store.snapshot().state("e1").reason
    assert len(reason) == REASON_CHARS and reason.isprintable() and reason.startswith("bad?[2J??line?two?y")
    store.record_scrape("e1", False, None, reason="health check failed")
    assert store.snapshot().state("e1").reason == "health check failed"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_an_engines_numbers_enter_finite(bad: float) -> None:
    """NaN or inf from an engine (any adapter, not only the Prometheus parsers) is read as not reported."""
    store, clock = make()
    store.record_scrape("e1", True, EngineStats(running=bad, waiting=bad, kv_usage=bad, power_w=bad,  # type: ignore[arg-type]
                                                ttft_sum_s=bad, ttft_count=bad))
    s = store.snapshot().state("e1")
    assert (s.running, s.waiting, s.kv_usage, s.power_w, s.ttft_s) == (0, 0, None, None, None)
    assert s.power_source == "estimated"


def test_an_engines_numbers_enter_within_range() -> None:
    """Negative counts read 0, a KV fraction is clamped to [0, 1], absurd values are capped."""
    store, clock = make()
    store.record_scrape("e1", True, EngineStats(running=-1000, waiting=10**300, kv_usage=5.0, power_w=1e300))
    s = store.snapshot().state("e1")
    assert (s.running, s.waiting, s.kv_usage, s.power_w) == (0, MAX_COUNT, 1.0, MAX_POWER_W)
    store.record_scrape("e1", True, EngineStats(kv_usage=-0.5, power_w=-3.0, running=3))
    s = store.snapshot().state("e1")
    assert (s.running, s.kv_usage, s.power_w) == (3, 0.0, 0.0)
    store.record_scrape("e1", True, EngineStats(ttft_sum_s=1e300, ttft_count=1e300))
    clock.t += 1
    store.record_scrape("e1", True, EngineStats(ttft_sum_s=1e308, ttft_count=1e308))
    ttft = store.snapshot().state("e1").ttft_s
    assert ttft is None or 0.0 <= ttft < 1e6


def test_a_nan_queue_from_an_engine_never_reaches_the_routing_core() -> None:
    """Running and waiting are ints in the compiled build: a NaN from an adapter, read as it came, raised TypeError
    in snapshot() (merged_state), which every decision of every model takes. Read as not reported, the endpoint is
    ranked on the gateway's own count of its requests, like one without metrics."""
    import random

    from aigrid.core.policies import BUILTIN_POLICIES
    from aigrid.core.scheduler import schedule
    from aigrid.core.types import RequestInfo

    store, _ = make()
    nan = float("nan")
    store.record_scrape("e1", True, EngineStats(running=nan, waiting=nan, kv_usage=nan))  # type: ignore[arg-type]
    request = RequestInfo(id="r1", model="m", prompt_tokens=200, max_output_tokens=128)
    decision = schedule(request, store.snapshot(), BUILTIN_POLICIES["balanced"], random.Random(0))
    assert decision.chosen is not None and decision.chosen.endpoint_id == "e1"


@pytest.mark.parametrize(("reported", "read"), [(-1_000_000, 0.0), (10**400, float(MAX_TOKENS)), (300, 300.0)])
def test_an_answers_reported_length_enters_within_range(reported: int, read: float) -> None:
    """The completion_tokens an engine reports in its usage (any JSON integer) is the mean answer length the
    predictor reads (core/predict.py): before, -1,000,000 and 10**400 (a 401-digit int) were kept as they came."""
    import random

    from aigrid.core.policies import BUILTIN_POLICIES
    from aigrid.core.scheduler import schedule
    from aigrid.core.types import RequestInfo

    store, _ = make()
    store.record_usage("e1", reported)
    assert store.snapshot().state("e1").mean_output_tokens == read
    request = RequestInfo(id="r1", model="m", prompt_tokens=200, max_output_tokens=128)
    assert schedule(request, store.snapshot(), BUILTIN_POLICIES["balanced"], random.Random(0)).chosen is not None
