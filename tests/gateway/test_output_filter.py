"""The streamed output filter (gateway/output_filter.py): what is held back for redaction reaches the client
in the chunk that ends the choice, whatever shape that chunk has."""

from __future__ import annotations

import orjson

from aigrid.gateway.output_filter import OutputFilter, redact_json_answer
from aigrid.security.firewall.injection import InjectionModel
from aigrid.security.firewall.pipeline import Action, Firewall, FirewallPolicy, Verdict


def chunk(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
    return {"id": "c1", "object": "chat.completion.chunk", "model": "m", "created": 1,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_the_held_back_text_goes_in_a_finish_chunk_with_an_empty_delta() -> None:
    """OpenAI, vLLM and llama.cpp end a choice with `"delta": {}` and its finish_reason. The redactor's held
    text (up to ~100 characters: a short answer whole) was sent after it, in a chunk with no id, model or
    finish_reason, which a client that stops reading at finish_reason never sees."""
    f = OutputFilter(True, strip_usage=False)
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
        f = OutputFilter(True, strip_usage=False)
        sent = [f.event(chunk({"content": "Write to jane.doe@example.com"})),
                f.event({"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [dict(last)]})]
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in sent)  # type: ignore[index]
        assert text == "Write to [REDACTED:EMAIL]", sent
        assert sent[-1]["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]
        assert f.flush_event() is None, last
    f = OutputFilter(True, strip_usage=False)
    first = f.event({"object": "text_completion", "choices": [{"index": 0, "text": "Write to jane.doe@example.com"}]})
    end = f.event({"object": "text_completion", "choices": [{"index": 0, "finish_reason": "length"}]})
    assert first["choices"][0]["text"] + end["choices"][0]["text"] == "Write to [REDACTED:EMAIL]"  # type: ignore[index]
    assert f.flush_event() is None


def test_a_completions_finish_chunk_with_a_null_text_takes_the_held_back_text() -> None:
    """`"text": null` in the completions chunk that ends a choice was not taken as no text ("text" was in the
    choice): the held text was sent after finish_reason, in a chunk of its own."""
    f = OutputFilter(True, strip_usage=False)
    first = f.event({"object": "text_completion", "choices": [{"index": 0, "text": "Write to jane.doe@example.com"}]})
    end = f.event({"object": "text_completion", "choices": [{"index": 0, "text": None, "finish_reason": "stop"}]})
    assert first["choices"][0]["text"] + end["choices"][0]["text"] == "Write to [REDACTED:EMAIL]"  # type: ignore[index]
    assert end["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]
    assert f.flush_event() is None


def test_reasoning_refusals_and_tool_call_arguments_are_redacted_too() -> None:
    """A reasoning model's streamed reasoning (`reasoning_content`, `reasoning`), a refusal and a tool call's
    streamed arguments are output a client reads: each redacted with its own held-back tail, flushed into the
    choice's last chunk in its own field (until 2026-12-05 only `content` was read: an address in the reasoning
    or in a call's arguments reached a tenant whose policy redacts)."""
    f = OutputFilter(True, strip_usage=False)
    call = {"index": 1, "id": "c1", "type": "function", "function": {"name": "mail", "arguments": '{"to": "jane.d'}}
    sent = [f.event(chunk({"reasoning_content": "The user is jane.d"})), f.event(chunk({"reasoning_content": "oe@example.com."})),
            f.event(chunk({"reasoning": "Call +44 20 7946 0958"})), f.event(chunk({"tool_calls": [call]})),
            f.event(chunk({"tool_calls": [{"index": 1, "function": {"arguments": 'oe@example.com"}'}}]})),
            f.event(chunk({"refusal": "I won't mail jane.doe@example.com"})), f.event(chunk({}, "tool_calls"))]
    deltas = [c["choices"][0]["delta"] for c in sent]  # type: ignore[index]
    joined = {k: "".join(d.get(k) or "" for d in deltas) for k in ("reasoning_content", "reasoning", "refusal")}
    assert joined == {"reasoning_content": "The user is [REDACTED:EMAIL].", "reasoning": "Call [REDACTED:PHONE]",
                      "refusal": "I won't mail [REDACTED:EMAIL]"}
    arguments = "".join(tc["function"].get("arguments", "") for d in deltas for tc in d.get("tool_calls") or ()
                        if tc["index"] == 1)
    assert arguments == '{"to": "[REDACTED:EMAIL]"}'
    assert sent[-1]["choices"][0]["finish_reason"] == "tool_calls"  # type: ignore[index]
    assert {v.check for v in f.verdicts()} == {"pii_output"} and "EMAIL" in f.verdicts()[0].detail.upper()
    assert f.flush_event() is None


def test_a_stream_cut_before_its_finish_sends_every_held_text() -> None:
    f = OutputFilter(True, strip_usage=False)
    f.event(chunk({"content": "mail jane.doe@example.com"}))
    f.event(chunk({"tool_calls": [{"index": 0, "function": {"name": "x", "arguments": '{"a": "jane.doe@example.com'}}]}))
    held = f.flush_event()
    assert held is not None
    delta = held["choices"][0]["delta"]
    assert delta["content"] == "mail [REDACTED:EMAIL]"  # a short text is held whole
    assert delta["tool_calls"][0]["index"] == 0 and "[REDACTED:EMAIL]" in delta["tool_calls"][0]["function"]["arguments"]
    assert f.flush_event() is None


def test_a_whole_answer_s_reasoning_and_tool_calls_are_redacted() -> None:
    fw = Firewall(InjectionModel.load(), {"t": FirewallPolicy(pii_output=Action.REDACT)})
    answer = {"choices": [{"index": 0, "message": {
        "role": "assistant", "content": None, "reasoning_content": "jane.doe@example.com asked",
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "m", "arguments": '{"to": "jane.doe@example.com"}'}}]}}]}
    out, verdicts = redact_json_answer(fw, "t", orjson.dumps(answer))
    msg = orjson.loads(out)["choices"][0]["message"]
    assert msg["reasoning_content"] == "[REDACTED:EMAIL] asked"
    assert orjson.loads(msg["tool_calls"][0]["function"]["arguments"]) == {"to": "[REDACTED:EMAIL]"}
    assert [v.detail for v in verdicts] == ["personal data: email"]  # one for the answer, as a stream's (OutputReads)


def test_a_text_beside_a_message_or_a_delta_is_redacted_too() -> None:
    """A choice's `text` was read only where the choice had no message (whole) or delta (streamed): an engine that
    sent both had its `text`, which the client receives, passed unread to a tenant whose policy redacts."""
    fw = Firewall(InjectionModel.load(), {"t": FirewallPolicy(pii_output=Action.REDACT)})
    answer = {"choices": [{"index": 0, "text": "mail jane.doe@example.com", "finish_reason": "stop",
                           "message": {"role": "assistant", "content": "ok"}}]}
    out, verdicts = redact_json_answer(fw, "t", orjson.dumps(answer))
    assert orjson.loads(out)["choices"][0]["text"] == "mail [REDACTED:EMAIL]" and len(verdicts) == 1
    f = OutputFilter(True, strip_usage=False)
    first = chunk({"content": "ok"})
    first["choices"][0]["text"] = "mail jane.doe@example.com"  # type: ignore[index]
    sent = [f.event(first), f.event(chunk({}, "stop"))]
    text = "".join(c["choices"][0].get("text") or "" for c in sent)  # type: ignore[index]
    assert text == "mail [REDACTED:EMAIL]" and "jane" not in orjson.dumps(sent).decode()


def test_a_completions_stream_cut_before_its_finish_gets_its_text_as_a_completion() -> None:
    """The held text of a completions stream that ended without finish_reason goes out as a `text_completion`
    chunk with the choice's `text` (it went in a chat chunk's `delta.content`, which a completions client never
    reads)."""
    f = OutputFilter(True, strip_usage=False)
    first = f.event({"object": "text_completion", "choices": [{"index": 0, "text": "Write to jane.doe@example.com"}]})
    held = f.flush_event()
    assert held == {"object": "text_completion", "choices": [{"index": 0, "finish_reason": None,
                                                              "text": "Write to [REDACTED:EMAIL]"}]}
    assert first["choices"][0]["text"] == ""  # type: ignore[index]
    assert f.flush_event() is None


VERBOSE = {"content": "Write to jane.doe@example.com", "stop_type": "eos", "prompt": "<|im_start|>user ..."}


def test_a_redacted_answer_keeps_only_the_fields_it_knows() -> None:
    """An engine repeats the answer in fields the redaction does not read when the client asks it to: llama.cpp's
    `__verbose` (`"verbose": true`: the text again, with the rendered prompt) and vLLM's `token_ids`
    (`"return_token_ids": true`). Both went to a tenant whose answers are redacted, with the personal data the
    message's content had redacted. Now such an answer keeps OpenAI's fields, the engines' stop string and
    aigrid's own; for other tenants the answer is untouched."""
    fw = Firewall(InjectionModel.load(), {"t": FirewallPolicy(pii_output=Action.REDACT),
                                          "open": FirewallPolicy(pii_output=Action.FLAG)})
    answer = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m", "__verbose": VERBOSE,
              "timings": {"predicted_n": 7}, "prompt_token_ids": [1, 2], "usage": {"completion_tokens": 7},
              "choices": [{"index": 0, "finish_reason": "stop", "stop_reason": None, "token_ids": [5, 6, 7],
                           "message": {"role": "assistant", "content": "Write to jane.doe@example.com",
                                       "provider_specific": "jane.doe@example.com"}}]}
    out, _ = redact_json_answer(fw, "t", orjson.dumps(answer))
    got = orjson.loads(out)
    assert b"jane.doe" not in out, got
    assert set(got) == {"id", "object", "created", "model", "usage", "choices"}
    assert got["choices"][0] == {"index": 0, "finish_reason": "stop", "stop_reason": None,
                                 "message": {"role": "assistant", "content": "Write to [REDACTED:EMAIL]"}}
    flagged, verdicts = redact_json_answer(fw, "open", orjson.dumps(answer))
    assert orjson.loads(flagged) == answer and verdicts  # flagged, not redacted: all of it, as sent
    clean = {**answer, "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
                                                                                     "content": "Hello"}}]}
    out, verdicts = redact_json_answer(fw, "t", orjson.dumps(clean))  # nothing to redact: unknown fields go anyway
    assert b"__verbose" not in out and not verdicts


def test_a_redacted_stream_keeps_only_the_fields_it_knows() -> None:
    """The same in a stream: llama.cpp sends `__verbose` in the chunk that ends the choice, vLLM `token_ids` in
    every chunk. A stream that is not redacted passes them (the relay sends the engine's own bytes)."""
    f = OutputFilter(True, strip_usage=False)
    first = f.event({**chunk({"content": "Write to jane.doe@example.com"}), "timings": {}})
    last = chunk({}, "stop")
    last["__verbose"] = VERBOSE
    last["choices"][0]["token_ids"] = [5, 6, 7]  # type: ignore[index]
    end = f.event(last)
    assert "timings" not in first and "__verbose" not in end and "token_ids" not in end["choices"][0]  # type: ignore[index]
    assert b"jane.doe" not in orjson.dumps(first) + orjson.dumps(end)
    untouched = OutputFilter(False, strip_usage=False).event(last)
    assert untouched["__verbose"] == VERBOSE  # type: ignore[index]


def test_a_step_s_arguments_are_redacted_string_by_string() -> None:
    """A step's arguments as the client sees them: each string (keys too) through the output policy, numbers and
    the structure kept. Redacting their JSON text whole turned a number that reads as a phone number into a bare
    `[REDACTED:PHONE]`, not JSON any more."""
    from aigrid.agents.loop import Step
    from aigrid.gateway.output_filter import redacted_step

    fw = Firewall(InjectionModel.load(), {"t": FirewallPolicy(pii_output=Action.REDACT)})
    step = Step(0, "crm", {"to": ["jane.doe@example.com"], "jane.doe@example.com": 1, "n": 4155550123, "ok": True},
                "Customer: jane.doe@example.com", True, 1.0, 1.0, "c1")
    shown, verdicts = redacted_step(fw, "t", step)
    assert shown.arguments == {"to": ["[REDACTED:EMAIL]"], "[REDACTED:EMAIL]": 1, "n": 4155550123, "ok": True}
    assert shown.result == "Customer: [REDACTED:EMAIL]"
    # one verdict for the step, as an answer gets one (OutputReads), not one a string found holding an item (3 here)
    assert verdicts == [Verdict("pii_output", "redacted", "personal data: email")]
    assert redacted_step(fw, "t", Step(0, "calc", {"x": 2}, "4", True, 1.0, 1.0, "c2")) == (
        Step(0, "calc", {"x": 2}, "4", True, 1.0, 1.0, "c2"), [])


def test_an_engine_that_opens_a_new_text_in_every_chunk_is_cut_at_a_bound() -> None:
    """With answers redacted each text (choice index, field, tool call) gets a redactor holding its tail: an engine
    that opened a new choice index in every chunk had the gateway hold ~1.3 KB per 110-byte chunk, without end. Past
    output_filter.MAX_TEXTS the stream is the engine's failure (SseError: the relay's `stream_interrupted`)."""
    import pytest

    from aigrid.engines.sse import SseError
    from aigrid.gateway.output_filter import MAX_TEXTS, OutputFilter

    f = OutputFilter(redacts=True, strip_usage=False)
    for i in range(MAX_TEXTS):
        f.event({"choices": [{"index": i, "delta": {"content": "hello there"}}]})
    f.event({"choices": [{"index": 0, "delta": {"content": " and again"}}]})  # a text already open: served
    with pytest.raises(SseError, match="more than 1024 texts"):
        f.event({"choices": [{"index": MAX_TEXTS, "delta": {"content": "one more"}}]})
