"""Hardware profiles and the per-step cost model of one engine, calibrated on measured H100 steps.

One engine step (continuous batching, chunked prefill) costs

    step_ms = W + n x h_seq + K x k_kv + [c x pf_tok + pf_step]   (bracket only when a prefill chunk runs)

- W: reading the weights once per step (memory bound): W = LAUNCH_MS + weight bytes / (bandwidth x BW_EFF);
- h_seq = 2 x params / peak FLOP/s: the matrix work each extra sequence adds;
- k_kv = KV bytes per token / (bandwidth x KV_EFF): attention reads every cached token of the batch
  (K = context tokens held by the running batch);
- pf_tok = 2 x params / (peak FLOP/s x PREFILL_EFF) per prompt token, c tokens per chunk, pf_step the fixed
  cost of a step that carries a prefill chunk.

Constants fitted on data/engine-perf/h100_floor_steps.csv (Llama-3.2-1B/3B and 3.1-8B shapes on one H100):
W = 0.607 ms + 0.805 ms per billion params at bf16 (=> BW_EFF 0.74), per-sequence slope at 1,024 vs 4,096
context => KV_EFF 0.93 and h_seq = 2P/F at peak, prefill 520-570 TFLOP/s => PREFILL_EFF 0.6. Other GPUs
are scaled by their data-sheet bandwidth and dense BF16 FLOP/s (decode is bound by bandwidth over weight
bytes, prefill by compute over 2 x params x tokens); see docs/simulator.md for the sources and the check
against Splitwise's measured vLLM-class runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from aigrid.engines.step_cost import DEFAULT_CHUNK_TOKENS, EnginePerf

LAUNCH_MS = 0.607
BW_EFF = 0.742
KV_EFF = 0.93
PREFILL_EFF = 0.60
PREFILL_STEP_MS = 2.0
MEM_RESERVED = 0.10
"""Fraction of device memory the engine keeps for activations and CUDA graphs (vLLM uses 0.9 utilisation)."""


@dataclass(frozen=True, slots=True)
class Hardware:
    name: str
    mem_gb: float
    bw_tbs: float
    """Peak memory bandwidth, TB/s (data sheet)."""
    bf16_tflops: float
    """Peak dense BF16 tensor FLOP/s, in TFLOP/s (data sheet)."""
    max_seqs: int
    """Batch slots the engine runs at most (vLLM's max_num_seqs default is 256; llama.cpp -np for CPU)."""
    usd_per_hour: float
    """Rental price assumption per device-hour, used to derive per-token prices."""
    idle_w: float
    peak_w: float
    launch_ms: float = LAUNCH_MS


HARDWARE: dict[str, Hardware] = {
    "h100": Hardware("NVIDIA H100 SXM 80GB", 80, 3.35, 989, 256, 2.50, 100, 700),
    "rtx-pro-6000": Hardware("NVIDIA RTX PRO 6000 Blackwell 96GB", 96, 1.79, 500, 256, 1.40, 80, 600),
    "l40s": Hardware("NVIDIA L40S 48GB", 48, 0.864, 362, 128, 0.90, 60, 350),
    "cpu": Hardware("CPU-only server (2 sockets, DDR5)", 512, 0.30, 8, 8, 0.40, 200, 700, launch_ms=2.0),
}


def engine_perf(hardware: str, params_b: float, kv_bytes_per_token: float, gpus: int = 1,
                chunk_tokens: int = DEFAULT_CHUNK_TOKENS, usd_per_hour: float | None = None) -> EnginePerf:
    """Scale the H100-fitted constants to `hardware` and a model of `params_b` billion parameters.

    Tensor parallelism over `gpus` devices is taken as ideal (bandwidth and FLOP/s add up); real TP loses
    some of that to communication.
    """
    hw = HARDWARE[hardware]
    bw = hw.bw_tbs * 1e12 * gpus
    flops = hw.bf16_tflops * 1e12 * gpus
    weight_bytes = 2.0 * params_b * 1e9
    w_ms = hw.launch_ms + weight_bytes / (bw * BW_EFF) * 1e3
    h_seq_ms = 2.0 * params_b * 1e9 / flops * 1e3
    k_kv_ms = kv_bytes_per_token / (bw * KV_EFF) * 1e3
    pf_tok_ms = 2.0 * params_b * 1e9 / (flops * PREFILL_EFF) * 1e3
    free_bytes = hw.mem_gb * 1e9 * gpus * (1.0 - MEM_RESERVED) - weight_bytes
    kv_cap = max(int(free_bytes / kv_bytes_per_token), 0)
    if kv_cap <= 0:
        raise ValueError(f"a {params_b:g}B model does not fit on {gpus} x {hw.name}")
    perf = EnginePerf(hardware, w_ms, h_seq_ms, k_kv_ms, pf_tok_ms, PREFILL_STEP_MS * hw.launch_ms / LAUNCH_MS,
                      chunk_tokens, hw.max_seqs, kv_cap, 0.0, 0.0, hw.idle_w * gpus, hw.peak_w * gpus)
    price_h = (hw.usd_per_hour if usd_per_hour is None else usd_per_hour) * gpus
    # Price per token at 60% of the capacity for Azure-conversation-sized requests (1,020 in, 130 out).
    tokens_per_h = perf.capacity_rps(1020, 130) * 0.6 * 3600 * (1020 + 130)
    usd_per_mtok = price_h / max(tokens_per_h, 1.0) * 1e6
    # Output tokens cost the engine far more time than prompt tokens: price them 4x (the usual API ratio).
    per_in = usd_per_mtok * (1020 + 130) / (1020 + 4 * 130)
    return EnginePerf(hardware, w_ms, h_seq_ms, k_kv_ms, pf_tok_ms, perf.pf_step_ms, chunk_tokens, hw.max_seqs,
                      kv_cap, round(per_in, 4), round(per_in * 4, 4), hw.idle_w * gpus, hw.peak_w * gpus)
