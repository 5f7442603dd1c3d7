"""One inference engine's timing: continuous batching with chunked prefill, KV-cache limits and a queue.

The simulator runs it on its virtual clock (sim/clock.py), the engine emulator on the asyncio loop's clock
(engines/emulator_model.py): one timing model, so a simulated run and a live run on emulators of the same
trace can be compared number for number (tests/parity).

The engine runs steps back to back. Every step advances each decoding sequence by one token and, while
prompts are waiting to be prefilled, also processes up to `chunk_tokens - n` of their tokens in FIFO order
(as vLLM's chunked prefill packs a token budget per step). A step costs EnginePerf.step_ms(n, K, chunk), so the cost grows with the
running batch. Between two state changes every step costs the same, so the engine is simulated as a fluid:
it keeps a count of decode steps done and wakes up only when a prefill finishes or a sequence completes,
not once per token. A request is admitted from the FIFO waiting queue when a batch slot is free and the KV
cache can hold its prompt and output; otherwise it waits. Nothing here paints a knee on: queueing delay
grows without bound near saturation because arrivals outpace what the steps can serve.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from aigrid.core.compiling import mypyc_attr
from aigrid.core.types import Circuit, EndpointState, new_record
from aigrid.engines.step_cost import EnginePerf

CIRCUIT_CLOSED: Final = Circuit.CLOSED
"""Circuit.CLOSED, read once: compiled, `Circuit.CLOSED` is a lookup on the enum's class (its metaclass), which costs about
twenty times an attribute of a record, once per state the engine publishes."""

EWMA = 0.2
"""Weight of the newest sample in the engine's reported TTFT (engines export smoothed figures)."""
PREFIX_CACHE_SHARE = 0.25
"""Share of the KV cache the prefix cache may keep for prefixes of finished prompts (least recently used
evicted first), as vLLM's automatic prefix caching keeps freed blocks until they are needed. Its tokens
are not counted against admission: a simplification that leaves the engine's capacity as without it."""


class Clock(Protocol):
    """What the engine needs of a clock: the time now and a way to be called back at a given time."""

    @property
    def now(self) -> float: ...

    def at(self, when: float, handler: Callable[[Any], None], arg: Any = None) -> None: ...


@mypyc_attr(allow_interpreted_subclasses=True)  # the engine emulator's Job adds its sink (compiled: a native class)
class Job:
    __slots__ = ("rid", "prompt", "output", "left", "kv", "ctx", "enqueued", "finish_step", "first_token",
                 "prefix", "prefix_tokens", "cached")

    def __init__(self, rid: int, prompt: int, output: int, now: float, prefix: int = -1,
                 prefix_tokens: int = 0) -> None:
        self.rid = rid
        self.prompt = prompt
        self.prefix = prefix
        """The shared prefix it opens with (-1: none) and its tokens: prefilled once while cached here."""
        self.prefix_tokens = prefix_tokens
        self.cached = 0
        """Prompt tokens the engine's prefix cache held when it was admitted (not prefilled again)."""
        self.output = max(output, 1)
        self.left = float(prompt)
        self.kv = prompt + self.output
        self.ctx = prompt + self.output / 2.0
        self.enqueued = now
        self.finish_step = 0.0
        self.first_token = 0.0


@dataclass(slots=True)
class EngineStats:
    work_s: float = 0.0
    """Engine time the served tokens would take at peak efficiency (prefill at full rate, decode at a full
    batch). Divided by elapsed time it is the utilisation: the share of the engine's capacity in use,
    which reaches 1 exactly when the engine cannot serve more."""
    busy_s: float = 0.0
    served: int = 0


_DEFAULTS_AFTER: tuple[object, ...] = tuple(EndpointState._field_defaults[f] for f in EndpointState._fields[7:])
"""EndpointState's defaults after its first seven fields, in order (Engine.state builds the rest)."""


class Engine:
    """A single engine (one endpoint). Callbacks report first tokens and completions in virtual time."""

    def __init__(self, index: int, perf: EnginePerf, loop: Clock,
                 on_first: Callable[[Job, float], None], on_done: Callable[[Job, float], None],
                 on_change: Callable[[int], None]) -> None:
        self.index = index
        self.perf = perf
        # EnginePerf.step_ms's constants as this (compiled) class's own floats: step_ms below runs at every
        # event of the engine, and reading them from the Python record was a generic lookup each
        self._w_ms, self._h_seq_ms, self._k_kv_ms = perf.w_ms, perf.h_seq_ms, perf.k_kv_ms
        self._pf_tok_ms, self._pf_step_ms = perf.pf_tok_ms, perf.pf_step_ms
        self.loop = loop
        self.on_first = on_first
        self.on_done = on_done
        self.on_change = on_change
        self.up = True
        self.waiting: deque[Job] = deque()
        self.prefill: deque[Job] = deque()
        self.decoding: list[tuple[float, int, Job]] = []
        self.steps = 0.0
        self.t_last = 0.0
        self.ctx = 0.0
        self.kv_used = 0
        self.prefill_tokens = 0.0
        """Prompt tokens admitted but not yet prefilled, over the whole prefill queue."""
        self.version = 0
        self.ttft_ewma: float | None = None
        self.stats = EngineStats()
        self.prefixes: OrderedDict[int, int] = OrderedDict()
        """The prefix cache: prefix id -> tokens, least recently used first (only jobs with a prefix use it)."""
        self.prefix_cached = 0
        self._rate_chunk = 0
        """Prompt tokens per step and the cost of a step (ms) from the latest state change to the next: fixed
        between two state changes, so advancing at extra times (the emulator's token ticker, a read of the
        state) leaves the engine's timing as it was. Read afresh, the chunk shrank with the prompt tokens left
        and each extra advance put the end of the last chunk off again (up to 166 ms per prompt, 7 Dec 2026)."""
        self._rate_step_ms = 1.0

    # ---- state -------------------------------------------------------------------------------------
    @property
    def active(self) -> int:
        return len(self.prefill) + len(self.decoding)

    def _chunk(self) -> int:
        if not self.prefill:
            return 0
        budget = max(self.perf.chunk_tokens - len(self.decoding), 1)
        return min(max(int(self.prefill_tokens + 0.999), 1), budget)

    def step_ms(self) -> float:
        """self.perf.step_ms(len(self.decoding), self.ctx, self._chunk()), written out: the same operations in
        the same order, so the same bits (tests/sim/test_compiled.py checks it), without a Python call."""
        chunk = self._chunk()
        ms = self._w_ms + len(self.decoding) * self._h_seq_ms + self.ctx * self._k_kv_ms
        if chunk:
            ms += chunk * self._pf_tok_ms + self._pf_step_ms
        return ms

    def state(self, age_s: float = 0.0) -> EndpointState:
        if not self.up:
            return EndpointState(healthy=False, reason="site down", age_s=age_s)
        # EndpointState(healthy, circuit, running, waiting, kv_usage, ttft_s, tpot_s) with every field in order,
        # without its __new__'s Python frame: the simulator's telemetry reads every changed engine's state
        # every interval
        state = new_record(EndpointState, (
            True, CIRCUIT_CLOSED, len(self.prefill) + len(self.decoding), len(self.waiting),
            self.kv_used / self.perf.kv_capacity_tokens, self.ttft_ewma, self.step_ms() / 1000.0) + _DEFAULTS_AFTER)
        return state._replace(age_s=age_s) if age_s else state

    # ---- inputs ------------------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        now = self.loop.now
        self._advance(now)
        job.enqueued = now
        self.waiting.append(job)
        self._admit()
        self._reschedule(now)

    def fail(self) -> list[Job]:
        """The site goes down: every job here is lost and handed back to the caller (for failover)."""
        self._advance(self.loop.now)
        lost = list(self.waiting) + list(self.prefill) + [j for _, _, j in self.decoding]
        self.waiting.clear()
        self.prefill.clear()
        self.decoding.clear()
        self.ctx, self.kv_used, self.up, self.prefill_tokens = 0.0, 0, False, 0.0
        self.prefixes.clear()  # a restarted engine's cache is cold
        self.prefix_cached = 0
        self.version += 1
        self.on_change(self.index)
        return lost

    def cancel(self, job: Job) -> bool:
        """The client went away: take the job out wherever it is, freeing its slot and KV. False if absent."""
        now = self.loop.now
        self._advance(now)
        if job in self.waiting:
            self.waiting.remove(job)
        elif job in self.prefill:
            head = self.prefill[0] is job
            self.prefill.remove(job)
            self.prefill_tokens = max(self.prefill_tokens - max(job.left, 0.0), 0.0)
            if head and self.prefill and job.left < 0.0:
                self.prefill[0].left += job.left  # the overshoot already spent on the next prompt
            self.kv_used -= job.kv
        else:
            kept = [entry for entry in self.decoding if entry[2] is not job]
            if len(kept) == len(self.decoding):
                return False
            heapq.heapify(kept)
            self.decoding = kept
            self.ctx = max(self.ctx - job.ctx, 0.0) if kept else 0.0
            self.kv_used -= job.kv
        self._admit()
        self._reschedule(now)
        return True

    def advance(self, now: float) -> None:
        """Bring the step count and prefill progress up to `now` (read-only callers: token streaming)."""
        self._advance(now)

    def recover(self) -> None:
        self._advance(self.loop.now)
        self.up = True
        self.on_change(self.index)

    # ---- dynamics ----------------------------------------------------------------------------------
    def _advance(self, now: float) -> None:
        dt = now - self.t_last
        if dt <= 0.0:
            return
        self.t_last = now
        if not self.prefill and not self.decoding:
            return
        steps = dt * 1000.0 / self._rate_step_ms
        if self.prefill:
            done = steps * self._rate_chunk
            self.prefill[0].left -= done
            self.prefill_tokens = max(self.prefill_tokens - done, 0.0)
        self.steps += steps
        self.stats.busy_s += dt

    def _admit(self) -> None:
        perf = self.perf
        while self.waiting and self.active < perf.max_seqs:
            job = self.waiting[0]
            if self.kv_used + job.kv > perf.kv_capacity_tokens and self.active > 0:
                break
            self.waiting.popleft()
            if job.prefix >= 0 and job.prefix in self.prefixes:  # a prefix cache hit: prefilled once already
                self.prefixes.move_to_end(job.prefix)
                job.cached = min(job.prefix_tokens, job.prompt - 1)
                job.left = float(job.prompt - job.cached)
            self.kv_used += job.kv
            self.prefill_tokens += job.left
            self.prefill.append(job)

    def _keep_prefix(self, prefix: int, tokens: int) -> None:
        if prefix in self.prefixes:
            self.prefixes.move_to_end(prefix)
            return
        self.prefixes[prefix] = tokens
        self.prefix_cached += tokens
        limit = PREFIX_CACHE_SHARE * self.perf.kv_capacity_tokens
        while self.prefix_cached > limit and len(self.prefixes) > 1:
            self.prefix_cached -= self.prefixes.popitem(last=False)[1]

    def _reschedule(self, now: float) -> None:
        self.version += 1
        self.on_change(self.index)
        if not self.prefill and not self.decoding:
            return
        self._rate_chunk = chunk = self._chunk()
        self._rate_step_ms = step_ms = self.step_ms()
        steps_needed = float("inf")
        if self.prefill:
            steps_needed = max(self.prefill[0].left, 0.0) / chunk
        if self.decoding:
            steps_needed = min(steps_needed, max(self.decoding[0][0] - self.steps, 0.0))
        self.loop.at(now + steps_needed * step_ms / 1000.0, self._wake, self.version)

    def _wake(self, version: int) -> None:
        if version != self.version:
            return
        now = self.loop.now
        self._advance(now)
        if self.prefill and self.prefill[0].left <= 1e-6:
            job = self.prefill.popleft()
            if self.prefill:
                self.prefill[0].left += job.left  # hand any overshoot (<= 0) to the next prompt
            else:
                self.prefill_tokens = 0.0
            job.first_token = now
            engine_ttft = now - job.enqueued
            self.ttft_ewma = engine_ttft if self.ttft_ewma is None else \
                (1 - EWMA) * self.ttft_ewma + EWMA * engine_ttft
            self.stats.work_s += (job.prompt - job.cached) * self.perf.pf_tok_ms / 1000.0
            if job.prefix >= 0:
                self._keep_prefix(job.prefix, job.prefix_tokens)
            self.on_first(job, now)
            job.finish_step = self.steps + job.output - 1
            heapq.heappush(self.decoding, (job.finish_step, job.rid, job))
            self.ctx += job.ctx
        while self.decoding and self.decoding[0][0] <= self.steps + 1e-6:
            _, _, job = heapq.heappop(self.decoding)
            self.ctx -= job.ctx
            self.kv_used -= job.kv
            self.stats.served += 1
            perf = self.perf
            per_token_ms = perf.w_ms / perf.max_seqs + perf.h_seq_ms + job.ctx * perf.k_kv_ms
            self.stats.work_s += (job.output - 1) * per_token_ms / 1000.0
            self.on_done(job, now)
        if not self.decoding:
            self.ctx = 0.0
        self._admit()
        self._reschedule(now)
