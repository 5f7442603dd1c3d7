"""The prefill chunk each hardware option's engines run with: an engine setting the planner chooses.

Chunked prefill (vLLM's max_num_batched_tokens, SGLang's chunked_prefill_size) packs at most `chunk_tokens`
tokens into one engine step, decode tokens first and then prompt tokens. A step that carries a full chunk
slows every decoding stream in the batch, so it sets how far TPOT rises whenever prompts arrive: one step
with a 2,048-token chunk of an 8B model takes 64 ms on an H100, 124 ms on an RTX PRO 6000 and 179 ms on an
L40S (sim/hardware.py). A smaller chunk keeps that step short at a small cost in prefill (a fixed cost per
step, and more steps per prompt), which is what operators do on slower GPUs.

The screen also times prefill with the chosen chunk on a loaded engine (loaded_prefill_ms): a long prompt
in small chunks takes many steps, each as long as a decode step of the batch plus the chunk, which is where
a slower GPU's TTFT goes.

The rule: the largest chunk among the option's choices (the demand's `chunk_tokens` for that hardware, else
CHUNK_CHOICES) whose step alone, an empty batch plus a full chunk, fits in TPOT_SHARE of the TPOT SLO for
every model; an option where none fits is not offered. The largest one that fits prefills fastest: for the
8B model at TPOT 100 ms an H100 gets 3,072 tokens (a 92.2 ms step), an RTX PRO 6000 1,024 (69.5 ms) and an
L40S 512 (65.5 ms). The screen's rule only; the simulator, which runs the engines with the chosen chunk,
judges the TPOT the streams actually see (docs/planning.md, "The H100's prefill chunk": at the global
example's peaks the worst stream's TPOT was the full-chunk step plus 6-9 ms, 99 ms at 3,072).
"""

from __future__ import annotations

from collections.abc import Iterable

from aigrid.engines.step_cost import DEFAULT_CHUNK_TOKENS, EnginePerf
from aigrid.plan.demand import Demand
from aigrid.sim.hardware import engine_perf

CHUNK_CHOICES = (3072, 2048, 1024, 512)
"""Prefill chunks (tokens) the planner chooses among when the demand does not fix one for a hardware."""
DEFAULT_CHUNK = DEFAULT_CHUNK_TOKENS
"""The simulator's and the engine emulator's default chunk (Scenario.chunk_tokens)."""
TPOT_SHARE = 0.93
"""A chunk is offered only if a step carrying a full chunk fits in this share of the TPOT SLO. Measured, not
wished: a stream's TPOT (its mean over its answer, as the SLO judges it) at the global example's peaks was at
most the full-chunk step alone plus 6-9 ms (the batch's own decode), 99 ms at 3,072 tokens (a 92.2 ms step,
0.93 of it) and 126 ms at 4,096 (119.9 ms); docs/planning.md, "The H100's prefill chunk"."""


def chunk_step_ms(demand: Demand, hardware: str, gpus: int, chunk: int, models: Iterable[str] | None = None) -> float:
    """The longest step with a full chunk and an empty batch over the demand's models (or `models`)."""
    names = set(models) if models is not None else None
    return max(engine_perf(hardware, m.params_b, m.kv_bytes_per_token, gpus, chunk).step_ms(0, 0.0, chunk)
               for m in demand.models if names is None or m.name in names)


def chunk_for(demand: Demand, hardware: str, models: Iterable[str] | None = None) -> int | None:
    """The chunk `hardware`'s engines run with in the plan, or None when no choice holds the TPOT SLO."""
    opt = demand.supply.hardware.get(hardware)
    gpus = opt.gpus_per_replica if opt is not None else 1
    choices = (opt.chunk_tokens,) if opt is not None and opt.chunk_tokens is not None else CHUNK_CHOICES
    names = list(models) if models is not None else None
    for c in sorted(choices, reverse=True):
        if chunk_step_ms(demand, hardware, gpus, c, names) <= demand.slo.tpot_ms * TPOT_SHARE:
            return c
    return None


LOADED_BATCH = 0.5
"""The screen times a prompt's prefill on an engine decoding a batch this share of its most sequences."""


def loaded_prefill_ms(perf: EnginePerf, prompt_tokens: int, seq_tokens: float) -> float:
    """A prompt prefilled while the engine decodes a half-full batch of sequences holding `seq_tokens` of
    context each: every step carries chunk_tokens - n of its tokens and costs a step of n sequences plus that
    chunk. With small chunks a long prompt takes many such steps: 7,304 tokens on an RTX PRO 6000 in
    1,024-token chunks take 9 steps of about 79 ms (715 ms), 509 ms when the engine is otherwise idle."""
    most = perf.max_seqs if seq_tokens <= 0 else min(perf.max_seqs, int(perf.kv_capacity_tokens // seq_tokens))
    n = int(max(most, 1) * LOADED_BATCH)
    per_step = max(perf.chunk_tokens - n, 1)
    full, rest = divmod(max(int(prompt_tokens), 1), per_step)
    ctx = n * seq_tokens
    return full * perf.step_ms(n, ctx, per_step) + (perf.step_ms(n, ctx, rest) if rest else 0.0)
