"""Streaming an answer out of constrained JSON (the engine's SSE is read with engines/sse.py).

AnswerStream watches the text of a constrained turn: when it starts as {"answer": "...", it yields the
answer's characters as they arrive (JSON escapes decoded), so the final text streams to the client even
though the model writes JSON; when it starts as {"answer": {... or {"answer": [... (the client's JSON
`response_format`: the answer is that JSON), it yields the value's JSON as it arrives, up to its closing
bracket, written as orjson writes it (no spaces between tokens; each string's escapes decoded and only what JSON
must escape escaped again: quote, backslash, control characters; numbers as written), and keeps it whole in
`value` once closed: the loop answers with that very text, so what was streamed is the answer, and the output
redaction reads a string's characters, not escapes a model may hide an address behind ("jo\\u0040x.io"). Until the
twenty-fourth session such an answer reached a streaming client whole, in one chunk at the end. A turn that starts
as {"tool": ...} yields nothing.
"""

from __future__ import annotations

import re

_ANSWER_HEAD = re.compile(r'\s*\{\s*"answer"\s*:\s*"')
_VALUE_HEAD = re.compile(r'\s*\{\s*"answer"\s*:\s*(?=[{\[])')
_PLAIN = re.compile(r'[^"\\\x00-\x1f]+')
"""A run of a string's characters written as they are (no quote, no escape, no control character)."""
_TOKENS = re.compile(r'[^"\s{}\[\]]+')
"""A run of a value's text outside its strings that opens, closes and skips nothing (numbers, literals, `,` and `:`)."""
_WRITTEN = {ord('"'): '\\"', ord("\\"): "\\\\", **{c: f"\\u{c:04x}" for c in range(0x20)},
            **{ord(k): "\\" + e for e, k in (("b", "\b"), ("f", "\f"), ("n", "\n"), ("r", "\r"), ("t", "\t"))}}
"""How a string's character is written again (str.translate): what JSON must escape, as orjson escapes it."""
_FIRST_KEY = re.compile(r'\s*\{\s*"([^"]*)"')
_NOT_OBJECT = re.compile(r'\s*(?:[^\s{]|\{\s*[^\s"])')
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")
MAX_HEAD = 1_000
"""The most characters before an answer's text that are read for its head (`{"answer": "`, with any spaces): past them
it is no answer streamed. A head is read again from its start at each fragment, so a head without end (spaces, a key
that never closes) was read over and over as it grew."""
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class AnswerStream:
    """Incremental decoder of the "answer" string of a constrained turn (or its JSON value)."""

    def __init__(self) -> None:
        self._text = ""
        self._pos: int | None = None  # index in _text where the answer's characters start
        self._closed = False
        self.is_answer: bool | None = None
        self._depth: int | None = None  # a JSON value's open brackets (None: the answer is a string)
        self._in_string = False
        self._written: list[str] = []
        self.value: str | None = None
        """A JSON value's text as streamed, once its last bracket closed (None: not a value, or not closed yet)."""

    def feed(self, fragment: str) -> str:
        """The answer characters completed by `fragment` ('' when none or when it is not an answer). Only what is not
        read yet is kept (an escape cut in two, the head before it is known): the whole text was kept and each
        fragment added to it, a copy of all before it each time, so an engine sending its answer a character an event
        cost time quadratic in the events (600,000: 28 s of the gateway's CPU, with the loop's own copies). A head
        that says nothing within MAX_HEAD characters (whitespace, a first key that never ends) is no answer streamed
        (the turn's answer is still read whole at its end: steps.parse_turn)."""
        if self.is_answer is False or self._closed:
            return ""
        self._text += fragment
        if self.is_answer is None:
            m = _ANSWER_HEAD.match(self._text)
            v = None if m else _VALUE_HEAD.match(self._text)
            if m:
                self.is_answer, self._pos = True, m.end()
            elif v:
                self.is_answer, self._pos, self._depth = True, v.end(), 0
            elif _NOT_OBJECT.match(self._text) or ((k := _FIRST_KEY.match(self._text)) and k.group(1) != "answer") \
                    or len(self._text) > MAX_HEAD:
                self.is_answer = False
        if not self.is_answer or self._pos is None:
            return ""
        out = self._value() if self._depth is not None else self._string()
        self._text, self._pos = self._text[self._pos:], 0  # what is read is not kept
        return out

    def _string(self) -> str:
        """The answer string's characters completed by the last fragment, up to its closing quote."""
        out, i, text = [], self._pos or 0, self._text
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
            got = _escape(text, i)
            if got is None:
                break  # wait for the escaped character
            out.append(got[0])
            i = got[1]
        self._pos = i
        return "".join(out)

    def _value(self) -> str:
        """The JSON value's text completed by the last fragment, up to the bracket that closes it, as orjson writes it
        (a quote or a bracket inside a string closes nothing)."""
        out: list[str] = []
        text, i, depth, in_string = self._text, self._pos or 0, self._depth or 0, self._in_string
        while i < len(text):
            c = text[i]
            if in_string:
                if (run := _PLAIN.match(text, i)) is not None:
                    out.append(run.group())
                    i = run.end()
                elif c == "\\":
                    if (got := _escape(text, i)) is None:
                        break  # the escaped character is not here yet
                    out.append(got[0].translate(_WRITTEN))
                    i = got[1]
                else:  # the string's end, or a control character written raw (escaped here, as JSON wants it)
                    out.append(c.translate(_WRITTEN) if c != '"' else c)
                    in_string = c != '"'
                    i += 1
                continue
            if (run := _TOKENS.match(text, i)) is not None:
                out.append(run.group())
                i = run.end()
                continue
            i += 1
            if c.isspace():
                continue
            out.append(c)
            if c == '"':
                in_string = True
            elif c in "{[":
                depth += 1
            elif c in "}]":
                depth -= 1
                if depth == 0:
                    self._closed = True
                    break
        self._pos, self._depth, self._in_string = i, depth, in_string
        piece = "".join(out)
        self._written.append(piece)
        if self._closed:
            self.value = "".join(self._written)
        return piece


def _escape(text: str, i: int) -> tuple[str, int] | None:
    """The character(s) the JSON escape at text[i] (a backslash) stands for and where the text goes on after it; None
    while it is not all there. Not a valid escape: its letter (`\\x` is `x`); a bad \\u escape or a lone surrogate:
    U+FFFD and the six characters."""
    got = json_escape(text, i)
    if got is None:
        return None
    char, end = got
    if char is not None:
        return char, end
    return (text[i + 1], end) if text[i + 1] != "u" else ("\ufffd", i + 6)


def json_escape(text: str, i: int) -> tuple[str | None, int] | None:
    """The JSON escape at text[i] (a backslash): the character it stands for (None: not a valid escape: an unknown
    letter, `\\u` without four hex digits, a lone surrogate) and where the text goes on after it (past the letter, past
    `\\u` alone when its digits are bad, past the six characters of a lone surrogate); None while it is not all there
    (a high surrogate waits for a low half only while what follows may still be one). The one reader of JSON
    escapes: AnswerStream's and the output redaction's (gateway/output_filter.EscapeReader)."""
    if i + 1 >= len(text):
        return None
    e = text[i + 1]
    if e != "u":
        return _ESCAPES.get(e), i + 2
    if i + 6 > len(text):
        return None
    if not _HEX4.fullmatch(text, i + 2, i + 6):
        return None, i + 2
    code = int(text[i + 2:i + 6], 16)
    if 0xD800 <= code < 0xDC00:  # a surrogate pair: \\uD83D\\uDE00
        if i + 12 > len(text) and text.startswith("\\u"[:len(text) - i - 6], i + 6):
            return None
        if text.startswith("\\u", i + 6) and _HEX4.fullmatch(text, i + 8, i + 12) \
                and 0xDC00 <= (low := int(text[i + 8:i + 12], 16)) < 0xE000:
            return chr(0x10000 + ((code - 0xD800) << 10) + low - 0xDC00), i + 12
        return None, i + 6
    if 0xDC00 <= code < 0xE000:
        return None, i + 6
    return chr(code), i + 6
