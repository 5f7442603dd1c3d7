"""The engine emulator's engine: the simulator's timing model (engines/engine_model.py) on the asyncio clock.

An emulated engine IS the simulated engine: `slots` batch slots, a FIFO waiting queue, admission limited by
the KV cache, continuous batching with chunked prefill (prompt tokens packed into the decode steps, up to
`chunk_tokens` per step), each step costing

    decode_base_ms + decode_ms_per_seq x n + kv_ms_per_token x K + [prefill_ms_per_token x c + prefill_base_ms]

(engines/step_cost.py: W + n h_seq + K k_kv + [c pf_tok + pf_step], the bracket only in a step that carries a
prefill chunk). Only the clock differs: engine_model.Engine runs on loop.call_at instead of the simulator's
virtual clock, so a live run on emulators and a simulated run of the same trace can be compared number for
number (tests/parity/test_sim_gateway_parity.py).

Streaming: the model wakes only when a prefill ends or a sequence completes; one ticker per engine, one timer
per decode step whatever the number of streams, hands each running request the tokens its decode steps have
produced so far. The emulator's own CPU cost stays far below what it emulates.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aigrid.engines import engine_model
from aigrid.engines.step_cost import DEFAULT_CHUNK_TOKENS, EnginePerf

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
               40.0, 80.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
               480.0, 960.0, 1920.0, 7680.0)
"""vLLM's own bucket boundaries (vllm/v1/metrics/loggers.py), so dashboards and parsers read them alike."""


@dataclass(frozen=True)
class EmulatorConfig:
    """Timing and capacity of one emulated engine. Defaults resemble a small model on one GPU."""

    model: str = "emulated"
    slots: int = 256
    prefill_base_ms: float = 1.0
    """pf_step: the fixed cost a prefill chunk adds to its step."""
    prefill_ms_per_token: float = 0.02
    decode_base_ms: float = 10.0
    """W: one step with an empty batch (reading the weights)."""
    decode_ms_per_seq: float = 0.05
    kv_ms_per_token: float = 0.0
    """k_kv: added step time per context token held by the running batch (attention reads)."""
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    default_max_tokens: int = 128
    """The natural answer length: the emulated model ends every answer on its own (finish_reason "stop") after this
    many tokens unless the request sets ignore_eos; a smaller max_tokens cuts it (emulator.answer_length). The name
    (and `--default-max-tokens`) is kept from when it was the length of an answer without max_tokens."""
    kv_tokens: int = 1_000_000
    """KV-cache capacity in tokens: a request is admitted once its prompt and output fit beside the running
    ones; vllm:kv_cache_usage_perc is the share reserved."""
    max_model_len: int = 8192
    """The context it says it holds, in GET /v1/models' `max_model_len` (as vLLM's --max-model-len): a gateway in
    front reads it against the spec's `context` (gateway/scraper.py). 8192, the spec's default context
    (spec.models.ModelSpec.context). Said, not enforced: the emulator refuses no longer prompt (it generates no
    text; the gateway checks prompts against the spec's context before they reach it)."""

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError("slots must be at least 1")
        delays = (self.prefill_base_ms, self.prefill_ms_per_token, self.decode_base_ms, self.decode_ms_per_seq,
                  self.kv_ms_per_token)
        if not all(0 <= d < math.inf for d in delays):  # NaN too: every comparison with it is false
            raise ValueError("emulator delays must be finite numbers, not negative")
        if self.decode_base_ms + self.prefill_base_ms <= 0:
            raise ValueError("decode_base_ms + prefill_base_ms must be positive (a step takes time)")
        if self.kv_tokens < 1:
            raise ValueError("kv_tokens must be at least 1")
        if self.chunk_tokens < 1:
            raise ValueError("chunk_tokens must be at least 1")
        if self.max_model_len < 1:
            raise ValueError("max_model_len must be at least 1")

    def perf(self) -> EnginePerf:
        return EnginePerf("emulated", self.decode_base_ms, self.decode_ms_per_seq, self.kv_ms_per_token,
                          self.prefill_ms_per_token, self.prefill_base_ms, self.chunk_tokens, self.slots,
                          self.kv_tokens, 0.0, 0.0, 0.0, 0.0)

    @classmethod
    def from_perf(cls, perf: EnginePerf, model: str, default_max_tokens: int = 128) -> EmulatorConfig:
        """An emulator timed exactly like the simulator's engine of `perf`."""
        return cls(model=model, slots=perf.max_seqs, prefill_base_ms=perf.pf_step_ms,
                   prefill_ms_per_token=perf.pf_tok_ms, decode_base_ms=perf.w_ms, decode_ms_per_seq=perf.h_seq_ms,
                   kv_ms_per_token=perf.k_kv_ms, chunk_tokens=perf.chunk_tokens,
                   default_max_tokens=default_max_tokens, kv_tokens=perf.kv_capacity_tokens)


class Sink:
    """Where an emulated request's output goes (the HTTP layer implements it)."""

    def token(self, job: Job) -> None: ...

    def finish(self, job: Job) -> None: ...


_job_ids = itertools.count(1)


class Job(engine_model.Job):
    """One request inside the emulated engine: the model's job plus where its tokens go."""

    __slots__ = ("sink", "arrived", "generated", "first_token_at", "last_token_at", "cancelled", "finish_reason")

    def __init__(self, prompt_tokens: int, max_tokens: int, sink: Sink, arrived: float, prefix: int = -1,
                 prefix_tokens: int = 0, *, finish_reason: str = "length") -> None:
        """`max_tokens`: the answer's length (emulator.answer_length), `finish_reason` how it ends: "length" (cut at
        the request's max_tokens) or "stop" (the emulated model's end of sequence)."""
        super().__init__(next(_job_ids), prompt_tokens, max_tokens, arrived, prefix, prefix_tokens)
        self.finish_reason = finish_reason
        self.sink = sink
        self.arrived = arrived
        self.generated = 0
        self.first_token_at: float | None = None
        self.last_token_at = arrived
        self.cancelled = False

    @property
    def prompt_tokens(self) -> int:
        return self.prompt

    @property
    def max_tokens(self) -> int:
        return self.output


class LoopClock:
    """engine_model.Clock on an asyncio loop."""

    __slots__ = ("_loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @property
    def now(self) -> float:
        return self._loop.time()

    def at(self, when: float, handler: Callable[[Any], None], arg: Any = None) -> None:
        self._loop.call_at(when, handler, arg)


class Histogram:
    """A Prometheus histogram without locks or labels: the emulator is single-threaded."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float, weight: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += weight
        self.sum += value * weight
        self.count += weight

    def render(self, name: str, labels: str) -> list[str]:
        lines = [f"# TYPE {name} histogram"]
        cumulative = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            cumulative += n
            lines.append(f'{name}_bucket{{{labels},le="{bound}"}} {cumulative}')
        lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {self.count}')
        lines.append(f"{name}_sum{{{labels}}} {self.sum}")
        lines.append(f"{name}_count{{{labels}}} {self.count}")
        return lines


class EmulatedEngine:
    """The batching engine. submit() a Job; its Sink gets token() per token and finish() once."""

    def __init__(self, config: EmulatorConfig, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.config = config
        self._loop = loop or asyncio.get_running_loop()
        self.model = engine_model.Engine(0, config.perf(), LoopClock(self._loop), self._first, self._done,
                                         lambda _: None)
        self._ticking = False
        self.ttft = Histogram(TTFT_BUCKETS)
        self.itl = Histogram(ITL_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.prefix_cache_queries_total = 0
        """Prompt tokens looked up in the prefix cache and those found there (vLLM V1's counters)."""
        self.prefix_cache_hits_total = 0
        self.finished_total = 0
        self.finished_stop = 0
        """Of finished_total, the answers that ended on their own (finish_reason "stop"); the others "length"."""
        self.cancelled_total = 0

    @property
    def running(self) -> int:
        return self.model.active

    @property
    def waiting(self) -> int:
        return len(self.model.waiting)

    def submit(self, job: Job) -> None:
        self.model.submit(job)

    def cancel(self, job: Job) -> None:
        """The client went away: the job leaves the engine now, freeing its slot and KV cache."""
        if job.cancelled:
            return
        job.cancelled = True
        self.cancelled_total += 1
        self.model.cancel(job)

    def _first(self, job: engine_model.Job, now: float) -> None:
        assert isinstance(job, Job)
        job.first_token_at = now
        self.ttft.observe(now - job.arrived)
        self.prompt_tokens_total += job.prompt
        self.prefix_cache_queries_total += job.prompt
        self.prefix_cache_hits_total += job.cached
        job.generated = 1
        job.last_token_at = now
        self.generation_tokens_total += 1
        job.sink.token(job)
        if not self._ticking:
            self._ticking = True
            self._loop.call_later(self.model.step_ms() / 1000.0, self._tick, None)

    def _emit(self, job: Job, n: int, now: float) -> None:
        self.itl.observe((now - job.last_token_at) / n, n)
        job.generated += n
        job.last_token_at = now
        self.generation_tokens_total += n
        for _ in range(n):
            job.sink.token(job)

    def _tick(self, _: object) -> None:
        """Hand every decoding request the tokens its steps have produced by now."""
        model = self.model
        if not model.decoding:
            self._ticking = False
            return
        now = self._loop.time()
        model.advance(now)
        steps = model.steps
        for finish_step, _rid, job in model.decoding:
            assert isinstance(job, Job)
            n = min(int(job.output - (finish_step - steps) + 1e-6), job.output - 1) - job.generated
            if n > 0:
                self._emit(job, n, now)
        self._loop.call_later(model.step_ms() / 1000.0, self._tick, None)

    def _done(self, job: engine_model.Job, now: float) -> None:
        assert isinstance(job, Job)
        if job.generated < job.output:
            self._emit(job, job.output - job.generated, now)
        self.e2e.observe(now - job.arrived)
        self.finished_total += 1
        self.finished_stop += job.finish_reason == "stop"
        job.sink.finish(job)

    def prometheus(self) -> bytes:
        """/metrics in vLLM's names (V1 engine), read by aigrid's vLLM parser like a real vLLM."""
        labels = f'model_name="{self.config.model}"'
        kv = min(1.0, max(0, self.model.kv_used) / self.config.kv_tokens)
        lines = [
            "# TYPE vllm:num_requests_running gauge", f"vllm:num_requests_running{{{labels}}} {self.running}",
            "# TYPE vllm:num_requests_waiting gauge", f"vllm:num_requests_waiting{{{labels}}} {self.waiting}",
            "# TYPE vllm:kv_cache_usage_perc gauge", f"vllm:kv_cache_usage_perc{{{labels}}} {kv}",
            "# TYPE vllm:prompt_tokens_total counter", f"vllm:prompt_tokens_total{{{labels}}} {self.prompt_tokens_total}",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{{{labels}}} {self.generation_tokens_total}",
            "# TYPE vllm:prefix_cache_queries_total counter",
            f"vllm:prefix_cache_queries_total{{{labels}}} {self.prefix_cache_queries_total}",
            "# TYPE vllm:prefix_cache_hits_total counter",
            f"vllm:prefix_cache_hits_total{{{labels}}} {self.prefix_cache_hits_total}",
            "# TYPE vllm:request_success_total counter",
            f'vllm:request_success_total{{{labels},finished_reason="stop"}} {self.finished_stop}',
            f'vllm:request_success_total{{{labels},finished_reason="length"}} {self.finished_total - self.finished_stop}',
        ]
        lines += self.ttft.render("vllm:time_to_first_token_seconds", labels)
        lines += self.itl.render("vllm:inter_token_latency_seconds", labels)
        lines += self.e2e.render("vllm:e2e_request_latency_seconds", labels)
        return ("\n".join(lines) + "\n").encode()
