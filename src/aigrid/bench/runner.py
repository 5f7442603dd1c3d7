"""Drive a workload against one or more base URLs and record what every request saw.

Open loop (plans with times): each request is sent at its planned time whatever the server does, so a
slow server builds a queue, as real traffic would. Closed loop (plans without times): `concurrency`
workers each send the next request as soon as their previous one ends.

The client watches itself: its CPU time over the run, and in the open loop how late each request left
compared with its plan (send lag). A busy client shows up as high CPU and growing lag; report.py flags it.
"""

from __future__ import annotations

import asyncio
import itertools
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from aigrid.bench.http import Exchange, Pool, Target
from aigrid.bench.workload import Plan, request_body

Progress = Callable[[int, int, int], None]
"""progress(done, in_flight, total), called a few times a second."""


@dataclass(frozen=True)
class RunConfig:
    urls: tuple[str, ...]
    model: str
    chat: bool = True
    stream: bool = True
    concurrency: int = 0
    """0: open loop (plans carry times); n > 0: closed loop with n workers."""
    timeout_s: float = 300.0
    headers: tuple[tuple[str, str], ...] = ()
    max_duration_s: float | None = None
    """Send nothing after this many seconds (requests already sent are awaited)."""
    unique_prompts: bool = True
    """Make every prompt different (defeats prefix caches); off, prompts of one size are identical."""
    drain_s: float | None = None
    """After the last send, wait at most this long; requests still running then count as failed."""


@dataclass(slots=True)
class Result:
    """One request. Times in seconds; offsets relative to the run's start."""

    target: int
    planned: float | None
    sent: float | None
    """None: never written (its connection refused)."""
    prompt_tokens: int
    output_tokens: int
    status: int
    ok: bool
    ttft: float | None
    e2e: float | None
    tpot: float | None
    itl: list[float] = field(default_factory=list)
    error: str | None = None


@dataclass
class Run:
    results: list[Result]
    wall_s: float
    cpu_s: float
    config: RunConfig
    plans: int


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _usage_tokens(payload: bytes | None) -> int | None:
    """completion_tokens of a usage payload: a streamed usage event's data or a whole JSON body."""
    if payload is None or b'"usage"' not in payload:
        return None
    try:
        return int(orjson.loads(payload)["usage"]["completion_tokens"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def to_result(ex: Exchange, plan: Plan, target: int, t0: float, stream: bool) -> Result:
    ok = ex.error is None and 200 <= ex.status < 300 and ex.done is not None
    error = ex.error or (None if ok else f"HTTP {ex.status}: {ex.tail[:200].decode(errors='replace')}")
    if ok and stream and ex.error_event and not ex.saw_done:
        ok, error = False, "stream ended with an error event"
    tokens = _usage_tokens(ex.usage if stream else ex.tail) if ok else None
    if tokens is None:
        tokens = max(0, ex.events - 2) if stream else 0  # minus the finish/usage event and [DONE]
    sent = ex.sent
    ok = ok and sent is not None
    ttft = (ex.first_byte - sent) if (ok and stream and ex.first_byte is not None and sent is not None) else None
    e2e = (ex.done - sent) if ok and ex.done is not None and sent is not None else None
    tpot = (e2e - ttft) / (tokens - 1) if (ttft is not None and e2e is not None and tokens > 1) else None
    itl = [b - a for a, b in itertools.pairwise(ex.arrivals)] if ok and stream else []
    return Result(target, plan.at, None if sent is None else sent - t0, plan.prompt_tokens, tokens, ex.status, ok, ttft, e2e, tpot,
                  itl, error)


async def run(config: RunConfig, plans: list[Plan], progress: Progress | None = None,
              clock: Callable[[], float] = time.perf_counter) -> Run:
    pools = [Pool(Target(u), clock) for u in config.urls]
    path = "/chat/completions" if config.chat else "/completions"
    headers = dict(config.headers)
    results: list[Result] = []
    sent_count = 0
    counter = itertools.count()
    in_flight = 0
    t0 = clock()

    async def one(plan: Plan) -> None:
        nonlocal in_flight, sent_count
        sent_count += 1
        seq = next(counter)
        target = seq % len(pools)
        body = request_body(config.model, plan.prompt_tokens, plan.output_tokens, chat=config.chat,
                            stream=config.stream, seq=seq, unique=config.unique_prompts)
        in_flight += 1
        try:
            ex = await pools[target].post(path, body, headers, config.timeout_s)
        finally:
            in_flight -= 1
        results.append(to_result(ex, plan, target, t0, config.stream))

    async def report() -> None:
        while True:
            if progress is not None:
                progress(len(results), in_flight, len(plans))
            await asyncio.sleep(0.25)

    limit = config.max_duration_s if config.max_duration_s is not None else float("inf")
    cpu0 = _cpu()
    reporter = asyncio.create_task(report())
    tasks: set[asyncio.Task[None]] = set()
    try:
        if config.concurrency > 0:
            queue = iter(plans)

            async def worker() -> None:
                for plan in queue:
                    if clock() - t0 > limit:
                        return
                    await one(plan)

            for _ in range(config.concurrency):
                task = asyncio.create_task(worker())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        else:
            for plan in sorted(plans, key=lambda p: p.at or 0.0):
                if (plan.at or 0.0) > limit:
                    break
                delay = (plan.at or 0.0) - (clock() - t0)
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(one(plan))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        if tasks:
            wait_s = config.drain_s
            if wait_s is not None and config.concurrency and limit != float("inf"):
                wait_s += max(0.0, limit - (clock() - t0))  # workers stop sending at the limit
            _, late = await asyncio.wait(list(tasks), timeout=wait_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
                cut = sent_count - len(results)
                results.extend(Result(-1, None, clock() - t0, 0, 0, 0, False, None, None, None, [],
                                      f"still running {config.drain_s:g}s after the last send: cut")
                               for _ in range(cut))
    finally:
        reporter.cancel()
        for p in pools:
            p.close()
    wall = clock() - t0
    if progress is not None:
        progress(len(results), 0, len(plans))
    return Run(results, wall, _cpu() - cpu0, config, sent_count)
