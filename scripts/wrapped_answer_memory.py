"""Memory a wrapper of the chosen engine holds when the engine's answer does not stop (docs/reliability.md,
"Nor an answer that is not one"): `n` whole answers merged (engines/fan_out.py) and a tool loop's model turn
(agents/loop.py), each against a FAKE in-process engine that sends `--mib` MiB per answer in 64 KiB chunks (a new
bytes object each, as a socket's reads). The peak is tracemalloc's, over the read.

    .venv/bin/python scripts/wrapped_answer_memory.py               # this checkout
    # before the bound: the same script against an older tree
    mkdir -p /tmp/before && git archive 4766cc0 src | tar -x -C /tmp/before && AIGRID_PURE=1 \\
        PYTHONPATH=/tmp/before/src .venv/bin/python scripts/wrapped_answer_memory.py

The bound given is what the proxy gives (Proxy.most_bytes): `--context` tokens x usage.BYTES_PER_TOKEN per engine
request, at least 1 MiB, times the requests."""

from __future__ import annotations

import argparse
import asyncio
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson

from aigrid.agents.loop import run_tool_loop
from aigrid.agents.tool import ToolRegistry
from aigrid.engines.fan_out import FanOutEngine
from aigrid.engines.protocol import UpstreamResponse
from aigrid.errors import EngineError
from aigrid.gateway.usage import BYTES_PER_TOKEN

CHUNK = 64 << 10


class Endless:
    """Answers every request with `size` bytes: a whole completion padded, or, to a stream, one SSE event per chunk;
    each chunk a new bytes object, as a socket's reads are."""

    kind = "vllm"
    base_url = "fake://endless"

    def __init__(self, size: int) -> None:
        self.size = size

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        stream = orjson.loads(body).get("stream")
        yield UpstreamResponse(200, {"content-type": "text/event-stream" if stream else "application/json"},
                               self._events() if stream else self._whole())

    async def _whole(self) -> AsyncIterator[bytes]:
        yield b'{"choices": [{"index": 0, "message": {"content": "x"}}], "pad": "'
        for _ in range(self.size // CHUNK):
            yield b"x" * CHUNK
        yield b'"}'

    async def _events(self) -> AsyncIterator[bytes]:
        event = b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"content": "x" * (CHUNK - 64)}}]})
        event += b"\n\n"
        for _ in range(self.size // len(event)):
            yield bytes(bytearray(event))
        yield b"data: [DONE]\n\n"


async def fan_out(size: int, n: int, context: int) -> str:
    engine = FanOutEngine(Endless(size), n)  # type: ignore[arg-type]
    if hasattr(engine, "bound"):
        engine.bound(max(1 << 20, context * BYTES_PER_TOKEN) * n)
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": n})
    try:
        async with engine.open("/v1/chat/completions", body) as answer:
            got = sum([len(c) async for c in answer.body])
        return f"read whole, {got / 2**20:.0f} MiB merged"
    except EngineError as e:
        return f"refused: {e}"


async def loop_turn(size: int, context: int) -> str:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]}
    from aigrid.agents.loop import DEFAULT_LOOP, LoopConfig

    config = DEFAULT_LOOP
    if "max_turn_bytes" in LoopConfig.__dataclass_fields__:
        config = LoopConfig(max_turn_bytes=max(1 << 20, context * BYTES_PER_TOKEN))  # type: ignore[call-arg]
    try:
        async for _ in run_tool_loop(Endless(size), body, ToolRegistry(), config=config):  # type: ignore[arg-type]
            pass
        return "read whole"
    except EngineError as e:
        return f"refused: {e}"


def measure(label: str, run: asyncio.Future[str] | object) -> None:
    tracemalloc.start()
    tracemalloc.reset_peak()
    outcome = asyncio.run(run)  # type: ignore[arg-type]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"{label}: peak {peak / 2**20:.1f} MiB allocated; {outcome[:90]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=32, help="MiB each answer sends")
    ap.add_argument("--n", type=int, default=4, help="answers of the fan-out")
    ap.add_argument("--context", type=int, default=512, help="the model's context in tokens (the bound's)")
    args = ap.parse_args()
    size = args.mib << 20
    measure(f"fan-out, n={args.n} answers of {args.mib} MiB", fan_out(size, args.n, args.context))
    measure(f"tool loop, one model turn of {args.mib} MiB (streamed)", loop_turn(size, args.context))


if __name__ == "__main__":
    main()
