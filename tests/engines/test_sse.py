"""The one SSE codec: spec framing (LF, CRLF, CR), comments, multi-line data, fields, and any split of the
stream across reads giving the same events and the same raw event boundaries."""

from __future__ import annotations

import pytest

from aigrid.engines.sse import Event, Quiet, SseDecoder, SseError, encode


def decode(stream: bytes, cuts: list[int] | None = None) -> tuple[list[Event], bytes, bytes]:
    """Events, the concatenated `complete` bytes and what is pending, feeding `stream` cut at `cuts`."""
    d = SseDecoder()
    events, complete = [], b""
    bounds = [0, *(cuts or []), len(stream)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        events += d.feed(stream[a:b])
        complete += d.complete
    return events, complete, d.pending


def data_of(events: list[Event]) -> list[bytes | None]:
    return [e.data for e in events]


STREAMS = {
    "lf": b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n',
    "crlf": b'data: {"a":1}\r\n\r\ndata: {"b":2}\r\n\r\ndata: [DONE]\r\n\r\n',
    "cr": b'data: {"a":1}\r\rdata: {"b":2}\r\rdata: [DONE]\r\r',
    "mixed": b'data: {"a":1}\r\n\ndata: {"b":2}\n\r\ndata: [DONE]\r\r\n',
}


@pytest.mark.parametrize("name", list(STREAMS))
def test_line_ends(name: str) -> None:
    events, complete, pending = decode(STREAMS[name])
    assert data_of(events) == [b'{"a":1}', b'{"b":2}', b"[DONE]"]
    assert pending == b""


@pytest.mark.parametrize("name", list(STREAMS))
def test_every_split_gives_the_same_events(name: str) -> None:
    stream = STREAMS[name]
    whole, _, _ = decode(stream)
    for i in range(1, len(stream)):
        for j in range(i, len(stream), 7):
            events, complete, pending = decode(stream, [i, j])
            assert events == whole, (i, j)
            # the raw bytes are passed on untouched, cut at event boundaries only
            assert complete + pending == stream


def test_byte_by_byte() -> None:
    stream = b"event: add\r\nid: 7\r\ndata: line one\r\ndata: line two\r\n\r\n: keep-alive\r\n\r\n"
    events, _, _ = decode(stream, list(range(1, len(stream))))
    assert events[0] == Event(b"line one\nline two", b"add", b"7", None, ())
    assert events[1] == Event(None, b"", b"7", None, (b" keep-alive",))


def test_fields_per_spec() -> None:
    stream = (b"\xef\xbb\xbfdata:no space\n\n"  # a BOM at the start is dropped; no space after the colon
              b"data:  two spaces\n\n"  # only one space is dropped
              b"data\n\n"  # a field with no colon: empty value
              b"retry: 2500\nid: a\0b\ndata: x\n\n"  # an id holding NUL is ignored
              b"retry: soon\nfoo: bar\ndata: y\n\n"  # not digits: ignored; unknown fields ignored
              b"event: only-type\n\n")  # no data: nothing dispatched
    events, _, _ = decode(stream)
    assert data_of(events) == [b"no space", b" two spaces", b"", b"x", b"y"]
    assert events[3].id is None and events[3].retry == 2500
    assert events[4].retry == 2500 and events[4].event == b""


def test_complete_cuts_at_the_last_event_boundary() -> None:
    d = SseDecoder()
    assert d.feed(b"data: a\n\ndata: b") == [Event(b"a")]
    assert d.complete == b"data: a\n\n" and d.pending == b"data: b"
    assert d.feed(b"\r\n") == [] and d.complete == b""
    assert d.feed(b"\r\ndata: c\r\n\r\n") == [Event(b"b"), Event(b"c")]
    assert d.complete == b"data: b\r\n\r\ndata: c\r\n\r\n" and d.pending == b""


def test_flush_takes_an_event_missing_its_blank_line() -> None:
    d = SseDecoder()
    assert d.feed(b'data: {"usage": 1}\ndata: more') == []
    assert d.flush() == Event(b'{"usage": 1}\nmore')
    assert d.flush() is None


def test_an_oversized_event_is_an_error_not_unbounded_memory() -> None:
    d = SseDecoder(max_event_bytes=1000)
    d.feed(b"data: " + b"x" * 600)
    with pytest.raises(SseError):
        d.feed(b"x" * 600)


def test_large_event_in_small_reads_is_joined_once() -> None:
    payload = b"y" * 300_000
    stream = b"data: " + payload + b"\r\n\r\n"
    d = SseDecoder()
    events: list[Event] = []
    for i in range(0, len(stream), 97):
        events += d.feed(stream[i:i + 97])
    assert events == [Event(payload)]
    assert d.complete == stream


def test_encode_round_trips() -> None:
    for data in (b'{"a": 1}', b"two\nlines", b"cr\rline", b""):
        events, _, _ = decode(encode(data, event=b"e", id=b"9"))
        assert events == [Event(data.replace(b"\r", b"\n"), b"e", b"9")]


def test_whole_event_reads_match_byte_by_byte() -> None:
    """Reads of whole LF-framed events take a shortcut; it must agree with the general path."""
    blocks = [b"data: a\n\n", b"event: x\nid: 3\ndata: b\ndata: c\n\n", b": note\n\n", b"\n\ndata: d\n\n",
              b"data: e\n\ndata: f\n\n", b"event: lonely\n\n", b"data: g\n\n"]
    stream = b"".join(blocks)
    d = SseDecoder()
    fast = [e for b in blocks for e in d.feed(b)]
    assert fast == decode(stream, list(range(1, len(stream))))[0]
    assert data_of(fast) == [b"a", b"b\nc", None, b"d", b"e", b"f", b"g"]
    assert fast[1].event == b"x" and fast[2].id == b"3" and fast[-1].event == b""


def test_data_only_reads_agree_with_feed() -> None:
    """data_only() (the relay's lean path) gives the data feed() would, for the reads it takes, and declines
    every other read without consuming it, so feeding the declined ones gives the same events as feed alone."""
    reads = [b"data: first\n\n", b"data: a\n\n", b"data: b\n\ndata: c\n\n", b"data: [DONE]\n\n",
             b"event: x\ndata: y\n\n", b"data:nospace\n\n", b"data: two\ndata: lines\n\n", b": note\n\n",
             b"data: crlf\r\n\r\n", b"data: half", b" done\n\n", b"data: after\n\n", b"\n\ndata: gap\n\n",
             b"data: d\n\n\n\n", b"id: 5\n\n", b"data: e\n\n"]
    plain = SseDecoder()
    expected = [e for r in reads for e in plain.feed(r)]
    d, got, taken = SseDecoder(), [], []
    for r in reads:
        datas = d.data_only(r)
        if datas is None:
            got += [e.data for e in d.feed(r)]
        else:
            taken.append(r)
            got += datas
            assert d.complete == r
    assert got == data_of(expected)
    assert taken == [b"data: a\n\n", b"data: b\n\ndata: c\n\n", b"data: [DONE]\n\n", b"data: after\n\n",
                     b"data: e\n\n"]


def test_quiet_after_a_read_s_events_counts_reads_without_data() -> None:
    """sse.Quiet.after, the relay's, the fan-out's and the tool loop's one rule: a read completing no event or only
    comments is quiet; past `limit` seconds of such reads SseError; a read completing a data event ends the quiet."""
    now = [0.0]
    quiet = Quiet(5.0, lambda: now[0])
    quiet.after([])
    assert quiet.since == 0.0
    now[0] = 4.0
    quiet.after([Event(None, comments=(b"keep-alive",))])
    quiet.after([Event(None), Event(b"{}")])  # a data event among them
    assert quiet.since is None
    now[0] = 10.0
    quiet.after([Event(None)])
    now[0] = 15.5
    with pytest.raises(SseError, match="no data event for 5 s"):
        quiet.after([])
