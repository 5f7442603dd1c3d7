"""A redacted stream cut before its end (its engine failed and no other continues it, a bound cut it): what the
redaction still holds back (the answer's last ~100 characters) reaches the client before the error event, read as
the end of a whole answer is (each item redacted), but for the text at its end that more of the answer could have
made an item, which is left out: no part of an item whose rest never came goes out. Until the twenty-ninth session
that held text was lost."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import openai
import orjson
import pytest

from aigrid.gateway.app import build_app
from aigrid.gateway.output_filter import OutputFilter
from aigrid.security.firewall.pii import find_pii, placeholder, unfinished_start
from aigrid.security.firewall.pipeline import Action
from aigrid.security.firewall.streaming import StreamingRedactor
from tests.gateway import hostile_engine as H
from tests.gateway import hostile_grid as T
from tests.gateway.metered_gateway import TENANT, the_one_record
from tests.gateway.sdk_clients import openai_client


def streamed(chunks: list[str]) -> tuple[str, str]:
    """What a redactor fed `chunks` sent as they came, and what its cut then sends."""
    r = StreamingRedactor()
    return "".join(r.feed(c) for c in chunks), r.cut()


def test_a_cut_outside_any_item_sends_what_was_held() -> None:
    sent, rest = streamed(["The answer ", "is fine. ", "Thanks for asking! "])
    assert sent + rest == "The answer is fine. Thanks for asking! "


def test_a_cut_inside_a_held_item_sends_the_text_before_it_only() -> None:
    sent, rest = streamed(["Write to ", "jane.doe@exam"])  # the address's rest never came
    assert sent + rest == "Write to "
    sent, rest = streamed(["Call me on +44 20 ", "79"])  # six digits: no phone number yet
    assert sent + rest == "Call me on "


def test_a_cut_just_after_a_whole_item_redacts_it() -> None:
    """An item that more text could still have made longer (a card's digits, an address's domain) is found as it
    stands and redacted whole, as the whole answer's end is."""
    assert "".join(streamed(["Your card: ", "4111 1111 1111 1111"])) == "Your card: [REDACTED:CARD]"
    assert "".join(streamed(["mail jane.doe@example.com"])) == "mail [REDACTED:EMAIL]"
    assert "".join(streamed(["call +44 20 7946 0958 now, or"])) == "call [REDACTED:PHONE] now, "


ITEMS = ["jane.doe@example.com", "4111 1111 1111 1111", "+44 20 7946 0958", "078-05-1120",
         "DE89 3704 0044 0532 0130 00", "AB 12 34 56 C"]


@pytest.mark.parametrize("item", ITEMS)
@pytest.mark.parametrize("size", [1, 3, 7])
def test_a_stream_cut_anywhere_in_an_item_sends_no_part_of_it(item: str, size: int) -> None:
    """Cut after each character of the item, in chunks of `size`: what goes out is the text before the item, then
    nothing or one placeholder (what it read as an item so far), never a character of it."""
    before = "Sure, here it is: "
    text = before + item + " and that is all."
    assert [m.kind for m in find_pii(text)] and find_pii(text)[0].start == len(before)
    placeholders = re.compile(r"(?:\[REDACTED:[A-Z_]+\])?")
    for k in range(len(before) + 1, len(before) + len(item)):
        cut = text[:k]
        sent, rest = streamed([cut[i:i + size] for i in range(0, len(cut), size)])
        out = sent + rest
        assert out.startswith(before) and placeholders.fullmatch(out[len(before):]), (k, out)


def test_the_start_of_what_more_text_could_make_an_item() -> None:
    assert unfinished_start("Write to john.doe@exam") == len("Write to ")
    assert unfinished_start("The answer is fine. ") == len("The answer is fine. ")
    assert unfinished_start("costs 12 ") == len("costs ")  # a digit group a phone number may go on from
    assert unfinished_start("ok!") == 3
    assert unfinished_start("mail jo\u200b@exa") == len("mail ")  # read as a model reads it


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk", "model": "m", "created": 1,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_the_cut_event_holds_each_text_held_back() -> None:
    f = OutputFilter(True, strip_usage=False)
    assert f.event(chunk({"content": "Thanks, write to "})) is not None
    f.event(chunk({"content": "jane.doe@exam"}))
    f.event(chunk({"reasoning_content": "The user is on +44 20 7946 0958. Done. "}))
    held = f.cut_event()
    assert held is not None
    delta = held["choices"][0]["delta"]
    assert delta == {"content": "Thanks, write to ", "reasoning_content": "The user is on [REDACTED:PHONE]. Done. "}
    assert f.cut_event() is None and f.flush_event() is None  # sent once
    assert [v.detail for v in f.verdicts()] == ["personal data: phone"]


def broken(*texts: str) -> Any:
    """An engine that streams `texts` and then drops the connection, mid-answer."""
    def script(path: str, req: dict) -> H.Script:
        return H.stream(*[H.chunk(b"data: " + orjson.dumps(H.token(t)) + b"\n\n") for t in texts], H.CLOSE)
    return script


@pytest.mark.parametrize(("texts", "shown", "hidden"), [
    (["Sure. The answer is fine. ", "Thanks!"], "Sure. The answer is fine. Thanks!", None),
    (["Sure. Write to ", "jane.doe@exam"], "Sure. Write to ", "jane"),
    (["Sure. Mail jane.doe@example.com ", "or call"], f"Sure. Mail {placeholder('email')} or ", "jane"),
], ids=["outside-an-item", "inside-an-item", "after-an-item"])
async def test_a_redacted_stream_whose_engine_breaks_sends_what_was_held_before_its_error(
        tmp_path, texts: list[str], shown: str, hidden: str | None) -> None:
    """Both engines break after `texts`; the request cannot be continued elsewhere (its `response_format`): the
    client gets the held text (redacted) and then the error event; the audit record says what was found."""
    async for g in T.grid(tmp_path, broken(*texts), good=broken(*texts)):
        firewall = g.gw.guard.firewall
        firewall.policies["metered"] = dataclasses.replace(firewall.policy("metered"), pii_output=Action.REDACT)
        r = await g.post("chat", True, response_format={"type": "text"})
        assert r.status_code == 200, r.text
        events = [orjson.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
        assert events[-1]["error"]["code"] == "stream_interrupted", r.text
        text = "".join(c["delta"].get("content") or "" for e in events[:-1] for c in e["choices"])
        assert text == shown, r.text
        assert hidden is None or hidden not in r.text
        row = await the_one_record(g.gw)
        assert row["outcome"] == "interrupted", row
        assert ("pii_output" in orjson.dumps(row).decode()) == (placeholder("email") in shown), row


def broken_for(*texts: str) -> Any:
    """As broken, but a completion's engine streams `text_completion` chunks."""
    def script(path: str, req: dict) -> H.Script:
        if path.endswith("/v1/completions"):
            events = [{"id": "c", "object": "text_completion", "created": 1, "model": "m",
                       "choices": [{"index": 0, "text": t, "finish_reason": None}]} for t in texts]
        else:
            events = [H.token(t) for t in texts]
        return H.stream(*[H.chunk(b"data: " + orjson.dumps(e) + b"\n\n") for e in events], H.CLOSE)
    return script


@pytest.mark.parametrize(("door", "shown", "error"), [
    ("completions", '"text":"Sure. Mail [REDACTED:EMAIL] or "', '"code":"stream_interrupted"'),
    ("messages", '"delta":{"type":"text_delta","text":"Sure. Mail [REDACTED:EMAIL] or "}', "event: error"),
    ("responses", '"delta":"Sure. Mail [REDACTED:EMAIL] or "', "event: response.failed"),
])
async def test_each_door_sends_the_held_text_in_its_own_events_before_its_error(
        tmp_path, door: str, shown: str, error: str) -> None:
    """The held chunk is a chat (or completion) chunk: the completions door sends it as a `text_completion` chunk, the
    Messages and Responses doors translate it (chat_events) into their text delta, each before the door's error."""
    texts = ["Sure. Mail jane.doe@example.com ", "or call"]
    async for g in T.grid(tmp_path, broken_for(*texts), good=broken_for(*texts)):
        firewall = g.gw.guard.firewall
        firewall.policies["metered"] = dataclasses.replace(firewall.policy("metered"), pii_output=Action.REDACT)
        r = await g.post(door, True)
        assert r.status_code == 200 and shown in r.text and error in r.text, r.text
        assert r.text.index(shown) < r.text.index(error) and "jane" not in r.text and "or call" not in r.text, r.text


@pytest.mark.parametrize("json_answer", [True, False])
@pytest.mark.parametrize(("content", "shown"), [
    ('{"to": "jane.doe\\u00', '{"to": "'),  # \u0040 (an @) whose rest never came
    ('{"a": "Call +44 20 79\\u003', '{"a": "Call '),  # a digit written as an escape, cut in it
    ('{"a": "Thanks!\\u00', '{"a": "Thanks!'),  # an escape outside any item: only it is left out
])
def test_an_escape_left_unfinished_by_the_cut_leaves_out_the_item_it_may_go_on(
        json_answer: bool, content: str, shown: str) -> None:
    """A JSON escape cut in the middle (EscapeReader.flush keeps it as written, a character the detectors read as
    the end of an item) made the text before it read as ended: "jane.doe\\u00" went out whole, and the first
    digits of a phone number. The unfinished escape is left out and the text before it read as one that may go on."""
    f = OutputFilter(True, strip_usage=False, json_answer=json_answer)
    first = f.event(chunk({"content": content}))
    held = f.cut_event()
    sent = (first["choices"][0]["delta"].get("content") or "") + (held["choices"][0]["delta"]["content"] if held else "")
    assert sent == shown


def redacting(g: Any) -> None:
    firewall = g.gw.guard.firewall
    firewall.policies["metered"] = dataclasses.replace(firewall.policy("metered"), pii_output=Action.REDACT)


async def test_the_held_chunk_carries_the_streams_id_model_and_created_to_the_openai_sdk(tmp_path) -> None:
    """The chunk of held text sent at the cut is one of the stream's chunks: the official openai SDK reads it with the
    same id, model and created as the others (until the thirtieth session it had none of them: id None)."""
    texts = ["Sure. Mail jane.doe@example.com ", "or call"]
    async for g in T.grid(tmp_path, broken(*texts), good=broken(*texts)):
        redacting(g)
        client = openai_client(build_app(g.gw)).with_options(default_headers=TENANT)
        chunks = []
        with pytest.raises(openai.APIError, match="the answer was interrupted"):
            stream = await client.chat.completions.create(
                model=T.M, messages=[{"role": "user", "content": "Say hello"}], max_tokens=8, stream=True,
                response_format={"type": "text"})
            async for c in stream:
                chunks.append(c)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == f"Sure. Mail {placeholder('email')} or ", text
        assert len(chunks) >= 2 and (chunks[-1].choices[0].delta.content or "").endswith("or ")  # the held chunk
        assert {(c.id, c.model, c.created, c.object) for c in chunks} == {
            ("chatcmpl-h", T.M, 1, "chat.completion.chunk")}, chunks  # the grid's model, not the engine's "m"


async def test_a_completions_held_chunk_carries_the_streams_cmpl_id(tmp_path) -> None:
    """A legacy completion's held chunk takes the stream's fields too, its `chatcmpl-` id (llama.cpp's) relabelled
    `cmpl-` as the stream's other chunks are (CompletionsPipe)."""
    def script(path: str, req: dict) -> H.Script:
        events = [{"id": "chatcmpl-x", "object": "text_completion", "created": 7, "model": "m",
                   "choices": [{"index": 0, "text": t, "finish_reason": None}]}
                  for t in ["Sure. Mail jane.doe@example.com ", "or call"]]
        return H.stream(*[H.chunk(b"data: " + orjson.dumps(e) + b"\n\n") for e in events], H.CLOSE)
    async for g in T.grid(tmp_path, script, good=script):
        redacting(g)
        r = await g.post("completions", True)
        events = [orjson.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
        assert events[-1]["error"]["code"] == "stream_interrupted", r.text
        chunks = events[:-1]
        assert "".join(c["choices"][0]["text"] for c in chunks) == f"Sure. Mail {placeholder('email')} or ", r.text
        assert {(c.get("id"), c.get("model"), c.get("created"), c.get("object")) for c in chunks} == {
            ("cmpl-x", T.M, 7, "text_completion")}, r.text  # the grid's model, not the engine's "m"


def test_a_flushed_or_cut_chunk_carries_the_fields_of_the_streams_chunks() -> None:
    """Both chunks the filter makes (flush_event before [DONE], cut_event at a cut) carry the stream's fields, read
    as the stream's chunks are."""
    for make in (OutputFilter.flush_event, OutputFilter.cut_event):
        f = OutputFilter(True, strip_usage=False)
        f.event({**chunk({"content": "Thanks, write to me "}), "system_fingerprint": "fp_1"})
        held = make(f)
        assert held is not None
        assert {k: v for k, v in held.items() if k != "choices"} == {
            "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "system_fingerprint": "fp_1"}


def test_a_call_whose_name_may_go_on_is_left_out_at_a_cut_and_sent_whole_at_the_end() -> None:
    """A call's first piece whose name may go on ("get_wea" of "get_weather") is held back (_call_names): at a cut its
    rest never comes, so the cut's chunk leaves the call out (until the thirtieth session it went out as the call's
    whole name, which a client dispatches by); at the stream's end ([DONE]) it goes out whole as before."""
    piece = {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_wea"}}]}
    for make, shown in ((OutputFilter.cut_event, False), (OutputFilter.flush_event, True)):
        f = OutputFilter(True, strip_usage=False, tools=frozenset({"get_weather"}))
        f.event(chunk({"content": "Let me look. "}))
        first = f.event(chunk(piece))
        assert "tool_calls" not in first["choices"][0]["delta"]  # held
        held = make(f)
        assert held is not None and held["choices"][0]["delta"]["content"] == "Let me look. "
        assert ("get_wea" in orjson.dumps(held).decode()) == shown, held


def cut_in_a_name(path: str, req: dict) -> H.Script:
    """An engine that streams a tool call's first name piece (as Gemini's endpoint splits names), then breaks."""
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_wea"}}
    events = [H.token("Let me look. "), {**H.token(None), "choices": [
        {"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}]
    return H.stream(*[H.chunk(b"data: " + orjson.dumps(e) + b"\n\n") for e in events], H.CLOSE)


WEATHER = {"chat": {"tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
                    "response_format": {"type": "text"}},
           "messages": {"tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]},
           "responses": {"tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]}}


@pytest.mark.parametrize(("door", "error"), [("chat", '"code":"stream_interrupted"'), ("messages", "event: error"),
                                            ("responses", "event: response.failed")])
async def test_a_stream_cut_inside_a_tool_calls_name_sends_no_part_of_the_name(tmp_path, door: str, error: str) -> None:
    """Cut after a call's name began: each door sends the text held back, then its error, and no call named by the
    name's first piece (a chat client, a Messages tool_use block, a Responses function_call would dispatch it)."""
    async for g in T.grid(tmp_path, cut_in_a_name, good=cut_in_a_name):
        redacting(g)
        spec = g.gw.spec  # the engine's own tool calls, as they come (no constrained-mode loop)
        g.gw.spec = spec.model_copy(update={"models": {
            name: m.model_copy(update={"tool_calls": "native"}) for name, m in spec.models.items()}})
        r = await g.post(door, True, **WEATHER[door])
        assert r.status_code == 200 and error in r.text, r.text
        assert "Let me look. " in r.text and '"get_wea"' not in r.text, r.text  # (get_weather: the offered tool)
