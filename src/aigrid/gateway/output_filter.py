"""Output checks on an engine's answer, for the requests that need them; every other answer passes untouched.

Every stream passes through one: the relay (relay.py) meters the engine's usage chunk itself (quotas and
the audit log are charged real token counts), and this filter drops that chunk again when only the gateway
asked for it, and for tenants whose firewall redacts output it redacts personal data (holding back a short
tail, so that an item split across chunks is still caught). It works on decoded chunks (the JSON of one
SSE data payload); the relay re-frames only the events it changed and passes the others as the engine's
own bytes.

A text that is JSON (a tool call's `arguments`; the answer (`content`) of a request whose `response_format` asks for
JSON; an answer or reasoning whose first character past spaces is `{` or `[`: a native tool-loop turn) is read as the client's parser reads it: its strings' escapes
decoded (EscapeReader), so "jo\\u0040example.com" is the address it stands for. Until the twenty-fourth session
the redaction read such a text as written and an item written with escapes passed it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import secrets
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from aigrid.agents.answer_stream import json_escape
from aigrid.agents.loop import Step
from aigrid.engines.answer_shape import TEXTS, choice_fault
from aigrid.engines.sse import SseError
from aigrid.errors import InvalidRequest
from aigrid.gateway.one_call import OneCall, may_call
from aigrid.json_depth import MAX_DEPTH
from aigrid.security.firewall.pipeline import Action, Firewall, Verdict, output_verdicts, read_output
from aigrid.security.firewall.streaming import StreamingRedactor

log = logging.getLogger("aigrid.proxy")

ANSWER_KEYS = frozenset({"id", "object", "created", "model", "choices", "usage", "system_fingerprint", "service_tier",
                         "error"})
LOOP_KEYS = frozenset({"aigrid_steps", "aigrid_loop"})
"""aigrid's own fields of a tool loop's answer (its steps already through the output policy: redacted_step), kept only
where a tool loop answers (`steps`); an engine's are its own text, unread."""
STREAM_FIELDS = ("id", "created", "model", "system_fingerprint", "service_tier")
"""The fields every chunk of one stream repeats (OpenAI's chat.completion.chunk; the openai SDK's stream helpers and
LangChain read `id` and `model` off each chunk): the chunk the filter makes of what it held back carries the stream's."""
CHOICE_KEYS = frozenset({"index", "message", "delta", "text", "finish_reason", "stop_reason", "matched_stop"})
MESSAGE_KEYS = frozenset({"role", *TEXTS, "tool_calls"})
"""What a redacted answer keeps, at its three levels (the answer or chunk, each choice, its message or delta): the
fields of OpenAI's chat and completions answers, the engines' `stop_reason` / `matched_stop` (the request's own stop
string) and aigrid's own. An engine's other fields repeat the answer in a form the redaction does not read, on a
client's asking: llama.cpp's `__verbose` (`"verbose": true`, refused since the thirty-fourth session, and written out
of every answer: usage.CACHE_FIELDS; the whole text again, unredacted, with the rendered prompt), vLLM's `token_ids` (`"return_token_ids": true`: the answer as token ids any tokenizer turns back into
text). For a tenant whose answers are redacted they are left out (timings and the like with them). Also left out
since the twenty-sixth session: `logprobs` (such a tenant is refused them, refuse_unredacted_logprobs, but an engine
that sent them unasked had the answer's tokens reach the client unredacted) and a message's `annotations` (free text
no engine of the grid writes, unread)."""

CALL_KEYS = frozenset({"index", "id", "type", "function"})
FUNCTION_KEYS = frozenset({"name", "arguments"})
"""What a redacted answer keeps of a tool call and of its function (a `type` only where it is "function"): an engine's
other keys (a call's own `name`, a function's `description`) are text the redaction does not read, and went out
unread to a tenant whose answers are redacted until the twenty-seventh session."""

Key = tuple[int, str, int]
"""(choice index, field, tool call index): one redactor per text of a choice (`text` for a completion's, `tool` for
a call's arguments)."""
MAX_TEXTS = 1024
"""The most texts (choice index, field, tool call) one streamed answer may open, each a redactor holding its tail:
the grid's choices (engines.fan_out.MAX_CHOICES) times four fields and their tool calls fit many times over. An engine
that opened a new index in each chunk had the gateway hold ~1.3 KB per 110-byte chunk (20,000 chunks: 25 MB); past
the bound the stream is the engine's failure (SseError: `stream_interrupted`, the engine counted as failed)."""


_KEPT = "\x00"
"""What EscapeReader reads in place of an escape it keeps (EscapeReader.written puts the escape back): a control
character, which no detector's item holds or reads through, and which valid JSON never holds raw."""
_SPECIAL = re.compile(r"[\\\x00]")
_PLACEHOLDER = re.compile(r"\[REDACTED:[A-Z_]+\]")
_OPENS = re.compile(r"[{\[]")
_IN_PROSE = re.compile('["\\\\\x00\n]')
_OPENS_A_STRING = "{[,:"
"""What a JSON string follows (past whitespace): a quote after anything else in prose is prose."""
_VALUE_AFTER = "[,:"
"""What a JSON number outside a string follows (past whitespace), where anything does: a placeholder elsewhere (a
text that begins with a bracket but is prose, `[1] Call 4155550100. Thanks`) is not one, and stays as it is."""
_NUMBER = re.compile(r"[0-9.eE+-]*")
"""The characters of a JSON number (outside a string, `e` and `E` are in nothing else a placeholder may touch)."""
_NUMBER_CHARS = "0123456789.eE+-"
_LONGEST_HELD = 1024
"""The most characters of a number outside a string a stream holds back (a number longer than this before an item in
it goes out as it came, and its placeholder is written beside it)."""


class EscapeReader:
    """A JSON text as its client's parser reads it, chunk by chunk, for the redaction: each escape that stands for a
    character a JSON string may hold as it is (`\\u0040`, `\\u0020`, `\\/`, a surrogate pair) read as that
    character; each one it may not (quote, backslash, control characters: `\\n`, `\\u0022`), an invalid one and a
    lone surrogate read as one control character (_KEPT; so the `n` of `\\njo@example.com` is not read into the
    address) and put back as written by `written`; every other character as it came. The redaction's text is then the
    same JSON value: no detector's item holds a control character, a quote or a backslash, so an item in a string is
    redacted inside it, by a placeholder with no character to escape, and the text stays valid JSON (a placeholder
    outside strings, for a card number written as a JSON number, is written as a string: `written`). Only
    escapes change, so a JSON text without `\\u` or `\\/` comes out byte for byte. Strings need no tracking: outside
    them JSON has no backslash. Linear; what is held back between chunks is one unfinished escape (at most 11
    characters), and the escapes kept are queued until the redaction sends the text they are in.

    `json`: None to decide by the text's first character past spaces (`{` or `[`: JSON; anything else is read and
    sent as written)."""

    def __init__(self, json: bool | None) -> None:
        self.json = json
        self._held = ""
        self._kept: deque[str] = deque()
        self._quotes = 0  # quotes written so far: odd inside a string
        self._number = ""  # the end of what was redacted so far, held: a number outside a string that may go on
        self._dropping = False  # the rest of a number a placeholder outside a string stands for is left out
        self._opened = False  # prose: a `{` or `[` read, from which on a quote opens or closes a string
        self._in_string = False
        self._last = " "  # prose: the last character outside a string but whitespace, from the first `{` or `[` on
        self._tail = ""  # JSON: the last character but whitespace written so far

    def feed(self, chunk: str) -> str:
        """The text the redaction reads for `chunk`."""
        if self.json is None:
            if not (lead := chunk.lstrip()):
                return chunk
            self.json = lead[0] in "{["
        if not self.json:
            return self._prose(chunk)
        text, self._held = self._held + chunk, ""
        if "\\" not in text and _KEPT not in text:
            return text
        out: list[str] = []
        i = 0
        while (special := _SPECIAL.search(text, i)) is not None:
            at = special.start()
            out.append(text[i:at])
            got = (None, at + 1) if text[at] == _KEPT else _read_escape(text, at)  # a raw NUL: kept too
            if got is None:  # not all here yet
                self._held = text[at:]
                return "".join(out)
            char, i = got
            if char is None:
                self._kept.append(text[at:i])
            out.append(_KEPT if char is None else char)
        out.append(text[i:])
        return "".join(out)

    def _prose(self, chunk: str) -> str:
        """Prose (`json` False) as written, but for JSON written in it: from its first `{` or `[` on, each double-quoted
        span is read as a JSON string (its escapes as feed reads them), so `Here: {"contact": "jo\\u0040example.com"}`
        is read as the address its client's parser (the first `{` on) reads. Until the twenty-fifth session an answer
        that was not JSON from its first character on was read as written. Linear, holding one unfinished escape."""
        text, self._held = self._held + chunk, ""
        i = 0
        if not self._opened:
            opening = _OPENS.search(text)
            i = len(text) if opening is None else opening.start()
            self._kept.extend(_KEPT * text.count(_KEPT, 0, i))  # a raw NUL is put back as itself, in its turn
            if opening is None:
                return text
            self._opened = True
        out = [text[:i]]
        while (special := _IN_PROSE.search(text, i)) is not None:
            at = special.start()
            out.append(text[i:at])
            if not self._in_string and (last := text[i:at].rstrip()):
                self._last = last[-1]
            if text[at] == "\n":  # no JSON string holds a raw line break: one left open ends there
                self._in_string = False
                out.append("\n")
                i = at + 1
            elif text[at] == '"':
                if self._in_string or self._last in _OPENS_A_STRING:
                    self._in_string = not self._in_string
                self._last = '"'
                out.append('"')
                i = at + 1
            elif text[at] == _KEPT:  # a raw NUL: queued as kept, as written puts back each it reads
                self._kept.append(_KEPT)
                out.append(_KEPT)
                i = at + 1
            elif not self._in_string:
                self._last = "\\"
                out.append("\\")
                i = at + 1
            elif (got := _read_escape(text, at)) is None:  # not all here yet
                self._held = text[at:]
                return "".join(out)
            else:
                if got[0] is None:
                    self._kept.append(text[at:got[1]])
                out.append(_KEPT if got[0] is None else got[0])
                i = got[1]
        if not self._in_string and (last := text[i:].rstrip()):
            self._last = last[-1]
        out.append(text[i:])
        return "".join(out)

    def flush(self) -> str:
        """The end of the text: an escape left unfinished, kept as written."""
        if not self._held:
            return ""
        self._kept.append(self._held)
        self._held = ""
        return _KEPT

    def written(self, text: str, *, final: bool) -> str:
        """`text` (what feed and flush gave, redacted) with each escape kept put back as it was written, and each
        placeholder outside a string (an item written as a JSON number, `{"card": 4111111111111111}`) written as a
        string standing for the whole number, so that the JSON stays valid. In what feed gives every quote opens or
        closes a string (a quote in one is an escape kept), so whether a placeholder is in one is the count of quotes
        before it. `final`: the text's last part (nothing is held after it)."""
        if self.json and ("[REDACTED:" in text or self._number or self._dropping or not final):
            text = self._quoted(text, final)
        elif self.json:
            self._quotes += text.count('"')
        if not self._kept or _KEPT not in text:
            return text
        parts = text.split(_KEPT)
        out = [parts[0]]
        for part in parts[1:]:
            out += [self._kept.popleft() if self._kept else "\\u0000", part]
        return "".join(out)

    def _quoted(self, text: str, final: bool) -> str:
        """Each placeholder outside a string written as a string in place of the whole number it is part of: an item
        that is only part of one (`4111111111111111.5`, `-4155550100`, `0.4111111111111111e3`: the detectors' look-arounds
        let a card or a phone number begin after `.`, `e+` or a sign and end before `.` or `e`) left the rest beside
        it, `"[REDACTED:CARD]".5`, not JSON, until the twenty-fifth session. Streamed, a number outside a string at
        the end of `text` is held until what follows it is known (at most _LONGEST_HELD characters), and the rest of a
        number after a placeholder left out as it comes."""
        text, self._number = self._number + text, ""
        same = self._dropping  # in the number the last placeholder outside a string stands for
        pos = _past_number(text, 0) if same else 0
        self._dropping = same and pos == len(text) and not final
        out: list[str] = []
        for placed in _PLACEHOLDER.finditer(text, pos):
            self._quotes += text.count('"', pos, placed.start())
            if self._quotes % 2:  # in a string: stays as it is
                out += [text[pos:placed.start()], placed.group()]
                pos, same = placed.end(), False
                continue
            before = text[pos:placed.start()]
            if before or not same:  # (else a second item in the same number, which the placeholder stands for)
                start = _number_start(before)
                if (lead := before[:start].rstrip()) and lead[-1] not in _VALUE_AFTER \
                        or not lead and self._last_of(out) not in ("", *_VALUE_AFTER):
                    out += [before, placed.group()]  # where no JSON value is (prose after a bracket): as it is
                    pos, same = placed.end(), False
                    continue
                out += [before[:start], f'"{placed.group()}"']
            pos, same = _past_number(text, placed.end()), True
            self._dropping = pos == len(text) and not final
        rest = text[pos:]
        self._quotes += rest.count('"')
        if not final and not self._quotes % 2 and 0 < len(rest) - (start := _number_start(rest)) <= _LONGEST_HELD:
            self._number, rest = rest[start:], rest[:start]
        out.append(rest)
        self._tail = self._last_of(out)
        return "".join(out)

    def _last_of(self, out: list[str]) -> str:
        """The last character but whitespace of what was written so far, `out` last ("": none)."""
        for part in reversed(out):
            if last := part.rstrip():
                return last[-1]
        return self._tail


def _number_start(text: str) -> int:
    """Where the characters of a number (_NUMBER) that end `text` begin (len(text) where it ends in none). By
    str.rstrip, linear: a regex search for them anchored at the end (`[0-9.eE+-]+\\Z`, e27bf84) was tried from every
    start in a run, quadratic (a JSON answer of 20,000 digits, then an item outside a string: 1.7 s a redaction)."""
    return len(text.rstrip(_NUMBER_CHARS))


def _past_number(text: str, pos: int) -> int:
    """Where the characters of a number (_NUMBER) from `pos` end."""
    number = _NUMBER.match(text, pos)
    return pos if number is None else number.end()


def _read_escape(text: str, i: int) -> tuple[str | None, int] | None:
    """The character the escape at text[i] (a backslash) is read as (None: kept as written: not a valid escape, or one
    of a character a JSON string may not hold as it is: quote, backslash, control characters) and where the text goes
    on; None while it is not all there (answer_stream.json_escape, the one reader of JSON escapes)."""
    got = json_escape(text, i)
    if got is None:
        return None
    char, end = got
    return (None, end) if char is not None and (char < " " or char in '"\\') else (char, end)


def json_read(text: str, json: bool | None) -> str:
    """A whole text as EscapeReader(json) reads and writes it, nothing redacted: the same JSON value."""
    reader = EscapeReader(json)
    return reader.written(reader.feed(text) + reader.flush(), final=True)


MAX_NAME_CHARS = 4096
"""The longest tool call name a stream's pieces may join into (OpenAI allows 64 characters): a name held back until
it ends (OutputFilter._call_names, chat_events._Calls) is bounded, its first piece too (joined_name)."""


def joined_name(so_far: str, piece: str) -> str:
    """A streamed tool call's name with its next piece (`so_far` "" for its first): the piece joined on, except a
    piece equal to the name so far, which is the same name again (an engine that repeats it whole, as MiniMax through
    NIM sends). The one rule of OutputFilter._call_names (a redacted stream) and chat_events._Calls (the Messages and
    Responses doors). SseError (a ValueError: the engine's malformed answer) past MAX_NAME_CHARS, a first piece
    included (until the thirtieth session only a joined name was bounded, each reader with its own copy)."""
    name = so_far if piece == so_far else so_far + piece
    if len(name) > MAX_NAME_CHARS:
        raise SseError(f"the engine's answer sent a tool call's name of more than {MAX_NAME_CHARS} characters: not "
                       "an answer the grid asked for")
    return name


_SHORT_KEPT = 256
"""The most strings of a stream's other fields OutputFilter._read_short keeps read (past it, it begins again)."""
MAX_WAITING = 64
"""The most pieces of a choice's tool calls that wait behind a call whose name is held back (OutputFilter._call_names):
past it the names held go out as they are (an engine that interleaves more than this within one name)."""


class OutputReads:
    """The texts of one answer read whole under the tenant's output policy (`action`: redact, flag or off), each by one
    reading of the detectors (pipeline.read_output), the kinds found kept for the answer's one verdict (`verdicts`). The
    one reading of a tool call's id and name (CallNames) and of the answer's other fields (read_the_rest) for a stream
    (OutputFilter) and a whole answer (redact_json_answer), and of a whole answer's texts, so that both give the same
    redactions and the same verdicts: until the twenty-eighth session a stream read them by OutputFilter._read_whole
    (one verdict for the answer), a whole answer by Firewall.check_output (one verdict per text found holding an
    item). One reading of the detectors a string, where a StreamingRedactor fed it and flushed it read it twice (review
    RV4 of the twenty-seventh session, bf2d4e69: a chat id 47 -> 23 us)."""

    def __init__(self, action: Action | str) -> None:
        self.action = action
        self.kinds: list[str] = []

    def __call__(self, text: str) -> str:
        if self.action == Action.OFF:
            return text
        out, kinds = read_output(text)
        self.kinds.extend(k for k in kinds if k not in self.kinds)
        return out if self.action == Action.REDACT else text

    def verdicts(self, *more: Iterable[str]) -> list[Verdict]:
        """The answer's verdict: one, naming every kind found (here and in `more`: a stream's redactors')."""
        return output_verdicts([*self.kinds, *(k for kinds in more for k in kinds)], self.action)


class CallNames:
    """A tool call's `id` and its function's `name` as a redacting tenant's client gets them. Each is read whole by
    `read` (the output policy's check; an id is never split across a stream's pieces, and a name that may be is held
    back until it ends, OutputFilter._call_names); until the twenty-seventh session neither was read, and a phone number
    in a function name or an address in a call id reached the client (the Responses API's `call_id` and `name`, a
    Messages `tool_use` block's `id` and `name` are these). What is found is handled so that the call stays usable:

    - a name the request offered (`offered`: its tools' names) is the client's own text, sent back as it is (the
      client dispatches by it); any other name with an item found keeps the rest and writes each placeholder as
      `REDACTED_PHONE` (a tool name is letters, digits, `_` and `-`: `[REDACTED:PHONE]` is not one);
    - an id with an item found is replaced as a whole by `call_` and 24 hex digits, a keyed hash of it (a key of this
      answer's, so the same id is the same replacement in each of a stream's pieces and in each of a whole answer's
      calls, and no one without the key can test a guess of what it stood for); the client sends it back as the
      tool result's `tool_call_id`, which the grid's schema takes (`schemas.CALL_ID`)."""

    def __init__(self, offered: frozenset[str], read: Callable[[str], str]) -> None:
        self.offered = offered
        self._read = read
        self._key = secrets.token_bytes(16)
        self._last = ("", "")  # the last id read and what it became: a stream repeats its call's id in each piece

    def name(self, name: str) -> str:
        if name in self.offered:
            return name
        out = self._read(name)
        return name if out == name else _PLACEHOLDER.sub(lambda m: "REDACTED_" + m.group()[10:-1], out)

    def id(self, call_id: str) -> str:
        if call_id == self._last[0]:
            return self._last[1]
        out = self._read(call_id)
        if out != call_id:
            out = "call_" + hashlib.blake2b(call_id.encode(), key=self._key, digest_size=12).hexdigest()
        self._last = (call_id, out)
        return out


def offered_names(body: dict[str, Any]) -> frozenset[str]:
    """The names of the tools a chat body offers (`tools[i].function.name`, the legacy `functions[i].name`): the
    names its client dispatches by (CallNames)."""
    names: set[str] = set()
    for tool in body.get("tools") or () if isinstance(body.get("tools"), list) else ():
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            names.add(fn["name"])
    for fn in body.get("functions") or () if isinstance(body.get("functions"), list) else ():
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            names.add(fn["name"])
    return frozenset(names)


class OutputFilter:
    def __init__(self, redacts: bool, strip_usage: bool, json_answer: bool = False, steps: bool = False,
                 tools: frozenset[str] = frozenset(), one_call: bool = False) -> None:
        """`redacts`: the tenant's policy redacts answers (Firewall.redacts_output); each text of each choice (a
        request with `n`, a reasoning model's reasoning, a tool call's arguments) then gets a redactor of its own,
        and each tool call's id and name are read whole (CallNames). `json_answer`: the request's `response_format`
        asks for JSON (json_object, json_schema), so each choice's `content` is read as JSON whatever its first
        character (_json_field). `steps`: a tool loop answers (known_only). `tools`: the names of the tools the
        request offers (offered_names). `one_call`: the request allows one tool call (one_call.asks_one_call): each
        choice keeps its first (OneCall), before the redaction reads it."""
        self._json_answer = json_answer
        self._one = OneCall() if one_call else None
        self._reads = OutputReads(Action.REDACT if redacts else Action.OFF)
        self._calls = CallNames(tools, self._reads)
        self._names: dict[tuple[int, int], str] = {}  # (choice, call): the name sent
        self._held: dict[tuple[int, int], dict[str, Any]] = {}  # (choice, call): the call held until its name ends
        self._waiting: dict[int, list[Any]] = {}  # choice: its calls' pieces behind a held one, in order (_call_names)
        self._short: dict[str, str] = {}
        self._steps = steps
        self._redactors: dict[Key, StreamingRedactor] = {}
        self._readers: dict[Key, EscapeReader] = {}
        self._redacts = redacts
        self.strip_usage = strip_usage
        self._flushed: set[Key] = set()
        self._fields: dict[str, Any] = {}
        """The stream's STREAM_FIELDS as its chunks carry them (read), for the chunk of held text (_held_event)."""

    @property
    def redacts(self) -> bool:
        """True when every chunk's text is checked (and so every event is re-framed)."""
        return self._redacts

    def reads(self, data: bytes) -> bool:
        """Must the events of an engine's read (or one event's data) be parsed and passed through `event`? Every one
        where answers are redacted; where the request allows one tool call, each that may hold a call's piece
        (one_call.may_call); else none (the usage chunk aside, which the relay reads for itself)."""
        return self._redacts or (self._one is not None and may_call(data))

    @property
    def keeps_comments(self) -> bool:
        """May an engine's SSE comments reach the client? Not where answers are redacted and no tool loop answers: a
        comment is text the redaction does not read (an engine's forged `: aigrid-step` carried the answer's personal
        data past it); the loop's own step comments are already redacted (redacted_step)."""
        return not self._redacts or self._steps

    def verdicts(self) -> list[Verdict]:
        if not self._redacts:  # nothing read, no verdict: a stream not redacted pays nothing for it (review RV3)
            return []
        return self._reads.verdicts(*(r.found for r in self._redactors.values()))

    def _read_short(self, text: str) -> str:
        """A string of the answer's other fields (read_the_rest), read whole; each value read once (a stream repeats
        its id, model, role in every chunk), up to _SHORT_KEPT of them kept."""
        if (out := self._short.get(text)) is None:
            if len(self._short) >= _SHORT_KEPT:
                self._short.clear()
            out = self._short[text] = self._reads(text)
        return out

    def _call_names(self, index: int, delta: dict[str, Any], argued: set[int]) -> None:
        """Each streamed tool call's id and name (CallNames); `argued`: the calls whose arguments this piece began or
        went on with. A name is read whole: a call's first piece whose name is not complete for sure (no arguments
        with it, and not one of the offered names that is no other's beginning) is held back, the call's id and type
        with it, and goes out whole, its pieces joined, with the call's first piece of arguments (else at the choice's
        end: _release_all). Gemini's OpenAI-compatible endpoint sends a name in pieces ("edit_ex", "isting_file"), as
        OpenAI's chat streams may; the grid's own engines (vLLM, SGLang, llama.cpp, Ollama, TGI) send it whole. A
        piece of a name already sent that is not that name again (an engine that repeats it whole each time) is
        refused: what went out cannot be taken back.
        The pieces of the choice's other calls that come while a name is held wait behind it (_waiting), in the order
        they came, and go out after it: a client joins a stream's calls by their first pieces' order (openai-python's
        accumulator puts a call's first piece at its `index` in the list so far: call 1's before call 0's became the
        list's first, and call 0's pieces were then joined into it). Until the thirty-sixth session another call's
        piece released a held name as if whole, and the name's next piece then cut the stream."""
        given = delta.get("tool_calls")
        calls: list[Any] = given if isinstance(given, list) else []
        waiting = self._waiting.setdefault(index, [])
        for place, call in enumerate(calls):
            if not isinstance(call, dict):
                waiting.append(call)
                continue
            if isinstance(call.get("id"), str) and call["id"]:
                call["id"] = self._calls.id(call["id"])
            k = call["index"] if isinstance(call.get("index"), int) else place
            key, fn = (index, k), call.get("function")
            given_name = fn.get("name") if isinstance(fn, dict) else None
            name: str = given_name if isinstance(given_name, str) else ""
            named = bool(name)
            held = self._held.get(key)
            if held is not None:  # the name's next piece (or the same name again), or its arguments
                if named:
                    held["function"]["name"] = joined_name(held["function"]["name"], name)
                held.update((field, call[field]) for field in ("id", "type") if field in call)
                if k in argued:  # its arguments began: the name is whole
                    self._release(key, call)
                continue
            if named:
                sent = self._names.get(key)
                if sent is None:
                    name = joined_name("", name)  # its first piece, bounded as the joined ones are
                    if len(self._names) + len(self._held) >= MAX_TEXTS:
                        raise SseError(f"the engine's answer opened more than {MAX_TEXTS} tool calls: not an answer "
                                       "the grid asked for")
                    if k not in argued and not self._complete(name):
                        held = self._held[key] = {field: call[field] for field in ("id", "type") if field in call} | {
                            "index": k, "function": {"name": name}}
                        waiting.append(held)
                        continue
                    sent = self._names[key] = name
                elif sent != name:
                    raise SseError("the engine's answer sent more of a tool call's name after the name went out, "
                                   "which the redaction cannot take back")
                call["function"]["name"] = self._calls.name(name)
            waiting.append(call)
        if len(waiting) > MAX_WAITING:  # bounded: the names held are taken as whole (as every other call's piece
            log.warning("%d tool call pieces came while a call's name was held back: the names held go out as they "
                        "are", len(waiting))  # did until the thirty-sixth session); more of one then cuts the stream
            for key in [key for key in self._held if key[0] == index]:
                self._release(key)
        out = self._ready(index)
        if out or calls:
            delta["tool_calls"] = out
        if calls and not out:
            delta.pop("tool_calls", None)  # each of its calls held back, or waiting

    def _ready(self, index: int) -> list[Any]:
        """The choice's waiting pieces that may go out now, in the order they came: those before the first call whose
        name is still held."""
        waiting = self._waiting.get(index)
        if not waiting:
            return []
        for n, piece in enumerate(waiting):
            if isinstance(piece, dict) and self._held.get((index, piece.get("index"))) is piece:  # type: ignore[arg-type]
                ready, waiting[:] = waiting[:n], waiting[n:]
                return ready
        ready = list(waiting)
        waiting.clear()
        return ready

    def _complete(self, name: str) -> bool:
        """Whether a call's first piece holds its whole name for sure: one of the offered names, and no other
        offered name begins with it."""
        return name in self._calls.offered and not any(o != name and o.startswith(name) for o in self._calls.offered)

    def _release(self, key: tuple[int, int], piece: dict[str, Any] | None = None) -> None:
        """A held call's whole name, read (CallNames), and its id and type: into `piece` (its first piece of
        arguments), which takes the held call's place among the choice's waiting pieces; without one, the held call
        itself goes out there, as a piece of its own."""
        held = self._held.pop(key)
        name = self._names[key] = held["function"]["name"]
        held["function"]["name"] = self._calls.name(name)
        if piece is None:
            return
        if not isinstance(piece.get("function"), dict):
            piece["function"] = {}
        piece["function"]["name"] = held["function"]["name"]
        for field in ("id", "type"):
            if field in held and field not in piece:
                piece[field] = held[field]
        waiting = self._waiting[key[0]]
        waiting[next(n for n, p in enumerate(waiting) if p is held)] = piece

    def _release_all(self, index: int, choice: dict[str, Any]) -> None:
        """Each call of the choice still held back, and every piece waiting behind one, into its last chunk
        (`choice`)."""
        for key in [key for key in self._held if key[0] == index]:
            self._release(key)
        self._send_waiting(index, choice)

    def _send_waiting(self, index: int, choice: dict[str, Any]) -> None:
        if not (ready := self._ready(index)):
            return
        if not isinstance(choice.get("delta"), dict):
            choice["delta"] = {}
        calls = choice["delta"].get("tool_calls")
        choice["delta"]["tool_calls"] = (calls if isinstance(calls, list) else []) + ready

    def _drop_held(self, index: int, choice: dict[str, Any]) -> None:
        """At a cut: each call of the choice still held back (its name perhaps unfinished) left out, logged; the
        pieces of other calls waiting behind one go out (into `choice`)."""
        for key in [key for key in self._held if key[0] == index]:
            held = self._held.pop(key)
            log.warning("a stream cut while a tool call's name may have gone on (%d characters of it): the call is "
                        "left out, not sent as if whole", len(held["function"]["name"]))
            self._waiting[index] = [p for p in self._waiting.get(index, ()) if p is not held]
        self._send_waiting(index, choice)

    def event(self, obj: Any) -> Any | None:
        """One chunk as the client must see it; None to drop it."""
        if not isinstance(obj, dict):  # (`null` the relay drops before)
            if self._redacts:  # a JSON string or list: passed on, it went out unread until the twenty-eighth session
                raise SseError("the engine sent an event that is not an object, which the redaction cannot read")
            return obj
        if isinstance(obj.get("usage"), dict):
            if self.strip_usage:
                if not obj.get("choices"):
                    return None
                obj = {k: v for k, v in obj.items() if k != "usage"}
        if self._one is not None:
            self._one.event(obj)
        if not self._redacts:
            return obj
        obj = known_only(obj, self._steps, streamed=True)
        try:
            read_the_rest(obj, self._read_short, self._steps)
        except ValueError as e:
            raise SseError(f"the engine's answer holds {e}: text the redaction cannot read") from None
        fields = self._fields
        for field in STREAM_FIELDS:
            if field in obj:
                fields[field] = obj[field]
        choices = obj.get("choices")
        if choices is not None and not isinstance(choices, list):  # (a string or an object went out unread)
            raise SseError("the engine's answer holds choices that are not a list: text the redaction cannot read")
        for choice in choices or ():
            if (why := choice_fault(choice, whole=False)) is not None:  # a text that is not a string or null, a
                # choice that is not an object (until the twenty-eighth session passed on unread)
                raise SseError(f"the engine's answer holds {why}: text the redaction cannot read")
            index = choice.get("index")
            index = index if isinstance(index, int) else 0
            delta = choice.get("delta")
            if isinstance(delta, dict):
                for field in TEXTS:
                    if isinstance(delta.get(field), str):
                        delta[field] = self._feed((index, field, 0), delta[field])
                argued = {k for k, fn in _call_functions(delta) if fn["arguments"]}
                for k, fn in _call_functions(delta):
                    fn["arguments"] = self._feed((index, "tool", k), fn["arguments"])
                self._call_names(index, delta, argued)
            if isinstance(choice.get("text"), str):  # a completion's, or one beside a delta: the client reads it too
                choice["text"] = self._feed((index, "text", 0), choice["text"])
            if choice.get("finish_reason"):
                # the last chunk as engines send it (`"delta": {}`, or no delta at all): what is held back goes in
                # it, not after it (in a chunk without id or model, which a client that stops at finish_reason
                # never reads); a completions chunk (`object: text_completion`) takes it as its text
                self._release_all(index, choice)
                self._end(choice, index, completion=obj.get("object") == "text_completion")
        return obj

    def event_name(self, name: bytes) -> bytes:
        """An event's type (SSE `event:`, empty for the default) as the client gets it: read as the answer's other
        strings are where answers are redacted (until the twenty-eighth session it went out unread)."""
        if not name or not self._redacts:
            return name
        return self._read_short(name.decode("utf-8", "replace")).encode()

    def _feed(self, key: Key, text: str) -> str:
        found = self._redactors.get(key)
        if found is None:
            if len(self._redactors) >= MAX_TEXTS:
                raise SseError(f"the engine's answer opened more than {MAX_TEXTS} texts (choices, fields and tool "
                               "calls): not an answer the grid asked for")
            found = self._redactors[key] = StreamingRedactor()
            self._readers[key] = EscapeReader(True if key[1] == "tool" else _json_field(key[1], self._json_answer))
        reader = self._readers[key]
        return reader.written(found.feed(reader.feed(text)), final=False)

    def _end(self, choice: dict[str, Any], index: int, completion: bool, broken: bool = False) -> None:
        """Each text of the choice still held back, flushed into the choice's last chunk (`choice`); `broken`: the
        answer was cut before its end (cut_event: StreamingRedactor.cut)."""
        for key in [k for k in self._redactors if k[0] == index and k not in self._flushed]:
            self._flushed.add(key)
            redactor, reader = self._redactors[key], self._readers[key]
            # cut: an escape left unfinished (reader.flush's kept one, a NUL to the redactor, which ended the item
            # before it there) is left out, so the text before it is read as one that may go on ("jo.doe\u00": no
            # part of an address; until review RV9 "jo.doe\u00" went out)
            held = "" if broken else redactor.feed(reader.flush())
            rest = reader.written(held + (redactor.cut() if broken else redactor.flush()), final=True)
            if not rest:
                continue
            _, field, k = key
            if field == "text" or (completion and not isinstance(choice.get("delta"), dict)):
                choice["text"] = (choice.get("text") or "") + rest
                continue
            if not isinstance(choice.get("delta"), dict):  # no delta, or "delta": null
                choice["delta"] = {}
            delta = choice["delta"]
            if field == "tool":
                _put_arguments(delta, k, rest)
            else:
                delta[field] = (delta.get(field) or "") + rest

    def flush_event(self) -> dict[str, Any] | None:
        """Before [DONE]: a chunk with the texts still held back (a stream that ended without finish_reason); a
        completions stream's as a `text_completion` chunk with the choice's `text`."""
        return self._held_event(broken=False)

    def cut_event(self) -> dict[str, Any] | None:
        """Before the error event of an answer cut before its end (its engine failed and no other continues it, a
        bound cut it): the chunk with what each text still holds back, as flush_event's, but for the text at each
        one's end that more of the answer could have made an item, left out (StreamingRedactor.cut). Until the
        twenty-ninth session what a cut stream held back was lost: the client never read the last ~100 characters
        the engine had sent."""
        return self._held_event(broken=True)

    def _held_event(self, broken: bool) -> dict[str, Any] | None:
        choices = []
        completion = any(k[1] == "text" for k in self._redactors)
        for index in sorted({k[0] for k in self._redactors} | {k[0] for k in self._held}):
            choice: dict[str, Any] = {"index": index, "finish_reason": None} if completion else \
                {"index": index, "delta": {}, "finish_reason": None}
            if broken:  # a call held back is one whose name may go on (_call_names): at a cut its rest never comes,
                # so it is left out, never sent (until the thirtieth session released whole: "get_wea" as a name)
                self._drop_held(index, choice)
            else:
                self._release_all(index, choice)
            self._end(choice, index, completion=completion, broken=broken)
            if choice.get("delta") or choice.get("text"):
                choices.append(choice)
        if not choices:
            return None
        # with the stream's id, created, model (STREAM_FIELDS): until the thirtieth session this chunk had none, a
        # chunk unlike every other of its stream (the openai SDK's ChatCompletionChunk read id None)
        fields = self._fields
        held: dict[str, Any] = {"id": fields["id"]} if "id" in fields else {}
        held["object"] = "text_completion" if completion else "chat.completion.chunk"
        held.update((k, v) for k, v in fields.items() if k != "id")
        held["choices"] = choices
        return held


def _json_field(field: str, json_answer: bool) -> bool | None:
    """How an answer's `field` is read: as JSON where the request's `response_format` asks for JSON and the field is
    the answer (`content`; a reasoning or a refusal is prose), else by its first character (EscapeReader). Until the
    twenty-fourth session the first character decided for the answer too, so JSON after a line of prose, or a bare
    JSON string ("jo\\u0040example.com"), was read as written and the address it stands for passed."""
    return True if json_answer and field == "content" else None


def refuse_unredacted_logprobs(asks_logprobs: bool, redacts: bool, param: str) -> None:
    """Log-probabilities repeat the answer token by token, which the output redaction does not read: a tenant
    whose firewall redacts personal data in answers is refused them (the client's 400 naming the field), as
    they would carry what the redaction removes."""
    if asks_logprobs and redacts:
        raise InvalidRequest(f"{param}: this tenant's firewall redacts personal data in answers, and log-probabilities "
                             "would repeat the answer's tokens unredacted: ask without them", param=param,
                             code="logprobs_not_allowed")


def known_only(answer: dict[str, Any], steps: bool = False, streamed: bool = False) -> dict[str, Any]:
    """`answer` (a whole answer or, `streamed`, one chunk) without the fields a redacted answer does not keep
    (ANSWER_KEYS; LOOP_KEYS with `steps`). A whole answer's choice keeps its `message`, a chunk's its `delta`, not the
    other (which the redaction does not read); an `index` of a choice or a tool call only where it is a number. Until
    the twenty-eighth session both were kept, a chunk's `message` and a whole choice's `delta` went out unread, and so
    did an `index` written as a string."""
    out = {k: v for k, v in answer.items() if k in ANSWER_KEYS or steps and k in LOOP_KEYS}
    choices = out.get("choices")
    if isinstance(choices, list):
        out["choices"] = [_known_choice(c, streamed) if isinstance(c, dict) else c for c in choices]
    return out


def _known_choice(choice: dict[str, Any], streamed: bool) -> dict[str, Any]:
    unread = "message" if streamed else "delta"
    out = {k: v for k, v in choice.items() if k in CHOICE_KEYS and k != unread and (k != "index" or _number(v))}
    for key in ("message", "delta"):
        if isinstance(out.get(key), dict):
            out[key] = message = {k: v for k, v in out[key].items() if k in MESSAGE_KEYS}
            if isinstance(message.get("tool_calls"), list):
                message["tool_calls"] = [_known_call(c) if isinstance(c, dict) else c for c in message["tool_calls"]]
    return out


def _known_call(call: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in call.items()
           if k in CALL_KEYS and (k != "type" or v == "function") and (k != "index" or _number(v))}
    if isinstance(out.get("function"), dict):
        out["function"] = {k: v for k, v in out["function"].items() if k in FUNCTION_KEYS}
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float)


def read_the_rest(answer: dict[str, Any], read: Callable[[str], str], steps: bool = False) -> None:
    """Every other string a redacted answer (or chunk) keeps (known_only), each read whole by `read` and replaced by
    what it gives, keys too: the answer's `id`, `model`, `object`, `system_fingerprint`, `service_tier`, its `usage`
    and `error` at any depth, each choice's `finish_reason`, `stop_reason` and `matched_stop`, a message's `role` and a
    tool call's `type`. An engine writes them all; until the twenty-seventh session they went out unread to a tenant
    whose answers are redacted (the engine's `stop_reason`, `system_fingerprint` or a chunk's `id` could carry what the
    content had redacted). The choices' TEXTS, a completion's `text` and a call's `arguments`, `id` and `name` are read
    elsewhere; a tool loop's own steps (`steps`) were read by redacted_step. A value nested past MAX_NESTED levels
    (a stream's event: orjson reads 1,024) is text the redaction does not read: ValueError."""
    for key in _OTHER_FIELDS:  # (known_only left no other key but `choices` and, with steps, the loop's)
        value = answer.get(key)
        if value is not None and not isinstance(value, int | float):
            answer[key] = _each(value, read, 0)
    choices = answer.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, dict):
            continue
        for key in ("finish_reason", "stop_reason", "matched_stop"):
            value = choice.get(key)
            if value is not None and not isinstance(value, int | float):
                choice[key] = _each(value, read, 0)
        for message in (choice.get("message"), choice.get("delta")):
            if isinstance(message, dict) and "role" in message:
                message["role"] = _each(message["role"], read, 0)
            calls = message.get("tool_calls") if isinstance(message, dict) else None
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict) and "type" in call:
                    call["type"] = _each(call["type"], read, 0)


_OTHER_FIELDS = tuple(sorted(ANSWER_KEYS - {"choices"}))
MAX_NESTED = MAX_DEPTH
"""The most levels read_the_rest reads into a value (an answer's `usage` or `error` is an object of two or three; a
whole answer is refused past MAX_DEPTH levels before, usage.whole_answer)."""
PLAIN = frozenset({
    "chat.completion", "chat.completion.chunk", "text_completion", "assistant", "function", "stop", "length",
    "tool_calls", "content_filter", "function_call", "default", "auto", "flex", "priority", "prompt_tokens",
    "completion_tokens", "total_tokens", "prompt_tokens_details", "completion_tokens_details", "cached_tokens",
    "reasoning_tokens", "audio_tokens", "accepted_prediction_tokens", "rejected_prediction_tokens"})
"""Strings of OpenAI's answers (objects, roles, finish reasons, service tiers, usage's keys) that read_the_rest does
not read again: no personal data, and a whole answer's reading of each costs a detector pass."""


def _each(value: Any, read: Callable[[str], str], depth: int) -> Any:
    if isinstance(value, str):
        return value if value in PLAIN else read(value)
    if depth >= MAX_NESTED and isinstance(value, dict | list) and value:
        raise ValueError(f"a field nested past {MAX_NESTED} levels")
    if isinstance(value, dict):
        return {_each(k, read, depth + 1): _each(v, read, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_each(v, read, depth + 1) for v in value]
    return value


def _call_functions(message: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """(call index, its `function`) of a message's or delta's tool calls whose arguments are a string (a streamed
    call's index is its `index`, a whole one's its place)."""
    calls = message.get("tool_calls")
    out = []
    for place, call in enumerate(calls if isinstance(calls, list) else ()):
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
            out.append((call["index"] if isinstance(call.get("index"), int) else place, fn))
    return out


def _put_arguments(delta: dict[str, Any], k: int, rest: str) -> None:
    calls = delta.get("tool_calls")
    if not isinstance(calls, list):
        calls = delta["tool_calls"] = []
    for call in reversed(calls):  # its last piece there (pieces that waited behind a held name may be several)
        if isinstance(call, dict) and call.get("index") == k and isinstance(call.get("function"), dict):
            call["function"]["arguments"] = (call["function"].get("arguments") or "") + rest
            return
    calls.append({"index": k, "function": {"arguments": rest}})


def redacted_step(firewall: Firewall, tenant: str, step: Step) -> tuple[Step, list[Verdict]]:
    """A tool loop's step as a client of `tenant` sees it (`aigrid_steps`, the stream's step comments): its arguments
    (the model's output) and result (a tool's, already read by the input policy before the model read it) through
    the output policy, as the answer's texts are (until 5 Dec 2026 they were shown as they came), and by the same
    reading (OutputReads): one verdict for the step, naming every kind found (until the twenty-eighth session's final
    review, one a string found holding an item, where an answer's texts got one for the answer)."""
    text = OutputReads(firewall.policy(tenant).pii_output)

    def each(value: Any) -> Any:  # every string of the arguments, keys too; numbers and the structure kept
        if isinstance(value, str):
            return text(value)
        if isinstance(value, dict):
            return {each(k): each(v) for k, v in value.items()}
        if isinstance(value, list):
            return [each(v) for v in value]
        return value

    arguments = each(step.arguments)
    result = text(step.result)
    if not (verdicts := text.verdicts()):
        return step, []
    return dataclasses.replace(step, arguments=arguments, result=result), verdicts


def redact_json_answer(firewall: Firewall, tenant: str, body: bytes, json_answer: bool = False,
                       steps: bool = False, tools: frozenset[str] = frozenset()) -> tuple[bytes, list[Verdict]]:
    """A whole (non-streamed) answer: redact each choice's texts (TEXTS, its tool calls' arguments, a
    completion's text) and its tool calls' ids and names (CallNames; `tools`: the names the request offers) per the
    tenant's output policy, a JSON text read with its escapes decoded (EscapeReader; a text with nothing found is kept
    as written), each read as a stream's are (OutputReads: one verdict for the answer, naming every kind found); a
    redacted answer keeps only the fields it knows (known_only). `json_answer`: as OutputFilter's,
    each choice's `content` read as JSON; `steps`: a tool loop answered (known_only).

    What goes out is always the answer as read, written again (orjson), never the engine's bytes: a key an engine
    wrote twice (`"content": "jo@example.com", "content": "Hello"`) is one value to orjson, which keeps the last, so
    the redaction read "Hello" while a client's parser that keeps the first read the address; until the
    twenty-seventh session an answer in which nothing was found went out as the engine's bytes, duplicates and all.
    Written again, the client reads one value, the one read: orjson.dumps of a 1.8 KB answer, 3-10 us at a load of 14
    on 2 cores, beside 1.5-3 ms for its reading (scripts/output_check_cost.py)."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:  # not reached from the proxy: usage.whole_answer refused it first (NotAnAnswer)
        return body, []
    if isinstance(obj, dict) and firewall.redacts_output(tenant):
        obj = known_only(obj, steps)
    read = OutputReads(firewall.policy(tenant).pii_output)

    def check(holder: dict[str, Any], key: str, json: bool | None = None) -> None:
        reader = EscapeReader(json)
        text = reader.feed(holder[key]) + reader.flush()
        if (out := read(text)) != text:
            holder[key] = reader.written(out, final=True)

    names = CallNames(tools, read)
    if isinstance(obj, dict) and firewall.redacts_output(tenant):  # (a flagging tenant gets the answer as it came)
        read_the_rest(obj, read, steps)  # (nested MAX_DEPTH levels at most: usage.whole_answer)
    for choice in obj.get("choices") or () if isinstance(obj, dict) else ():
        msg = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(msg, dict):
            for field in TEXTS:
                if isinstance(msg.get(field), str):
                    check(msg, field, _json_field(field, json_answer))
            for _, fn in _call_functions(msg):
                check(fn, "arguments", json=True)
            calls = msg.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict) and isinstance(call.get("id"), str):
                    call["id"] = names.id(call["id"])
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("name"), str):
                    function["name"] = names.name(function["name"])
        if isinstance(choice, dict) and isinstance(choice.get("text"), str):  # beside a message too: it is sent
            check(choice, "text")
    return orjson.dumps(obj), read.verdicts()
