"""What the input firewall costs: load time, microseconds per ordinary prompt, seconds for a 4 MiB body.

    .venv/bin/python scripts/bench_firewall.py

Prints figures (no pass/fail): docs/security.md ("Cost") quotes them with the machine they came from. Times
are CPU time of this process (time.process_time), so a machine shared with other work slows the run down
without changing the figures much.
"""

from __future__ import annotations

import statistics
import time

from aigrid.security.firewall.injection import InjectionModel
from aigrid.security.firewall.pipeline import Firewall
from aigrid.security.firewall.texts import ModelText, Source

PROMPTS = [
    "Name three rivers in Japan.",
    "Write a short poem about the sea and the wind in the evening, please, in four lines.",
    "Summarise the following meeting notes for the board: " + "revenue grew in all regions, costs were flat. " * 8,
]


def per_call_us(fn: object, n: int) -> float:
    runs = []
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(n):
            fn()  # type: ignore[operator]
        runs.append((time.process_time() - t0) / n * 1e6)
    return statistics.median(runs)


def main() -> None:
    t0 = time.process_time()
    model = InjectionModel.load()
    print(f"load: {(time.process_time() - t0) * 1000:.1f} ms")
    firewall = Firewall(model)
    for p in PROMPTS:
        texts = [ModelText(p, Source.USER, ("messages", 0, "content"))]
        us = per_call_us(lambda texts=texts: firewall.check_texts("t", texts), 300)
        print(f"check_texts, one user message of {len(p)} chars (injection + PII): {us:.0f} us")
    big = "The committee reviewed the harbour budget and approved the new ferry timetable. " * 52_000
    sentences = " and sentences" if model.segments else ""
    cases = [("a prompt (600-char windows)", big, False),
             (f"a document ({model.document_window}-char windows{sentences})", big, True),
             ("a prompt with a pasted part (both heads)", "Summarise this:\n\n" + big[:-18], False)]
    for what, text, document in cases:
        t0 = time.process_time()
        model.score(text, document=document)
        print(f"score {len(text) / 2**20:.1f} MiB as {what}: {time.process_time() - t0:.2f} s CPU")


if __name__ == "__main__":
    main()
