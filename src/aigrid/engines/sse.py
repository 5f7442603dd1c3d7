"""Server-sent events: the one codec of the project (WHATWG HTML, "9.2.6 Interpreting an event stream").

Every reader of an SSE stream uses SseDecoder: the gateway's relay (proxy.py, continuation, usage metering,
output filter), the front doors that translate a chat stream (chat_events.py), the agent's tool loop
(agents/loop.py), the Responses API's WebSocket mode (gateway/responses_socket.py) and the load generator
(bench/http.py). It follows the spec:
- lines end with CRLF, LF or CR, and a CR that ends one read may be the first half of a CRLF in the next;
- a blank line dispatches the event; `data:` lines of one event are joined with "\\n"; one space after the
  colon is dropped; `event`, `id` (unless it holds NUL) and `retry` (digits only) are read, other fields
  ignored; lines starting with ":" are comments (kept on the event: the agent loop's step reports use them);
- a leading UTF-8 byte order mark is dropped; a block with neither data nor comment dispatches nothing.
It is incremental and linear: a read is scanned once, an unfinished line or event is kept as a list of
pieces and joined once when it completes (no re-scan of a growing buffer), and an event larger than
`max_event_bytes` raises SseError instead of growing without bound.

`feed()` also tells where the last complete event ends in the raw bytes (`complete`), so that a relay can
forward the engine's own bytes untouched, cut only at event boundaries, and hold back the unfinished tail.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

_EOL = re.compile(rb"(\r\n|\r|\n)")
_BOM = b"\xef\xbb\xbf"
DONE = b"[DONE]"
"""The OpenAI streams' last data payload."""
CUT_SHORT = "the engine's stream ended before the answer did (no finish_reason, no [DONE])"
"""Why a stream that closed cleanly before its [DONE] and without a finish_reason is broken (gateway/relay.py for
one stream, fan_out.py for each of n)."""
MAX_EVENT_BYTES = 4 * 1024 * 1024


class SseError(ValueError):
    """The stream cannot be read as server-sent events (an event larger than the decoder's limit)."""


class Quiet:
    """An engine stream's reads that complete no data event (comments, keep-alives, pieces of one event): the read
    timeout (gateway.stream_idle_s) sees reads, not events, so an engine that sent only those was never silent. Past
    `limit` seconds of such reads, read() raises SseError. The one implementation for the relay (relay.EventPipe),
    the fan-out of `n` choices (engines/fan_out.py, each engine stream's) and a tool loop's model turn
    (agents/loop.py), each telling it every read's events (after()); a read that completes a data event sets `since`
    to None."""

    __slots__ = ("limit", "since", "_clock")

    def __init__(self, limit: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.since: float | None = None
        """When the reads without a data event began (None: the last read held one)."""
        self._clock = clock

    def read(self) -> None:
        """A read that completed no data event."""
        now = self._clock()
        if self.since is None:
            self.since = now
        elif now - self.since > self.limit:
            raise SseError(f"no data event for {self.limit:g} s (only comments or pieces of one)")

    def after(self, events: Sequence[Event]) -> None:
        """A read and the events it completed: one holding data ends the quiet; none (or no event), read()."""
        if any(ev.data is not None for ev in events):
            self.since = None
        else:
            self.read()


@dataclass(slots=True)
class Event:
    data: bytes | None
    """The event's data lines joined by LF; None when the block had no data line (comments only)."""
    event: bytes = b""
    """The event type; empty for the default ("message")."""
    id: bytes | None = None
    """The stream's last event id when this event was dispatched."""
    retry: int | None = None
    comments: tuple[bytes, ...] = ()
    """Comment lines of the block, without the leading ":"."""


def encode(data: bytes, *, event: bytes = b"", id: bytes | None = None) -> bytes:
    """One event, LF-framed; data holding line breaks becomes several data lines."""
    head = (b"event: " + event + b"\n" if event else b"") + (b"id: " + id + b"\n" if id is not None else b"")
    if b"\n" not in data and b"\r" not in data:
        return head + b"data: " + data + b"\n\n"
    return head + b"".join(b"data: " + line + b"\n" for line in _EOL.sub(b"\n", data).split(b"\n")) + b"\n"


def comment(text: bytes) -> bytes:
    """A comment block (clients ignore it; keeps a connection alive or carries side information)."""
    return b":" + text + b"\n\n"


class SseDecoder:
    """Feed the bytes of one stream as they arrive; get its complete events back."""

    __slots__ = ("_partial", "_raw", "_raw_size", "_skip_lf", "_started", "_data", "_event",
                 "_comments", "_last_id", "_retry", "_limit", "complete")

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._partial: list[bytes] = []  # pieces of the current unterminated line
        self._raw: list[bytes] = []  # raw bytes since the last event boundary
        self._raw_size = 0
        self._skip_lf = False  # the last read ended in CR: a LF at the start of the next one completes a CRLF
        self._started = False
        self._data: list[bytes] = []
        self._event = b""
        self._comments: list[bytes] = []
        self._last_id: bytes | None = None
        self._retry: int | None = None
        self._limit = max_event_bytes
        self.complete = b""
        """After feed(): the raw bytes of the events completed by that read (up to and including their blank
        line), with whatever earlier reads held back; b"" when the read completed no event."""

    @property
    def pending(self) -> bytes:
        """Raw bytes held back: the start of an event that is not complete yet."""
        return b"".join(self._raw)

    def feed(self, chunk: bytes) -> list[Event]:
        if not self._started and chunk:
            self._started = True
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
        if not chunk:
            self.complete = b""
            return []
        if not self._raw and not self._skip_lf and chunk[-2:] == b"\n\n" and b"\r" not in chunk:
            return self._whole(chunk)
        text, pos = chunk, 0
        if self._skip_lf:  # the LF of a CRLF whose CR ended the last read: kept in the raw bytes, not parsed
            self._skip_lf = False
            if chunk[0] == 10:
                text, pos = chunk[1:], 1
        if b"\r" in text:
            parts = _EOL.split(text)
            lines, ends = parts[0::2], [len(t) for t in parts[1::2]]
            self._skip_lf = text[-1] == 13
        else:
            lines, ends = text.split(b"\n"), None
        rest = lines.pop()
        events: list[Event] = []
        cut = 0
        for i, line in enumerate(lines):
            pos += len(line) + (1 if ends is None else ends[i])
            if self._partial:
                self._partial.append(line)
                line = b"".join(self._partial)
                self._partial = []
            if line:
                self._field(line)
                continue
            cut = pos
            if self._data or self._comments:
                events.append(self._dispatch())
            else:
                self._event = b""
        if rest:
            self._partial.append(rest)
        if cut:
            self._raw.append(chunk[:cut] if cut < len(chunk) else chunk)
            self.complete = b"".join(self._raw) if len(self._raw) > 1 else self._raw[0]
            tail = chunk[cut:] if cut < len(chunk) else b""
            self._raw, self._raw_size = ([tail], len(tail)) if tail else ([], 0)
        else:
            self.complete = b""
            self._raw.append(chunk)
            self._raw_size += len(chunk)
        if self._raw_size > self._limit:
            raise SseError(f"an event is larger than {self._limit} bytes")
        return events

    def data_only(self, chunk: bytes) -> list[bytes] | None:
        """The data payloads of a read that holds only whole one-line `data: ...` events, LF-framed, at an
        event boundary (how engines write their tokens), as feed() would dispatch them, without building
        events; None for any other read (nothing consumed: give it to feed()). Sets `complete` like feed()."""
        if self._raw or self._skip_lf or not self._started or chunk[-2:] != b"\n\n" or b"\r" in chunk:
            return None
        if chunk[:6] == b"data: " and chunk.find(b"\n") == len(chunk) - 2:
            self.complete = chunk
            return [chunk[6:-2]]
        blocks = chunk[:-2].split(b"\n\n")
        for block in blocks:
            if block[:6] != b"data: " or b"\n" in block:
                return None
        self.complete = chunk
        return [block[6:] for block in blocks]

    def _whole(self, chunk: bytes) -> list[Event]:
        """The common read: whole LF-framed events (an engine writes one or more events per write)."""
        events: list[Event] = []
        for block in chunk[:-2].split(b"\n\n"):
            if block[:6] == b"data: " and b"\n" not in block:
                events.append(Event(block[6:], b"", self._last_id, self._retry))
                continue
            for line in block.split(b"\n"):
                if line:
                    self._field(line)
                elif self._data or self._comments:
                    events.append(self._dispatch())
                else:
                    self._event = b""
            if self._data or self._comments:
                events.append(self._dispatch())
            else:
                self._event = b""
        self.complete = chunk
        return events

    def flush(self) -> Event | None:
        """At the end of the stream: an event that lacked only its blank line. The spec discards it; the
        lenient readers (a final event of a body cut short) take it."""
        if self._partial:
            line = b"".join(self._partial)
            self._partial = []
            self._field(line)
        self._raw, self._raw_size = [], 0
        if self._data or self._comments:
            return self._dispatch()
        return None

    def _field(self, line: bytes) -> None:
        if line[0] == 58:  # ":" comment
            self._comments.append(line[1:])
            return
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value
        elif name == b"id":
            if b"\0" not in value:
                self._last_id = value
        elif name == b"retry":
            if (value.isascii() and value.isdigit()):
                self._retry = int(value)

    def _dispatch(self) -> Event:
        data = self._data
        ev = Event(data[0] if len(data) == 1 else (b"\n".join(data) if data else None), self._event,
                   self._last_id, self._retry, tuple(self._comments))
        self._data, self._event, self._comments = [], b"", []
        return ev


async def rewritten(body: AsyncIterator[bytes], rewrite: Callable[[bytes, bytes], bytes | None]) -> AsyncIterator[bytes]:
    """A stream's events, each data payload but `[DONE]` given to `rewrite(data, event name)`: the bytes to send
    instead (one or more encoded events), or None to send it as it was (re-framed, with its comments). For a
    wrapper that changes some events of an engine's stream (engines/legacy_completions.py, stop_words.py)."""
    decoder = SseDecoder()
    async for chunk in body:
        out: list[bytes] = []
        for ev in decoder.feed(chunk):
            data = ev.data
            new = None if data is None or data == DONE else rewrite(data, ev.event)
            if new is None:
                new = b"".join(comment(c) for c in ev.comments) + (encode(data, event=ev.event) if data is not None else b"")
            out.append(new)
        if out:
            yield b"".join(out)
    tail = decoder.flush()
    if tail is not None and tail.data is not None:
        yield encode(tail.data, event=tail.event)
