"""Urgency in the core: priority levels, what each class changes in a decision, deadlines, saturation."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from aigrid.core.policies import BUILTIN_POLICIES
from aigrid.core.scheduler import schedule
from aigrid.core.types import EndpointState, RequestInfo
from aigrid.core.urgency import (
    ENGINE_QUEUE_SHARE,
    LATE,
    REJECT,
    SEND,
    WAIT,
    AdmissionRules,
    budget_ms,
    class_of,
    label,
    neutral_choice,
    parse_level,
    verdict,
)
from tests.core.grid import CITIES, endpoint, view

BALANCED = BUILTIN_POLICIES["balanced"]
INTERACTIVE, STANDARD, BATCH = 9, 5, 0


def req(city: str = "frankfurt", **kw: object) -> RequestInfo:
    return RequestInfo(id="r1", model="small", prompt_tokens=200, max_output_tokens=128,
                       client_location=CITIES[city], **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "level"), [("interactive", 9), ("Standard", 5), (" batch ", 0), (3, 3),
                                              ("7", 7), (0, 0)])
def test_priority_is_a_class_name_or_a_level(value: object, level: int) -> None:
    assert parse_level(value) == level


@pytest.mark.parametrize("value", ["urgent", 10, -1, "1.5", True, None, 2.0])
def test_a_bad_priority_says_what_is_accepted(value: object) -> None:
    with pytest.raises(ValueError, match="interactive, standard, batch or an integer 0-9"):
        parse_level(value)


def test_levels_fall_into_three_classes() -> None:
    assert [class_of(n) for n in range(10)] == ["batch"] * 3 + ["standard"] * 4 + ["interactive"] * 3
    assert label(9) == "interactive" and label(8) == "interactive (level 8)"


def test_a_standard_request_without_deadline_is_decided_exactly_as_before() -> None:
    grid = (endpoint("fra", price=3.0), endpoint("iad", price=0.0))
    plain = schedule(req(), view(grid), BALANCED, random.Random(1))
    assert plain.urgency is None
    assert replace(plain, reason="") == replace(schedule(req(priority=STANDARD), view(grid), BALANCED,
                                                         random.Random(1)), reason="")


def test_interactive_takes_the_fast_site_even_at_a_higher_price() -> None:
    """Frankfurt client: fra is near but dear, iad cheap and an ocean away; both meet the SLO."""
    grid = (endpoint("fra", price=3.0), endpoint("iad", price=0.0))
    standard = schedule(req(), view(grid), BALANCED, random.Random(0))
    interactive = schedule(req(priority=INTERACTIVE), view(grid), BALANCED, random.Random(0))
    assert standard.chosen is not None and standard.chosen.site_id == "iad"
    assert interactive.chosen is not None and interactive.chosen.site_id == "fra"
    assert interactive.urgency is not None and interactive.urgency.klass == "interactive"
    assert interactive.urgency.weights["cost"] < interactive.urgency.base_weights["cost"]
    neutral = neutral_choice(interactive)  # what the policy as written would have chosen: explain shows it
    assert neutral is not None and neutral.site_id == "iad"
    assert "interactive: SLO 2000 ms" in interactive.reason


def test_batch_prefers_cheap_far_capacity_with_headroom() -> None:
    """fra at $0.1 (and $0.2 output) per Mtok, gru free and an ocean away. (RW, thirty-second session: with fra at
    $0.3 standard traffic went to fra only because proximity scored the distance its round trip already
    counts; since it scores health only, the ttft axis's 160 ms for fra nearly equals gru's price and headroom
    points, a tie the picker breaks at random.)"""
    grid = (endpoint("fra", price=0.1), endpoint("gru", price=0.0))
    standard = schedule(req(), view(grid), BALANCED, random.Random(0))
    batch = schedule(req(priority=BATCH), view(grid), BALANCED, random.Random(0))
    assert standard.chosen is not None and standard.chosen.site_id == "fra"
    assert batch.chosen is not None and batch.chosen.site_id == "gru"
    assert batch.urgency is not None and batch.urgency.slo_ms == 10 * BALANCED.ttft_slo_ms


def test_batch_waits_where_urgent_work_would_still_be_placed() -> None:
    grid = (endpoint("fra", slots=4), endpoint("iad", slots=4))
    half_full = {e.id: EndpointState(running=2) for e in grid}
    batch = schedule(req(priority=BATCH), view(grid, half_full), BALANCED, random.Random(0))
    assert batch.chosen is None and verdict(batch) == WAIT
    assert {r.filter for r in batch.rejected} == {"saturated"}
    assert "2 in system of 4 slots" in batch.rejected[0].reason
    for level in (STANDARD, INTERACTIVE):
        assert verdict(schedule(req(priority=level), view(grid, half_full), BALANCED, random.Random(0))) == SEND


def test_batch_also_waits_where_it_would_queue_inside_the_engine() -> None:
    grid = (endpoint("fra", slots=64),)
    queued = {"fra-small": EndpointState(running=1, pending_requests=1, pending_prompt_tokens=2_000_000)}
    batch = schedule(req(priority=BATCH), view(grid, queued), BALANCED, random.Random(0))
    assert verdict(batch) == WAIT and "ms of work queued ahead" in batch.rejected[0].reason


def test_a_deadline_that_no_site_can_meet_is_refused() -> None:
    grid = (endpoint("fra"), endpoint("iad"))
    d = schedule(req(deadline_ms=1.0), view(grid), BALANCED, random.Random(0))
    assert d.chosen is None and verdict(d) == LATE
    assert {r.filter for r in d.rejected} == {"deadline"}
    assert "past the deadline (1 ms left)" in d.rejected[0].reason


def test_a_deadline_drops_far_sites_and_caps_the_slo() -> None:
    grid = (endpoint("fra"), endpoint("nrt"))  # predicted TTFT from Frankfurt: fra ~130 ms, nrt ~265 ms
    d = schedule(req(deadline_ms=200.0), view(grid), BALANCED, random.Random(0))
    assert d.chosen is not None and d.chosen.site_id == "fra"
    assert [(r.endpoint_id, r.filter) for r in d.rejected] == [("nrt-small", "deadline")]
    assert d.urgency is not None and d.urgency.slo_ms == 200.0


def test_busy_beats_late_and_forbidden_is_rejected() -> None:
    grid = (endpoint("fra", slots=4),)
    full = {"fra-small": EndpointState(running=4, waiting=16)}  # the capacity filter: a full queue
    assert verdict(schedule(req(), view(grid, full), BALANCED, random.Random(0))) == WAIT
    jp_only = req(allowed_jurisdictions=frozenset({"JP"}))
    assert verdict(schedule(jp_only, view(grid), BALANCED, random.Random(0))) == REJECT


def test_admission_rules_expire_at_the_deadline_or_the_class_limit() -> None:
    rules = AdmissionRules()
    assert rules.expires(BATCH, 100.0, None) == 700.0
    assert rules.expires(INTERACTIVE, 100.0, None) == 110.0
    assert rules.expires(INTERACTIVE, 100.0, 800.0) == 100.8
    assert rules.remaining_ms(800.0, 100.0, 100.5) == pytest.approx(300.0)
    assert rules.remaining_ms(None, 100.0, 100.5) is None


def test_admission_rules_can_end_the_wait_at_a_multiple_of_the_slo() -> None:
    rules = AdmissionRules(max_wait_slo={"standard": 2.0, "batch": 1.0})
    assert rules.expires(STANDARD, 100.0, None, 1000.0) == 102.0  # 2 x 1 s SLO, before the 30 s limit
    assert rules.expires(STANDARD, 100.0, None) == 130.0  # no SLO known: the class's limit in seconds
    assert rules.expires(BATCH, 100.0, None, 1000.0) == 110.0  # batch's SLO is relaxed 10x
    assert rules.expires(INTERACTIVE, 100.0, None, 1000.0) == 110.0  # no factor for interactive
    assert rules.expires(STANDARD, 100.0, 500.0, 1000.0) == 100.5  # the deadline is earlier still
    assert AdmissionRules({"standard": 1.5}, max_wait_slo={"standard": 5.0}).expires(STANDARD, 0.0, None, 1000.0) == 1.5
    assert AdmissionRules(max_wait_slo={"standard": None}).expires(STANDARD, 0.0, None, 1000.0) == 30.0  # none
    # the default: a standard request waits its SLO at most (30 s when no SLO is known); the other classes
    # keep their limits in seconds
    assert AdmissionRules().expires(STANDARD, 0.0, None, 1000.0) == 1.0
    assert AdmissionRules().expires(STANDARD, 0.0, None, 60_000.0) == 30.0  # max_wait_s stays the outer bound
    assert AdmissionRules().expires(STANDARD, 0.0, None) == 30.0
    assert AdmissionRules().expires(INTERACTIVE, 0.0, None, 1000.0) == 10.0
    assert AdmissionRules().expires(BATCH, 0.0, None, 1000.0) == 600.0


def test_a_request_that_would_miss_its_slo_only_for_the_queue_waits_for_capacity() -> None:
    grid = (endpoint("fra", slots=4),)
    queued = {"fra-small": EndpointState(running=4, waiting=8)}  # ~3.6 s of queue, below the full-queue limit
    d = schedule(req(), view(grid, queued), BALANCED, random.Random(0))
    assert d.chosen is not None and d.chosen.prediction.ttft_ms > BALANCED.ttft_slo_ms
    assert verdict(d) == SEND  # without an SLO to protect (no admission queue), it is sent
    assert verdict(d, BALANCED.ttft_slo_ms) == WAIT
    idle = schedule(req(), view(grid), BALANCED, random.Random(0))
    assert verdict(idle, BALANCED.ttft_slo_ms) == SEND
    far = schedule(req(), view(grid), replace(BALANCED, ttft_slo_ms=5.0), random.Random(0))
    assert verdict(far, 5.0) == SEND  # waiting cannot help: its round trip and prefill alone miss the SLO


def test_a_request_that_waited_goes_only_where_it_still_meets_what_is_left_of_its_slo() -> None:
    grid = (endpoint("fra", slots=4),)
    slo = BALANCED.ttft_slo_ms
    whole = 1.0  # the engine may hold the whole SLO of queue: this test is about the wait, not the share
    some = {"fra-small": EndpointState(running=4, waiting=1)}  # a short queue: fresh, the request meets the SLO
    d = schedule(req(), view(grid, some), BALANCED, random.Random(0))
    p = d.chosen.prediction if d.chosen is not None else None
    assert p is not None and p.queue_ms > 0 and p.ttft_ms < slo
    assert verdict(d, slo, 0.0, whole) == SEND
    assert budget_ms(d, slo, 300.0) == slo - 300.0
    # Having waited, what is left of the SLO is the budget: once even the optimistic end of the prediction
    # is past it, it keeps waiting (to be shed at its class's limit, or sent once the queue is short enough).
    assert p.ttft_p10_ms < p.ttft_ms  # a calibrated spread: the optimistic end is below the point prediction
    assert verdict(d, slo, slo - p.ttft_p10_ms + 1.0, whole) == WAIT
    assert verdict(d, slo, slo - p.ttft_ms + 1.0, whole) == SEND  # the point prediction misses, the optimistic end fits
    assert verdict(d, slo, slo - p.ttft_p10_ms - 1.0, whole) == SEND
    # Past its SLO (stale: waiting only where shedding at the SLO is off) the full SLO is the rule again.
    assert verdict(d, slo, slo + 1.0, whole) == SEND
    # Nothing queued ahead: waiting cannot help, it goes.
    idle = schedule(req(), view(grid), BALANCED, random.Random(0))
    assert verdict(idle, slo, slo - 1.0, whole) == SEND
    # A request that misses the SLO on an idle engine too is sent as before, however long it waited.
    far = schedule(req(), view(grid, some), replace(BALANCED, ttft_slo_ms=5.0), random.Random(0))
    assert verdict(far, 5.0, 3.0, whole) == SEND


def test_the_budget_of_a_request_with_a_deadline_is_its_remaining_deadline_at_most() -> None:
    grid = (endpoint("fra", slots=4),)
    d = schedule(req(deadline_ms=400.0), view(grid), BALANCED, random.Random(0))
    assert d.urgency is not None and d.urgency.deadline_ms == 400.0
    assert budget_ms(d, BALANCED.ttft_slo_ms) == 400.0  # the deadline already counts from arrival
    assert budget_ms(d, BALANCED.ttft_slo_ms, 1800.0) == BALANCED.ttft_slo_ms - 1800.0  # the SLO's rest is less


def test_batch_waits_without_its_wait_counting_against_its_slo() -> None:
    grid = (endpoint("fra", slots=4),)
    some = {"fra-small": EndpointState(waiting=1)}  # a little queued ahead, not saturated for batch
    d = schedule(req(priority=BATCH), view(grid, some), BALANCED, random.Random(0))
    assert d.chosen is not None and d.urgency is not None and d.urgency.klass == "batch"
    assert d.chosen.prediction.queue_ms > 0
    slo = BALANCED.ttft_slo_ms
    assert verdict(d, slo) == SEND
    assert verdict(d, slo, slo * 9.9) == SEND  # batch is there to be delayed: the head of its queue goes


def test_past_its_share_of_the_slo_in_an_engine_queue_a_request_waits_at_the_gateway() -> None:
    grid = (endpoint("fra", slots=4),)
    slo = BALANCED.ttft_slo_ms
    some = {"fra-small": EndpointState(running=4, waiting=1)}  # a short queue: the request meets the SLO
    d = schedule(req(), view(grid, some), BALANCED, random.Random(0))
    p = d.chosen.prediction if d.chosen is not None else None
    assert p is not None and p.queue_ms > 0 and p.ttft_p10_ms < p.ttft_ms < slo
    assert verdict(d, slo, 0.0, 1.0) == SEND  # the whole SLO may be spent queued at the engine
    assert verdict(d, slo) == WAIT  # the default share: even its optimistic end is past 0.5 of the SLO
    share = p.ttft_p10_ms / slo
    # a smaller share: even the optimistic end of the prediction is past it, so the wait happens here
    assert verdict(d, slo, 0.0, share - 0.01) == WAIT
    assert verdict(d, slo, 0.0, share + 0.01) == SEND  # the optimistic end fits: sent, though the point misses
    assert p.ttft_ms > (share + 0.01) * slo
    # nothing queued ahead: waiting cannot help, whatever the share
    idle = schedule(req(), view(grid), BALANCED, random.Random(0))
    assert verdict(idle, slo, 0.0, 0.01) == SEND
    assert AdmissionRules().engine_queue_share == ENGINE_QUEUE_SHARE == 0.5  # the rules' default
