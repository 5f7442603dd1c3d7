"""CPU of one whole streamed answer through the relay's EventPipe, continuation tracking on (a request with a spare
endpoint of its family, as the bench's): the emulator's 24-token stream in its usual reads (the first token alone,
then three token events a read, then the finish, the usage chunk the gateway asked for and [DONE] in one read), a new
pipe per answer, the pipe asked at the end whether the answer ended. Prints the least `time.process_time` per answer
over --repeat runs of --n answers (the least: the machine is shared).

    PYTHONPATH=src python scripts/relay_stream_cost.py [--n 3000] [--repeat 9]

Cache-hot and single-stream, so a lower bound for the gateway under load (docs/benchmarks.md, thirty-first session).
"""

from __future__ import annotations

import argparse
import time

import orjson
from _bestof import best_us

from aigrid.gateway.output_filter import OutputFilter
from aigrid.gateway.relay import EventPipe

TOKENS = 24


def _event(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def reads() -> list[bytes]:
    token = _event({"id": "chatcmpl-emu1", "object": "chat.completion.chunk", "created": 1796231436,
                    "model": "emulated", "choices": [{"index": 0, "logprobs": None, "finish_reason": None,
                                                      "delta": {"content": " tok"}}]})
    out = [token] + [token * 3 for _ in range((TOKENS - 1) // 3)] + [token * ((TOKENS - 1) % 3)]
    out = [r for r in out if r]
    out.append(_event({"id": "chatcmpl-emu1", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
               + _event({"id": "chatcmpl-emu1", "choices": [],
                         "usage": {"prompt_tokens": 32, "completion_tokens": TOKENS, "total_tokens": 32 + TOKENS}})
               + b"data: [DONE]\n\n")
    return out


def per_answer_us(n: int, repeat: int) -> float:
    answer = reads()
    output = OutputFilter(False, strip_usage=True)

    def one() -> None:
        pipe = EventPipe(output, sse=True, track=True)
        for raw in answer:
            pipe.feed(raw)
        if not pipe.ended(b""):
            raise AssertionError("the answer did not end")

    return best_us(one, n, repeat, clock=time.process_time)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=9)
    args = ap.parse_args()
    print(f"{per_answer_us(args.n, args.repeat):.1f} us of CPU per {TOKENS}-token answer ({len(reads())} reads), "
          "continuation tracking on")


if __name__ == "__main__":
    main()
