"""The pipeline's streamed Chat Completions answer as a few plain events, for the front doors that speak
another API (messages_stream.py: Anthropic; responses_stream.py: OpenAI Responses).

The relay hands over whole SSE events (relay.py); this module decodes them (engines/sse.py) and yields:
TextPiece (content delta), ToolStart / ToolArgs (a tool call's id + name, then argument fragments, by the
call's index), Finish (finish_reason, and the tool loop's stop where one ran), Usage (the engine's token counts), Steps (server-side tool runs of the
agent loop: each step's SSE comment as it runs, then all of them in `aigrid_steps`; a reader dedupes by
call_id), and StreamError (the relay's error event when an answer was interrupted).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from aigrid.engines.answer_shape import choice_fault
from aigrid.engines.sse import DONE, Event, SseDecoder
from aigrid.gateway.output_filter import joined_name

log = logging.getLogger("aigrid.proxy")


@dataclass(frozen=True, slots=True)
class TextPiece:
    text: str
    logprobs: tuple[dict[str, Any], ...] = ()
    """The chunk's token log-probabilities as the engine sent them (`choices[0].logprobs.content`)."""


@dataclass(frozen=True, slots=True)
class ToolStart:
    index: int
    call_id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolArgs:
    index: int
    fragment: str
    whole: bool = False
    """The call's arguments so far, this piece included, are a whole JSON object (ArgsScan): no later piece comes for
    it (_Calls), so a door may end its block or item."""


@dataclass(frozen=True, slots=True)
class Finish:
    reason: str
    matched: str | None = None
    """The stop string that ended the answer, where the engine says (matched_stop)."""
    loop_stop: str | None = None
    """The tool loop's stop (the chunk's `aigrid_loop.stop`: token_budget, step_limit, ...), where a loop ran."""


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    """Prompt tokens the engine read from its prefix cache (`prompt_tokens_details.cached_tokens`)."""


@dataclass(frozen=True, slots=True)
class Steps:
    steps: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class StreamError:
    message: str
    code: str


ChatEvent = TextPiece | ToolStart | ToolArgs | Finish | Usage | Steps | StreamError


def token_logprobs(choice: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """A chat choice's (or chunk's) per-token log-probabilities as the engine sent them (`logprobs.content`)."""
    lp = choice.get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    return tuple(t for t in content if isinstance(t, dict)) if isinstance(content, list) else ()


def usage_of(obj: Any) -> Usage | None:
    usage = obj.get("usage") if isinstance(obj, dict) else None
    if not isinstance(usage, dict):
        return None
    return Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), cached_of(usage))


def cached_of(usage: dict[str, Any]) -> int:
    """The prompt tokens an engine served from its prefix cache, as vLLM, SGLang and llama.cpp report them
    (OpenAI's `prompt_tokens_details.cached_tokens`); 0 when it does not say."""
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return cached if isinstance(cached, int) and cached > 0 else 0


def loop_stop_of(obj: dict[str, Any]) -> str | None:
    """The tool loop's stop in a chat answer or chunk (`aigrid_loop.stop`, agents/reply.py); None without one."""
    loop = obj.get("aigrid_loop")
    stop = loop.get("stop") if isinstance(loop, dict) else None
    return stop if isinstance(stop, str) else None


_STRING_BODY = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
"""A string's characters up to its end ('"') or a backslash that ends the piece (each escape with its character)."""
_STRUCTURE = re.compile(r'[{}\[\]"]')
"""What an object's reading stops at: a nesting, or a string's start (the rest is read by orjson at the end)."""
_NOT_SPACE = re.compile(r"[^ \t\n\r]")


JOIN_EVERY = 1024
"""Pieces joins a call's pieces each time this many came: an engine's 2-character pieces held apart cost about 70
bytes each (a str and its list slot): one ArgsScan fed MAX_TOOL_ARGS_CHARS of them (4,194,297 pieces) grew the
process by 290 MiB (ru_maxrss, review RV13); joined, by 8 MiB, about the characters themselves."""


class Pieces(list[str]):
    """A call's argument pieces held (ArgsScan's, a Responses item's, a waiting Messages block's), every JOIN_EVERY of
    them joined into one as they come (`add`). From 1af68f0a to the thirty-first session's final review the doors held
    their own plain lists beside chat_events' ArgsScan: one Responses call of 4,194,299 2-character pieces grew the
    process by 289 MiB again (ru_maxrss; scratch script /tmp/f1_rss.py, not kept)."""

    __slots__ = ("joined",)

    def __init__(self) -> None:
        super().__init__()
        self.joined = 0  # how many of the first entries are such joins

    def add(self, piece: str) -> None:
        self.append(piece)
        if len(self) - self.joined >= JOIN_EVERY:
            self[self.joined:] = ["".join(self[self.joined:])]
            self.joined += 1


class ArgsScan:
    """Whether a streamed tool call's argument pieces so far are a whole JSON object: no piece after them could
    make them another valid object, so the call is written (the doors that stream one call at a time, or that close
    a call once another begins, read it as ended: messages_stream, responses_stream). Each piece is read once, in
    O(its length), keeping the nesting depth and whether inside a string (and after its backslash); the arguments are
    parsed (orjson) only when the depth comes back to 0 after the first '{', at most once: text after that object
    (or a parse that fails) can never be whole again. Until the thirtieth session (review RV9) each piece ending with
    '}' parsed the call's whole arguments again: 120 KB of nested objects sent a character a piece held the event
    loop 9-16 s (scripts/bench_tool_args_scan.py 120). The reading jumps between the characters that matter (a regex
    search, review RV13): read a character at a time in Python, one piece of 1 MB of a file's text took 55-57 ms of
    the event loop, 7 ms now, where orjson parses it in 0.5 ms (scripts/bench_tool_args_scan.py 1024 one)."""

    __slots__ = ("parts", "depth", "in_string", "escape", "state")

    def __init__(self) -> None:
        self.parts = Pieces()  # the pieces, every JOIN_EVERY of them joined into one (the same list object)
        self.depth = 0
        self.in_string = self.escape = False
        self.state = 0  # 0: not yet ended; 1: whole (only whitespace may follow); -1: never whole

    @property
    def whole(self) -> bool:
        return self.state == 1

    def feed(self, piece: str) -> None:
        self.parts.add(piece)
        if self.state == -1:
            return
        if self.state == 1:
            if _NOT_SPACE.search(piece):
                self.state = -1
            return
        depth, in_string, escape = self.depth, self.in_string, self.escape
        i, n = 0, len(piece)
        while i < n:
            if in_string:
                if escape:  # the character after a backslash, whatever it is
                    escape, i = False, i + 1
                    continue
                i = _STRING_BODY.match(piece, i).end()  # type: ignore[union-attr]  # (it matches "" at least)
                if i == n:
                    break
                in_string, escape, i = piece[i] != '"', piece[i] == "\\", i + 1  # its end, or a last backslash
            elif depth == 0:  # before the object: only whitespace, then its '{'
                if (m := _NOT_SPACE.search(piece, i)) is None:
                    break
                if m.group() != "{":  # a string, an array, a number...: not an object
                    self.state = -1
                    return
                depth, i = 1, m.end()
            else:
                if (m := _STRUCTURE.search(piece, i)) is None:
                    break
                ch, i = m.group(), m.end()
                if ch == '"':
                    in_string = True
                elif ch in "{[":
                    depth += 1
                else:
                    depth -= 1
                    if depth == 0:
                        self.state = 1 if self._parses() and not _NOT_SPACE.search(piece, i) else -1
                        return
        self.depth, self.in_string, self.escape = depth, in_string, escape

    def _parses(self) -> bool:
        try:
            return isinstance(orjson.loads("".join(self.parts)), dict)
        except orjson.JSONDecodeError:
            return False


MAX_TOOL_CALLS = 1024
"""Tool calls one streamed answer may hold (chat indexes begun); past it the answer ends with the door's
engine_malformed error. The Messages door holds every call waiting for the open block (messages_stream._Blocks), the
Responses door every call open at once (responses_stream._Output): until the thirtieth session nothing bounded them."""
MAX_TOOL_ARGS_CHARS = 8 * 1024 * 1024
"""Characters of tool-call arguments one streamed answer may send, all its calls together (each door holds them
until the answer's end: a Responses item's `arguments`, a Messages call waiting); as event_log.MAX_BYTES. Past it the
answer ends with the door's engine_malformed error."""
HELD_PIECE_CHARS = 64
"""What a piece of text held behind a call not whole (_Calls.text_piece) counts beside what the engine sent for it:
the piece's own cost (about 56 bytes a TextPiece and its place in the list, scratch tracemalloc of 2 million),
so that one-character pieces are bounded as bytes are."""


BRACE_PIECES = 8
"""How many pieces a call's opening '{' may have come in (with whitespace) for _Calls.args to read a piece starting
with '{' as the xlam parser's whole object after it: the check joins them, at most this many."""


def late_repeat_chars(arguments: str) -> int:
    """How many characters of late pieces may repeat a whole call's `arguments` (_Calls._late): twice theirs (the
    same value written with a space after each ',' and ':') and 64."""
    return 2 * len(arguments) + 64


class HeldTooMuch(ValueError):
    """An engine's answer past MAX_TOOL_CALLS or MAX_TOOL_ARGS_CHARS."""


class ArgsAfterEnd(ValueError):
    """A piece of a call's arguments after they ended (_Calls): its arguments as the doors gave them would be cut."""


def _not_again(index: int, late: ArgsScan) -> ArgsAfterEnd:
    """Call `index`'s late pieces (`late`: read after its whole object) that are not that object again."""
    return ArgsAfterEnd(f"tool call {index}'s arguments went on after they ended (their JSON object was whole), not "
                        f"with that object again: {''.join(late.parts)[:40]!r}")


class _Calls:
    """The stream's tool calls by index: those started (ToolStart yielded) and those whose name may go on (`pending`:
    [id, name so far]). A call starts with its first piece that holds arguments, or at the answer's end (its
    finish_reason, [DONE]); its name is every piece's name joined (a piece equal to the name so far is the same name
    again: an engine that repeats it whole; output_filter.joined_name, OutputFilter._call_names's rule too). Until the
    thirtieth session the first piece's name was the call's: an engine that sends a name in pieces (Gemini's
    OpenAI-compatible endpoint: "get_wea", "ther") had the Messages and Responses doors hand their client "get_wea" as
    the tool to call. A call still pending when the answer is cut (an error, the stream's end without its own) is
    never started.

    A started call's arguments end once they are a whole JSON object (ArgsScan: ToolArgs.whole), or once text is
    written after them, or at the answer's finish. The doors that translate end a call's block (Messages) or item
    (Responses) then and cannot reopen it, so a later piece of it could only be dropped, its arguments cut in the
    client's hands: a piece of whitespace is (it changes no object), and so are pieces that are a whole call's object
    again (_late: vLLM's xlam parser), any other piece ends the answer with the door's error (ArgsAfterEnd:
    engine_malformed). Text that comes while a started call's arguments are not yet whole (an
    engine interleaving text with a call's pieces) is held (`text`) until no started call's may still become whole
    (`scans`; a call whose arguments can never be, `never`, does not hold it: the text ends it), or the answer's
    finish, so that no door ends a call half written. Until the thirty-first session both doors ended the open call at
    text and dropped its later pieces with a log line: the client got the call's arguments cut and a whole answer."""

    __slots__ = ("started", "pending", "chars", "scans", "never", "whole", "late", "text", "text_chars", "rebraced")

    def __init__(self) -> None:
        self.started: set[int] = set()
        self.pending: dict[int, list[str]] = {}
        self.chars = 0  # the arguments' characters so far, every call's
        self.scans: dict[int, ArgsScan] = {}  # the started calls whose arguments may still become whole
        self.never: set[int] = set()  # the started calls whose arguments can never be whole, not yet ended
        self.whole: dict[int, str] = {}  # the calls whose arguments were whole: their text (a repeat is dropped)
        self.late: dict[int, list[Any]] = {}  # a whole call's late pieces so far: [their ArgsScan, characters]
        self.text: list[TextPiece] = []  # text held while a started call's arguments may still become whole
        self.text_chars = 0
        self.rebraced: set[int] = set()  # the calls whose opening brace came again (args): left out once

    def held(self, index: int, arguments: str) -> None:
        """A piece of call `index` counted against the answer's bounds (HeldTooMuch past them)."""
        if index not in self.started and index not in self.pending and \
                len(self.started) + len(self.pending) >= MAX_TOOL_CALLS:
            raise HeldTooMuch(f"more than {MAX_TOOL_CALLS:,} tool calls in one answer")
        self.chars += len(arguments)
        if self.chars > MAX_TOOL_ARGS_CHARS:
            raise HeldTooMuch(f"more than {MAX_TOOL_ARGS_CHARS:,} characters of tool-call arguments in one answer")

    def piece(self, index: int, call: dict[str, Any], fn: dict[str, Any], arguments: Any) -> Iterator[ChatEvent]:
        if index in self.started:
            return
        for other in sorted(k for k in self.pending if k != index):  # another call began: their names are whole
            yield self._start(other)
        name = fn.get("name")
        name = name if isinstance(name, str) else ""
        held = self.pending.get(index)
        if held is None:
            held = self.pending[index] = [call.get("id") or "", ""]
        held[1] = joined_name(held[1], name)  # as the redacted stream's names are read (a ValueError: malformed)
        if not held[0] and call.get("id"):
            held[0] = call["id"]
        if arguments:
            yield self._start(index)

    def _start(self, index: int) -> ToolStart:
        call_id, name = self.pending.pop(index)
        self.started.add(index)
        self.scans[index] = ArgsScan()
        return ToolStart(index, call_id or f"call_{index}", name)

    def args(self, index: int, piece: str) -> Iterator[ChatEvent]:
        """A piece of started call `index`'s arguments, and the text held behind them once no call's may still
        become whole. A piece that starts with '{' where the arguments so far are only their opening '{' is vLLM's
        xlam parser again (vllm-project/vllm#51697: it streams the brace, then its end-of-stream flush sends the
        whole object, `{{"city": ...}`): that second '{' is left out (DEBUG line), once a call, so the call's
        arguments are the object. Until this session (7 Dec 2026, thirty-second) they reached the Messages and
        Responses clients as they came, never valid JSON."""
        scan = self.scans.get(index)
        if scan is None:
            if index in self.never:  # not an object, nor ever one: its pieces go on to the door as sent
                yield ToolArgs(index, piece)
            else:
                self._late(index, piece)
            return
        if scan.depth == 1 and not scan.in_string and len(scan.parts) <= BRACE_PIECES and index not in self.rebraced \
                and (again := piece.lstrip()).startswith("{") and "".join(scan.parts).strip() == "{":
            piece = again[1:]  # (never valid JSON: an object's key is a string)
            self.rebraced.add(index)  # once: `{{{"a": 1}` is not the object after its brace
            log.debug("an engine sent tool call %d's whole arguments after their opening brace: that brace again left "
                      "out", index)
            if not piece:
                return
        scan.feed(piece)
        if scan.state:
            del self.scans[index]
            if scan.whole:
                self.whole[index] = "".join(scan.parts)
            else:
                self.never.add(index)
        yield ToolArgs(index, piece, scan.whole)
        if not self.scans and self.text:
            yield from self.written()

    def _late(self, index: int, piece: str) -> None:
        """A piece of call `index` after its arguments ended: whitespace is left out; pieces that together repeat a
        whole call's arguments (the same text, or the same JSON value once parsed) are dropped with a DEBUG line:
        vLLM's xlam tool parser sends the whole arguments again in its last chunk (vllm-project/vllm#51697: it
        never records what it streamed, so its end-of-stream flush finds all of them unsent), which ended every such
        answer with engine_malformed and charged the engine a failure. They may come in pieces, up to
        late_repeat_chars of the call's: an engine that writes the value again with other spacing (json.dumps' ", "
        and ": " after compact text) is up to about twice as long. Anything else raises ArgsAfterEnd."""
        late = self.late.get(index)
        if late is None:
            if not _NOT_SPACE.search(piece):
                return
            if (text := self.whole.get(index)) is None:
                raise ArgsAfterEnd(f"tool call {index}'s arguments went on after they ended (text or the answer's "
                                   f"finish came after them): {piece[:40]!r}")
            late = self.late[index] = [ArgsScan(), 0]
        scan, late[1] = late[0], late[1] + len(piece)
        scan.feed(piece)
        text = self.whole[index]
        if scan.whole:
            again = "".join(scan.parts)
            if again.strip() == text.strip() or orjson.loads(again) == orjson.loads(text):
                del self.late[index]
                log.debug("an engine sent tool call %d's whole arguments again after they ended (%d characters): "
                          "left out", index, len(again))
                return
        if scan.state or late[1] > late_repeat_chars(text):
            raise _not_again(index, scan)

    def unrepeated(self) -> None:
        """The answer ends: late pieces that never became the call's arguments again raise ArgsAfterEnd."""
        for index, (scan, _) in self.late.items():
            raise _not_again(index, scan)

    def text_piece(self, piece: TextPiece, sent: int) -> Iterator[TextPiece]:
        """Text: written now, or held while a started call's arguments are not whole, bounded as they are: each piece
        held counts `sent` (its text's characters; the whole chunk's where it carries log-probabilities, which are
        the engine's to size) and HELD_PIECE_CHARS. Until review RV1 (thirty-first session) only the text counted: an
        engine's chunks of one character and 240 KB of log-probabilities each held 1.58 GB at 2,000 of them (counted
        2,000 characters; scratch tracemalloc), 8 million one-character pieces held about 450 MB."""
        if not self.scans:
            self.never.clear()  # (text ends a call whose arguments are not an object: the doors end it there)
            yield piece
            return
        self.text_chars += sent + HELD_PIECE_CHARS
        if self.text_chars > MAX_TOOL_ARGS_CHARS:
            raise HeldTooMuch(f"more than {MAX_TOOL_ARGS_CHARS:,} characters of text (and its log-probabilities) "
                              f"while a tool call's arguments were not whole")
        self.text.append(piece)

    def written(self) -> Iterator[TextPiece]:
        """The text held, written: every started call's arguments end here (no piece of them may follow)."""
        self.scans.clear()
        self.never.clear()
        text, self.text, self.text_chars = self.text, [], 0
        yield from text

    def ended(self) -> Iterator[ChatEvent]:
        """The answer ended: each call still pending starts, by index, then the text held is written (ArgsAfterEnd
        where a call's late pieces were not its arguments again)."""
        self.unrepeated()
        for index in sorted(self.pending):
            yield self._start(index)
        yield from self.written()


def _chunk_events(obj: Any, calls: _Calls, steps: bool, size: int) -> Iterator[ChatEvent]:
    """The events of chunk `obj` (`size`: its characters as the engine sent them)."""
    if not isinstance(obj, dict):
        return
    if isinstance(obj.get("error"), dict):
        err = obj["error"]
        yield StreamError(str(err.get("message", "the answer was interrupted")), str(err.get("code") or "error"))
        return
    for choice in obj.get("choices") or ():
        if (why := choice_fault(choice, whole=False)) is not None:  # (a list as `content`, an object as a tool call's
            # `arguments`): until the twenty-sixth session written out as Python shows it (`str()`) or dropped, an
            # object's text reaching an Anthropic tool_use block and a Responses function call past the output filter
            raise ValueError(why)
        delta = choice.get("delta") or {}
        content = delta.get("content")
        if content:
            logprobs = token_logprobs(choice)
            yield from calls.text_piece(TextPiece(content, logprobs), size if logprobs else len(content))
        for call in delta.get("tool_calls") or ():
            index = call.get("index", 0)
            if type(index) is not int:
                raise ValueError(f"a tool call's index is {str(index)[:40]}")
            fn = call.get("function") or {}
            arguments = fn.get("arguments")
            calls.held(index, arguments if isinstance(arguments, str) else "")
            yield from calls.piece(index, call, fn, arguments)
            if arguments:
                yield from calls.args(index, arguments)
        finish = choice.get("finish_reason")
        if finish:
            yield from calls.ended()
            yield Finish(finish, matched_stop(choice), loop_stop_of(obj))
    ran = obj.get("aigrid_steps") if steps else None  # without a tool loop, an engine's own field: not read at all
    if ran is not None and not (isinstance(ran, list) and all(isinstance(s, dict) for s in ran)):
        raise ValueError("aigrid_steps is not a list of steps")
    if ran:
        yield Steps(ran)
    usage = usage_of(obj)
    if usage is not None:
        yield usage


STEP_COMMENT = b" aigrid-step "
"""The agent loop's `: aigrid-step {...}` comment after each server-side tool run (agents/reply.py)."""


def _within_bounds(events: Iterator[ChatEvent]) -> Iterator[ChatEvent]:
    """`events`, ended with the door's error (engine_malformed, logged) where the engine's answer went past what
    one answer may hold (HeldTooMuch) or sent a call's arguments after they ended (ArgsAfterEnd): a chunk's events
    (_events_of) and the answer's end at [DONE] (_done) alike."""
    try:
        yield from events
    except HeldTooMuch as e:
        log.warning("an engine's stream held too much: %s", e)
        yield StreamError(f"the answer was interrupted: the engine sent {e}", "engine_malformed")
    except ArgsAfterEnd as e:
        log.warning("an engine's stream sent a tool call's arguments after they ended: %s", e)
        yield StreamError(f"the answer was interrupted: {e}", "engine_malformed")


def _events_of(ev: Event, calls: _Calls, steps: bool) -> Iterator[ChatEvent]:
    for text in ev.comments if steps else ():  # without a tool loop, no comment is a step (chat_events)
        if text.startswith(STEP_COMMENT):
            try:
                step = orjson.loads(text[len(STEP_COMMENT):])
            except orjson.JSONDecodeError:
                continue
            if isinstance(step, dict):  # a step is an object (a string raised in the Responses door's stream)
                yield Steps([step])
    if ev.data is None or ev.data == DONE:
        return
    try:
        obj = orjson.loads(ev.data)
    except orjson.JSONDecodeError:
        return  # not JSON: nothing a client of the other API could use
    try:
        yield from _within_bounds(_chunk_events(obj, calls, steps, len(ev.data)))
    except (AttributeError, TypeError, ValueError) as e:  # a chunk of another shape (`choices: "x"`, a delta that is
        # not an object, a tool call's index "a"): the answer ends with the front door's error, not a traceback
        log.warning("an engine's stream sent a chunk that is not a chat completion chunk (%s: %s): %s",
                    type(e).__name__, e, ev.data[:200])
        yield StreamError(f"the answer was interrupted: the engine sent a chunk that is not a chat completion chunk "
                          f"({type(e).__name__}: {e})", "engine_malformed")


TRUNCATED = StreamError("the answer was interrupted: the engine's stream ended before the answer did (no "
                        "finish_reason and no [DONE])", "stream_truncated")
"""What a stream that stops without its end becomes: the front door's in-stream error (Anthropic's `error`
event, the Responses API's `response.failed`), never an answer that looks whole to the client's SDK."""


def _ends(event: ChatEvent, failed: Callable[[str], object] | None, calls: _Calls) -> bool:
    """Whether `event` ends the answer (its finish, or an in-stream error); an error is told to `failed` (the relay's
    engine_failed: the engine's failure), for an event read whole and for the stream's last one alike, and a call
    whose name may have gone on is never started (_Calls)."""
    if not isinstance(event, Finish | StreamError):
        return False
    if isinstance(event, StreamError):
        calls.pending.clear()
        calls.text.clear()  # (text held behind a call cut: the door leaves that call as it was cut)
        calls.late.clear()  # (the answer ended here: no later check of a repeat)
        if failed is not None:
            failed(event.message)
    return True


def _done(calls: _Calls, failed: Callable[[str], object] | None) -> Iterator[ChatEvent]:
    """The events at [DONE] (_Calls.ended), or the door's error where a call's late pieces were not its arguments
    again (ArgsAfterEnd: the answer had no finish_reason to end them), told to `failed` as _ends tells it."""
    for event in _within_bounds(calls.ended()):
        _ends(event, failed, calls)
        yield event


async def chat_events(blocks: AsyncIterator[bytes], steps: bool = False) -> AsyncIterator[ChatEvent]:
    """Events of one streamed chat answer (blocks of whole or partial SSE events). A stream that stops
    without a finish_reason, a [DONE] or an error event ends with TRUNCATED. `steps`: a tool loop serves the answer,
    so its steps are the gateway's; else Steps are left out (an engine's `aigrid_steps` or `: aigrid-step` comments
    were shown as the grid's own tool runs, mcp_call items on the Responses door, past the output filter)."""
    calls = _Calls()
    decoder = SseDecoder()
    ended = False
    failed = getattr(blocks, "engine_failed", None)  # the relay (relay.StreamRelay): an error is the engine's failure
    async for block in blocks:
        for ev in decoder.feed(block):
            if ev.data == DONE:
                ended = True
                break
            for event in _events_of(ev, calls, steps):
                ended = _ends(event, failed, calls) or ended
                yield event
        else:
            continue
        for event in _done(calls, failed):  # (none left once an error was read: _ends)
            yield event
        async for _ in blocks:  # [DONE]: the answer is over; what an engine sends after it is read to the end (so the
            pass                # relay books it whole), never translated (a chat client stops at [DONE] too)
        return
    last = decoder.flush()  # lenient: a last event without its blank line
    if last is not None:
        done = last.data == DONE
        ended = ended or done
        for event in _events_of(last, calls, steps):
            ended = _ends(event, failed, calls) or ended
            yield event
        if done:
            for event in _done(calls, failed):
                yield event
    if not ended:
        yield TRUNCATED


def matched_stop(choice: dict[str, Any]) -> str | None:
    """The stop string that ended a choice, where the engine names it: vLLM's `stop_reason`, SGLang's
    `matched_stop` (a token id, or none, when the answer ended otherwise). OpenAI's API and llama.cpp do not
    say which of a request's `stop` strings matched."""
    for key in ("stop_reason", "matched_stop"):
        value = choice.get(key)
        if isinstance(value, str) and value:
            return value
    return None
