"""Abuse signals over every worker's requests: digests, the hub's monitor, the merge of verdicts, the wire."""

from __future__ import annotations

import pytest

from aigrid.security.firewall import abuse_shared as wire
from aigrid.security.firewall.abuse import (
    AbuseAction,
    AbuseMonitor,
    AbuseRules,
    AbuseVerdict,
    RequestTraits,
    digest,
)
from aigrid.security.firewall.abuse_shared import HubAbuse, SharedAbuseMonitor, merge

RULES = AbuseRules(window_s=60.0, min_requests=5, max_requests=10)


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


def unique(i: int) -> RequestTraits:
    return RequestTraits(f"probe number {i}", temperature=0.0, logprobs=True, top_logprobs=10)


def test_a_digest_counts_as_the_request_it_came_from() -> None:
    clock = Clock()
    by_text, by_digest = AbuseMonitor(RULES, clock), AbuseMonitor(RULES, clock)
    for i in range(12):
        clock.t += 1
        t = RequestTraits(f"Summarise ticket {i % 3}", temperature=0.0 if i % 2 else 0.7, logit_bias=i % 4 == 0)
        assert by_text.observe("k", t) == by_digest.observe_digest("k", digest(t, RULES.prefix_chars))
    d = digest(unique(1), RULES.prefix_chars)
    assert d.greedy and d.probing and len(d.prompt) == len(d.prefix) == 16 and "probe" not in d.prompt


def test_count_all_then_verdict_equals_observing_one_by_one() -> None:
    clock = Clock()
    one, batch = AbuseMonitor(RULES, clock), AbuseMonitor(RULES, clock)
    ds = [("k", digest(unique(i), RULES.prefix_chars)) for i in range(8)] + [("j", digest(unique(0), 32))]
    last = [one.observe_digest(k, d) for k, d in ds][-2]
    assert batch.count_all(ds) == {"k", "j"}
    assert batch.verdict("k") == last and last.action == AbuseAction.THROTTLE
    assert batch.verdict("unknown") == AbuseVerdict(AbuseAction.ALLOW, (), 0)
    clock.t += 61  # the window slid past them
    assert batch.verdict("k") == AbuseVerdict(AbuseAction.ALLOW, (), 0)


def test_merge_keeps_the_more_severe_verdict() -> None:
    allow = AbuseVerdict(AbuseAction.ALLOW, (), 3)
    flag = AbuseVerdict(AbuseAction.FLAG, ("volume",), 11, shared=True)
    throttle = AbuseVerdict(AbuseAction.THROTTLE, ("diversity", "logprobs"), 6)
    assert merge(allow, None) is allow
    assert merge(allow, flag) is flag
    assert merge(throttle, flag) is throttle
    local_flag = AbuseVerdict(AbuseAction.FLAG, ("diversity",), 5)
    assert merge(local_flag, flag) is flag  # a tie: the one that counted more requests


def test_two_workers_below_the_volume_alone_are_flagged_together() -> None:
    clock = Clock()
    hub = HubAbuse(AbuseMonitor(RULES, clock))
    workers = [SharedAbuseMonitor(AbuseMonitor(RULES, clock)) for _ in range(2)]
    same = RequestTraits("hello", temperature=0.7)  # one prompt: only the volume signal can fire
    for i in range(8):  # 16 requests in all, 8 per worker: under max_requests=10 on each
        clock.t += 0.1
        assert workers[i % 2].observe("k", same).action == AbuseAction.ALLOW
        assert workers[(i + 1) % 2].observe("k", same).action == AbuseAction.ALLOW
    def sync(w: SharedAbuseMonitor) -> None:  # one batch, over the wire as the hub gets it
        sent = wire.request_from_wire(wire.request_to_wire(w.since, w.take_batch()))
        raw = wire.answer_to_wire(hub.exchange(*sent))
        w.apply(wire.answer_from_wire(raw))

    sync(workers[0])
    assert workers[0].observe("k", same).action == AbuseAction.ALLOW  # the hub has seen its 8 only
    sync(workers[1])
    assert workers[1].observe("k", same).action == AbuseAction.FLAG  # 17: the hub's answer to worker 1
    sync(workers[0])  # worker 0 learns at its next batch: two intervals at most
    assert workers[0].take_batch() == []
    v = workers[0].observe("k", same)
    assert v.action == AbuseAction.FLAG and v.signals == ("volume",) and v.shared and v.requests_in_window == 17
    assert workers[1].observe("other", same).action == AbuseAction.ALLOW
    assert v.to_dict()["message"] == "17 requests in the window (all workers)"
    workers[1].forget_shared()  # the hub stopped answering: local verdicts only
    assert workers[1].observe("k", same).action == AbuseAction.ALLOW
    clock.t += 61  # the window slid past them: the hub clears the key at the next batch
    answer = hub.exchange(workers[0].since, workers[0].take_batch())
    assert not answer.full and answer.verdicts == {"k": None}  # a change: no signal any more
    workers[0].apply(answer)
    assert workers[0].observe("k", same).action == AbuseAction.ALLOW


def test_a_key_under_the_thresholds_in_total_is_never_signalled() -> None:
    clock = Clock()
    hub = HubAbuse(AbuseMonitor(RULES, clock))
    workers = [SharedAbuseMonitor(AbuseMonitor(RULES, clock)) for _ in range(2)]
    for i in range(10):  # exactly max_requests in all, one prompt: no signal
        clock.t += 0.1
        assert workers[i % 2].observe("k", RequestTraits("hello")).action == AbuseAction.ALLOW
        for w in workers:
            w.apply(hub.exchange(w.since, w.take_batch()))
    assert hub.monitor.verdict("k").requests_in_window == 10 and hub.exchange(0, []).verdicts == {}


def test_answers_carry_changes_only_and_everything_to_a_worker_that_is_new_or_behind(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from aigrid.security.firewall import abuse_shared

    clock = Clock()
    hub = HubAbuse(AbuseMonitor(RULES, clock))
    old, new = SharedAbuseMonitor(AbuseMonitor(RULES, clock)), SharedAbuseMonitor(AbuseMonitor(RULES, clock))
    for i in range(11):
        old.observe(f"k{i % 2}", RequestTraits("hello"))
        old.observe("loud", RequestTraits("hello"))
    first = hub.exchange(old.since, old.take_batch())
    assert first.full and set(first.verdicts) == {"loud"}  # a worker's first answer: everything
    old.apply(first)
    quiet = hub.exchange(old.since, [])
    assert not quiet.full and quiet.verdicts == {} and quiet.seq == first.seq  # nothing changed: nothing sent
    clock.t += 0.1
    for _ in range(5):
        new.observe("k0", RequestTraits("hello"))
    answer = hub.exchange(new.since, new.take_batch())
    assert answer.full and set(answer.verdicts) == {"loud", "k0"}
    new.apply(answer)
    delta = hub.exchange(old.since, [])
    assert not delta.full and set(delta.verdicts) == {"k0"}  # only the change
    old.apply(delta)
    assert old.shared("k0") == new.shared("k0") and old.shared("k0").requests_in_window == 11  # type: ignore[union-attr]
    monkeypatch.setattr(abuse_shared, "KEEP_CHANGES_S", 1.0)
    clock.t += 5  # the hub forgot the changes this worker has not seen: it gets everything again
    new.observe("k1", RequestTraits("hello"))
    hub.exchange(new.since, new.take_batch())
    behind = hub.exchange(old.since - 1, [])
    assert behind.full and set(behind.verdicts) == {"loud", "k0"}
    old.forget_shared()
    assert old.since == 0 and old.shared("loud") is None
    assert hub.exchange(old.since, []).full


def test_pending_digests_are_bounded() -> None:
    w = SharedAbuseMonitor(AbuseMonitor(RULES), max_pending=3)
    for i in range(5):
        w.observe("k", unique(i))
    batch = w.take_batch()
    assert [d for _, d in batch] == [digest(unique(i), 32) for i in (2, 3, 4)]
