"""The streamed output filter (gateway/output_filter.py): what is held back for redaction reaches the client
in the chunk that ends the choice, whatever shape that chunk has."""

from __future__ import annotations

from aigrid.gateway.output_filter import OutputFilter
from aigrid.security.firewall.streaming import StreamingRedactor


def chunk(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
    return {"id": "c1", "object": "chat.completion.chunk", "model": "m", "created": 1,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_the_held_back_text_goes_in_a_finish_chunk_with_an_empty_delta() -> None:
    """OpenAI, vLLM and llama.cpp end a choice with `"delta": {}` and its finish_reason. The redactor's held
    text (up to ~100 characters: a short answer whole) was sent after it, in a chunk with no id, model or
    finish_reason, which a client that stops reading at finish_reason never sees."""
    f = OutputFilter(StreamingRedactor(), strip_usage=False)
    sent = [f.event(chunk({"role": "assistant", "content": ""})), f.event(chunk({"content": "Write to "})),
            f.event(chunk({"content": "jane.doe@example.com today"})), f.event(chunk({}, "stop"))]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in sent)  # type: ignore[index]
    assert text == "Write to [REDACTED:EMAIL] today"
    assert sent[-1]["choices"][0]["delta"]["content"] == "Write to [REDACTED:EMAIL] today"  # type: ignore[index]
    assert f.flush_event() is None  # nothing left for a chunk of its own


def test_the_held_back_text_goes_in_a_finish_chunk_without_a_delta() -> None:
    """A finish chunk with no "delta" key at all (or "delta": null) still had the held text sent after its
    finish_reason; now the delta is added and the text goes in it. A completions chunk without text takes it
    as its text."""
    for last in ({"index": 0, "finish_reason": "stop"}, {"index": 0, "delta": None, "finish_reason": "stop"}):
        f = OutputFilter(StreamingRedactor(), strip_usage=False)
        sent = [f.event(chunk({"content": "Write to jane.doe@example.com"})),
                f.event({"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [dict(last)]})]
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in sent)  # type: ignore[index]
        assert text == "Write to [REDACTED:EMAIL]", sent
        assert sent[-1]["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]
        assert f.flush_event() is None, last
    f = OutputFilter(StreamingRedactor(), strip_usage=False)
    first = f.event({"object": "text_completion", "choices": [{"index": 0, "text": "Write to jane.doe@example.com"}]})
    end = f.event({"object": "text_completion", "choices": [{"index": 0, "finish_reason": "length"}]})
    assert first["choices"][0]["text"] + end["choices"][0]["text"] == "Write to [REDACTED:EMAIL]"  # type: ignore[index]
    assert f.flush_event() is None


def test_a_completions_finish_chunk_with_a_null_text_takes_the_held_back_text() -> None:
    """`"text": null` in the completions chunk that ends a choice was not taken as no text ("text" was in the
    choice): the held text was sent after finish_reason, in a chunk of its own."""
    f = OutputFilter(StreamingRedactor(), strip_usage=False)
    first = f.event({"object": "text_completion", "choices": [{"index": 0, "text": "Write to jane.doe@example.com"}]})
    end = f.event({"object": "text_completion", "choices": [{"index": 0, "text": None, "finish_reason": "stop"}]})
    assert first["choices"][0]["text"] + end["choices"][0]["text"] == "Write to [REDACTED:EMAIL]"  # type: ignore[index]
    assert end["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]
    assert f.flush_event() is None
