"""What usage.whole_answer (an engine's 2xx whole answer: parsed, its depth checked, its usage judged and taken out
where its counts cannot be charged) costs on an answer with log-probabilities (~0.9 MB, many brackets: the depth
check writes it), with a usage that is charged and one that is taken out (the answer written without it).

    .venv/bin/python scripts/bench_whole_answer.py

Prints the best of a few runs in milliseconds (wall time), orjson's parse alone beside it; no pass/fail.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import orjson

from aigrid.gateway.usage import whole_answer


def best_ms(fn: Callable[[], Any], runs: int = 15) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def main() -> None:
    rng = random.Random(1)
    logprob = {"token": "abc", "logprob": -0.1, "bytes": [97, 98, 99], "top_logprobs": [
        {"token": f"t{i}", "logprob": -rng.random(), "bytes": [116]} for i in range(5)]}
    doc = {"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi " * 1000},
                                   "logprobs": {"content": [logprob] * 2400}, "finish_reason": "stop"}]}
    for name, usage in (("charged usage", {"prompt_tokens": 10, "completion_tokens": 2400, "total_tokens": 2410}),
                        ("usage taken out", {"prompt_tokens": -5, "completion_tokens": 2400, "total_tokens": 2395})):
        raw = orjson.dumps({**doc, "usage": usage})
        print(f"{name} ({len(raw):,} bytes): orjson.loads {best_ms(lambda r=raw: orjson.loads(r)):.2f} ms, "
              f"whole_answer {best_ms(lambda r=raw: whole_answer(r, None)):.2f} ms")


if __name__ == "__main__":
    main()
