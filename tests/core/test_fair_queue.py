"""The admission queue's order: levels strictly first, tenants by fair share, shedding and expiry."""

from __future__ import annotations

from collections import Counter

import pytest

from aigrid.core.fair_queue import FairQueue


def test_higher_levels_go_first_and_each_tenant_is_fifo() -> None:
    q: FairQueue[str] = FairQueue()
    q.push("b1", "acme", 0, 1.0, 99.0)
    q.push("i1", "acme", 9, 2.0, 99.0)
    q.push("b2", "acme", 0, 3.0, 99.0)
    q.push("s1", "zen", 5, 4.0, 99.0)
    assert [w.payload for w in q.order(lambda t: 0)] == ["i1", "s1", "b1"]
    q.remove(q.order(lambda t: 0)[2])
    assert [w.payload for w in q.order(lambda t: 0)] == ["i1", "s1", "b2"]
    assert len(q) == 3 and q.depth(0) == 1


def serve(q: FairQueue[int], slots: int, rounds: int, arrivals: dict[str, int]) -> Counter[str]:
    """A saturated site with `slots` slots: every round one request finishes (oldest first) and the queue's
    first choice takes the slot; each tenant keeps `arrivals[t]` requests waiting at all times."""
    inflight: Counter[str] = Counter()
    running: list[str] = []
    served: Counter[str] = Counter()
    seq = 0
    for r in range(rounds):
        for tenant, backlog in arrivals.items():
            while sum(1 for w in q.items() if w.tenant == tenant) < backlog:
                seq += 1
                q.push(seq, tenant, 0, float(r), 1e9)
        if len(running) >= slots:
            done = running.pop(0)
            inflight[done] -= 1
        head = q.order(lambda t: inflight[t])[0]
        q.remove(head)
        running.append(head.tenant)
        inflight[head.tenant] += 1
        served[head.tenant] += 1
    return served


def test_two_equal_tenants_get_equal_service_however_hard_one_pushes() -> None:
    served = serve(FairQueue(), slots=8, rounds=2000, arrivals={"heavy": 50, "light": 3})
    assert abs(served["heavy"] - served["light"]) <= 0.1 * max(served.values())


def test_weights_set_the_shares() -> None:
    served = serve(FairQueue(weights={"gold": 3.0}), slots=8, rounds=4000, arrivals={"gold": 20, "tin": 20})
    assert served["gold"] / served["tin"] == pytest.approx(3.0, rel=0.1)


def test_overflow_sheds_the_lowest_level_newest_first_from_the_biggest_backlog() -> None:
    q: FairQueue[str] = FairQueue(capacity=4)
    q.push("i", "a", 9, 0.0, 99.0)
    q.push("b-a1", "a", 0, 1.0, 99.0)
    q.push("b-b1", "b", 0, 2.0, 99.0)
    q.push("b-b2", "b", 0, 3.0, 99.0)
    item, shed = q.push("s", "a", 5, 4.0, 99.0)
    assert [w.payload for w in shed] == ["b-b2"] and not item.gone
    _, shed = q.push("b-a2", "a", 0, 5.0, 99.0)
    assert [w.payload for w in shed] == ["b-a2"]  # the newest batch request of the now-biggest batch backlog
    assert len(q) == 4 and sorted(w.payload for w in q.items()) == ["b-a1", "b-b1", "i", "s"]


def test_expired_requests_come_back_in_expiry_order_and_only_once() -> None:
    q: FairQueue[str] = FairQueue()
    q.push("late", "a", 5, 0.0, 10.0)
    first, _ = q.push("early", "a", 5, 0.0, 5.0)
    q.push("keep", "b", 5, 0.0, 50.0)
    assert q.next_expiry() == 5.0
    assert [w.payload for w in q.expired(11.0)] == ["early", "late"]
    assert q.expired(11.0) == [] and first.gone
    assert [w.payload for w in q.order(lambda t: 0)] == ["keep"] and q.next_expiry() == 50.0
    q.remove(q.items()[0])
    assert len(q) == 0 and q.next_expiry() is None and q.order(lambda t: 0) == []


def test_past_its_slo_a_request_waits_behind_the_fresh_ones_of_its_level() -> None:
    q: FairQueue[str] = FairQueue()
    q.push("old", "a", 5, 0.0, 99.0, stale_at=1.0)
    q.push("new", "a", 5, 0.5, 99.0, stale_at=1.5)
    q.push("batch", "b", 0, 0.6, 99.0, stale_at=10.6)
    assert [w.payload for w in q.order(lambda t: 0, now=0.9)] == ["old", "batch"]
    assert [w.payload for w in q.order(lambda t: 0, now=1.2)] == ["new", "old", "batch"]
    assert [w.payload for w in q.order(lambda t: 0, now=2.0)] == ["old", "batch"]  # both stale: first in first
    _, shed = q.push("x", "b", 0, 2.0, 99.0)  # capacity 1000: nothing shed
    assert shed == [] and len(q) == 4
    q2: FairQueue[str] = FairQueue(capacity=1)
    q2.push("stale", "a", 5, 0.0, 99.0, stale_at=0.1)
    q2.order(lambda t: 0, now=1.0)
    _, shed = q2.push("fresh", "a", 5, 1.0, 99.0, stale_at=2.0)
    assert [w.payload for w in shed] == ["stale"]  # a stale request is shed before a fresh one of its level
