"""What the gateway's prompt-token estimate (gateway/request_info.py: estimate_prompt_tokens, which sizes a request's
admission and quota reservations and its hang-up charge, and turn_prompt_tokens, a tool loop's later turn) costs per
request, on three validated chat requests: a 60-turn conversation of text (~20 KB), an agent's history of 40 tool
calls with their results (~59 KB, most of it the calls' arguments), and one short message. Also the validation of the
same bodies (pydantic), for scale. Then the count of one text (request_info.prompt_units, a token weight a byte class
since the thirty-eighth session; len() before) on prompts of 1 KB and 100 KB, English and emoji.

    .venv/bin/python scripts/bench_prompt_estimate.py

Prints the best of a few runs in microseconds a call (wall time); no pass/fail.
"""

from __future__ import annotations

from typing import Any

import orjson
from _bestof import best_us

from aigrid.gateway.request_info import estimate_prompt_tokens, prompt_units, turn_prompt_tokens
from aigrid.gateway.schemas import ChatRequest

CALLS, RUNS = 200, 7


def agent_history(calls: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are a coding agent."},
                                      {"role": "user", "content": "Fix the failing test."}]
    for i in range(calls):
        arguments = orjson.dumps({"path": f"src/module_{i}.py", "content": "def f(x):\n    return x + 1\n" * 40})
        messages.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{i}", "type": "function", "function": {"name": "write_file", "arguments": arguments.decode()}}]})
        messages.append({"role": "tool", "tool_call_id": f"call_{i}", "content": "ok"})
    return messages


def main() -> None:
    bodies = {
        "60 turns of text": [{"role": "user" if i % 2 == 0 else "assistant", "content": "hello there " * 25}
                             for i in range(60)],
        "agent history, 40 tool calls": agent_history(40),
        "one short message": [{"role": "user", "content": "Hi"}],
    }
    for name, messages in bodies.items():
        body = {"model": "m", "messages": messages}
        size = len(orjson.dumps(body))
        chat = ChatRequest.model_validate(body)
        print(f"{name} ({size:,} bytes, {len(messages)} messages): estimate {estimate_prompt_tokens(chat):,} tokens "
              f"(bytes/4 {size // 4:,}); estimate_prompt_tokens {best_us(lambda c=chat: estimate_prompt_tokens(c), CALLS, RUNS):.1f} us, "
              f"turn_prompt_tokens {best_us(lambda b=body: turn_prompt_tokens(b), CALLS, RUNS):.1f} us, "
              f"validation {best_us(lambda b=body: ChatRequest.model_validate(b), 20, RUNS):.1f} us")
    for kind, unit in (("English", "The quick brown fox jumps over the lazy dog. "), ("emoji", "\U0001F600")):
        for size in (1_000, 100_000):
            text = unit * (size // len(unit.encode()))
            print(f"prompt_units, {kind}, {len(text.encode()):,} bytes: {best_us(lambda t=text: prompt_units(t), CALLS, RUNS):.1f} us "
                  f"(len: {best_us(lambda t=text: len(t), CALLS, RUNS):.2f} us)")


if __name__ == "__main__":
    main()
