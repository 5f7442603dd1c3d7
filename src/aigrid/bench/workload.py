"""What the load generator sends and when: Poisson arrivals, a replay of the Azure LLM traces, or a fixed
number of requests for the closed loop. Pure: a seeded random.Random in, a list of plans out.

The Azure traces (data/traces in the repository, CC-BY 4.0; Patel et al., "Splitwise: Efficient generative LLM
inference using phase splitting", ISCA 2024; source Azure/AzurePublicDataset) give each request's arrival
time, prompt (ContextTokens) and output (GeneratedTokens) sizes.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson


@dataclass(frozen=True, slots=True)
class Plan:
    """One request to send: at `at` seconds after the start (None: as soon as a closed-loop worker is free)."""

    at: float | None
    prompt_tokens: int
    output_tokens: int


def poisson(rate: float, count: int, prompt_tokens: int, output_tokens: int, rng: random.Random) -> list[Plan]:
    if rate <= 0:
        raise ValueError("rate must be positive")
    t, plans = 0.0, []
    for _ in range(count):
        t += rng.expovariate(rate)
        plans.append(Plan(t, prompt_tokens, output_tokens))
    return plans


def closed(count: int, prompt_tokens: int, output_tokens: int) -> list[Plan]:
    return [Plan(None, prompt_tokens, output_tokens) for _ in range(count)]


def _parse_ts(raw: str) -> float:
    # "2023-11-16 18:15:46.6805900" has 7 fractional digits; fromisoformat accepts at most 6
    head, _, frac = raw.strip().partition(".")
    return datetime.fromisoformat(head).timestamp() + (float("0." + frac) if frac else 0.0)


def trace(path: Path, *, speedup: float, count: int, max_prompt_tokens: int, max_output_tokens: int,
          start: int = 0) -> list[Plan]:
    """Requests `start`..`start+count` of an Azure trace CSV, arrival gaps divided by `speedup`, token
    counts clipped to the caps (clipping is reported by the caller, never silent: see Plan sizes)."""
    if speedup <= 0:
        raise ValueError("speedup must be positive")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} - set(rows[0]):
        raise ValueError(f"{path}: expected columns TIMESTAMP, ContextTokens, GeneratedTokens")
    rows = rows[start:start + count]
    if not rows:
        raise ValueError(f"{path}: no requests from index {start}")
    t0 = _parse_ts(rows[0]["TIMESTAMP"])
    return [Plan((_parse_ts(r["TIMESTAMP"]) - t0) / speedup,
                 max(1, min(int(r["ContextTokens"]), max_prompt_tokens)),
                 max(1, min(int(r["GeneratedTokens"]), max_output_tokens))) for r in rows]


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
