"""AnswerStream, the reader of a constrained turn's answer as its engine streams it: what it keeps while it reads."""

from __future__ import annotations

from aigrid.agents.answer_stream import MAX_HEAD, AnswerStream
from tests.agents.copied_text import Copied


def test_an_answer_a_character_an_event_is_read_without_copying_all_before_it_each_time() -> None:
    """(7 Dec 2026, thirty-sixth session, ATK5) The stream kept the turn's whole text and added each fragment to it, a
    copy of all before it each time: an engine sending its answer a character an event (600,000 events, 28 MB over
    127.0.0.1) cost 28 s of the gateway's CPU, with the loop's own copies (test_loop_bounds). Now only what is not
    read yet is kept."""
    n = 20_000
    copied = Copied()
    stream = AnswerStream()
    got = [stream.feed('{"answer": "')]
    got += [stream.feed(copied.fragment("a")) for _ in range(n)]
    got += [stream.feed(copied.fragment(piece)) for piece in ("\\", "n", "b", '"', "}")]  # an escape cut in two
    assert "".join(got) == "a" * n + "\nb"
    assert copied.chars <= 2 * n, copied.chars  # each fragment added to at most the unread escape; whole: n * n / 2


def test_the_answer_read_a_character_at_a_time_is_the_answer() -> None:
    text = 'a \\"quoted\\" line\\nand \\u00e9 \\ud83d\\ude00 end'
    stream = AnswerStream()
    got = [stream.feed(c) for c in '{"answer": "' + text + '"}']
    assert "".join(got) == 'a "quoted" line\nand é 😀 end'
    value = AnswerStream()
    pieces = [value.feed(c) for c in '{"answer": {"k": [1, "a\\"b"], "n": null}} trailing']
    assert "".join(pieces) == value.value == '{"k":[1,"a\\"b"],"n":null}'


def test_a_head_that_never_says_what_it_is_is_no_answer_past_its_bound() -> None:
    """A head of spaces (or a first key that never ends) was read again from its start at every fragment, as long as
    it grew: now, past MAX_HEAD characters, the turn is no answer streamed (its end still reads it whole)."""
    copied = Copied()
    stream = AnswerStream()
    assert stream.feed("{") == ""
    for _ in range(20_000):
        assert stream.feed(copied.fragment(" ")) == ""
    assert stream.is_answer is False
    assert copied.chars <= MAX_HEAD * MAX_HEAD, copied.chars  # read to the bound, then not kept; whole: 2 x 10^8
    key = AnswerStream()
    key.feed('{"')
    for _ in range(MAX_HEAD):
        key.feed("a")
    assert key.is_answer is False
