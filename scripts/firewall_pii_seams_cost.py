"""What reading personal data across a client's texts (`pipeline.personal_data`: a message's text parts, the user
turns, and where the system prompt, a user turn and a tool result meet, read joined around each seam,
`pii.read_together`) costs a request: `Firewall.check_texts` on typical
chat bodies, with the firewall's defaults (injection block, personal data redacted) and with personal data only
(injection off), score cache on (a repeated body's injection scores are kept, as a conversation's earlier turns
are); what the streaming redactor costs a chunk of an answer; and the worst case of reading the seams alone
(`pii.read_together` alone on 400 one-digit parts each padded by 2,000 zero-width characters and on thousands of tiny
parts, its last five lines). CPU time of this process, microseconds. docs/security.md ("Personal data") quotes it; run it
on the code before a change and after. Usage:
    .venv/bin/python scripts/firewall_pii_seams_cost.py [CALLS]
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pii_worst_case import random_groups  # noqa: E402
from firewall_seams_cost import _us  # noqa: E402

from aigrid.security.firewall.injection import InjectionModel  # noqa: E402
from aigrid.security.firewall.pii import find_pii, read_together  # noqa: E402
from aigrid.security.firewall.pipeline import Action, Firewall, FirewallPolicy  # noqa: E402
from aigrid.security.firewall.streaming import StreamingRedactor  # noqa: E402
from aigrid.security.firewall.texts import ModelText, Source  # noqa: E402


def _chat(*turns: str | list[str]) -> list[ModelText]:
    out = [ModelText("You are a helpful assistant.", Source.SYSTEM, ("messages", 0, "content"))]
    for i, turn in enumerate(turns, start=1):
        source = Source.USER if i % 2 else Source.ASSISTANT
        if isinstance(turn, str):
            out.append(ModelText(turn, source, ("messages", i, "content")))
        else:
            out += [ModelText(t, source, ("messages", i, "content", j, "text")) for j, t in enumerate(turn)]
    return out


_LONG = ("Here is the quarterly report we discussed. Revenue grew 12% to 4.1 million, driven by the new "
         "subscription tier; churn fell to 2.3%. Please draft a short summary for the board, in a neutral tone, "
         "and list three risks for next quarter. ") * 2
BODIES = {
    "one user turn": _chat("What is the capital of France?"),
    "two short user turns": _chat("What is the capital of France?", "Paris.", "And of Spain?"),
    "three text parts": _chat(["Summarise this:", _LONG, "Keep it under 100 words."]),
    "ten turns of ~440 characters": _chat(*[_LONG if i % 2 == 0 else "Sure, here it is." for i in range(19)]),
    "a tool result of ~440 characters between two user turns": [
        *_chat("Look up the quarterly report.", "Looking it up."),
        ModelText(_LONG, Source.TOOL_RESULT, ("messages", 3, "content")),
        ModelText("Summarise it for the board.", Source.USER, ("messages", 4, "content"))],
}


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000
    answer = (_LONG * 10)[:4000]
    chunks = [answer[i:i + 4] for i in range(0, len(answer), 4)]
    start = time.process_time()
    for _ in range(max(1, calls // 200)):
        redactor = StreamingRedactor()
        for chunk in chunks:
            redactor.feed(chunk)
        redactor.flush()
    per_chunk = (time.process_time() - start) * 1e6 / (max(1, calls // 200) * len(chunks))
    print(f"a streamed answer of 4,000 characters in 4-character chunks: {per_chunk:.1f} us a chunk (StreamingRedactor)")
    model = InjectionModel.load()
    defaults = Firewall(model)
    pii_only = Firewall(model, default=FirewallPolicy(injection=Action.OFF))
    for name, texts in BODIES.items():
        for firewall in (defaults, pii_only):
            _us(firewall, texts, calls // 10)  # warm up (and fill the score cache)
        print(f"{name}: {_us(defaults, texts, calls):.0f} us a check_texts with the defaults, "
              f"{_us(pii_only, texts, calls):.0f} us with personal data only")
    for name, pieces in (("400 one-digit parts each padded by 2,000 zero-width characters",
                          ["1" + "\u200b" * 2_000 for _ in range(400)]),
                         ("4,000 one-digit parts", ["1"] * 4_000),
                         ("4,000 parts '12 ' (a phone number begins at every seam, with a break there)", ["12 "] * 4_000),
                         ("3,000 parts 'a@b.cd' (an address ends at every seam, with a break there)", ["a@b.cd"] * 3_000),
                         ("4,000 one-character parts of random digit groups (bench_pii_worst_case.random_groups, seed 7)",
                          list(random_groups(4_000, random.Random(7))))):
        own = [find_pii(p) for p in pieces]
        start = time.process_time()
        read_together(pieces, own)
        print(f"{name}: {(time.process_time() - start) * 1e3:.0f} ms (read_together alone, once)")


if __name__ == "__main__":
    main()
