"""Independent runs of one experiment (one per policy, per sweep load) in forked worker processes.

The runs share nothing while they run: each builds its own engines, gateways and event loop from the
scenario, grid and arrivals the parent built once. Forked children inherit those (copy-on-write), so nothing
is pickled on the way in; each result (arrays and figures) comes back pickled through a pipe. Every run is
a pure function of its inputs and seed, so the results are the same as in one process, in the same order
(tests/sim/test_digest.py checks it).

Where `fork` is unavailable (not Linux), or with one worker, the runs execute in this process, one after
the other.
"""

from __future__ import annotations

import gc
import multiprocessing
import pickle
import signal
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar

from aigrid.cores import available_cores
from aigrid.errors import WorkerError

T = TypeVar("T")
Tick = Callable[[float], None]
"""tick(fraction of the run done): progress, reported from inside a run."""
Task = Callable[[Tick], T]


def default_workers(runs: int) -> int:
    """One worker per core this process may use (aigrid.cores: affinity and cgroup quota), never more than
    there are runs; 1 inside a daemon process (which may not have children) or where fork is unavailable."""
    if runs < 2 or multiprocessing.current_process().daemon or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(available_cores(), runs))


def run_all(tasks: Sequence[Task[T]], workers: int, progress: Callable[[int, float], None] | None = None,
            cost: Sequence[float] | None = None, idle: Callable[[], object] | None = None) -> list[T]:
    """Each task's result, in order. progress(task index, fraction) as the tasks report it.

    `cost`: each task's expected cost (any unit); worker processes start the costliest first (longest
    processing time first), so that a long run does not start last and run alone at the end. Equal costs
    keep the tasks' order. Results come back in the tasks' order whatever the start order.

    `idle()`: called once, in this process, when a worker has finished and none is left to start while
    others still run: a core is free until they end, for the caller to prepare what it does after them.
    Not called when the tasks run in this process."""
    if workers <= 1 or len(tasks) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        out = []
        for i, task in enumerate(tasks):
            out.append(task(_local_tick(i, progress)))
        return out
    order = list(range(len(tasks))) if cost is None else sorted(range(len(tasks)), key=lambda i: -cost[i])
    return _forked(tasks, workers, progress, order, idle)


def _local_tick(i: int, progress: Callable[[int, float], None] | None) -> Tick:
    return (lambda _: None) if progress is None else (lambda f: progress(i, f))


def _child(task: Task[Any], conn: Connection) -> None:
    # Ctrl-C reaches every process of the terminal's group: the parent's KeyboardInterrupt stops the workers
    # (_forked's finally); a worker's own would print one more traceback per worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # no cyclic collector in a worker: it runs one task and exits, and its memory goes with it. Re-enabled
    # after a run (experiment.collection_paused), the collector's first young collection would scan all the
    # run has built (about 1 s after balanced's run of planet at its density and 100,000 requests) to free
    # nothing the process still needs
    gc.disable()
    try:
        result = task(lambda f: conn.send(("tick", f)))
        conn.send(("done", result))
    except BaseException as e:  # noqa: BLE001 -- not swallowed: sent to the parent, which raises it
        text = traceback.format_exc()
        try:
            conn.send(("error", (e, text)))
        except (pickle.PicklingError, TypeError, AttributeError):  # the exception does not pickle: its text
            conn.send(("error", (None, text)))
    finally:
        conn.close()


def _forked(tasks: Sequence[Task[T]], workers: int, progress: Callable[[int, float], None] | None,
            order: Sequence[int], idle: Callable[[], object] | None = None) -> list[T]:
    ctx = multiprocessing.get_context("fork")
    results: dict[int, T] = {}
    todo = list(order)
    running: dict[Connection, tuple[int, multiprocessing.process.BaseProcess]] = {}
    try:
        while todo or running:
            while todo and len(running) < workers:
                i = todo.pop(0)
                receive, send = ctx.Pipe(duplex=False)
                proc: multiprocessing.process.BaseProcess
                proc = ctx.Process(target=_child, args=(tasks[i], send), daemon=True, name=f"aigrid-sim-{i}")
                proc.start()
                send.close()
                running[receive] = (i, proc)
            for conn in wait(list(running)):
                assert isinstance(conn, Connection)
                i, proc = running[conn]
                try:
                    kind, payload = conn.recv()
                except EOFError:
                    proc.join()
                    raise WorkerError(f"simulation worker {i} exited with code {proc.exitcode} "
                                      "before returning its result") from None
                if kind == "tick":
                    if progress is not None:
                        progress(i, payload)
                    continue
                conn.close()
                proc.join()
                del running[conn]
                if kind == "error":
                    exc, text = payload
                    if isinstance(exc, BaseException):
                        raise exc
                    raise WorkerError(f"simulation worker {i} failed:\n{text}")
                results[i] = payload
                if idle is not None and not todo and running:
                    idle()
                    idle = None
    finally:
        for conn, (_, proc) in running.items():
            proc.terminate()
            proc.join()
            conn.close()
    return [results[i] for i in range(len(tasks))]
