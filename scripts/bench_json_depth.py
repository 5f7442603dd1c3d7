"""What the depth check (aigrid/json_depth.py: deeper_than, which too_deep_raw calls for a request and
usage.whole_answer for an engine's answer) costs beside orjson's own parse, on four bodies: an agent request with
tools and a long history (~28 KB), an answer with log-probabilities (~0.9 MB), a 4 MiB flat array, 4 MiB of empty
arrays; then what usage.whole_answer (an engine's 2xx whole answer: parsed, its depth checked, its usage judged and
taken out where its counts cannot be charged) costs on that answer with a usage that is charged and one that is
taken out (the answer written without it; scripts/bench_whole_answer.py's until the twenty-eighth session).

    .venv/bin/python scripts/bench_json_depth.py

Prints the best of a few runs (--runs, 15 by default) in milliseconds (wall time); no pass/fail. json_depth.deeper_than's
docstring quotes these figures.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable
from typing import Any

import orjson
from _bestof import best_us

from aigrid.gateway.usage import whole_answer
from aigrid.json_depth import too_deep_raw


def best_ms(fn: Callable[[], Any], runs: int = 15) -> float:
    """The best of `runs` single calls, in milliseconds."""
    return best_us(fn, 1, runs) / 1000


def answer_with_logprobs(**usage: Any) -> bytes:
    """An engine's whole answer with log-probabilities (~0.9 MB, many brackets), `usage` its usage if any."""
    rng = random.Random(1)
    logprob = {"token": "abc", "logprob": -0.1, "bytes": [97, 98, 99], "top_logprobs": [
        {"token": f"t{i}", "logprob": -rng.random(), "bytes": [116]} for i in range(5)]}
    return orjson.dumps({"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi " * 1000},
                                                 "logprobs": {"content": [logprob] * 2400}, "finish_reason": "stop"}],
                         **({"usage": usage} if usage else {})})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each call; the best is printed")
    runs = parser.parse_args().runs
    tool = {"type": "function", "function": {"name": "get_weather", "description": "d" * 200, "parameters": {
        "type": "object", "properties": {f"p{i}": {"type": "string", "enum": ["a", "b"]} for i in range(8)},
        "required": ["p0"]}}}
    agent = orjson.dumps({"model": "m", "tools": [tool] * 12, "messages": [
        {"role": "user" if i % 2 == 0 else "assistant", "content": "hello " * 50} for i in range(60)]})
    flat = b'{"model":"m","messages":[{"role":"user","content":"' + b"{" * 200 + b'"}],"x":[' + b"0," * 2_000_000 + b"0]}"
    empty = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"x":[' + b"[]," * 1_300_000 + b"[]]}"
    for name, raw in (("agent request with 12 tools, 60 turns", agent),
                      ("answer with log-probabilities", answer_with_logprobs()),
                      ("4 MiB flat array", flat),
                      ("4 MiB of empty arrays", empty)):
        value = orjson.loads(raw)
        print(f"{name} ({len(raw):,} bytes): orjson.loads {best_ms(lambda r=raw: orjson.loads(r), min(runs, 3)):.3f} ms, "
              f"too_deep_raw {best_ms(lambda r=raw, v=value: too_deep_raw(r, v), runs):.3f} ms")
    for name, usage in (("charged usage", {"prompt_tokens": 10, "completion_tokens": 2400, "total_tokens": 2410}),
                        ("usage taken out", {"prompt_tokens": -5, "completion_tokens": 2400, "total_tokens": 2395})):
        raw = answer_with_logprobs(**usage)
        print(f"answer with log-probabilities, {name} ({len(raw):,} bytes): "
              f"orjson.loads {best_ms(lambda r=raw: orjson.loads(r), runs):.3f} ms, "
              f"usage.whole_answer {best_ms(lambda r=raw: whole_answer(r, None), runs):.3f} ms")


if __name__ == "__main__":
    main()
