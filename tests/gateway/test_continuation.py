"""gateway/continuation.why_not_continuable: a broken stream whose output a grammar constrains is not continued from
its text on another engine (the grammar would start again at its root on the delivered text)."""

from __future__ import annotations

import pytest

from aigrid.gateway.continuation import Delivered, EchoStrip, continuation_body, why_not_continuable
from tests.agents.copied_text import Copied, Counted

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


@pytest.mark.parametrize("field,value", [("structured_outputs", {"grammar": 'root ::= "a"'}),
                                         ("structured_outputs", {"regex": "[a-z]+"}),
                                         ("structural_tag", '{"type": "structural_tag"}'),
                                         ("ebnf", 'root ::= "a"'), ("regex", "[a-z]+"),
                                         ("grammar", 'root ::= "a"'), ("guided_grammar", 'root ::= "a"')])
def test_a_grammar_constrained_answer_is_not_continued(field: str, value: object) -> None:
    """(Review RV1 of fe0745b7) vLLM's `structured_outputs` (its only grammar field since v0.12) and `structural_tag`,
    SGLang's `ebnf` and `regex` were continued as free text; `grammar` and `guided_grammar` were not."""
    delivered = Delivered(text=["ab"], chunks=1, chars=2)
    assert why_not_continuable(CHAT, delivered) is None
    assert why_not_continuable({**CHAT, field: value}, delivered) == \
        f"the request uses '{field}', which cannot be resumed exactly"


@pytest.mark.parametrize("limit,least,chunks,sent_limit,sent_least", [(300, 200, 150, 150, 50),
                                                                     (300, 100, 150, 150, 0),
                                                                     (None, 80, 30, None, 50)])
def test_a_continuations_min_tokens_counts_what_was_delivered(limit: int | None, least: int, chunks: int,
                                                              sent_limit: int | None, sent_least: int) -> None:
    """A continuation's max_tokens is the budget less what was delivered; its min_tokens (vLLM's, SGLang's) went on
    whole, so {"max_tokens": 300, "min_tokens": 200} broken after 150 tokens asked the spare for min_tokens 200 past
    max_tokens 150: vLLM's 400, every spare refusing it, the client's stream cut. The answer's least is its whole,
    delivered part included: the spare is asked for the rest of it, never past its max_tokens."""
    body = {**CHAT, "min_tokens": least, **({} if limit is None else {"max_tokens": limit})}
    sent = continuation_body(body, Delivered(text=["x"] * chunks, chunks=chunks, chars=chunks), "vllm")
    assert sent.get("max_tokens") == sent_limit and sent["min_tokens"] == sent_least, sent
    assert body["min_tokens"] == least  # the client's body is not changed


def test_a_continuation_of_a_body_with_both_limits_sends_the_rest_in_both() -> None:
    """A body may set max_tokens and max_completion_tokens (the budget is max_completion_tokens: output_limit, as vLLM
    reads it, `max_completion_tokens or max_tokens`). The rest of the budget was written to max_tokens alone, so the
    spare kept the whole max_completion_tokens and could decode it again past what was delivered."""
    body = {**CHAT, "max_tokens": 1000, "max_completion_tokens": 500}
    sent = continuation_body(body, Delivered(text=["x"] * 100, chunks=100, chars=100), "vllm")
    assert sent["max_completion_tokens"] == 400 and sent["max_tokens"] == 400, sent


def test_the_tokens_delivered_count_reasoning_and_tool_calls_too() -> None:
    """What a client that hung up is charged for its output where the engine's count never came (Delivered.tokens):
    one token a chunk of generated output, at least its characters over 4; a reasoning model's thinking and a tool
    call's arguments are output too (its text alone counted, a hang-up mid-thinking would be charged the prompt
    only)."""
    d = Delivered(keep_text=False)
    d.observe({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    d.observe({"choices": [{"index": 0, "delta": {"reasoning_content": "Let me think"}}]})
    d.observe({"choices": [{"index": 0, "delta": {"reasoning": "x" * 40}}]})
    d.observe({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"a": 1}'}}]}}]})
    d.observe({"choices": [{"index": 0, "delta": {"content": "Hi"}}]})
    assert (d.chunks, d.text) == (1, [])  # the text's count (a continuation's budget) is the text's alone
    assert d.tokens() == (12 + 40 + 8 + 2) // 4  # 15: more than its 4 chunks
    few = Delivered()
    few.observe({"choices": [{"index": 0, "delta": {"content": "a"}}, {"index": 1, "delta": {"reasoning": "b"}}]})
    assert few.tokens() == 2  # one a chunk where they are short


def test_an_echo_a_character_a_piece_is_not_cut_off_the_prefill_at_every_piece() -> None:
    """(7 Dec 2026, thirty-sixth session, brief QUAD) An engine that echoes a long prefill (a client's final assistant
    turn on the Messages door, the text delivered before a continuation) a piece at a time had the rest of it cut off
    as a new string at every piece: a copy of all the rest each time, quadratic in the prefill. Now it is read in
    place; what the client gets is unchanged (each character once)."""
    n = 20_000
    copied = Copied()
    strip = EchoStrip(Counted("a" * n, copied))
    assert [strip("a") for _ in range(n - 1)] == [""] * (n - 1)
    assert strip("ab") == "b" and strip("c") == "c"
    assert copied.chars <= n, copied.chars  # whole: n * n / 2 (2 x 10^8)


@pytest.mark.parametrize(("prefill", "pieces", "sent"), [
    ("Hello", ["Hel", "lo", " world"], ["", "", " world"]),
    ("Hello", ["Hello world", "!"], [" world", "!"]),
    ("Hello", ["He", "y"], ["", "y"]),  # not an echo after all: new text from there (what was dropped stays dropped)
    ("Hello", ["Bye", "Hello"], ["Bye", "Hello"]),
    ("", ["Hello"], ["Hello"]),
])
def test_the_echo_of_a_prefill_is_dropped_once(prefill: str, pieces: list[str], sent: list[str]) -> None:
    strip = EchoStrip(prefill)
    assert [strip(p) for p in pieces] == sent
