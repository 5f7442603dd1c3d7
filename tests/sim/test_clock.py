from aigrid.sim.clock import EventLoop


def test_events_run_in_time_order_and_ties_in_scheduling_order() -> None:
    loop, seen = EventLoop(), []
    for name, t in [("c", 2.0), ("a", 1.0), ("b", 1.0), ("d", 1.0)]:
        loop.at(t, seen.append, name)
    loop.run()
    assert seen == ["a", "b", "d", "c"] and loop.events == 4 and loop.now == 2.0


def test_handlers_schedule_more_events_and_run_stops_at_until() -> None:
    loop, seen = EventLoop(), []

    def tick(n: int) -> None:
        seen.append((loop.now, n))
        loop.after(1.0, tick, n + 1)

    loop.at(0.0, tick, 0)
    loop.run(until=3.5)
    assert seen == [(0.0, 0), (1.0, 1), (2.0, 2), (3.0, 3)] and loop.now == 3.5 and len(loop) == 1


def test_past_times_are_clamped_to_now() -> None:
    loop, seen = EventLoop(), []
    loop.at(5.0, lambda _: loop.at(1.0, seen.append, loop.now))
    loop.run()
    assert seen == [5.0]
