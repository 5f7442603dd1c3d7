"""Does a window of data talk to the model that reads it? Five kinds of cue, matched on the normalised text.

Text the model reads as data (a tool result, a retrieved page, an e-mail to summarise) has no business naming
its reader as an AI, telling it to drop its instructions, to keep something from the user, what to put in its
answer or which tool to call. The document head's n-grams learn such wording from its training data; these
cues say it in general terms, so that one line addressed to the model inside a long clean document counts even
where its words were never trained on. A window's score is raised by `weight` (the artefact's
`addressed_weight`, logits) for each kind of cue it holds (injection.InjectionModel); the operating points are
chosen on validation with the cues on (scripts/train_firewall.py --addressed-weight). Off in the shipped
artefact (it has no `addressed_weight`): tried and not shipped, docs/security.md "Instructions addressed to the
model, counted per window".

The patterns are matched once over the whole normalised text (lower case, runs of white space one space or a
line break: features.normalise); a window holds a cue when a match lies wholly inside it. Each pattern is a
run of fixed words and bounded gaps, so the search is linear in the text (an AI's name as well: `gpt` and at
most 24 more characters; unbounded, a run of "gpt-gpt-..." took time quadratic in its length).
"""

from __future__ import annotations

import re
from bisect import bisect_left

_READER = (r"(?:ai|a\.i\.|ai assistant|ai model|ai agent|assistant|chatbot|chat bot|language model|"
           r"large language model|llm|gpt[\w.-]{0,24}|chatgpt|claude|gemini|bard|copilot|bot|model|agent|"
           r"automated (?:system|agent|assistant|reader|analy\w+)|summari[sz]er)")
"""Words a text uses to name the model that reads it, after a form of address."""
_AI = (r"(?:ai|a\.i\.|ai assistant|ai model|ai agent|language model|large language model|llm|chatbot|"
       r"gpt[\w.-]{0,24}|chatgpt|claude|gemini|copilot)")
"""Words that name an AI model on their own (without a form of address: "AI assistant:", "as an LLM")."""

CUES: dict[str, re.Pattern[str]] = {
    "addressee": re.compile(
        rf"\b(?:dear|attention|hey|hi|hello|note (?:to|for)|message (?:to|for)|instructions? (?:to|for)|"
        rf"reminder (?:to|for)|if you are an?|you,? (?:the|an?|my)?) ?(?:the |an? |any |this |our )?{_READER}\b|"
        rf"\b{_AI}s? ?:|\bas an? {_AI}\b|\bto you,? (?:the )?{_AI}\b"),
    "override": re.compile(
        r"\b(?:ignore|disregard|forget|override|bypass) (?:all |any |the |your |my |these |those |its |of "
        r"|everything )*(?:previous |prior |above |earlier |preceding |original |initial |other |former "
        r"|existing |user'?s? |system |safety |current )*(?:instructions?|prompts?|rules|directions|guidelines|"
        r"guardrails|directives|programming|restrictions|context|task)\b|"
        r"\b(?:new|updated|real|true|actual|hidden|secret|additional|revised) (?:instructions|task|directive|"
        r"system prompt|objective)\b|\bsystem prompt\b|"
        r"\binstead of (?:summari|answering|translating|responding|the (?:user'?s? )?(?:task|request))"),
    "conceal": re.compile(
        r"\b(?:do not|don'?t|never|without) (?:tell|telling|inform|informing|mention|mentioning|reveal|"
        r"revealing|alert|alerting|notify|notifying|let|letting|asking|ask) (?:this to |it to |anything to )?"
        r"(?:the )?user\b|\bthe user (?:must|should|will|does|need) not (?:know|see|be told|notice)\b|"
        r"\b(?:secretly|silently|covertly) (?:send|forward|add|include|insert|append|transfer|call|run|execute)"),
    "answer": re.compile(
        r"\bwhen (?:you )?(?:are )?summari[sz]\w*|\bwhen you (?:are )?(?:read|process|analy[sz]|answer|respond|"
        r"reply|review)\w*|\bin your (?:summary|response|answer|reply|output|final answer)\b|"
        r"\bbefore (?:you )?(?:answer|respond|repl|solv|complet|summari|continu|proceed)\w*|"
        r"\b(?:respond|reply|answer) (?:only )?with\b|"
        r"\b(?:print|output|say|repeat|write|include|append|add) (?:exactly|only|verbatim|"
        r"the (?:following|word|phrase|sentence|text|link|url))\b"),
    "tool": re.compile(r"\b(?:call|use|invoke|run|execute|trigger) (?:the |a |your )?[\w.-]{1,40} tool\b|\btool call\b"),
}
"""The kinds of cue: the reader named as an AI; its instructions overridden; something kept from the user; its
answer dictated; a tool call demanded. Not a cue: "send / forward / transfer ... to <address>", which
ordinary letters say to their reader as often as injections do (with it, 13% of the composed test letters were
blocked: docs/security.md)."""


class Cues:
    """Where each kind of cue matches in one normalised text; `count(start, end)` is the number of kinds with a
    match wholly inside text[start:end]."""

    def __init__(self, normal: str) -> None:
        self._spans: list[tuple[list[int], list[int]]] = []
        for pattern in CUES.values():
            found = [(m.start(), m.end()) for m in pattern.finditer(normal)]
            if found:
                self._spans.append(([s for s, _ in found], [e for _, e in found]))

    def __bool__(self) -> bool:
        return bool(self._spans)

    def count(self, start: int, end: int) -> int:
        n = 0
        for starts, ends in self._spans:
            i = bisect_left(starts, start)  # the first match starting in the window ends first (no overlaps)
            n += i < len(starts) and ends[i] <= end
        return n


def cues(normal: str) -> int:
    """The number of kinds of cue in a whole normalised text (Cues(normal).count over all of it)."""
    return Cues(normal).count(0, len(normal))
