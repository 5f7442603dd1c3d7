"""CPU time the Messages and Responses doors spend translating one streamed chat answer of N one-character events
(chat_events + anthropic_stream / responses_stream, in process, no network): linear if the seconds per 100k events
stay flat as N doubles. Brief QUAD (thirty-sixth session): through a live gateway 300,000 such events took 8.2 s and
600,000 took 22.0 s on the Messages door; this separates the doors' translation from the rest.

    .venv/bin/python scripts/bench_stream_doors.py [N ...]      # default 100000 200000 400000
    .venv/bin/python scripts/bench_stream_doors.py --calls N ...  # one tool call's arguments a character an event
    .venv/bin/python scripts/bench_stream_doors.py --waiting      # the Messages door's flush of 256-1,024 calls
                                                                  # waiting behind an open one, 8 KiB of arguments each

Prints figures (no pass/fail).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson

from aigrid.gateway.chat_events import ChatEvent, chat_events
from aigrid.gateway.messages_stream import anthropic_stream
from aigrid.gateway.responses_schema import ResponsesRequest
from aigrid.gateway.responses_stream import responses_stream

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.gateway.waiting_calls import waiting_calls  # noqa: E402


def text_chunk(i: int) -> bytes:
    return b"data: " + orjson.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                     "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": None}]}) \
        + b"\n\n"


def call_chunk(i: int) -> bytes:
    """A tool call's arguments `{"k": "aaa..."}` a character an event (its first event names it)."""
    call: dict[str, Any] = {"index": 0, "function": {"arguments": "a"}}
    if i == 0:
        call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"k": "'}}
    return b"data: " + orjson.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                     "choices": [{"index": 0, "delta": {"tool_calls": [call]},
                                                  "finish_reason": None}]}) + b"\n\n"


def stream(n: int, chunk: Callable[[int], bytes], last: bytes) -> list[bytes]:
    end = orjson.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                        "choices": [{"index": 0, "delta": {} if not last else {"tool_calls": [
                            {"index": 0, "function": {"arguments": last.decode()}}]},
                            "finish_reason": "stop"}]})
    return [chunk(i) for i in range(n)] + [b"data: " + end + b"\n\n", b"data: [DONE]\n\n"]


async def blocks(reads: list[bytes]) -> AsyncIterator[bytes]:
    for r in reads:
        yield r


async def kept(final: dict[str, Any]) -> None:
    return None


def door(name: str) -> Callable[[AsyncIterator[ChatEvent]], AsyncIterator[bytes]]:
    if name == "messages":
        return lambda ev: anthropic_stream(ev, message_id="msg_1", model="m", input_estimate=1)
    req = ResponsesRequest(model="m", input="q", stream=True)
    return lambda ev: responses_stream(ev, req, "resp_1", kept)


async def run(reads: list[bytes], name: str) -> tuple[float, int]:
    t = time.process_time()
    size = 0
    async for out in door(name)(chat_events(blocks(reads))):
        size += len(out)
    return time.process_time() - t, size


def waiting() -> None:
    """Calls 1..N-1 begun while call 0's arguments are not whole: their blocks wait (_Blocks), then all start at once."""
    piece = "x" * (8 * 1024 - 16)
    for calls in (256, 512, 1024):
        blocks = waiting_calls(calls, piece)
        t = time.process_time()
        out = blocks.flush()
        print(f"messages  {calls:>5,} calls waiting, {len(out) / 2**20:.1f} MiB of blocks: "
              f"{(time.process_time() - t) * 1000:.1f} ms CPU", flush=True)


def main() -> None:
    args = sys.argv[1:]
    if args == ["--waiting"]:
        waiting()
        return
    calls = "--calls" in args
    sizes = [int(a) for a in args if a != "--calls"] or [100_000, 200_000, 400_000]
    for n in sizes:
        reads = stream(n, call_chunk if calls else text_chunk, b'"}' if calls else b"")
        for name in ("messages", "responses"):
            cpu, size = asyncio.run(run(reads, name))
            print(f"{name:9s} {'call' if calls else 'text'} {n:>9,} events: {cpu:6.2f} s CPU, "
                  f"{cpu / n * 1e5:5.2f} s per 100k, {size / 1e6:6.1f} MB out", flush=True)


if __name__ == "__main__":
    main()
