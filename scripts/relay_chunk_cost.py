"""The Python a relayed chunk costs on the wire path, without sockets: an engine connection (_Conn) in sink mode
fed one emulator token event per read (one HTTP chunk), through StreamRelay's sink and EventPipe into a wire
whose transport drops the bytes. Prints microseconds per chunk, with and without continuation tracking.

    PYTHONPATH=src python scripts/relay_chunk_cost.py [--n 200000]

Cache-hot and single-stream, so a lower bound for the gateway under load (docs/benchmarks.md, fifth round).
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson

from aigrid.engines.upstream_transport import _Conn
from aigrid.gateway.output_filter import OutputFilter
from aigrid.gateway.relay import EventPipe

EVENT = b"data: " + orjson.dumps({
    "id": "chatcmpl-emu12345", "object": "chat.completion.chunk", "created": 1796231436, "model": "emulated",
    "choices": [{"index": 0, "logprobs": None, "finish_reason": None, "delta": {"content": " tok"}}]}) + b"\n\n"
FRAME = b"%x\r\n%b\r\n" % (len(EVENT), EVENT)
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


class _Drop:
    """A transport that takes every byte and does nothing."""

    def write(self, data: bytes) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


async def per_chunk_us(n: int, track: bool) -> float:
    conn = _Conn(("engine", 80))
    conn.connection_made(_Drop())  # type: ignore[arg-type]
    conn.parser.feed_data(HEAD)
    pipe = EventPipe(OutputFilter(None, strip_usage=True), sse=True, track=track)
    pipe.feed(EVENT)  # the first chunk, as the relay feeds it before attaching
    client = _Drop()
    feed, write = pipe.feed, client.write

    def sink(data: bytes) -> bool:  # StreamRelay._pump's sink, ClientWire.write inlined
        out = feed(data)
        if out:
            write(b"%x\r\n%b\r\n" % (len(out), out))
        return True

    conn.attach(sink, 600.0)
    received = conn.data_received
    for _ in range(1000):
        received(FRAME)
    start = time.perf_counter()
    for _ in range(n):
        received(FRAME)
    elapsed = time.perf_counter() - start
    conn.detach()
    return elapsed / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    args = ap.parse_args()
    for track in (False, True):
        print(f"continuation tracking {'on' if track else 'off'}: "
              f"{asyncio.run(per_chunk_us(args.n, track)):.2f} us per relayed chunk")


if __name__ == "__main__":
    main()
