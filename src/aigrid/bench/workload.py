"""What the load generator sends and when: Poisson arrivals, a replay of the Azure LLM traces, or a fixed
number of requests for the closed loop. Pure: a seeded random.Random in, a list of plans out.

The Azure traces (data/traces in the repository, CC-BY 4.0; Patel et al., "Splitwise: Efficient generative LLM
inference using phase splitting", ISCA 2024; source Azure/AzurePublicDataset) give each request's arrival
time, prompt (ContextTokens) and output (GeneratedTokens) sizes; any trace file aigrid.traces reads will do
(BurstGPT's CSV, Mooncake's JSON Lines, ...).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import orjson

from aigrid.traces import read_trace


@dataclass(frozen=True, slots=True)
class Plan:
    """One request to send: at `at` seconds after the start (None: as soon as a closed-loop worker is free)."""

    at: float | None
    prompt_tokens: int
    output_tokens: int


def poisson(rate: float, count: int, prompt_tokens: int, output_tokens: int, rng: random.Random) -> list[Plan]:
    if not 0 < rate < math.inf:  # NaN too
        raise ValueError("rate must be a positive number")
    t, plans = 0.0, []
    for _ in range(count):
        t += rng.expovariate(rate)
        plans.append(Plan(t, prompt_tokens, output_tokens))
    return plans


def closed(count: int, prompt_tokens: int, output_tokens: int) -> list[Plan]:
    return [Plan(None, prompt_tokens, output_tokens) for _ in range(count)]


def trace(path: Path, *, speedup: float, count: int, max_prompt_tokens: int, max_output_tokens: int,
          start: int = 0) -> list[Plan]:
    """Requests `start`..`start+count` of a trace file in time order (aigrid.traces: the Azure traces, BurstGPT,
    Mooncake's JSON Lines, ...), arrival gaps divided by `speedup`, token counts clipped to the caps and to at
    least 1 (clipping is reported by the caller, never silent: see Plan sizes). TraceFileError (a ValueError)
    names the file, line and column of a row that cannot be used."""
    if not 0 < speedup < math.inf:
        raise ValueError("speedup must be a positive number")
    tf = read_trace(path)
    if start >= len(tf):
        raise ValueError(f"{path}: no requests from index {start} (the trace has {len(tf)})")
    t, prompt, output = (a[start:start + count] for a in (tf.t, tf.prompt, tf.output))
    return [Plan(float(t[i] - t[0]) / speedup, max(1, min(int(prompt[i]), max_prompt_tokens)),
                 max(1, min(int(output[i]), max_output_tokens))) for i in range(len(t))]


def request_body(model: str, prompt_tokens: int, output_tokens: int, *, chat: bool, stream: bool,
                 seq: int, unique: bool = True) -> bytes:
    """A request whose prompt is about `prompt_tokens` tokens ("tok " is one token for the emulator and
    close to one for BPE tokenizers). With `unique`, a leading number defeats prefix caching across
    requests (real engines); without, every request of a size is the same (emulators have no cache)."""
    text = (f"{seq} " if unique else "0 ") + "tok " * max(0, prompt_tokens - 1)
    body: dict[str, object] = {"model": model, "max_tokens": output_tokens, "stream": stream,
                               "temperature": 0, "ignore_eos": True}
    if chat:
        body["messages"] = [{"role": "user", "content": text}]
    else:
        body["prompt"] = text
    if stream:
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)
