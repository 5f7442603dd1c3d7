"""Continuous batching: prefill then decode, step cost growing with the batch, queueing at saturation."""

from aigrid.engines.engine_model import Engine, Job
from aigrid.sim.clock import EventLoop
from aigrid.sim.hardware import engine_perf

PERF = engine_perf("h100", 8.03, 131072)


def make() -> tuple[EventLoop, Engine, dict[int, float], dict[int, float]]:
    loop = EventLoop()
    first: dict[int, float] = {}
    done: dict[int, float] = {}
    eng = Engine(0, PERF, loop, lambda j, t: first.__setitem__(j.rid, t), lambda j, t: done.__setitem__(j.rid, t),
                 lambda i: None)
    return loop, eng, first, done


def test_one_request_takes_its_prefill_then_one_step_per_token() -> None:
    loop, eng, first, done = make()
    loop.at(0.0, lambda _: eng.submit(Job(1, 1000, 101, 0.0)))
    loop.run()
    prefill_s = PERF.step_ms(0, 0, 1000) / 1000
    assert abs(first[1] - prefill_s) < 1e-9
    decode_s = 100 * PERF.step_ms(1, 1000 + 101 / 2) / 1000
    assert abs(done[1] - first[1] - decode_s) < 1e-6


def test_a_bigger_batch_makes_every_token_slower() -> None:
    loop, eng, first, done = make()
    for i in range(64):
        loop.at(0.0, lambda _, i=i: eng.submit(Job(i, 200, 201, 0.0)))
    loop.run()
    tpot = (done[0] - first[0]) / 200
    assert tpot > 1.3 * PERF.step_ms(1, 300) / 1000


def test_queueing_delay_explodes_past_capacity() -> None:
    def p99_wait(rate: float) -> float:
        loop, eng, first, _ = make()
        n = int(rate * 60)
        for i in range(n):
            loop.at(i / rate, lambda _, i=i: eng.submit(Job(i, 1000, 130, loop.now)))
        loop.run()
        waits = sorted(first[i] - i / rate for i in range(n))
        return waits[int(0.99 * n)]

    cap = PERF.capacity_rps(1000, 130)
    low, mid, high = p99_wait(0.3 * cap), p99_wait(0.6 * cap), p99_wait(1.2 * cap)
    assert low < 0.2 and mid < 0.5
    assert high > 10 * mid  # past capacity the queue grows for the whole run


def test_kv_cache_limits_admission_and_failure_returns_every_job() -> None:
    loop, eng, _, _ = make()
    big = PERF.kv_capacity_tokens // 2
    for i in range(3):
        loop.at(0.0, lambda _, i=i: eng.submit(Job(i, big - 10, 5, 0.0)))
    loop.run(until=0.0)
    assert eng.active == 2 and len(eng.waiting) == 1
    lost = eng.fail()
    assert sorted(j.rid for j in lost) == [0, 1, 2] and not eng.up and eng.state().healthy is False


def alone(prompt: int) -> float:
    """Time to the first token of one request without a prefix on an idle engine."""
    loop, eng, first, _ = make()
    loop.at(0.0, lambda _: eng.submit(Job(1, prompt, 2, 0.0)))
    loop.run()
    return first[1]


def test_a_cached_prefix_is_prefilled_once() -> None:
    """The second request opening with the same prefix prefills only the rest; another prefix, or one the
    cache lost when the engine failed, prefills whole."""
    loop, eng, first, _ = make()
    loop.at(0.0, lambda _: eng.submit(Job(1, 3200, 2, 0.0, prefix=7, prefix_tokens=3000)))
    loop.at(10.0, lambda _: eng.submit(Job(2, 3200, 2, 10.0, prefix=7, prefix_tokens=3000)))
    loop.at(20.0, lambda _: eng.submit(Job(3, 3200, 2, 20.0, prefix=8, prefix_tokens=3000)))
    loop.run()
    cold, rest = alone(3200), alone(200)
    assert abs(first[1] - cold) < 1e-9 and abs(first[3] - 20.0 - cold) < 1e-9
    assert abs(first[2] - 10.0 - rest) < 1e-9 and rest < cold / 5
    assert list(eng.prefixes) == [7, 8]
    eng.fail()
    assert not eng.prefixes and eng.prefix_cached == 0


def test_the_prefix_cache_keeps_the_recently_used_within_its_share_of_the_kv_cache() -> None:
    loop, eng, _, _ = make()
    size = int(PERF.kv_capacity_tokens * 0.25 / 3) + 1  # three of them are over the share
    for p in range(3):
        loop.at(float(p), lambda _, p=p: eng.submit(Job(p, size + 10, 2, float(p), prefix=p, prefix_tokens=size)))
    loop.run()
    assert list(eng.prefixes) == [1, 2] and eng.prefix_cached == 2 * size


def test_state_is_the_record_endpoint_state_builds() -> None:
    """Engine.state builds its EndpointState without the NamedTuple's __new__: every field as the class
    would give it, age_s included."""
    from aigrid.core.types import Circuit, EndpointState

    loop, e, _, _ = make()
    e.submit(Job(1, 500, 20, 0.0))
    loop.run(until=0.01)
    for age in (0.0, 2.5):
        s = e.state(age)
        want = EndpointState(True, Circuit.CLOSED, s.running, s.waiting, s.kv_usage, s.ttft_s, e.step_ms() / 1000.0,
                             age_s=age)
        assert type(s) is EndpointState and s == want and tuple(map(type, s)) == tuple(map(type, want))


def test_advancing_at_extra_times_leaves_the_timing_as_it_was() -> None:
    """The engine emulator's ticker advances the model every step to stream tokens; the simulator advances it
    only at its events. Both must give the same times: between two state changes a step's chunk and cost are
    fixed. Read afresh at each advance, the last chunk of a prompt shrank with the tokens left and its end was
    put off again at every tick (the burst parity test's L40S arrivals: first tokens up to 166 ms later)."""
    perf = engine_perf("l40s", 8.03, 131072)
    arrivals = [(0.4355, 1000), (0.6161, 2000), (1.0331, 6000), (1.2415, 6000), (2.0615, 6000), (2.6981, 4000)]

    def times(tick_s: float | None) -> list[tuple[float, float]]:
        loop = EventLoop()
        first: dict[int, float] = {}
        done: dict[int, float] = {}
        eng = Engine(0, perf, loop, lambda j, t: first.__setitem__(j.rid, t),
                     lambda j, t: done.__setitem__(j.rid, t), lambda i: None)

        def arrive(job: tuple[int, int]) -> None:
            eng.submit(Job(job[0], job[1], 32, loop.now))

        for i, (t, prompt) in enumerate(arrivals):
            loop.at(t, arrive, (i, prompt))
        if tick_s is not None:
            def tick(_: object) -> None:
                eng.advance(loop.now)
                if len(done) < len(arrivals):
                    loop.after(tick_s, tick)
            loop.at(0.0, tick)
        loop.run()
        return [(first[i], done[i]) for i in range(len(arrivals))]

    alone = times(None)
    for tick_s in (0.0261, 0.01, 0.0037):
        ticked = times(tick_s)
        worst = max(abs(a - b) for pair_a, pair_b in zip(alone, ticked, strict=True)
                    for a, b in zip(pair_a, pair_b, strict=True))
        assert worst < 1e-6, (tick_s, alone, ticked)
