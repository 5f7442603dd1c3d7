"""What the firewall's worker pays per text beside per character (security/firewall/screen.PART_CHARS).

    .venv/bin/python scripts/bench_screen_parts.py [N]        # N texts (default 10,000)

Prints the CPU time (`time.process_time`) of `Firewall.check_texts` (the default policy: injection blocked,
personal data redacted; a fresh tenant each, so no score is kept from another line) on:
  - a system prompt and N - 1 one-character user parts of digit groups (`bench_pii_worst_case.random_groups`,
    seed 7: personal data is read around every seam, twice where a system prompt sits among the user's texts),
  - N one-character user parts of the same digits, no system prompt,
  - N one-character documents of distinct letters (no score kept between them),
  - one prompt and one document of 400,000 characters of random words (the cost per character),
and the cost of a text in characters that follows (the worst per text over the cost per character). Prints
figures, no pass/fail: docs/security.md ("Cost") quotes them; note `cat /proc/loadavg` beside them."""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pii_worst_case import random_groups  # noqa: E402

from aigrid.security.firewall.injection import InjectionModel  # noqa: E402
from aigrid.security.firewall.pipeline import Firewall  # noqa: E402
from aigrid.security.firewall.screen import PART_CHARS  # noqa: E402
from aigrid.security.firewall.texts import ModelText, Source  # noqa: E402

WORDS = ("the team reviewed delivery schedule for third quarter agreed on budget new warehouse asked finance to "
         "prepare usual report meeting minutes customer order shipped invoice paid account manager said we will "
         "send update next week please find attached summary of results and plan going forward thanks").split()
LONG = 400_000


class Timer:
    def __init__(self) -> None:
        self.firewall = Firewall(InjectionModel.load())
        self.tenants = 0

    def cpu(self, texts: Sequence[ModelText]) -> float:
        self.tenants += 1
        started = time.process_time()
        self.firewall.check_texts(f"tenant{self.tenants}", texts)
        return time.process_time() - started


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    timer = Timer()
    digits = random_groups(3 * n, random.Random(7))[:n]
    letters = random.Random(7).sample([chr(c) for c in range(0x4E00, 0x9FFF)], n)
    system = ModelText("You are a helpful assistant.", Source.SYSTEM, ("messages", 0, "content"))
    parts = [ModelText(c, Source.USER, ("messages", 1, "content", i, "text")) for i, c in enumerate(digits)]
    worst = 0.0
    for name, texts in (("a system prompt and one-character user parts of digit groups", [system, *parts[:-1]]),
                        ("one-character user parts of digit groups", parts),
                        ("one-character documents of distinct letters",
                         [ModelText(c, Source.DOCUMENT, ("documents", i)) for i, c in enumerate(letters)])):
        spent = timer.cpu(texts)
        worst = max(worst, spent / len(texts))
        print(f"{len(texts):>7,} texts: {name:62s} {spent:6.2f} s  {spent / len(texts) * 1e3:6.3f} ms a text",
              flush=True)
    per_char = 0.0
    longs = ((Source.USER, ("messages", 0, "content")), (Source.DOCUMENT, ("documents", 0)))
    for k, (source, path) in enumerate(longs):
        rng = random.Random(k)
        text = " ".join(rng.choice(WORDS) for _ in range(LONG // 5))[:LONG]
        spent = timer.cpu([ModelText(text, source, path)])
        per_char = max(per_char, spent / len(text))
        name = f"one {source.value} of {len(text):,} characters of words"
        print(f"{1:>7,} text:  {name:62s} {spent:6.2f} s  {spent / len(text) * 1e6:6.3f} us a character", flush=True)
    print(f"the dearest text costs {worst / per_char:,.0f} characters of the dearest long text "
          f"(screen.PART_CHARS: {PART_CHARS:,})")


if __name__ == "__main__":
    main()
