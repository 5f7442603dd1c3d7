"""What the twenty-seventh session's output checks cost, one by one (timeit, cache-hot, one process):

- a whole answer written again (output_filter.redact_json_answer sends what it read, never the engine's bytes: a key an
  engine wrote twice is one value, the one read): orjson.dumps of a realistic answer (about 2 KB: prose and two tool
  calls), beside redact_json_answer as a whole (its reading, with the personal-data check of each text);
- every other string a redacted answer keeps (read_the_rest: id, model, stop_reason, usage, ...), whole and a chunk's;
- a redacted stream's chunk (OutputFilter.event): a content chunk, and a tool call's first piece (its id and name
  read whole: CallNames) and a later piece (the id read again from the last one's cache);
- a cut Responses stream's next sequence_number (stopping._Watched._count) for one delta event a send, beside the
  count it replaced;
- first, a text read whole under a redacting tenant's policy (output_filter.OutputReads, the one reader of an answer's
  texts: one reading of the detectors since the twenty-eighth session, two before where an item was found: find_pii,
  then redact's own) and redact_json_answer of an answer holding personal data, in microseconds of CPU time, best of
  `--runs` (until review RV3 of the twenty-eighth session a script of their own, scripts/check_output_cost.py; its
  `--n 1000` is this script's default `--n 20000`). `--check-output-only` prints just these. Until the twenty-ninth
  session the text's line timed Firewall.check_output (removed: no answer went through it): the same reading, plus the
  tenant's policy looked up and verdicts built for each text (OutputReads: once an answer, `verdicts`): about 2 us of a
  line's figure (a call id 15.0 us by check_output, 13.1-13.4 by OutputReads, both in one process on the tree before
  the removal, review RV4 of the twenty-ninth session, load 5.6). A tree from before the twenty-eighth session has
  neither OutputReads nor this script's other imports.

    PYTHONPATH=src python scripts/output_check_cost.py [--n 20000] [--runs 5] [--check-output-only]

Prints microseconds per call; the machine's load beside them matters (`cat /proc/loadavg`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import orjson

from aigrid.gateway import output_filter
from aigrid.gateway.event_log import event
from aigrid.gateway.output_filter import OutputFilter, OutputReads, read_the_rest, redact_json_answer
from aigrid.gateway.stopping import _Watched
from aigrid.security.firewall.injection import InjectionModel
from aigrid.security.firewall.pipeline import Action, Firewall, FirewallPolicy

PROSE = ("The quarterly report shows revenue up 4% on the year, driven by the northern region; costs held flat. "
         "I will look up the two open invoices and send the summary to the finance channel as you asked. ") * 6
ANSWER = orjson.dumps({
    "id": "chatcmpl-0123456789abcdef", "object": "chat.completion", "created": 1796231436, "model": "qwen2.5-7b",
    "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": PROSE, "tool_calls": [
            {"id": "chatcmpl-tool-5f1e2d3c4b5a69788796a5b4", "type": "function",
             "function": {"name": "lookup_invoice", "arguments": '{"invoice": "INV-2026-0412", "fields": ["total"]}'}},
            {"id": "chatcmpl-tool-0a1b2c3d4e5f60718293a4b5", "type": "function",
             "function": {"name": "post_summary", "arguments": '{"channel": "finance", "text": "Q3 summary"}'}}]}}],
    "usage": {"prompt_tokens": 812, "completion_tokens": 141, "total_tokens": 953}})
TEXTS = {
    "prose, nothing found (~1.2 KB)": PROSE,
    "prose with an address (~1.2 KB)": PROSE + "Write to jo@example.com.",
    "prose with a phone and a card (~1.2 KB)": PROSE + "Call +44 20 7946 0958, card 4111 1111 1111 1111.",
    "a call id with an address": "call_jo@example.com",
}
ANSWER_WITH_ITEMS = orjson.dumps({
    "id": "chatcmpl-0123456789abcdef", "object": "chat.completion", "created": 1796231436, "model": "qwen2.5-7b",
    "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": TEXTS["prose with an address (~1.2 KB)"], "tool_calls": [
            {"id": "call_jo@example.com", "type": "function",
             "function": {"name": "lookup_123-45-6789", "arguments": '{"to": "jo@example.com"}'}}]}}],
    "usage": {"prompt_tokens": 812, "completion_tokens": 141, "total_tokens": 953}})


def cpu_per_call(fn: Callable[[], Any], n: int, runs: int) -> float:
    """Microseconds of CPU time (process_time) a call, the best of `runs` runs of `n` calls."""
    best = float("inf")
    for _ in range(runs):
        start = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - start) / n * 1e6)
    return best


def whole_read_figures(fw: Firewall, n: int, runs: int) -> None:
    for what, text in TEXTS.items():
        read = OutputReads(fw.policy("t").pii_output)
        print(f"OutputReads, {what}: {cpu_per_call(lambda t=text, r=read: r(t), n, runs):.1f} us")
    print(f"redact_json_answer, an answer with an address, an SSN in a call's name and an address in its id and "
          f"arguments ({len(ANSWER_WITH_ITEMS)} bytes): "
          f"{cpu_per_call(lambda: redact_json_answer(fw, 't', ANSWER_WITH_ITEMS), max(n // 4, 1), runs):.1f} us")


def per_call(fn: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def chunk(delta: dict[str, Any]) -> dict[str, Any]:
    return {"id": "chatcmpl-0123456789abcdef", "object": "chat.completion.chunk", "created": 1796231436,
            "model": "qwen2.5-7b", "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=5, help="the whole reads' figures: the best of this many runs")
    ap.add_argument("--check-output-only", action="store_true", help="print the whole reads' figures only")
    args = ap.parse_args()
    n = args.n
    fw = Firewall(InjectionModel.load(), {"t": FirewallPolicy(pii_output=Action.REDACT)})
    whole_read_figures(fw, max(n // 20, 1), args.runs)
    if args.check_output_only:
        return
    obj = orjson.loads(ANSWER)
    print(f"whole answer ({len(ANSWER)} bytes): orjson.dumps {per_call(lambda: orjson.dumps(obj), n):.2f} us; "
          f"redact_json_answer {per_call(lambda: redact_json_answer(fw, 't', ANSWER), max(n // 20, 10)):.1f} us")

    def rest_whole() -> None:
        read_the_rest(orjson.loads(ANSWER), OutputReads(fw.policy("t").pii_output))

    print(f"  of which the other fields' strings (read_the_rest, with the answer's copy): "
          f"{per_call(rest_whole, max(n // 20, 10)):.1f} us (copy alone {per_call(lambda: orjson.loads(ANSWER), n):.2f} us)")

    f = OutputFilter(True, strip_usage=False)
    text = chunk({"content": " tok"})
    raw_text = orjson.dumps(text)
    f.event(orjson.loads(raw_text))
    print(f"  a chunk's other fields (read_the_rest, each value read once a stream): "
          f"{per_call(lambda: read_the_rest(orjson.loads(raw_text), f._read_short), n):.2f} us "
          f"(copy alone {per_call(lambda: orjson.loads(raw_text), n):.2f} us)")
    def content() -> None:
        f.event(orjson.loads(raw_text))

    kept = output_filter.read_the_rest
    with_rest = per_call(content, n)
    output_filter.read_the_rest = lambda *args: None  # the same without it: what it adds to a chunk
    without = per_call(content, n)
    output_filter.read_the_rest = kept
    print(f"redacted stream, content chunk: OutputFilter.event {with_rest:.2f} us, {per_call(content, n):.2f} us "
          f"(with the chunk's copy); {without:.2f} us with read_the_rest a no-op between them")
    first = chunk({"tool_calls": [{"index": 0, "id": "chatcmpl-tool-5f1e2d3c4b5a69788796a5b4", "type": "function",
                                   "function": {"name": "lookup_invoice", "arguments": ""}}]})
    later = chunk({"tool_calls": [{"index": 0, "id": "chatcmpl-tool-5f1e2d3c4b5a69788796a5b4",
                                   "function": {"arguments": '{"invoice": '}}]})
    raw_first, raw_later = orjson.dumps(first), orjson.dumps(later)

    def first_piece() -> None:
        OutputFilter(True, strip_usage=False).event(orjson.loads(raw_first))

    g = OutputFilter(True, strip_usage=False)
    g.event(orjson.loads(raw_first))
    print(f"redacted stream, a call's first piece (new filter each time): {per_call(first_piece, max(n // 10, 10)):.1f} us;"
          f" a later piece with its id again: {per_call(lambda: g.event(orjson.loads(raw_later)), n):.2f} us"
          f" (copy alone {per_call(lambda: orjson.loads(raw_later), n):.2f} us)")

    delta = {"content": " tok"}
    piece = later["choices"][0]["delta"]
    print(f"  of which the id and name check (OutputFilter._call_names): a chunk without calls "
          f"{per_call(lambda: g._call_names(0, delta, set()), n):.2f} us, a later piece "
          f"{per_call(lambda: g._call_names(0, piece, {0}), n):.2f} us")  # (its arguments go on: `argued`)

    async def sink(message: Any) -> None:
        pass

    w = _Watched(sink, {"type": "http", "path": "/v1/responses", "headers": []})
    w.stream = True
    ev = event("response.output_text.delta", 12345, item_id="msg_0123456789abcdef", output_index=0,
               content_index=0, delta=" tok", logprobs=[]).encode()

    def old() -> None:
        w.events += ev.startswith(b"event: ") + ev.count(b"\nevent: ")

    print(f"Responses event ({len(ev)} bytes) a send: _Watched._count {per_call(lambda: w._count(ev), n):.2f} us; "
          f"the old count {per_call(old, n):.2f} us")


if __name__ == "__main__":
    main()
