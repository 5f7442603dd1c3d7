"""Streaming an answer out of constrained JSON (the engine's SSE is read with engines/sse.py).

AnswerStream watches the text of a constrained turn: when it starts as {"answer": "...", it yields the
answer's characters as they arrive (JSON escapes decoded), so the final text streams to the client even
though the model writes JSON; when it starts as {"answer": {... or {"answer": [... (the client's JSON
`response_format`: the answer is that JSON), it yields the value's JSON as the model writes it, up to its
closing bracket, and keeps it whole in `value` once closed (the loop answers with that very text, so what was
streamed is the answer; until the twenty-fourth session such an answer reached a streaming client whole, in one
chunk at the end); a turn that starts as {"tool": ...} yields nothing.
"""

from __future__ import annotations

import re

_ANSWER_HEAD = re.compile(r'\s*\{\s*"answer"\s*:\s*"')
_VALUE_HEAD = re.compile(r'\s*\{\s*"answer"\s*:\s*(?=[{\[])')
_VALUE_PART = re.compile(r'[^"\\{}\[\]]+')
"""A run of a JSON value's text that opens or closes nothing (no string's quote, no escape, no bracket)."""
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
        self._depth: int | None = None  # a JSON value's open brackets (None: the answer is a string)
        self._in_string = False
        self.value: str | None = None
        """A JSON value's text as written, once its last bracket closed (None: not a value, or not closed yet)."""

    def feed(self, fragment: str) -> str:
        """The answer characters completed by `fragment` ('' when none or when it is not an answer)."""
        self._text += fragment
        if self.is_answer is None:
            m = _ANSWER_HEAD.match(self._text)
            v = None if m else _VALUE_HEAD.match(self._text)
            if m:
                self.is_answer, self._pos = True, m.end()
            elif v:
                self.is_answer, self._pos, self._depth = True, v.end(), 0
            elif _NOT_OBJECT.match(self._text) or ((k := _FIRST_KEY.match(self._text)) and k.group(1) != "answer"):
                self.is_answer = False
        if not self.is_answer or self._closed or self._pos is None:
            return ""
        if self._depth is not None:
            return self._value()
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

    def _value(self) -> str:
        """The JSON value's text completed by the last fragment, as written: its strings and their escapes copied (a
        quote or a bracket inside a string closes nothing), up to the bracket that closes it."""
        text, i, start = self._text, self._pos or 0, self._pos or 0
        depth, in_string = self._depth or 0, self._in_string
        while i < len(text):
            if (run := _VALUE_PART.match(text, i)) is not None:
                i = run.end()
                continue
            c = text[i]
            if in_string:
                if c == "\\":
                    if i + 1 >= len(text):
                        break  # the escaped character is not here yet
                    i += 2
                    continue
                in_string = c != '"'
            elif c == '"':
                in_string = True
            elif c in "{[":
                depth += 1
            elif c in "}]":
                depth -= 1
                if depth == 0:
                    i += 1
                    self._closed = True
                    break
            i += 1
        self._pos, self._depth, self._in_string = i, depth, in_string
        if self._closed and (head := _VALUE_HEAD.match(text)) is not None:
            self.value = text[head.end():i]
        return text[start:i]
