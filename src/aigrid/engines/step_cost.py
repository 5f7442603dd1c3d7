"""The per-step cost of one continuous-batching engine, shared by the simulator and the engine emulator.

    step_ms = W + n x h_seq + K x k_kv + [c x pf_tok + pf_step]   (bracket only when a prefill chunk runs)

with n running sequences, K context tokens held by the batch and c prompt tokens of a prefill chunk. The
hardware profiles that derive these constants from data-sheet figures live in sim/hardware.py; the engine
emulator takes them from its command line (engines/emulator_model.py).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_CHUNK_TOKENS = 2048
"""Most prompt tokens prefilled in one step unless configured (vLLM's max_num_batched_tokens): the simulator's,
the engine emulator's and the planner's default."""


@dataclass(frozen=True, slots=True)
class EnginePerf:
    """Derived per-step costs of one engine (one model on `gpus` devices of one hardware profile)."""

    hardware: str
    w_ms: float
    h_seq_ms: float
    k_kv_ms: float
    pf_tok_ms: float
    pf_step_ms: float
    chunk_tokens: int
    max_seqs: int
    kv_capacity_tokens: int
    price_in_per_mtok: float
    price_out_per_mtok: float
    idle_w: float
    peak_w: float

    def step_ms(self, n: int, ctx_tokens: float, chunk: int = 0) -> float:
        ms = self.w_ms + n * self.h_seq_ms + ctx_tokens * self.k_kv_ms
        if chunk:
            ms += chunk * self.pf_tok_ms + self.pf_step_ms
        return ms

    def prefill_alone_ms(self, prompt_tokens: int) -> float:
        """A prompt prefilled with nothing else running, in chunks of chunk_tokens."""
        ms, left = 0.0, prompt_tokens
        while left > 0:
            c = min(left, self.chunk_tokens)
            ms += self.step_ms(0, 0.0, c)
            left -= c
        return ms

    @property
    def prefill_tps(self) -> float:
        return 1000.0 / self.pf_tok_ms

    @property
    def decode_tps(self) -> float:
        """Tokens per second one stream sees at batch 1."""
        return 1000.0 / self.w_ms

    def capacity_rps(self, prompt_tokens: float, output_tokens: float) -> float:
        """Requests per second the engine sustains at a full batch for requests of this mean size."""
        n = self.max_seqs
        ctx = n * (prompt_tokens + output_tokens / 2)
        while ctx > self.kv_capacity_tokens and n > 1:
            n -= 1
            ctx = n * (prompt_tokens + output_tokens / 2)
        decode_s = output_tokens * self.step_ms(n, ctx) / 1000.0 / n
        prefill_s = prompt_tokens * self.pf_tok_ms / 1000.0
        return 1.0 / (decode_s + prefill_s)
