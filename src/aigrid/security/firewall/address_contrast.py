"""How much more a window of a document talks to its reader than the document as a whole does.

An instruction planted in data addresses the model that reads it ("you", "your", "assistant", "AI") or opens a
clause with an order ("send ...", "ignore ...", "reply ..."). A letter does the same all through, a manual or a
story seldom; so what counts is the window against its own document (its genre), not the words alone. The
address density of a span is the share of its words that are such words (at least 8 words counted, so a
handful of words cannot reach an extreme); a window's contrast is its density less the whole document's, and the
document head raises the window's logit by `weight` times the contrast where it is positive (an artefact's
`address_contrast`: scripts/train_firewall.py --address-contrast W). Not in the shipped artefact: tried and not
shipped, docs/security.md "Tried and not shipped".

The text is the normalised one (features.normalise: lower case); its words are read once, and each window's count
is a difference of prefix sums, so the whole document costs one pass.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from itertools import accumulate

ADDRESS = frozenset({"you", "your", "yours", "yourself", "you're", "you'll", "you've", "you'd", "u", "ur",
                     "assistant", "ai", "chatbot", "chatgpt", "gpt", "llm", "bot", "agent"})
"""Words that name or address the reader, wherever they stand."""
ORDERS = frozenset({"ignore", "forget", "send", "forward", "reply", "respond", "print", "write", "say", "tell",
                    "include", "add", "modify", "change", "delete", "drop", "transfer", "execute", "run", "post",
                    "share", "reveal", "output", "disregard", "append", "insert", "email", "call", "visit", "download",
                    "click", "enhance", "answer", "make", "do", "stop", "start", "recommend", "mention", "translate",
                    "summarize", "summarise", "provide", "give", "list", "show", "create", "generate", "use",
                    "remember", "pretend", "act", "now", "instead", "please"})
"""Words that give an order when they open a clause (after . ! ? : ; or a line break, or at the text's start)."""
MIN_WORDS = 8
_TOKEN = re.compile(r"[a-z']+|[.!?:;\n]")


class AddressDensity:
    """The address density of any span of one normalised text."""

    def __init__(self, normal: str) -> None:
        starts: list[int] = []
        hits: list[int] = []
        opening = True
        for m in _TOKEN.finditer(normal):
            word = m.group()
            if word in ".!?:;\n":
                opening = True
                continue
            starts.append(m.start())
            hits.append(1 if word in ADDRESS or (opening and word in ORDERS) else 0)
            opening = False
        self._starts = starts
        self._hits = [0, *accumulate(hits)]
        self.whole = self.of(0, len(normal))

    def of(self, start: int, end: int) -> float:
        """The share of the words beginning in [start, end) that address the reader (at least MIN_WORDS
        counted)."""
        a, b = bisect_left(self._starts, start), bisect_right(self._starts, end - 1)
        return (self._hits[b] - self._hits[a]) / max(b - a, MIN_WORDS)

    def contrast(self, start: int, end: int) -> float:
        """How much more the span addresses the reader than the whole text does (0 where it does not)."""
        return max(0.0, self.of(start, end) - self.whole)
