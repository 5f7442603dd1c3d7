"""The engine emulator's timing model and metrics: a continuous-batching engine, event-driven, no tasks.

An emulated engine has `slots` batch slots. A request that finds every slot busy waits in a FIFO queue.
Once admitted it is prefilled: prefills share one lane (the accelerator does one prefill at a time), each
taking `prefill_base_ms + prefill_ms_per_token * prompt_tokens`; the prefill step produces the first token.
The request then joins the decode batch. One decode step emits one token for every request in the batch and
takes `decode_base_ms + decode_ms_per_seq * n` where n is the batch size (the W + H*n law that memory-bound
decoding follows), so inter-token latency grows with load, as on vLLM or SGLang.

Everything is driven by loop.call_at/call_later callbacks: one timer per prefill and one per decode step,
whatever the number of streams, so the emulator's own CPU cost stays far below what it emulates.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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
    prefill_ms_per_token: float = 0.02
    decode_base_ms: float = 10.0
    decode_ms_per_seq: float = 0.05
    default_max_tokens: int = 128
    kv_tokens: int = 1_000_000
    """KV-cache capacity in tokens; vllm:kv_cache_usage_perc is the running requests' context over it."""

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError("slots must be at least 1")
        if min(self.prefill_base_ms, self.prefill_ms_per_token, self.decode_base_ms, self.decode_ms_per_seq) < 0:
            raise ValueError("emulator delays must not be negative")
        if self.kv_tokens < 1:
            raise ValueError("kv_tokens must be at least 1")

    def prefill_s(self, prompt_tokens: int) -> float:
        return (self.prefill_base_ms + self.prefill_ms_per_token * prompt_tokens) / 1000.0

    def step_s(self, batch: int) -> float:
        return (self.decode_base_ms + self.decode_ms_per_seq * batch) / 1000.0


class Sink:
    """Where an emulated request's output goes (the HTTP layer implements it)."""

    def token(self, job: Job) -> None: ...

    def finish(self, job: Job) -> None: ...


@dataclass(eq=False)
class Job:
    """One request inside the emulated engine."""

    prompt_tokens: int
    max_tokens: int
    sink: Sink
    arrived: float
    generated: int = 0
    first_token_at: float | None = None
    cancelled: bool = False
    extra: dict[str, object] = field(default_factory=dict)


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

    def __init__(self, config: EmulatorConfig, loop: asyncio.AbstractEventLoop | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.config = config
        self._loop = loop or asyncio.get_running_loop()
        self._now = clock or self._loop.time
        self.waiting: deque[Job] = deque()
        self.running = 0
        self.batch: list[Job] = []
        self._lane_free_at = 0.0
        self._stepping = False
        self._context_tokens = 0
        self.ttft = Histogram(TTFT_BUCKETS)
        self.itl = Histogram(ITL_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.finished_total = 0
        self.cancelled_total = 0

    def submit(self, job: Job) -> None:
        if self.running < self.config.slots:
            self._admit(job)
        else:
            self.waiting.append(job)

    def cancel(self, job: Job) -> None:
        """The client went away: the job leaves the queue now, or the batch at its next step."""
        if job.cancelled:
            return
        job.cancelled = True
        self.cancelled_total += 1
        if job in self.waiting:
            self.waiting.remove(job)

    def _admit(self, job: Job) -> None:
        self.running += 1
        self._context_tokens += job.prompt_tokens
        start = max(self._now(), self._lane_free_at)
        self._lane_free_at = start + self.config.prefill_s(job.prompt_tokens)
        self._loop.call_at(self._lane_free_at, self._prefilled, job)

    def _release(self, job: Job) -> None:
        self.running -= 1
        self._context_tokens -= job.prompt_tokens + job.generated
        while self.waiting and self.running < self.config.slots:
            self._admit(self.waiting.popleft())

    def _prefilled(self, job: Job) -> None:
        if job.cancelled:
            self._release(job)
            return
        now = self._now()
        job.first_token_at = now
        self.ttft.observe(now - job.arrived)
        self.prompt_tokens_total += job.prompt_tokens
        self._emit(job)
        if job.generated >= job.max_tokens:
            self._done(job, now)
            return
        self.batch.append(job)
        if not self._stepping:
            self._stepping = True
            self._loop.call_later(self.config.step_s(len(self.batch)), self._step, now)

    def _emit(self, job: Job) -> None:
        job.generated += 1
        self._context_tokens += 1
        self.generation_tokens_total += 1
        job.sink.token(job)

    def _step(self, started: float) -> None:
        now = self._now()
        alive: list[Job] = []
        for job in self.batch:
            if job.cancelled:
                self._release(job)
                continue
            self._emit(job)
            if job.generated >= job.max_tokens:
                self._done(job, now)
            else:
                alive.append(job)
        if self.batch:
            self.itl.observe(now - started, len(self.batch))
        self.batch = alive
        if alive:
            self._loop.call_later(self.config.step_s(len(alive)), self._step, now)
        else:
            self._stepping = False

    def _done(self, job: Job, now: float) -> None:
        self.e2e.observe(now - job.arrived)
        self.finished_total += 1
        self._release(job)
        job.sink.finish(job)

    def prometheus(self) -> bytes:
        """/metrics in vLLM's names (V1 engine), read by aigrid's vLLM parser like a real vLLM."""
        labels = f'model_name="{self.config.model}"'
        kv = min(1.0, max(0, self._context_tokens) / self.config.kv_tokens)
        lines = [
            "# TYPE vllm:num_requests_running gauge", f"vllm:num_requests_running{{{labels}}} {self.running}",
            "# TYPE vllm:num_requests_waiting gauge", f"vllm:num_requests_waiting{{{labels}}} {len(self.waiting)}",
            "# TYPE vllm:kv_cache_usage_perc gauge", f"vllm:kv_cache_usage_perc{{{labels}}} {kv}",
            "# TYPE vllm:prompt_tokens_total counter", f"vllm:prompt_tokens_total{{{labels}}} {self.prompt_tokens_total}",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{{{labels}}} {self.generation_tokens_total}",
            "# TYPE vllm:request_success_total counter",
            f'vllm:request_success_total{{{labels},finished_reason="length"}} {self.finished_total}',
        ]
        lines += self.ttft.render("vllm:time_to_first_token_seconds", labels)
        lines += self.itl.render("vllm:inter_token_latency_seconds", labels)
        lines += self.e2e.render("vllm:e2e_request_latency_seconds", labels)
        return ("\n".join(lines) + "\n").encode()
