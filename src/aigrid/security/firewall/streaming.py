"""Redact personal data in text that arrives in chunks (streamed completions).

A naive per-chunk redactor leaks an item split across two chunks ("4111 1111" + " 1111 1111"). This one
holds back the last `holdback` characters (at least the longest item a detector matches) and only emits
text that no later chunk can still turn into an item: each emitted prefix ends before any match that is
not yet complete. A few already-emitted characters are kept as left context so look-behinds still work.
Both are counted in characters a model reads (pii.held_start): invisible ones, which the detectors read
through, do not count, so an item padded with zero-width characters is still held back whole, however many pad
it. What is read again at each chunk is bounded all the same: a run of characters a model reads as nothing
(pii.model_reading drops them) is held as its first character, the rest of the run set aside and sent after it
(or dropped with the item it sits in), so the text read holds at most one such character per character a model
reads. Until 2026-12-05 the held text was bounded at 16 times the holdback instead, and an item padded with more
than 15 invisible characters per character could go out in parts (helper 128).
One item may still pass that bound: find_pii reads a run of card, SSN or phone numbers one space apart as one item,
however long. Such an item held past the bound goes out as its placeholder and the rest of its run (up to a letter a
model reads) is dropped as it comes, never read again: until the twenty-ninth session (review RV9) the run was held
whole and each chunk read all of it again, on the event loop (2,000 numbers: 12.4 s of CPU, now 0.06 s).
"""

from __future__ import annotations

import re
import unicodedata

from aigrid.security.firewall.features import INVISIBLE
from aigrid.security.firewall.pii import MAX_ITEM_CHARS, find_pii, held_start, placeholder, unfinished_start

_CONTEXT = 16
_MOST = 16
"""A bound on the characters held back, `_MOST` times the holdback: the text read holds at most two characters for
each one a model reads, so it is reached only by an item of a digit run (`_RUNS`), which is cut there."""
_RUNS = frozenset(("card", "ssn", "phone"))
"""Kinds whose items are runs of digit groups: pii.find_pii reads a run of them one space apart as one item, however
long, so such an item longer than the bound is cut (`StreamingRedactor._emit`)."""
_NO_LETTER = re.compile(r"[^\W\d_]")
_DIGIT = re.compile(r"\d")
_TRAILING = " \t\r\n.,;:!?()+-\"'"
_NOTHING = re.compile(f"(?:(?![\U000e0020-\U000e007e]){INVISIBLE.pattern.removesuffix('+')})+")
"""Runs of characters a model reads as nothing: features.INVISIBLE but the tag characters that smuggle ASCII
(pii.model_reading reads those as their ASCII letters)."""


class StreamingRedactor:
    def __init__(self, holdback: int = MAX_ITEM_CHARS + 8, kinds: frozenset[str] | None = None) -> None:
        if holdback < MAX_ITEM_CHARS:
            raise ValueError(f"holdback must be at least {MAX_ITEM_CHARS} characters")
        self.holdback = holdback
        self.kinds = kinds
        self.found: list[str] = []
        """Kinds redacted so far, for the firewall verdict."""
        self._pending = ""
        self._aside: dict[int, list[str]] = {}
        """By position in `_pending`: the rest of the run of invisible characters that begins there."""
        self._context = ""
        self._run = False
        """An item of a digit run was cut at the bound (its placeholder sent): the text that goes on with it (up to its
        last digit before a letter) is dropped, not read again."""

    def feed(self, chunk: str) -> str:
        """Add a chunk; return the text that is now safe to send (possibly empty)."""
        if chunk.isascii():  # nothing a model reads as nothing
            self._pending += chunk
            return self._emit(final=False)
        pos = 0
        if self._pending and _NOTHING.fullmatch(self._pending[-1]) and (lead := _NOTHING.match(chunk)):
            self._aside.setdefault(len(self._pending) - 1, []).append(lead.group())  # the held run goes on
            pos = lead.end()
        kept: list[str] = []
        at = len(self._pending)
        for run in _NOTHING.finditer(chunk, pos):
            kept.append(chunk[pos:run.start() + 1])
            at += run.start() + 1 - pos
            if run.end() - run.start() > 1:
                self._aside[at - 1] = [chunk[run.start() + 1:run.end()]]
            pos = run.end()
        kept.append(chunk[pos:])
        self._pending += "".join(kept)
        return self._emit(final=False)

    def flush(self) -> str:
        """End of stream: return everything still held, redacted."""
        return self._emit(final=True)

    def cut(self) -> str:
        """The stream was cut before its end (its engine failed, a bound cut it): what is still held, read as the
        answer's end is (flush: each item in it redacted), up to the text at its end that more of the answer could
        still have made an item (pii.unfinished_start: a word, a digit group, an address's first part), which is left
        out: the part of an item whose rest never came is not sent. Until the twenty-ninth session a cut stream's held
        text was dropped whole (up to MAX_ITEM_CHARS characters and more of the answer lost)."""
        return self._emit(final=True, broken=True)

    def _run_end(self, text: str, start: int) -> int:
        """Where the digit run from `start` ends: before the first letter a model reads (NFKC: a circled or
        superscript digit is a digit), the punctuation and spaces before that letter kept; the run goes on (`_run`)
        where no letter follows it yet. Whole-text redaction reads it as one item, so none of its digits is sent."""
        stop = len(text)
        for letter in _NO_LETTER.finditer(text, start):
            read = unicodedata.normalize("NFKC", letter.group())
            if _NO_LETTER.search(read) and not _DIGIT.search(read):
                stop = letter.start()
                break
        self._run = stop == len(text)
        return start + len(text[start:stop].rstrip(_TRAILING))

    def _emit(self, *, final: bool, broken: bool = False) -> str:
        if self._run:  # the text going on with an item cut at the bound: dropped, no more read than it
            text = self._context + self._pending
            end = self._run_end(text, len(self._context))
            self._context = text[held_start(text[:end], _CONTEXT, _MOST * _CONTEXT):end]
            self._pending = text[end:]
            dropped = end - (len(text) - len(self._pending))
            self._aside = {at - dropped: rest for at, rest in self._aside.items() if at >= dropped}
        text = self._context + self._pending
        offset = len(self._context)
        # the context only serves look-behinds: an item starting there was whole in the buffer when that
        # text was emitted, and was redacted then
        matches = find_pii(text, self.kinds, start=offset)
        if broken:  # up to what may be an item's start, or the end of an item found that holds it (redacted whole)
            end = unfinished_start(text, self.kinds, start=offset)
            end = next((m.end for m in matches if m.start <= end < m.end), end)
            text = text[:end]
        cut = len(text) if final else max(offset, held_start(text, self.holdback, _MOST * self.holdback))
        long = None
        for m in matches:
            if m.start < cut < m.end:
                if m.kind in _RUNS and len(text) - m.start > _MOST * self.holdback:
                    long = m  # held past the bound: sent as its placeholder, the run it is in dropped up to here
                    cut = max(self._run_end(text, m.start), m.end if m.end < len(text) else 0)
                    break
                cut = m.start
        out: list[str] = []
        pos = offset
        for m in matches:
            if m.end > cut or m is long:
                break
            out += [self._sent(text, offset, pos, m.start), placeholder(m.kind)]
            self.found.append(m.kind)
            pos = max(pos, m.end)
        if long is not None:
            out += [self._sent(text, offset, pos, long.start), placeholder(long.kind)]
            self.found.append(long.kind)
        else:
            out.append(self._sent(text, offset, pos, cut))
        self._context = text[held_start(text[:cut], _CONTEXT, _MOST * _CONTEXT):cut]
        self._pending = text[cut:]
        self._aside = {at - cut + offset: rest for at, rest in self._aside.items() if at >= cut - offset}
        return "".join(out)

    def _sent(self, text: str, offset: int, start: int, end: int) -> str:
        """text[start:end] as it came, each invisible run set aside put back after its first character."""
        if not self._aside:
            return text[start:end]
        out: list[str] = []
        for at in sorted(a for a in self._aside if start <= a + offset < end):
            out += [text[start:at + offset + 1], *self._aside[at]]
            start = at + offset + 1
        out.append(text[start:end])
        return "".join(out)
