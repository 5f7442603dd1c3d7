"""What Firewall.check_output costs a text (one reading of the detectors since the twenty-eighth session, two before
where an item was found: find_pii, then redact's own), and a whole answer's redaction holding personal data
(output_filter.redact_json_answer), cache-hot, one process, best of `--runs`:

    PYTHONPATH=src .venv/bin/python scripts/check_output_cost.py [--n 2000] [--runs 5]

Run it with another tree's `src` on PYTHONPATH (`git archive REV src | tar -x -C DIR`) for a before. Prints
microseconds of CPU time per call (best run); the machine's load beside them matters (`cat /proc/loadavg`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import orjson

from aigrid.gateway.output_filter import redact_json_answer
from aigrid.security.firewall.injection import InjectionModel
from aigrid.security.firewall.pipeline import Action, Firewall, FirewallPolicy

PROSE = ("The quarterly report shows revenue up 4% on the year, driven by the northern region; costs held flat. "
         "I will look up the two open invoices and send the summary to the finance channel as you asked. ") * 6
TEXTS = {
    "prose, nothing found (~1.2 KB)": PROSE,
    "prose with an address (~1.2 KB)": PROSE + "Write to jo@example.com.",
    "prose with a phone and a card (~1.2 KB)": PROSE + "Call +44 20 7946 0958, card 4111 1111 1111 1111.",
    "a call id with an address": "call_jo@example.com",
}
ANSWER = orjson.dumps({
    "id": "chatcmpl-0123456789abcdef", "object": "chat.completion", "created": 1796231436, "model": "qwen2.5-7b",
    "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": TEXTS["prose with an address (~1.2 KB)"], "tool_calls": [
            {"id": "call_jo@example.com", "type": "function",
             "function": {"name": "lookup_123-45-6789", "arguments": '{"to": "jo@example.com"}'}}]}}],
    "usage": {"prompt_tokens": 812, "completion_tokens": 141, "total_tokens": 953}})


def per_call(fn: Callable[[], Any], n: int, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - start) / n * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    fw = Firewall(InjectionModel.load(), {"t": FirewallPolicy(pii_output=Action.REDACT)})
    for what, text in TEXTS.items():
        print(f"check_output, {what}: {per_call(lambda t=text: fw.check_output('t', t), args.n, args.runs):.1f} us")
    print(f"redact_json_answer, an answer with an address, an SSN in a call's name and an address in its id and "
          f"arguments ({len(ANSWER)} bytes): {per_call(lambda: redact_json_answer(fw, 't', ANSWER), args.n // 4, args.runs):.1f} us")


if __name__ == "__main__":
    main()
