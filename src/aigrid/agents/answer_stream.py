"""Streaming an answer out of constrained JSON (the engine's SSE is read with engines/sse.py).

AnswerStream watches the text of a constrained turn: when it starts as {"answer": "...", it yields the
answer's characters as they arrive (JSON escapes decoded), so the final text streams to the client even
though the model writes JSON; a turn that starts as {"tool": ...} yields nothing.
"""

from __future__ import annotations

import re

_ANSWER_HEAD = re.compile(r'\s*\{\s*"answer"\s*:\s*"')
_FIRST_KEY = re.compile(r'\s*\{\s*"([^"]*)"')
_NOT_OBJECT = re.compile(r'\s*(?:[^\s{]|\{\s*[^\s"])')
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class AnswerStream:
    """Incremental decoder of the "answer" string of a constrained turn."""

    def __init__(self) -> None:
        self._text = ""
        self._pos: int | None = None  # index in _text where the answer's characters start
        self._closed = False
        self.is_answer: bool | None = None

    def feed(self, fragment: str) -> str:
        """The answer characters completed by `fragment` ('' when none or when it is not an answer)."""
        self._text += fragment
        if self.is_answer is None:
            m = _ANSWER_HEAD.match(self._text)
            if m:
                self.is_answer, self._pos = True, m.end()
            elif _NOT_OBJECT.match(self._text) or ((k := _FIRST_KEY.match(self._text)) and k.group(1) != "answer"):
                self.is_answer = False
        if not self.is_answer or self._closed or self._pos is None:
            return ""
        out, i, text = [], self._pos, self._text
        while i < len(text):
            c = text[i]
            if c == '"':
                self._closed = True
                i += 1
                break
            if c != "\\":
                out.append(c)
                i += 1
                continue
            if i + 1 >= len(text):
                break  # wait for the escaped character
            e = text[i + 1]
            if e == "u":
                if i + 6 > len(text):
                    break
                code = int(text[i + 2:i + 6], 16) if _HEX4.fullmatch(text[i + 2:i + 6]) else 0xFFFD
                if 0xD800 <= code < 0xDC00:  # a surrogate pair: \\uD83D\\uDE00
                    if i + 12 > len(text):
                        break
                    low = text[i + 8:i + 12] if text[i + 6:i + 8] == "\\u" else ""
                    if _HEX4.fullmatch(low) and 0xDC00 <= int(low, 16) < 0xE000:
                        out.append(chr(0x10000 + ((code - 0xD800) << 10) + int(low, 16) - 0xDC00))
                        i += 12
                        continue
                    code = 0xFFFD
                out.append(chr(0xFFFD if 0xDC00 <= code < 0xE000 else code))
                i += 6
            else:
                out.append(_ESCAPES.get(e, e))
                i += 2
        self._pos = i
        return "".join(out)
