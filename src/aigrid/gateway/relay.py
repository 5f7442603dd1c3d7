"""After the first byte: one streamed answer, from the engine's reads to the client's bytes, in one place.

Per engine read (EventPipe.feed, synchronous):
  SseDecoder -> the read's complete events, and the raw bytes up to the last of them (the unfinished tail is
  held back, so the client only ever holds whole events)
  -> per event, only as much as is needed:
     [continuation] Rewriter: a continuation's chunk relabelled as the original stream, echo removed
     [continuable]  the event's data kept, unparsed (EventPipe.delivered parses it, in order, when something
                    reads what was delivered: a break, a continuation, a steer; an answer that ends never does)
     always         usage: the engine's token count, for quotas, the audit log and metrics
     [filter]       OutputFilter: drop the usage chunk the gateway asked for; redact personal data; keep
                    one tool call where the request allows one (each read that may hold a call: one_call.py)
  -> the engine's own bytes when no event changed (the common case: nothing is re-encoded), else the
     read's events re-framed.
StreamRelay (the async iterator the response sends from) pulls the reads, and on a mid-stream failure asks
the proxy to continue on a spare endpoint of the same family, or ends the stream with an error event.
Nothing here keeps the events: memory per stream is the decoder's unfinished tail and the delivered text (where a
continuation may need it; a steer's tracking counts its characters and chunks only).

The wire (relay_response.ClientWire, under uvicorn's httptools server): every client byte goes on it
instead of through the response's `send`; after the first chunk, while the engine's body can hand its reads
over from the connection's read callback (engines/upstream_transport.py), each read goes through the same
EventPipe.feed and its bytes straight to the client's socket from that callback, with no task switch per
read. A full client socket detaches it until the socket drains (meanwhile the engine connection buffers up to
its high-water mark, then stops reading); the end of the answer, an engine failure, a silent engine (read
timeout) or an undecodable stream detach it and the pull loop below takes over with what is left: the same
code books every outcome either way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from aigrid.engines.legacy_completions import COMPLETIONS_PATH
from aigrid.engines.sse import CUT_SHORT, DONE, Event, Quiet, SseDecoder, SseError, comment, encode
from aigrid.engines.token_counts import count_fault
from aigrid.errors import EngineError, EngineStreamBroken
from aigrid.gateway.continuation import Delivered, Rewriter, why_not_continuable
from aigrid.gateway.output_filter import OutputFilter
from aigrid.gateway.relay_response import CUT, STEER, STEERED
from aigrid.gateway.usage import cache_counts_out

if TYPE_CHECKING:
    from aigrid.core.types import Candidate
    from aigrid.gateway.decisions import DecisionRecord
    from aigrid.gateway.proxy import Opened, Proxy
    from aigrid.gateway.relay_response import ClientWire

log = logging.getLogger("aigrid.proxy")
_USAGE = b'"usage"'
_ESCAPE = b"\\u00"
"""A JSON escape that may spell the key `usage` (`"us\\u0061ge"`, one key to every JSON reader): a read holding one
that may be a letter of it (`_key_escape`) is read as if it held `"usage"` (an engine's count written so was passed to
the client unread, unchecked)."""


def _key_escape(raw: bytes) -> bool:
    """Past `_ESCAPE in raw`: an escape of one of the letters of `usage` (u s a g e: \\u0061-\\u0075, hex digits only).
    Not the escapes engines write in text (Go's encoding/json, Ollama's, writes < > & as \\u003c \\u003e \\u0026; an
    ASCII-only writer an accented letter as \\u00e9), which took a code answer's every read off the lean path."""
    return b"\\u006" in raw or b"\\u007" in raw


_FINISHED = re.compile(rb'"finish_reason"\s*:\s*"')
"""A choice that says why it ended (a string; null while it goes on)."""
_DONE_LINE = re.compile(rb"(?:^|[\r\n])data: ?\[DONE\]")
"""The stream's [DONE] event: a line of its own (the bytes `[DONE]` in an answer's text, inside a JSON string, are
not: an answer that said them, then broke, was taken as ended)."""
_UNBOUNDED = 1 << 62
_NULL = b"null"
"""An event whose data is JSON null: llama.cpp opens the stream of a list of prompts with one; no client can
read it (the OpenAI SDK yields None), so it is dropped."""


def _null_event(raw: bytes) -> bool:
    return b"data: null" in raw or b"data:null" in raw


UNREAD_MAX_BYTES = 64 * 1024
"""The most bytes of delivered events an EventPipe keeps unparsed (`_unread`) before it reads them into its Delivered
at the start of the next read: the bound of that store, past one read's bytes."""


class EventPipe:
    """Engine reads in, client bytes out, for one streamed answer (every engine that serves it)."""

    def __init__(self, output: OutputFilter | None, *, sse: bool, track: bool, counts: bool = False,
                 most_tokens: int | None = None,
                 most_bytes: int | None = None, quiet_s: float | None = None, max_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic, isolated: bool = False,
                 model: str | None = None, served: str | None = None) -> None:
        """`model`: the grid's model that serves the answer (its `x-aigrid-model`), written as every event's `model`
        (model_named), where the engine writes its own name (`served`, the name it is sent: a served_model, a GGUF
        path). `most_tokens`: the most tokens the answer can count (Proxy.most_tokens); a usage past it is not charged.
        `most_bytes`: the most bytes the answer's events may take, all its engines' together (Proxy.most_bytes, as a
        whole answer's); `quiet_s`: the longest its engine may send reads that hold no data event (comments,
        keep-alives), as the read timeout bounds a silence. Past either, feed() raises SseError and `past` says why
        (the engine's failure, not continued elsewhere: StreamRelay._broke); neither bounded an answer before, so
        an engine that never stopped, or sent keep-alives only, held the client, the quota and the engine slot.
        `max_s` (gateway.stream_max_s): the most seconds the answer may stream, all its engines together; its owner
        calls expire() then (StreamRelay's timer: no clock read per engine read), and the next read is cut as past
        the byte bound is (a stream of empty data events, `data: {}`, was bounded only by its bytes: days).
        `isolated`: the engine keeps each tenant's prefix cache apart (Proxy.isolates): the usage chunk's cached-token
        count is passed on (usage.cache_counts_out)."""
        self._grid = None if model is None else orjson.dumps(model)
        self._model = self._grid
        """The name written over the engine's, None once the engine wrote the grid's own (model_named's work skipped)."""
        self._served = orjson.dumps(served) if served else b""
        self.isolated = isolated
        """Whether the serving engine keeps each tenant's prefix cache apart (set again by `continuation`)."""
        self._filter = output
        self._most_tokens = most_tokens
        self._most_bytes = _UNBOUNDED if most_bytes is None else most_bytes
        self.max_s = max_s
        self._expired = False
        self._read = 0
        self._silence = Quiet(math.inf if quiet_s is None else quiet_s, clock)
        self.past: str | None = None
        """Why the answer was cut at a bound (most_bytes, quiet_s, max_s, the output filter's MAX_TEXTS); None while
        within them."""
        self._sse = sse
        self.track = track
        """Keep the delivered text and chunk count (a continuation is possible for this request), and read the answer's
        end from them (`ended`)."""
        self.counts = counts
        """Count the delivered chunks (Delivered.tokens), tracked or not: what a client that left mid-stream is charged
        where the engine's count never came (StreamRelay._book_unfinished). Their end is not read from them untracked:
        a fan-out's first choice to finish is not the answer's end."""
        self._delivered = Delivered()
        self._unread: list[bytes] = []
        """Tracked events' data payloads relayed but not yet read into `_delivered` (`delivered` reads them, in order;
        an answer that ends whole never needs them): until the thirty-first session every token event was parsed
        (orjson) and observed as it passed, ~24 parses a request for a continuation that rarely happens. Only while
        nothing changes the events (no rewriter, no redaction: `_defers`); at most UNREAD_MAX_BYTES past one read."""
        self._unread_bytes = 0
        self.usage: dict[str, Any] | None = None
        self._rewriter: Rewriter | None = None
        self._decoder = SseDecoder()
        self._recent: tuple[bytes, bytes] = (b"", b"")
        """The engine's bytes of the last two reads relayed (references, no copy: the decoder's `complete`, whole
        events, not the start of one it holds back, nor a read cut at a bound): whether the answer ended (a
        finish_reason, [DONE]) is read from them only when its stream ends or breaks without the pipe having seen
        [DONE]. Raw reads were kept before: an engine cut at a bound (bytes, quiet time, the ceiling) with an
        unfinished event holding `"finish_reason":"` had its answer judged ended, audited ok, the engine not
        counted, the client's stream stopped with neither its end nor an error."""

    @property
    def sse(self) -> bool:
        """The engine's answer is an event stream (not an error body)."""
        return self._sse

    @property
    def delivered(self) -> Delivered:
        """What the client has received so far (its text and chunk count where tracked), every event relayed read
        into it first."""
        self._read_unread()
        return self._delivered

    def _read_unread(self) -> None:
        unread = self._unread
        if not unread:
            return
        self._unread, self._unread_bytes = [], 0
        observe = self._delivered.observe
        for data in unread:
            try:
                observe(orjson.loads(data))
            except orjson.JSONDecodeError:
                continue

    def _defers(self) -> bool:
        """Tracked events may be kept unparsed: nothing changes them (a rewriter's and a redaction's reads change the
        parsed event, so those are observed as they pass, after what was kept)."""
        return self._rewriter is None and (self._filter is None or not self._filter.redacts)

    def continuation(self, sse: bool, isolated: bool = False) -> None:
        """The next reads come from a continuation's engine: its quiet time (quiet_s) is its own (the last one's
        silence, up to the read timeout, is not held against it); the byte bound stays the whole answer's. `isolated`:
        that engine's (its usage chunk's cached count is its own to pass on or not)."""
        self.isolated = isolated
        self._model = self._grid  # that engine may write another name than the one before it
        self._rewriter = Rewriter(self.delivered)  # (every event relayed read first: `delivered`)
        self._decoder = SseDecoder()
        self._recent = (b"", b"")
        self._silence.since = None
        self._sse = sse

    def ended(self, tail: bytes) -> bool:
        """At the end of the stream: did the answer end (its [DONE], or a finish_reason in the last relayed reads or
        the unterminated tail), whether or not the pipe tracked the text."""
        if self._delivered.done:  # the usual end: no kept event needs reading for it
            return True
        if self.track and self.delivered.finished:
            return True
        last = self._recent[0] + self._recent[1] + tail
        return _DONE_LINE.search(last) is not None or _FINISHED.search(last) is not None

    def feed(self, raw: bytes) -> bytes:
        """The client's bytes of the engine's read `raw` (whole events: the decoder holds back the start of one),
        each event's `model` the grid's (model_named)."""
        out = self._feed(raw)
        if self._model is None or not self._sse:
            return out
        named = model_named(out, self._model, self._served)
        if named == out and _MODEL_KEY in out:  # this engine writes the grid's own name (sent it, it echoes it): its
            self._model = None  # later events go out as they come, not read again (0.9 us a chunk; a continuation's
        return named  # engine is read afresh)

    def _feed(self, raw: bytes) -> bytes:
        if not self._sse:
            return raw  # not an event stream (an engine's error body): passed as it comes
        self._read += len(raw)
        if self._unread_bytes > UNREAD_MAX_BYTES:  # read in between reads, never inside one (a cut read's are dropped)
            self._read_unread()
        if self._read > self._most_bytes:  # past the byte bound, or the time bound (expire)
            self._cut(self._over_time() if self._expired
                      else f"the answer is past {self._most_bytes} bytes, more than its tokens can take")
        if (self._rewriter is None and (self._filter is None or not self._filter.reads(raw))
                and _USAGE not in raw and not (_ESCAPE in raw and _key_escape(raw))
                and DONE not in raw and not _null_event(raw)):
            datas = self._decoder.data_only(raw)
            if datas is not None:  # the engine's usual read, whole token events: the lean path, no events built
                self._silence.since = None
                self._recent = (self._recent[1], raw)
                if self.track or self.counts:  # kept unparsed (`delivered` reads them when asked)
                    self._unread.extend(datas)
                    self._unread_bytes += len(raw)
                return raw
        try:
            events = self._decoder.feed(raw)
        except SseError as e:  # an event past sse.MAX_EVENT_BYTES: the engine's own answer, as past the other bounds
            self._cut(str(e))
        self._quiet(events)
        if not events:
            return b""
        complete = self._decoder.complete
        if (self._rewriter is None and (self._filter is None or not self._filter.reads(complete))
                and _USAGE not in complete and not (_ESCAPE in complete and _key_escape(complete))
                and DONE not in complete and not _null_event(complete)):
            # the lean path: no event of this read changes, so the engine's bytes go out as they came
            if self.track or self.counts:  # ... and the text a continuation would need is kept, unparsed
                self._unread.extend(ev.data for ev in events if ev.data is not None)
                self._unread_bytes += len(complete)
            self._recent = (self._recent[1], complete)
            return complete
        delivered = self._delivered
        ended = delivered.finished, delivered.done
        kept = len(self._unread)
        try:
            framed = [self._event(ev) for ev in events]
        except SseError:  # an event past MAX_TEXTS: none of this read is relayed, so an end its events told is not
            delivered.finished, delivered.done = ended  # the client's (`ended`), nor its events kept
            del self._unread[kept:]
            raise
        self._recent = (self._recent[1], complete)  # after _event: a read it cuts (MAX_TEXTS) is not relayed
        if self._rewriter is None and all(f is None for f in framed):
            return complete
        return b"".join(_frame(ev) if f is None else f for f, ev in zip(framed, events, strict=True))

    def expire(self) -> None:
        """The answer has streamed for `max_s`: its next read is cut (the byte bound's test, set to trip)."""
        self._expired = True
        self._most_bytes = -1

    def cut_at_ceiling(self) -> str:
        """The wait for a read was cut at `max_s` (StreamRelay): why, the answer's own fault (`past`)."""
        self.past = self._over_time()
        return self.past

    def _over_time(self) -> str:
        return f"the answer streamed for more than {self.max_s:g} s"

    def _quiet(self, events: list[Event]) -> None:
        """A read and its events (sse.Quiet.after): past `quiet_s` of reads with no data event, the engine is
        silent (SseError)."""
        try:
            self._silence.after(events)
        except SseError as e:
            self._cut(str(e))

    def _cut(self, why: str) -> None:
        self.past = why
        raise SseError(why)

    def held_at_cut(self) -> bytes:
        """The answer is cut before its end (its error event follows): the event with what the redaction still holds
        back of it (OutputFilter.cut_event: each item redacted, the start of one whose rest never came left out);
        b"" where nothing is held. Until the twenty-ninth session that text was lost."""
        filt = self._filter
        if filt is None or not filt.redacts or not self._sse:
            return b""
        held = filt.cut_event()
        return b"" if held is None else self._named(encode(orjson.dumps(held)))

    def _named(self, out: bytes) -> bytes:
        return out if self._model is None else model_named(out, self._model, self._served)

    def end(self) -> bytes:
        """At the end of an engine's stream: bytes it left without a closing blank line, passed as they are; where the
        answer is redacted (or kept to one tool call), that last event read as one (as the lenient readers take it),
        or nothing where the filter cannot read it (passed as they were, its text reached the client unredacted)."""
        tail = self._decoder.pending if self._sse else b""
        last = self._decoder.flush()
        if not tail or self._filter is None or not self._filter.reads(tail):
            return self._named(tail)
        if last is None:
            return b""
        try:
            framed = self._event(last)
        except SseError:  # the answer ends before it: cut short, unless it had ended (EventPipe.ended)
            return b""
        return self._named(_frame(last) if framed is None else framed)

    def _event(self, ev: Event) -> bytes | None:
        """None: pass the event as the engine framed it; else its new framing (b"" to drop it)."""
        data = ev.data
        filt = self._filter
        if ev.comments and filt is not None and not filt.keeps_comments:  # text the redaction does not read (an
            # engine's forged `: aigrid-step`): passed on as framed, it reached the client unredacted; left out
            bare = dataclasses.replace(ev, comments=())
            framed = self._event(bare)
            return _frame(bare) if framed is None else framed
        if data is None:
            return None
        if data == _NULL:
            return b""
        if data == DONE:
            self._delivered.done = True
            held = filt.flush_event() if filt is not None else None
            if held is not None:
                return encode(orjson.dumps(held)) + b"data: [DONE]\n\n"
            if ev.event and filt is not None and filt.redacts:  # its type read as a redacted event's is (event_name;
                # passed on as framed, it went out unread until review RV3 of the twenty-eighth session)
                return _frame(dataclasses.replace(ev, event=filt.event_name(ev.event)))
            return None
        wants_usage = _USAGE in data or (_ESCAPE in data and _key_escape(data))
        defers = self._defers()
        if defers and (self.track or self.counts):  # kept unparsed, in order with the lean path's (`delivered`)
            self._unread.append(data)
            self._unread_bytes += len(data)
        if defers and not wants_usage and (filt is None or not filt.reads(data)):  # nothing to read in it here
            return None
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            if filt is not None and filt.redacts:  # text the redaction cannot read: passed on, it went out unredacted
                self._cut("the engine sent an event that is not JSON, which the redaction cannot read")
            return None  # not JSON: nothing to read in it, passed on
        changed = False
        if self._rewriter is not None:
            obj, changed = self._rewriter.rewrite(obj), True
            if obj is None:
                return b""
        if (self.track or self.counts) and not defers:  # a rewriter's or a redaction's read: observed as it passes (none kept then)
            self._delivered.observe(obj)
        usage = obj.get("usage") if wants_usage and isinstance(obj, dict) else None
        if isinstance(usage, dict):
            why = count_fault(usage, self._most_tokens)
            if why is None:
                self.usage = usage
            else:  # the answer's count is unknown (charged the reservation), and no client reads the engine's
                log.warning("an engine's stream reported token counts that cannot be charged (%s): its count taken as "
                            "unknown", why)
                obj, changed = {k: v for k, v in obj.items() if k != "usage"}, True
        if usage is not None and (told := cache_counts_out(obj, self.isolated)) is not None:  # the usage chunk only
            obj, changed = told, True  # (llama-server's `timings` ride on it): no other event read (docs/security.md)
        if filt is not None and (filt.reads(data) or (usage is not None and filt.strip_usage)):
            try:
                obj, changed = filt.event(obj), True
            except SseError as e:  # past output_filter.MAX_TEXTS: the engine's own answer, not continued elsewhere
                self._cut(str(e))
            if obj is None:
                return b""
        if not changed:
            return None
        try:
            return encode(orjson.dumps(obj), event=ev.event if filt is None else filt.event_name(ev.event))
        except orjson.JSONEncodeError as e:  # orjson reads 1,024 levels, writes 254: an event nested between them
            # (a redacted or metered one, written again) raised here, the stream cut with a traceback
            self._cut(f"the engine sent an event the gateway cannot write again ({e})")
            raise  # not reached: _cut raises


def _frame(ev: Event) -> bytes:
    """An unchanged event, re-framed because others of its read changed (LF line ends)."""
    head = b"".join(comment(c) for c in ev.comments)
    return head + (encode(ev.data, event=ev.event) if ev.data is not None else b"")


_MODEL_FIELD = re.compile(rb'"model"\s*:\s*"[^"\\]*(?:\\.[^"\\]*)*"')
_MODEL_KEY = b'"model"'


def model_named(data: bytes, model: bytes, served: bytes = b"") -> bytes:
    """An engine's answer (whole, or whole events of its stream) with every `"model": "..."` written as `model` (the
    grid's name, JSON-encoded): the engine writes the name it was sent (`served`, JSON-encoded: an endpoint's
    `served_model`, a GGUF path, a provider's name), or one of its own. Until the thirty-fifth session chat and
    completions answers carried it to the client, an internal path, where the Messages and Responses doors write the
    grid's (front_door.served_model). Bytes only, as completion_ids: a quote inside a JSON string is escaped, so only
    a key `model` matches. The name it was sent, written compactly, is replaced as bytes (a token chunk's usual case);
    any other spelling by the pattern."""
    if _MODEL_KEY not in data:
        return data
    field = b'"model":' + model
    if served:
        data = data.replace(b'"model":' + served, field)
        if data.count(_MODEL_KEY) == data.count(field):
            return data
    return _MODEL_FIELD.sub(lambda _: field, data)


_CHAT_IDS = (b'"id":"chatcmpl-', b'"id": "chatcmpl-')


def completion_ids(data: bytes) -> bytes:
    """A legacy completion's answer (or its events) with OpenAI's `cmpl-` id where the engine wrote a chat
    completion's `chatcmpl-` (llama.cpp's llama-server names both alike; vLLM writes `cmpl-`). Bytes only: a
    quote inside a JSON string is escaped, so the pattern matches only the answer's own `id` field."""
    if b"chatcmpl-" not in data:
        return data
    return data.replace(_CHAT_IDS[0], b'"id":"cmpl-').replace(_CHAT_IDS[1], b'"id": "cmpl-')


class CompletionsPipe(EventPipe):
    """A legacy completion's stream: its events' ids relabelled `cmpl-` where the engine wrote `chatcmpl-`
    (legacy_completions.completion_ids). A class of its own so the chat stream's hot path does not pay for it."""

    def feed(self, raw: bytes) -> bytes:
        return completion_ids(super().feed(raw))

    def end(self) -> bytes:
        return completion_ids(super().end())

    def held_at_cut(self) -> bytes:
        return completion_ids(super().held_at_cut())


class StreamRelay:
    """The streamed answer as an async iterator of client bytes; aclose() releases whatever engine still
    serves it and books the outcome (the client went away, or the gateway stops)."""

    def __init__(self, proxy: Proxy, path: str, body: dict[str, Any], opened: Opened, spare: list[Candidate],
                 record: DecisionRecord, output: OutputFilter | None, *, direct: bool = True) -> None:
        """`direct`: the engine's own stream (no tool loop, fan-out or other wrapper between): only such an
        answer is stopped for a steer (`steer`), the part streamed being all that was generated."""
        self._proxy, self._path, self._body, self._spare, self._record = proxy, path, body, spare, record
        self._continuable = bool(spare) and why_not_continuable(body, Delivered()) is None
        self._direct = direct
        self._steered: dict[str, int] | None = None
        """The usage of an answer stopped for a steer (`steer`), booked when it is closed."""
        pipe = CompletionsPipe if path.rstrip("/") == COMPLETIONS_PATH else EventPipe
        # the engine's own stream has its chunks counted (`counts`): the charge where the engine's count never comes
        # (_book_unfinished; until the thirty-sixth session a client that hung up was charged the whole reservation);
        # its text is kept only where a continuation may need it. Its events are kept unparsed, each read at most once
        # (EventPipe._unread: an answer that ends whole with its count reads none of them). Not a wrapper's: a tool
        # loop's model turns are not what it streams (its count unknown, it is charged its reservation)
        self.pipe = pipe(output, sse=_is_sse(opened), track=self._continuable, counts=direct,
                         most_tokens=proxy.most_tokens(opened.cand, record),
                         most_bytes=proxy.most_bytes(opened.cand, record) if direct else None,
                         quiet_s=proxy.stream_idle_s if direct else None,  # a wrapper's: its own bounds
                         max_s=proxy.stream_max_s, isolated=proxy.isolates(opened.cand), model=opened.cand.model,
                         served=proxy.served_name(opened.cand))
        self.pipe.delivered.keep_text = self._continuable
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(proxy.stream_max_s,
                                                                                       self._at_ceiling)
        """The answer's ceiling (gateway.stream_max_s) from its first byte, a wrapper's too, cancelled when it ends."""
        self._task: asyncio.Task[Any] | None = None
        """The task reading the answer (taken when it starts to: asyncio.current_task costs ~0.45 us, not per read)."""
        self._waiting = False
        """The task waits for the engine's next read (the ceiling cancels that wait)."""
        self._ceiling_cut = False
        """The ceiling cancelled the task's wait for a read (taken back by _caught_at_ceiling)."""
        self._current: Opened | None = opened
        self._first: bytes | None = opened.first
        self._engine_failure: str | None = None
        self.wire: ClientWire | None = None
        """Set by the response once its head is out: the client's socket, for the relay from the read callback."""
        self._sink_error: Exception | None = None
        self.live = True
        """Until the answer has ended and its engine been released (relay_response.Cut cuts only while live)."""

    def __aiter__(self) -> StreamRelay:
        self._task = asyncio.current_task()
        cut = CUT.get()
        if cut is not None:  # the response sending this answer: a hang-up closes the engine at once (Cut)
            cut.engage(self)
        steer = STEER.get()
        if steer is not None and self._direct:  # a socket's response a steer may stop: its end read from its chunks
            self.pipe.track = True  # (its text kept only where a continuation may need it: keep_text)
            steer.engage(self)
        return self

    async def __anext__(self) -> bytes:
        """The next client bytes for the response's `send`. With a wire they go on it instead (waiting while the
        client's socket is full), so this returns only at the end, or b"" when the client is gone."""
        wire = self.wire
        while True:
            cur = self._current
            if cur is None:
                self.live = False
                self._stop_timer()
                raise StopAsyncIteration
            if self._first is not None:
                chunk, self._first = self._first, None
            else:
                if wire is not None:
                    if await self._pump(cur) or (wire.paused and await wire.drain()):
                        return b""  # the client is gone: the response stops
                    if self._sink_error is not None:
                        err, self._sink_error = self._sink_error, None
                        if not isinstance(err, SseError):
                            raise err
                        out = await self._broke(cur, EngineStreamBroken(str(err)))
                        if out and (sent := await self._emit(out)) is not None:
                            return sent
                        continue
                if self._task is None:  # read without __aiter__
                    self._task = asyncio.current_task()
                # _task is taken once (__aiter__ or here), not per read (asyncio.current_task, ~0.45 us a read,
                # 6cf9f0e2): right only while the one task that started reading makes every read,
                # as a response's send loop does (the ceiling cancels _task's wait; another task's would not be cut).
                # Not checked per read for that cost; a relay handed between tasks would need _task taken again.
                self._waiting = True  # a wait the ceiling may cut (_at_ceiling)
                try:
                    try:
                        chunk = await cur.upstream.body.__anext__()
                    finally:
                        self._waiting = False
                    self._swallowed()  # the pipe, expired, cuts the read instead
                except StopAsyncIteration:
                    swallowed = self._swallowed()
                    tail = self.pipe.end()
                    if self.pipe.sse and cur.upstream.status < 400 and not self.pipe.ended(tail):
                        # closed cleanly, but before its [DONE] or a finish_reason: the answer is cut short,
                        # not complete (continued elsewhere, or the in-stream error event the SDKs raise)
                        why = self.pipe.cut_at_ceiling() if swallowed else CUT_SHORT
                        out = await self._broke(cur, EngineStreamBroken(why))
                        if out and (sent := await self._emit(out)) is not None:
                            return sent
                        continue
                    self.live = False  # the answer has ended: its close and the rest are not cut (Cut)
                    self._current = None
                    self._stop_timer()
                    try:
                        await cur.stack.aclose()
                    finally:  # booked even when a cancel cuts the close short: in flight never stays one high
                        self._record.usage = self._proxy.finish(cur.cand, self._record, cur.upstream.status,
                                                                self.pipe.usage)
                    if tail and (sent := await self._emit(tail)) is not None:
                        return sent
                    raise StopAsyncIteration from None
                except EngineError as e:
                    failed = EngineStreamBroken(f"{self.pipe.cut_at_ceiling()} ({e})") if self._swallowed() else e
                    out = await self._broke(cur, failed)
                    if out and (sent := await self._emit(out)) is not None:
                        return sent
                    continue
                except asyncio.CancelledError:
                    if not self._caught_at_ceiling():
                        raise
                    out = await self._broke(cur, EngineStreamBroken(self.pipe.cut_at_ceiling()))
                    if out and (sent := await self._emit(out)) is not None:
                        return sent
                    continue
                except Exception:  # a body's own bug: it ends the response; the swallowed cancel is not left behind
                    self._swallowed()
                    raise
            try:
                out = self.pipe.feed(chunk)
            except SseError as e:
                out = await self._broke(cur, EngineStreamBroken(str(e)))
            if out and (sent := await self._emit(out)) is not None:
                return sent

    def _at_ceiling(self) -> None:
        """gateway.stream_max_s since the first byte: the next read is cut (EventPipe.expire), and a wait for one is
        cut now (not when a client hangs up already: its cut is under way): a wrapper (a fan-out, a tool loop) may
        yield nothing for as long as its engines send nothing it passes on."""
        self._timer = None
        self.pipe.expire()
        task = self._task
        if self._waiting and task is not None and not task.cancelling():
            self._ceiling_cut = True
            task.cancel("the answer's ceiling (gateway.stream_max_s)")

    def _caught_at_ceiling(self) -> bool:
        """Whether the CancelledError being handled is the ceiling's alone (then the answer is cut, not raised on)."""
        cut, self._ceiling_cut = self._ceiling_cut, False
        return cut and self._uncancel() == 0

    def _swallowed(self) -> bool:
        """Past a read that did not raise the ceiling's cancel (the engine's body swallowed it, then returned a read,
        ended or raised EngineError): the cancel taken back, so the task's cancel count is 0 again (left at 1, an
        asyncio.timeout in the task no longer raises TimeoutError on 3.11); True when there was one."""
        if not self._ceiling_cut:
            return False
        self._ceiling_cut = False
        self._uncancel()
        return True

    def _uncancel(self) -> int:
        return 1 if self._task is None else self._task.uncancel()

    async def _emit(self, out: bytes) -> bytes | None:
        """Client bytes: returned for the response's `send`; with a wire, written on it (None: go on), waiting
        while the client's socket is full, or b"" when the client is gone (the response stops)."""
        wire = self.wire
        if wire is None:
            return out
        if wire.closed or (not wire.write(out) and await wire.drain()):
            return b""
        return None

    async def _pump(self, cur: Opened) -> bool:
        """Relay from the engine connection's read callback straight to the client until something needs this
        task (see the module's docstring); True when the client is gone."""
        wire = self.wire
        body = cur.upstream.body
        attach = getattr(body, "attach", None)
        if wire is None or attach is None:
            return False
        feed, write = self.pipe.feed, wire.write

        def sink(data: bytes) -> bool:
            try:
                out = feed(data)
            except Exception as e:  # noqa: BLE001 -- not swallowed: __anext__ books an SseError, raises the rest
                self._sink_error = e
                return False
            return write(out) if out else True

        detached = attach(sink)
        if detached is None:
            return wire.closed
        detach = body.detach  # type: ignore[attr-defined]

        def gone(_: asyncio.Future[None]) -> None:
            detach()

        wire.gone.add_done_callback(gone)
        try:
            await detached
        finally:
            wire.gone.remove_done_callback(gone)
            detach()
        return wire.closed

    async def _broke(self, cur: Opened, e: EngineError) -> bytes:
        """The engine failed mid-stream: continue elsewhere (b"") or end with an error event."""
        self._current = None
        proxy, record, delivered = self._proxy, self._record, self.pipe.delivered
        if self.pipe.sse and self.pipe.ended(b""):  # its [DONE] or finish_reason was relayed: the client has it whole
            log.warning("endpoint %s: the connection failed after the answer ended (%s); the answer stands",
                        cur.cand.endpoint_id, e)
            self.live = False
            try:
                await cur.stack.aclose()
            finally:  # booked even when a cancel cuts the close short: in flight never stays one high
                record.usage = proxy.finish(cur.cand, record, cur.upstream.status, self.pipe.usage)
            return b""
        await proxy.abandon(cur, record, f"stream broke: {e}")
        self._book_unfinished()
        if delivered.done or (self.pipe.track and delivered.finished):
            return b""
        # not continued: what the redaction holds back goes out before the error event (held_at_cut)
        if self.pipe.past is not None:  # the engine's own answer is the fault: no other engine continues it
            return self.pipe.held_at_cut() + proxy.error_event(record, f"{e}; not continued")
        if not self._continuable:
            reason = why_not_continuable(self._body, delivered) or "no other endpoint of the same model family"
            return self.pipe.held_at_cut() + proxy.error_event(record, f"{e}; could not continue: {reason}")
        nxt, reason = await proxy.continue_stream(self._path, self._body, delivered, self._spare, record)
        if nxt is None:
            return self.pipe.held_at_cut() + proxy.error_event(record, f"{e}; could not continue: {reason}")
        self.pipe.continuation(_is_sse(nxt), proxy.isolates(nxt.cand))
        self._current, self._first = nxt, nxt.first
        return b""

    def engine_failed(self, why: str) -> None:
        """A front door read an error in the engine's stream (the engine's own error event, or a chunk it cannot
        translate) and ends its answer there (chat_events): when it closes the relay, the engine is booked as broken
        mid-stream (its circuit counts it, the record says `interrupted`), not as a client that went away. Nothing
        when the error is the relay's own (its engine already released)."""
        self._engine_failure = why

    def steer(self) -> dict[str, int] | None:
        """Stop here for a steer (relay_response.SteerCut): nothing more is read; when the response closes the relay,
        its engine request is closed and the answer booked `steered` (its own outcome, not a client's hang-up),
        with the usage returned now: the prompt (the gateway's count, as a client that leaves early is charged it)
        and what the engine streamed (Delivered.tokens: one token a chunk, at least the text's estimate; one token a
        chunk had a steered answer charged next to nothing), not the reservation. None where it cannot stop (the
        answer has ended; not the engine's own stream)."""
        delivered = self.pipe.delivered
        if (not self.live or self._current is None or not self._direct or not self.pipe.track
                or delivered.finished or delivered.done):  # its end is read already: it ends as it is
            return None
        prompt = self._record.prompt_tokens
        done = delivered.tokens()
        self._steered = {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}
        return self._steered

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def aclose(self) -> None:
        cur, self._current = self._current, None
        self.live = False
        self._stop_timer()
        if cur is not None and self._steered is not None and self._engine_failure is None:
            try:
                await cur.stack.aclose()
            finally:  # booked even when a cancel cuts the close short
                self._record.usage = self._proxy.finish(cur.cand, self._record, 200, self._steered, outcome=STEERED)
        elif cur is not None and self._engine_failure is not None:
            await self._proxy.abandon(cur, self._record, f"stream broke: {self._engine_failure}")
            self._record.status = "interrupted"
            self._book_unfinished()
        elif cur is not None:  # the client went away (or the gateway stops): release the engine
            cut: BaseException | None = None
            try:
                await cur.stack.aclose()
            except BaseException as e:  # booked by what it is (Proxy.book_cut: a cancel is the client's 499), raised
                cut = e
                raise
            finally:  # booked even when a cancel cuts the close short
                self._proxy.book_cut(cur.cand, self._record, cut)
                self._book_unfinished()

    def _book_unfinished(self) -> None:
        """An answer that ended before its end (its client gone, a cancel, its engine failed): the engine's count
        where it sent one, and the output tokens its client received where the stream is the engine's own
        (`direct`; DecisionRecord.delivered_tokens), which
        Exchange.used_tokens charges with the prompt instead of the reservation."""
        self._record.usage = self.pipe.usage
        if self.pipe.counts:  # the engine's own stream: what it generated is what it streamed
            self._record.delivered_tokens = self.pipe.delivered.tokens()


def _is_sse(opened: Opened) -> bool:
    return opened.upstream.headers.get("content-type", "").startswith("text/event-stream")
