"""sim/parallel.py: runs in worker processes come back in order, with progress, and failures are raised."""

from __future__ import annotations

import os
import time

import pytest

from aigrid.errors import WorkerError
from aigrid.sim.parallel import Tick, default_workers, run_all


def _square(n: int):  # type: ignore[no-untyped-def]
    def task(tick: Tick) -> tuple[int, int]:
        tick(0.5)
        return n * n, os.getpid()
    return task


def test_results_in_order_from_other_processes_with_progress() -> None:
    seen: list[tuple[int, float]] = []
    out = run_all([_square(n) for n in range(5)], workers=2, progress=lambda i, f: seen.append((i, f)))
    assert [r for r, _ in out] == [0, 1, 4, 9, 16]
    assert all(pid != os.getpid() for _, pid in out)
    assert sorted(seen) == [(i, 0.5) for i in range(5)]


def test_one_worker_runs_here() -> None:
    out = run_all([_square(3), _square(4)], workers=1)
    assert out == [(9, os.getpid()), (16, os.getpid())]


def test_an_exception_in_a_worker_is_raised_here() -> None:
    def bad(tick: Tick) -> int:
        raise ValueError("no such city: Atlantis")
    with pytest.raises(ValueError, match="Atlantis"):
        run_all([_square(2), bad], workers=2)


def test_a_worker_that_dies_is_reported() -> None:
    def dies(tick: Tick) -> int:
        os._exit(3)
    with pytest.raises(WorkerError, match="exited with code 3"):
        run_all([dies, _square(2)], workers=2)


def test_default_workers() -> None:
    assert default_workers(1) == 1
    assert 1 <= default_workers(3) <= 3


def _timed(seconds: float):  # type: ignore[no-untyped-def]
    def task(tick: Tick) -> tuple[float, float]:
        start = time.monotonic()  # the system's monotonic clock: comparable between processes
        time.sleep(seconds)
        return start, time.monotonic()
    return task


def test_the_costliest_task_starts_first_and_results_keep_their_order() -> None:
    out = run_all([_timed(0.2), _timed(0.2), _timed(0.2)], workers=2, cost=[1.0, 1.0, 5.0])
    (start0, end0), (start1, _), (start2, end2) = out
    assert start1 >= min(end0, end2)  # task 1 waited for a free worker: tasks 2 and 0 went first
    assert max(start0, start2) < start1


def _sigint_handler(_: Tick) -> bool:
    import signal

    return signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_workers_leave_ctrl_c_to_the_parent() -> None:
    # Ctrl-C reaches the whole process group: the parent stops the workers; each worker printing its own
    # KeyboardInterrupt traceback buried the terminal
    assert run_all([_sigint_handler, _sigint_handler], workers=2) == [True, True]


def test_idle_is_called_once_when_a_core_is_free_and_nothing_is_left_to_start() -> None:
    calls: list[int] = []

    def slow(tick: Tick) -> int:
        time.sleep(0.5)
        return 1
    out = run_all([slow, _square(2), _square(3)], workers=2, idle=lambda: calls.append(1))
    assert [out[0], out[1][0], out[2][0]] == [1, 4, 9] and calls == [1]
    assert run_all([_square(2)], workers=1, idle=lambda: calls.append(2)) == [(4, os.getpid())]
    assert calls == [1]
