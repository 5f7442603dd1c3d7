"""What the engine's output bound (gateway/request_info.py engine_output_limit: the grid's limit, or the room the
model's context leaves the prompt where that is less, or none where that room is below MIN_OUTPUT_ROOM) costs real
traffic: the share of requests whose answer it would cut before its natural length, per model context.

Requests: the Azure LLM inference traces of 2023 (traces/azure_llm_2023_{conv,code}.csv under /work/shared/data,
read only; $AIGRID_DATA overrides): each row's ContextTokens (the prompt, as the engine counted it) and GeneratedTokens
(the answer's natural length). The gateway sees characters, not tokens: a prompt is taken to be --chars-per-token (4)
characters a token, which the gateway estimates as request_info does (estimate_prompt_tokens at CHARS_PER_TOKEN, the
room with ROOM_MARGIN_TOKENS: longest_prompt_tokens; at ROOM_CHARS_PER_TOKEN, 2, until the thirty-eighth session).

    .venv/bin/python scripts/output_bound_cost.py [--chars-per-token 4] [--limit 4096] [--contexts 2048,8192,...]

Prints one line a trace and context: requests, the share that fits the context (prompt + answer <= context: the
others no engine of that context serves whole, bound or not), and of all requests the share sent the grid's limit, a
smaller room, none (the room below the floor); the share cut (the answer fits the context and is longer than the
max_tokens sent), and of those the ones only the room cuts (their answer is within the grid's limit, past the room):
the cost of bounding by the room rather than sending none. No pass/fail.

The figures are an engine's that validates `prompt + max_tokens <= context` (VALIDATING: vLLM, SGLang, TGI, OpenAI's
API, and any kind not known to stop at its context). An engine of a kind in request_info.CONTEXT_STOPPED_KINDS
(llama-server) is sent the grid's limit whatever the prompt, and its answers are cut by nothing but its context.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

from aigrid.gateway.request_info import CHARS_PER_TOKEN, engine_output_limit, longest_prompt_tokens
from aigrid.gateway.schemas import ChatRequest

DATA = Path(os.environ.get("AIGRID_DATA", "/work/shared/data"))
TRACES = ("azure_llm_2023_conv.csv", "azure_llm_2023_code.csv")
CONTEXTS = (2048, 8192, 32_768, 131_072)
VALIDATING = "vllm"
"""The engine kind the figures are for: one that refuses a max_tokens the prompt leaves no room for."""
ONE_MESSAGE = ChatRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "x"}]})


def rows(path: Path) -> list[tuple[int, int]]:
    """(prompt tokens, answer tokens) a request."""
    with path.open(newline="", encoding="utf-8") as f:
        return [(int(r["ContextTokens"]), int(r["GeneratedTokens"])) for r in csv.DictReader(f)]


def sent(prompt_tokens: int, chars_per_token: float, context: int, limit: int) -> int | None:
    """The max_tokens the gateway sends a request of `prompt_tokens` real tokens read as `chars_per_token` characters a
    token (one prompt: no template, the trace's count holds it)."""
    estimate = max(1, int(prompt_tokens * chars_per_token) // CHARS_PER_TOKEN)
    return engine_output_limit(longest_prompt_tokens(ONE_MESSAGE, estimate), context, limit, VALIDATING)


def line(name: str, requests: list[tuple[int, int]], chars_per_token: float, context: int, limit: int) -> str:
    n = len(requests)
    fits = full = room = none = cut = by_room = 0
    for prompt, answer in requests:
        bound = sent(prompt, chars_per_token, context, limit)
        whole = prompt + answer <= context  # the engine's context lets the answer end at its natural length
        fits += whole
        if bound is None:
            none += 1
            continue
        full += bound == limit
        room += bound < limit
        if answer > bound and whole:
            cut += 1
            by_room += answer <= limit

    def pct(k: int) -> str:
        return f"{100 * k / n:6.2f}%"

    return (f"{name:5} context {context:>7,}: n={n:,}  fits {pct(fits)}  sent the limit {pct(full)}, a smaller room "
            f"{pct(room)}, none {pct(none)}  cut {pct(cut)} ({cut:,}), by the room only {pct(by_room)} ({by_room:,})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chars-per-token", type=float, default=4.0,
                        help="characters a real token of the traces' prompts, as the gateway would see them")
    parser.add_argument("--limit", type=int, default=4096, help="the grid's gateway.max_output_tokens")
    parser.add_argument("--contexts", default=",".join(map(str, CONTEXTS)), help="model contexts, comma-separated")
    args = parser.parse_args()
    contexts = [int(c) for c in args.contexts.split(",")]
    print(f"{args.chars_per_token:g} characters a token, grid's limit {args.limit:,}")
    for file in TRACES:
        requests = rows(DATA / "traces" / file)
        for context in contexts:
            print(line(file.split("_")[-1].removesuffix(".csv"), requests, args.chars_per_token, context, args.limit))


if __name__ == "__main__":
    main()
