"""What the firewall's worker pays per text beside per character (security/firewall/screen.PART_CHARS, TEXT_CHARS).

    .venv/bin/python scripts/bench_screen_parts.py [N]        # N texts a case (default 10,000)

Prints the CPU time (`time.process_time`) of `Firewall.check_texts` (the default policy: injection blocked,
personal data redacted; a fresh tenant each, so no score is kept from another line) on:
  - one prompt and one document of 400,000 characters of random words (the cost per character);
  - texts the policy reads across their seams with others (pipeline.read_across, charged PART_CHARS):
    a system prompt and N - 1 one-character user parts of digit groups (`bench_pii_worst_case.random_groups`,
    seed 7: personal data is read around every seam, twice where a system prompt sits among the user's texts),
    N one-character user parts of the same digits with no system prompt, and N one-character tool messages of them
    (a tool result's seams are read with the system prompt's and the other tool results');
  - other texts (charged TEXT_CHARS): N short documents, template variables and tool definitions of distinct words
    (each scored by the injection heads: no score kept), base64 of them, look-alike letters, one-character documents
    of distinct letters; and (charged TOOL_CHARS) the user's "hi" and N - 1 client tools of distinct names and no
    description (a tool's definition is scored twice, as a prompt and as a document);
  - an agent's conversation of N / 7 tool steps (a chat body read as the gateway reads it, gateway/model_texts.py:
    a system prompt, a task, five tools, and a step of the model's short turn, its call's name and three arguments,
    and a tool result of about 550 characters of file lines: 7 texts a step), and what the queue charges it;
and the cost of a text of each kind in characters beside its own (the dearest per text, less its characters at the
dearest cost per character, over that cost). Prints figures, no pass/fail: docs/security.md ("Cost") quotes them;
note `cat /proc/loadavg` beside them."""

from __future__ import annotations

import base64
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pii_worst_case import random_groups  # noqa: E402

from aigrid.gateway.model_texts import chat_texts  # noqa: E402
from aigrid.security.firewall.injection import InjectionModel  # noqa: E402
from aigrid.security.firewall.pipeline import Firewall, read_across  # noqa: E402
from aigrid.security.firewall.screen import MAX_TOGETHER, PART_CHARS, TEXT_CHARS, TOOL_CHARS, weights, work  # noqa: E402
from aigrid.security.firewall.texts import ModelText, Source  # noqa: E402

WORDS = ("the team reviewed delivery schedule for third quarter agreed on budget new warehouse asked finance to "
         "prepare usual report meeting minutes customer order shipped invoice paid account manager said we will "
         "send update next week please find attached summary of results and plan going forward thanks").split()
LONG = 400_000
SYSTEM = "You are a helpful assistant."
TOOLS = ("read_file", "search_code", "list_directory", "run_tests", "write_file")


class Timer:
    def __init__(self) -> None:
        self.firewall = Firewall(InjectionModel.load())
        self.tenants = 0

    def cpu(self, texts: Sequence[ModelText]) -> float:
        self.tenants += 1
        started = time.process_time()
        self.firewall.check_texts(f"tenant{self.tenants}", texts)
        return time.process_time() - started


def distinct_words(n: int, rng: random.Random) -> list[str]:
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 8))))
    return sorted(out, key=lambda _: rng.random())


def agent_body(steps: int, rng: random.Random) -> dict[str, Any]:
    """A coding agent's conversation of `steps` tool calls and results, as a chat request."""
    tools = [{"type": "function", "function": {
        "name": name, "description": f"{name.replace('_', ' ')} in the repository and return what it finds",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}, "query": {"type": "string"},
                                                         "limit": {"type": "string"}}}}} for name in TOOLS]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM + " You work in a software repository through the tools given. " * 20},
        {"role": "user", "content": "Find why the nightly report job fails on the third quarter figures and fix it."}]
    for step in range(steps):
        path = f"src/report/{rng.choice(WORDS)}_{rng.randint(1, 99)}.py"
        arguments = {"path": path, "query": " ".join(rng.choice(WORDS) for _ in range(3)), "limit": str(rng.randint(5, 50))}
        lines = [f"{path}:{rng.randint(1, 900)}: " + " ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(8)]
        messages += [{"role": "assistant", "content": f"Step {step}: looking at {path} for the "
                      f"{rng.choice(WORDS)} {rng.choice(WORDS)}.",
                      "tool_calls": [{"id": f"call_{step}", "type": "function", "function": {
                          "name": rng.choice(TOOLS), "arguments": orjson.dumps(arguments).decode()}}]},
                     {"role": "tool", "tool_call_id": f"call_{step}", "content": "\n".join(lines)}]
    return {"model": "m", "messages": messages, "tools": tools}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    timer = Timer()
    per_char = 0.0
    longs = ((Source.USER, ("messages", 0, "content")), (Source.DOCUMENT, ("documents", 0)))
    for k, (source, path) in enumerate(longs):
        rng = random.Random(k)
        text = " ".join(rng.choice(WORDS) for _ in range(LONG // 5))[:LONG]
        spent = timer.cpu([ModelText(text, source, path)])
        per_char = max(per_char, spent / len(text))
        name = f"one {source.value} of {len(text):,} characters of words"
        print(f"{1:>7,} text:  {name:66s} {spent:6.2f} s  {spent / len(text) * 1e6:6.3f} us a character", flush=True)

    def line(name: str, texts: Sequence[ModelText]) -> float:
        """Prints the case's CPU time; returns its cost a text beside its characters, in seconds."""
        spent = timer.cpu(texts)
        own = (spent - sum(len(t.text) for t in texts) * per_char) / len(texts)
        together = len(read_across(timer.firewall.default, texts))
        print(f"{len(texts):>7,} texts: {name:66s} {spent:6.2f} s  {spent / len(texts) * 1e3:6.3f} ms a text "
              f"({together:,} read together)", flush=True)
        return own

    digits = random_groups(3 * n, random.Random(7))[:n]
    system = ModelText(SYSTEM, Source.SYSTEM, ("messages", 0, "content"))
    parts = [ModelText(c, Source.USER, ("messages", 1, "content", i, "text")) for i, c in enumerate(digits)]
    tool_turns = chat_texts({"messages": [{"role": "system", "content": SYSTEM}]
                            + [{"role": "tool", "tool_call_id": f"c{i}", "content": c} for i, c in enumerate(digits[:-1])]})
    together = max(line("a system prompt and one-character user parts of digit groups", [system, *parts[:-1]]),
                   line("one-character user parts of digit groups", parts),
                   line("a system prompt and one-character tool messages of digit groups", tool_turns))

    words = distinct_words(n, random.Random(11))
    letters = random.Random(7).sample([chr(c) for c in range(0x4E00, 0x9FFF)], n)
    encoded = [base64.b64encode(w.encode() * 2).decode() for w in words]
    look_alike = ["\u0456gn\u043ere " + w for w in words]  # Cyrillic i and o
    cases: list[tuple[str, dict[str, Any]]] = [
        ("documents of distinct words", {"documents": words}),
        ("documents of distinct words in base64", {"documents": encoded}),
        ("documents of distinct words after look-alike letters", {"documents": look_alike}),
        ("one-character documents of distinct letters", {"documents": letters}),
        ("template variables of distinct words in base64", {"chat_template_kwargs": {"notes": encoded}}),
        ("tool definitions of distinct words (two texts each)", {"tools": [
            {"type": "function", "function": {"name": f"t{i}", "description": w}} for i, w in enumerate(words[:n // 2])]}),
    ]
    other = max(line(name, chat_texts({"messages": [{"role": "user", "content": "hi"}], **extra})[1:])
                for name, extra in cases)
    # a tool's definition is scored twice, as a prompt and as a document (screen.TOOL_CHARS): the user's "hi" and
    # N - 1 client tools of distinct names and no description
    tool = line("the user's \"hi\" and tools of distinct names and no description", chat_texts({
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": w}} for w in words[:n - 1]]}))

    steps = max(1, n // 7)
    agent = chat_texts(agent_body(steps, random.Random(5)))
    chars = sum(len(t.text) for t in agent)
    line(f"an agent's conversation of {steps:,} tool steps, {chars:,} characters", agent)
    weighed = weights(timer.firewall.default, agent)
    charged = work(agent, weighed)
    print(f"  charged {charged:,} characters ({charged * per_char:.2f} s at the dearest cost a character), "
          f"{sum(weighed) / (PART_CHARS * MAX_TOGETHER):.0%} of the bound (screen.MAX_TOGETHER {MAX_TOGETHER:,}); "
          f"at {PART_CHARS:,} a text, {chars + PART_CHARS * len(agent):,}")
    print(f"a text read together costs {together / per_char:,.0f} characters beside its own "
          f"(screen.PART_CHARS: {PART_CHARS:,}); another text {other / per_char:,.0f} (screen.TEXT_CHARS: {TEXT_CHARS:,}); "
          f"a tool's definition alone {tool / per_char:,.0f} (screen.TOOL_CHARS: {TOOL_CHARS:,})")


if __name__ == "__main__":
    main()
