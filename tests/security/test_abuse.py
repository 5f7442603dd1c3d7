"""Model-extraction and abuse signals per key."""

from __future__ import annotations

import pytest

from aigrid.errors import RateLimited
from aigrid.security.firewall.abuse import AbuseAction, AbuseMonitor, AbuseRules, RequestTraits


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


def run(monitor: AbuseMonitor, clock: Clock, key: str, traits: list[RequestTraits], dt: float = 0.1) -> AbuseAction:
    action = AbuseAction.ALLOW
    for t in traits:
        clock.t += dt
        action = monitor.observe(key, t).action
    return action


def test_ordinary_app_traffic_is_allowed() -> None:
    clock = Clock()
    m = AbuseMonitor(clock=clock)
    app = [RequestTraits(f"Summarise ticket #{i % 20}", temperature=0.7) for i in range(300)]
    assert run(m, clock, "k", app) == AbuseAction.ALLOW


def test_diverse_logprob_sweep_is_throttled() -> None:
    clock = Clock()
    m = AbuseMonitor(clock=clock)
    sweep = [RequestTraits(f"random probe {i} {i * 7919}", logprobs=True, top_logprobs=20) for i in range(100)]
    verdict_action = run(m, clock, "k", sweep)
    assert verdict_action == AbuseAction.THROTTLE
    verdict = m.observe("k", sweep[0])
    assert set(verdict.signals) >= {"diversity", "logprobs"}
    with pytest.raises(RateLimited) as e:
        verdict.raise_if_throttled()
    assert e.value.status == 429 and e.value.headers == {"Retry-After": "60"}
    assert e.value.code == "abuse_throttled"


def test_temperature_zero_enumeration_of_a_template_is_flagged() -> None:
    clock = Clock()
    m = AbuseMonitor(AbuseRules(diversity=1.01), clock=clock)
    enum = [RequestTraits(f"Classify the sentiment of this review and answer: item {i}", temperature=0.0)
            for i in range(80)]
    assert run(m, clock, "k", enum) == AbuseAction.FLAG
    assert m.observe("k", enum[0]).signals == ("enumeration",)


def test_volume_signal_and_window_expiry() -> None:
    clock = Clock()
    m = AbuseMonitor(AbuseRules(max_requests=100, window_s=60), clock=clock)
    same = [RequestTraits("hello", temperature=1.0)] * 150
    assert run(m, clock, "k", same, dt=0.01) == AbuseAction.FLAG
    clock.t += 120
    assert m.observe("k", same[0]).action == AbuseAction.ALLOW
    assert m.observe("other", same[0]).requests_in_window == 1


def test_incremental_counts_match_a_rescan_of_the_window() -> None:
    """The counts kept on push and pop (a verdict is O(1)) equal what a rescan of the window finds."""
    import random
    from collections import Counter

    rng = random.Random(7)
    clock = Clock()
    m = AbuseMonitor(AbuseRules(window_s=5.0, max_requests=40, min_requests=5), clock=clock)
    prompts = [f"Translate item {i}" for i in range(6)] + [f"other {i}" for i in range(4)]
    for _ in range(2_000):
        clock.t += rng.expovariate(20.0)
        m.observe("k", RequestTraits(rng.choice(prompts), temperature=rng.choice([0.0, 0.7, None])))
        w = m._history["k"]
        greedy = [s for _, s in w.items if s.greedy]
        assert w.greedy == len(greedy)
        assert w.greedy_prefixes == Counter(s.prefix for s in greedy)
        assert {p: set(v) for p, v in w.greedy_variants.items()} == {
            p: {s.prompt for s in greedy if s.prefix == p} for p in {s.prefix for s in greedy}}
        assert all(all(n > 0 for n in v.values()) for v in w.greedy_variants.values())
        counts = Counter(s.prefix for s in greedy)  # the most repeated prefixes, kept in O(1) since 2026-12-04
        assert w.top == max(counts.values(), default=0)
        assert {c: set(ps) for c, ps in w.prefixes_by_count.items()} == {
            c: {p for p, n in counts.items() if n == c} for c in set(counts.values())}
