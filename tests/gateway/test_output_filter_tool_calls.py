"""A tool call's `id` and its function's `name` under a tenant whose answers are redacted (output_filter.CallNames),
and what goes out of a whole answer an engine wrote with a key twice. Until the twenty-seventh session the output
filter read a call's `arguments` only: personal data in a call's id or name reached the client on every door (chat's
`tool_calls`, the Responses API's `call_id` and `name`, a Messages `tool_use` block's `id` and `name`), whole and
streamed; and a whole answer in which nothing was found went out as the engine's bytes, its duplicated keys with it,
so a client whose parser keeps the first of two keys read a text the redaction never read (orjson keeps the last)."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aigrid.engines.sse import SseError
from aigrid.gateway.output_filter import (
    MAX_NAME_CHARS,
    OutputFilter,
    OutputReads,
    offered_names,
    redact_json_answer,
)
from aigrid.security.firewall.injection import InjectionModel
from aigrid.security.firewall.pipeline import Action, Firewall, FirewallPolicy
from aigrid.security.firewall.streaming import StreamingRedactor
from tests.gateway import hostile_engine as H
from tests.gateway.metered_gateway import the_one_record
from tests.gateway.translating_grid import chunk, grid

PII = "jo@example.com"
SSN = "123-45-6789"
CALL_ID = f"call_{PII}"
"""An id an engine wrote with an address in it (what a model that writes its own call ids can put there)."""
NAME = f"lookup_{SSN}"
"""A function name the request did not offer, with a social security number in it."""
OFFERED = f"notify_{SSN}"
"""A function name the request offered: the client's own, sent back as it is (its client dispatches by it)."""
REPLACED = re.compile(r"call_[0-9a-f]{24}")


def firewall() -> Firewall:
    return Firewall(InjectionModel.load(), {"t": FirewallPolicy(pii_output=Action.REDACT),
                                            "open": FirewallPolicy(pii_output=Action.FLAG)})


def calls() -> list[dict[str, Any]]:
    return [{"id": CALL_ID, "type": "function", "function": {"name": NAME, "arguments": "{}"}},
            {"id": CALL_ID, "type": "function", "function": {"name": OFFERED, "arguments": "{}"}},
            {"id": "chatcmpl-tool-3", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]


def whole(message_calls: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [
        {"index": 0, "finish_reason": "tool_calls",
         "message": {"role": "assistant", "content": None, "tool_calls": message_calls}}]})


def test_a_whole_answers_call_ids_and_names_are_redacted_and_stay_usable() -> None:
    out, verdicts = redact_json_answer(firewall(), "t", whole(calls()), tools=frozenset({OFFERED, "lookup"}))
    assert PII.encode() not in out and NAME.encode() not in out, out
    got = orjson.loads(out)["choices"][0]["message"]["tool_calls"]
    assert got[0]["function"]["name"] == "lookup_REDACTED_SSN"  # still a tool name: letters, digits and _
    assert got[1]["function"]["name"] == OFFERED and got[2]["function"]["name"] == "lookup"
    assert REPLACED.fullmatch(got[0]["id"]) and got[1]["id"] == got[0]["id"]  # one id, one replacement
    assert got[2]["id"] == "chatcmpl-tool-3" and verdicts
    flagged, verdicts = redact_json_answer(firewall(), "open", whole(calls()))
    assert orjson.loads(flagged)["choices"][0]["message"]["tool_calls"] == calls() and verdicts  # flagged, as sent


def test_a_redacted_tool_call_keeps_only_the_keys_it_knows() -> None:
    """A call's own `name` beside its function, a function's `description`, a `type` that is not "function": text the
    redaction does not read, left out."""
    call = {"id": "c1", "type": PII, "name": PII, "function": {"name": "f", "arguments": "{}", "description": PII}}
    out, _ = redact_json_answer(firewall(), "t", whole([call]))
    assert orjson.loads(out)["choices"][0]["message"]["tool_calls"] == [
        {"id": "c1", "function": {"name": "f", "arguments": "{}"}}]
    f = OutputFilter(True, strip_usage=False)
    sent = f.event(chunk({"tool_calls": [call | {"index": 0}]}))
    assert PII.encode() not in orjson.dumps(sent)


def test_a_streamed_calls_id_and_name_are_redacted_the_id_the_same_in_every_piece() -> None:
    f = OutputFilter(True, strip_usage=False, tools=frozenset({OFFERED}))
    pieces = [{"tool_calls": [{"index": 0, "id": CALL_ID, "type": "function", "function": {"name": NAME,
                                                                                         "arguments": ""}}]},
              {"tool_calls": [{"index": 0, "id": CALL_ID, "function": {"arguments": "{}"}}]},  # the id repeated
              {"tool_calls": [{"index": 1, "id": "c2", "function": {"name": OFFERED, "arguments": "{}"}}]}]
    sent = [f.event(chunk(p)) for p in pieces] + [f.event(chunk({}, "tool_calls"))]
    assert PII.encode() not in orjson.dumps(sent) and NAME.encode() not in orjson.dumps(sent)
    # a name not offered, without arguments yet, may come in pieces: held, and sent whole with the call's next piece
    assert "tool_calls" not in sent[0]["choices"][0]["delta"]  # type: ignore[index]
    ids = [c["choices"][0]["delta"]["tool_calls"][0]["id"] for c in sent[1:3]]  # type: ignore[index]
    assert REPLACED.fullmatch(ids[0]) and ids[1] == "c2"
    names = [c["choices"][0]["delta"]["tool_calls"][0]["function"].get("name") for c in sent[1:3]]  # type: ignore[index]
    assert names == ["lookup_REDACTED_SSN", OFFERED]
    assert f.verdicts() and "email" in f.verdicts()[0].detail and "ssn" in f.verdicts()[0].detail


def joined(sent: list[Any]) -> dict[int, dict[str, str]]:
    """What a client that joins a stream's call pieces (openai-python's accumulator: strings added) reads of each."""
    out: dict[int, dict[str, str]] = {}
    for event in sent:
        for choice in (event or {}).get("choices") or ():
            for call in (choice.get("delta") or {}).get("tool_calls") or ():
                got = out.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
                got["id"] += call.get("id") or ""
                for field in ("name", "arguments"):
                    got[field] += (call.get("function") or {}).get(field) or ""
    return out


@pytest.mark.parametrize("end", ["arguments", "finish", "finish without a delta", "the stream's end"])
def test_a_name_sent_in_pieces_is_read_whole_and_goes_out_whole(end: str) -> None:
    """A name split so that no piece holds the item ("lookup_123-45", "-6789": Gemini's OpenAI-compatible endpoint
    splits names) is held until it ends, then read and sent whole, with the call's id; until review RV4 of the
    twenty-seventh session such a stream was refused (the first piece had gone out unread)."""
    f = OutputFilter(True, strip_usage=False, tools=frozenset({"lookup"}))
    pieces = [{"tool_calls": [{"index": 0, "id": "c", "type": "function", "function": {"name": "lookup_123-45"}}]},
              {"tool_calls": [{"index": 0, "function": {"name": "-6789", "arguments": ""}}]}]
    if end == "arguments":
        pieces.append({"tool_calls": [{"index": 0, "function": {"arguments": '{"a": 1}'}}]})
    sent = [f.event(chunk(p)) for p in pieces]
    if end == "finish":
        sent.append(f.event(chunk({}, "tool_calls")))
    elif end == "finish without a delta":
        sent.append(f.event({"id": "chatcmpl-h", "choices": [{"index": 0, "finish_reason": "tool_calls"}]}))
    else:
        sent += [f.event(chunk({}, "tool_calls"))] if end == "arguments" else [f.flush_event()]
    assert b"123-45" not in orjson.dumps(sent), sent
    assert joined(sent) == {0: {"id": "c", "name": "lookup_REDACTED_SSN",
                                "arguments": '{"a": 1}' if end == "arguments" else ""}}
    assert f.verdicts() and "ssn" in f.verdicts()[0].detail


def test_a_name_repeated_whole_in_each_piece_goes_out_once_and_more_of_a_sent_name_is_refused() -> None:
    same = OutputFilter(True, strip_usage=False)  # an engine that repeats the whole name (MiniMax through NIM)
    sent = [same.event(chunk({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": a}}]}))
            for a in ("", '{"x"', ": 2}")] + [same.event(chunk({}, "tool_calls"))]
    names = [[c["function"].get("name") for c in e["choices"][0]["delta"].get("tool_calls") or ()]  # type: ignore[index]
             for e in sent]
    assert names == [[], ["f"], ["f"], [None]]  # held "f", then "f" again: one name, not "ff"; then passed on as sent
    f = OutputFilter(True, strip_usage=False, tools=frozenset({"lookup"}))  # an offered name goes out at once
    out = f.event(chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "lookup"}}]}))
    assert out["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "lookup"  # type: ignore[index]
    with pytest.raises(SseError, match="after the name went out"):
        f.event(chunk({"tool_calls": [{"index": 0, "function": {"name": "_123-45-6789"}}]}))


def test_a_name_held_back_is_bounded() -> None:
    f = OutputFilter(True, strip_usage=False)
    with pytest.raises(SseError, match="name of more than"):
        for i in range(MAX_NAME_CHARS // 2 + 1):  # (a piece equal to the name so far is read as a repeat of it)
            f.event(chunk({"tool_calls": [{"index": 0, "function": {"name": "ab" if i % 2 else "cd"}}]}))


def test_offered_names_are_the_tools_and_functions_of_a_chat_body() -> None:
    body = {"tools": [{"type": "function", "function": {"name": "a"}}, {"type": "custom"}, "x"],
            "functions": [{"name": "b"}, {"name": 3}]}
    assert offered_names(body) == {"a", "b"}
    assert offered_names({"tools": "x", "functions": None}) == frozenset()


TOOLS = {"chat": {"tools": [{"type": "function", "function": {"name": OFFERED, "parameters": {"type": "object"}}}]},
         "messages": {"tools": [{"name": OFFERED, "input_schema": {"type": "object"}}]},
         "responses": {"tools": [{"type": "function", "name": OFFERED, "parameters": {"type": "object"}}]}}


def tool_engine(path: str, req: dict) -> H.Script:
    if req.get("stream"):
        events = [chunk({"role": "assistant", "content": ""})]
        for i, c in enumerate(calls()):
            fn = c["function"]
            events += [chunk({"tool_calls": [{"index": i, "id": c["id"], "type": "function",
                                              "function": {"name": fn["name"], "arguments": ""}}]}),
                       chunk({"tool_calls": [{"index": i, "function": {"arguments": "{}"}}]})]
        events.append(chunk({}, "tool_calls"))
        return H.stream(*H.sse(*[json.dumps(e).encode() for e in events]))
    return H.whole(whole(calls()))


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("door", ["chat", "messages", "responses"])
async def test_every_door_redacts_a_calls_id_and_name(tmp_path, door: str, stream: bool) -> None:
    """Chat's tool calls, the Responses API's function_call items (`call_id`, `name`) and Anthropic's tool_use blocks
    (`id`, `name`) are the chat answer's calls after the filter: each door shows the redacted id (one replacement for
    one id) and name, and the offered name as it is."""
    async for g in grid(tmp_path, tool_engine, redacting=True):
        spec = g.gw.spec  # the engine's own tool calls, as they came (the constrained mode's loop runs none it was
        g.gw.spec = spec.model_copy(update={"models": {  # not offered)
            name: m.model_copy(update={"tool_calls": "native"}) for name, m in spec.models.items()}})
        r = await g.post(door, stream, **TOOLS[door])
        assert r.status_code == 200, r.text
        assert PII.encode() not in r.content and NAME.encode() not in r.content, r.text
        assert b"lookup_REDACTED_SSN" in r.content and OFFERED.encode() in r.content, r.text
        assert len(set(REPLACED.findall(r.text))) == 1 and b"chatcmpl-tool-3" in r.content, r.text
        row = await the_one_record(g.gw)
        assert row["outcome"] == "ok" and "pii_output" in json.dumps(row), row


DUPLICATED = (b'{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
              b'"finish_reason":"stop","message":{"role":"assistant","content":"jo@example.com","content":"Hello"}}]}')
"""A whole answer with `content` twice: the first the address, the last what orjson (the filter) reads."""


def test_a_whole_answer_goes_out_as_read_never_as_the_engines_bytes() -> None:
    out, verdicts = redact_json_answer(firewall(), "t", DUPLICATED)
    assert not verdicts and PII.encode() not in out  # read: "Hello"; sent: "Hello" once, the address nowhere
    messages: list[list[tuple[str, Any]]] = []

    def pairs(got: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        if any(k == "role" for k, _ in got):
            messages.append(got)
        return got

    json.loads(out, object_pairs_hook=pairs)  # as a parser that keeps every pair sees it
    assert messages == [[("role", "assistant"), ("content", "Hello")]]
    flagged, _ = redact_json_answer(firewall(), "open", DUPLICATED)  # a flagging tenant's too: what was read
    assert PII.encode() not in flagged


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("door", ["chat", "messages", "responses"])
async def test_an_answer_with_a_key_twice_reaches_no_client_as_the_engine_wrote_it(
        tmp_path, door: str, stream: bool) -> None:
    """Streamed, a redacted chunk was written again already (the relay re-frames every event it reads for such a
    tenant); whole, it went out as the engine's bytes. Now every door sends one `content`, the one read."""
    def script(path: str, req: dict) -> H.Script:
        if req.get("stream"):
            twice = (b'{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
                     b'"delta":{"content":"jo@example.com","content":"Hello"},"finish_reason":null}]}')
            return H.stream(*H.sse(twice, json.dumps(chunk({}, "stop")).encode()))
        return H.whole(DUPLICATED)

    async for g in grid(tmp_path, script, redacting=True):
        r = await g.post(door, stream)
        assert r.status_code == 200 and PII.encode() not in r.content and b"Hello" in r.content, r.text
        assert (await the_one_record(g.gw))["outcome"] == "ok"


def test_every_other_string_a_redacted_answer_keeps_is_read() -> None:
    """An engine's `stop_reason`, `system_fingerprint`, `service_tier`, a chunk's `id` and `model`, a key or a value of
    its `usage`, a message's `role`, a call's `type`: strings a redacted answer keeps (known_only), which went out
    unread (output_filter.read_the_rest)."""
    doc = {"id": f"c-{PII}", "object": "chat.completion", "created": 1, "model": PII, "system_fingerprint": PII,
           "service_tier": PII, "usage": {"prompt_tokens": 1, PII: 2, "note": [PII]},
           "choices": [{"index": 0, "finish_reason": "stop", "stop_reason": PII, "matched_stop": PII,
                        "message": {"role": PII, "content": "Hello"}}]}
    out, verdicts = redact_json_answer(firewall(), "t", orjson.dumps(doc))
    assert PII.encode() not in out and verdicts, out
    assert orjson.loads(out)["choices"][0]["message"]["content"] == "Hello"
    f = OutputFilter(True, strip_usage=False)
    streamed = {**doc, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "finish_reason": None, "stop_reason": PII, "delta": {"role": PII}}]}
    sent = [f.event(orjson.loads(orjson.dumps(streamed))) for _ in range(2)] + [f.event(chunk({}, "stop"))]
    assert PII.encode() not in orjson.dumps(sent) and f.verdicts()


def test_a_kept_field_nested_past_what_the_filter_reads_ends_a_redacted_stream() -> None:
    deep: Any = "x"
    for _ in range(200):
        deep = [deep]
    f = OutputFilter(True, strip_usage=False)
    with pytest.raises(SseError, match="nested past"):
        f.event({**chunk({"content": "Hi"}), "system_fingerprint": deep})


_bits = st.sampled_from(["get_", "weather", "chatcmpl-", "7", "42", "-", "@", "example.com", PII, SSN,
                         "4111 1111 1111 1111", "+44 20 7946 0958", "\u200b", "\uff14", "\uff20", " ", "_"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_bits | st.text(max_size=3), max_size=14))
def test_a_short_string_is_read_as_a_streaming_redactor_fed_it_whole_reads_it(bits: list[str]) -> None:
    """OutputReads (pipeline.read_output: one find_pii, pii.cannot_hold's skip first) gives the text and the kinds found
    that a StreamingRedactor fed the string and flushed gave, as it read each string until review RV4 (twice the
    cost)."""
    text = "".join(bits)
    redactor = StreamingRedactor()
    read = OutputReads(Action.REDACT)
    assert read(text) == redactor.feed(text) + redactor.flush()
    assert read.kinds == list(dict.fromkeys(redactor.found))


@pytest.mark.parametrize("tenant", ["t", "open"], ids=["redact", "flag"])
def test_a_calls_id_and_name_read_streamed_and_whole_give_the_same_redactions_and_verdicts(tenant: str) -> None:
    """One reading of a call's id and name for a stream (OutputFilter) and a whole answer (redact_json_answer): the same
    answer both ways, an address in the call's id and an SSN in a name the request did not offer, comes out redacted
    alike (the name the same, the id a `call_` replacement) and audited with the same verdicts. Until the
    twenty-eighth session a whole answer had a verdict per text read (here two, "email" and "ssn"), a stream one for the
    answer ("email, ssn"). A flagging tenant's stream is not read (docs/security.md, "Limits")."""
    message_calls = [{"id": CALL_ID, "type": "function", "function": {"name": NAME, "arguments": '{"a": 1}'}}]
    out, whole_verdicts = redact_json_answer(firewall(), tenant, whole(message_calls))
    got = orjson.loads(out)["choices"][0]["message"]["tool_calls"][0]
    if tenant == "open":
        assert got == message_calls[0]
        assert [v.to_dict() for v in whole_verdicts] == [
            {"check": "pii_output", "action": "flagged", "detail": "personal data: email, ssn", "score": None,
             "where": None, "source": None}]
        return
    f = OutputFilter(firewall().redacts_output(tenant), strip_usage=False)
    sent = [f.event(chunk({"role": "assistant", "tool_calls": [
                {"index": 0, "id": CALL_ID, "type": "function", "function": {"name": NAME, "arguments": ""}}]})),
            f.event(chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a": 1}'}}]})),
            f.event(chunk({}, "tool_calls"))]
    streamed = joined(sent)[0]
    assert streamed["name"] == got["function"]["name"] == "lookup_REDACTED_SSN"
    assert REPLACED.fullmatch(streamed["id"]) and REPLACED.fullmatch(got["id"])
    assert streamed["arguments"] == got["function"]["arguments"] == '{"a": 1}'
    assert [v.to_dict() for v in f.verdicts()] == [v.to_dict() for v in whole_verdicts] == [
        {"check": "pii_output", "action": "redacted", "detail": "personal data: email, ssn", "score": None,
         "where": None, "source": None}]
