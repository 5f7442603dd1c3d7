"""Redact personal data in text that arrives in chunks (streamed completions).

A naive per-chunk redactor leaks an item split across two chunks ("4111 1111" + " 1111 1111"). This one
holds back the last `holdback` characters (at least the longest item a detector matches) and only emits
text that no later chunk can still turn into an item: each emitted prefix ends before any match that is
not yet complete. A few already-emitted characters are kept as left context so look-behinds still work.
Both are counted in characters a model reads (pii.held_start): invisible ones, which the detectors read
through, do not count, so an item padded with zero-width characters is still held back whole, up to
`_MOST` times the holdback in all (an item padded with more than 15 invisible characters per character may
be sent in parts: docs/security.md, "Limits").
"""

from __future__ import annotations

from aigrid.security.firewall.pii import MAX_ITEM_CHARS, find_pii, held_start, placeholder

_CONTEXT = 16
_MOST = 16


class StreamingRedactor:
    def __init__(self, holdback: int = MAX_ITEM_CHARS + 8, kinds: frozenset[str] | None = None) -> None:
        if holdback < MAX_ITEM_CHARS:
            raise ValueError(f"holdback must be at least {MAX_ITEM_CHARS} characters")
        self.holdback = holdback
        self.kinds = kinds
        self.found: list[str] = []
        """Kinds redacted so far, for the firewall verdict."""
        self._pending = ""
        self._context = ""

    def feed(self, chunk: str) -> str:
        """Add a chunk; return the text that is now safe to send (possibly empty)."""
        self._pending += chunk
        return self._emit(final=False)

    def flush(self) -> str:
        """End of stream: return everything still held, redacted."""
        return self._emit(final=True)

    def _emit(self, *, final: bool) -> str:
        text = self._context + self._pending
        offset = len(self._context)
        # the context only serves look-behinds: an item starting there was whole in the buffer when that
        # text was emitted, and was redacted then
        matches = find_pii(text, self.kinds, start=offset)
        cut = len(text) if final else max(offset, held_start(text, self.holdback, _MOST * self.holdback))
        for m in matches:
            if m.start < cut < m.end:
                cut = m.start
        out: list[str] = []
        pos = offset
        for m in matches:
            if m.end > cut:
                break
            out += [text[pos:m.start], placeholder(m.kind)]
            self.found.append(m.kind)
            pos = max(pos, m.end)
        out.append(text[pos:cut])
        self._context = text[held_start(text[:cut], _CONTEXT, _MOST * _CONTEXT):cut]
        self._pending = text[cut:]
        return "".join(out)

