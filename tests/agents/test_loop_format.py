"""A client's JSON `response_format` beside tools (what the OpenAI Agents SDK sends for an agent with an output type
and tools): the tool loop holds the final answer to it. Constrained mode: the grammar's answer branch is the
client's schema; native mode: a turn that offers no tools carries the format, a turn that offers tools does not
(vLLM would decode the whole turn under it: no tool call) and its prose answer is asked for again under it."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aigrid.agents import Finished, Step, TextDelta, builtin_tools, run_tool_loop
from tests.agents.scripted_engine import ScriptedEngine, call

REGISTRY = builtin_tools()
CALC = {"type": "function", "function": {"name": "calculator"}}
SCHEMA = {"type": "object", "properties": {"value": {"type": "integer"}, "unit": {"type": "string", "enum": ["kg"]}},
          "required": ["value", "unit"], "additionalProperties": False}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "weight", "strict": True, "schema": SCHEMA}}


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "6 x 7 kg?"}], "tools": [CALC], **extra}


def structured_answer(value: Any) -> dict[str, Any]:
    return {"content": orjson.dumps({"answer": value}).decode()}


async def events(engine: ScriptedEngine, body: dict[str, Any]) -> list[Any]:
    return [ev async for ev in run_tool_loop(engine, body, REGISTRY)]


def _answer_branch(sent: dict[str, Any]) -> Any:
    schema = sent["response_format"]["json_schema"]["schema"]
    options = schema.get("anyOf", [schema])
    return next(o["properties"]["answer"] for o in options if "answer" in o["properties"])


async def test_constrained_grammar_answers_in_the_clients_schema() -> None:
    engine = ScriptedEngine([call("calculator", expression="6*7"), structured_answer({"value": 42, "unit": "kg"})])
    evs = await events(engine, chat(response_format=JSON_SCHEMA))
    assert [_answer_branch(s) for s in engine.received] == [SCHEMA, SCHEMA]  # each turn's answer is the schema
    assert [s.result for s in evs if isinstance(s, Step)] == ["42"]
    fin = evs[-1]
    assert isinstance(fin, Finished) and fin.stop == "answer" and fin.finish_reason == "stop"
    assert orjson.loads(fin.content) == {"value": 42, "unit": "kg"}  # the JSON of the schema, not {"answer": ...}
    assert "A JSON OBJECT in the requested format" in engine.received[0]["messages"][0]["content"]


async def test_constrained_json_object_answers_any_object_and_text_stays_text() -> None:
    engine = ScriptedEngine([structured_answer({"any": ["thing"]})])
    fin = (await events(engine, chat(response_format={"type": "json_object"})))[-1]
    assert _answer_branch(engine.received[0]) == {"type": "object"}
    assert isinstance(fin, Finished) and orjson.loads(fin.content) == {"any": ["thing"]}
    engine = ScriptedEngine([structured_answer("plain")])
    fin = (await events(engine, chat(response_format={"type": "text"})))[-1]
    assert _answer_branch(engine.received[0])["type"] == "string" and fin.content == "plain"


async def test_native_turns_without_tools_carry_the_format_and_a_prose_answer_is_asked_again() -> None:
    engine = ScriptedEngine([{"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
                             {"content": "It is 42 kg."}, {"content": '{"value": 42, "unit": "kg"}'}])
    evs = await events(engine, chat(response_format=JSON_SCHEMA, aigrid_tool_mode="native"))
    first, second, third = engine.received
    assert "response_format" not in first and "response_format" not in second  # turns offering tools
    assert third["response_format"] == JSON_SCHEMA and "tools" not in third
    assert third["messages"] == second["messages"]  # the prose answer is not in the conversation
    fin = evs[-1]
    assert isinstance(fin, Finished) and fin.stop == "answer" and fin.model_calls == 3
    assert orjson.loads(fin.content) == {"value": 42, "unit": "kg"}
    assert "It is 42" not in "".join(e.text for e in evs if isinstance(e, TextDelta))  # the prose never streamed


async def test_the_step_limits_answer_only_turn_answers_in_the_schema() -> None:
    engine = ScriptedEngine([call("calculator", expression="6*7"), structured_answer({"value": 42, "unit": "kg"})])
    fin = (await events(engine, chat(response_format=JSON_SCHEMA, aigrid_max_steps=1)))[-1]
    assert engine.received[1]["response_format"]["json_schema"]["schema"] == {
        "type": "object", "properties": {"answer": SCHEMA}, "required": ["answer"], "additionalProperties": False}
    assert isinstance(fin, Finished) and fin.stop == "step_limit" and orjson.loads(fin.content)["value"] == 42


@pytest.mark.parametrize("mode", ["constrained", "native"])
async def test_tool_choice_none_sends_the_format(mode: str) -> None:
    """No tool offered and no tool turn in the history: an ordinary chat turn, under the client's format."""
    engine = ScriptedEngine([{"content": '{"value": 1, "unit": "kg"}'}])
    fin = (await events(engine, chat(response_format=JSON_SCHEMA, tool_choice="none", aigrid_tool_mode=mode)))[-1]
    assert engine.received[0]["response_format"] == JSON_SCHEMA and "tools" not in engine.received[0]
    assert isinstance(fin, Finished) and fin.content == '{"value": 1, "unit": "kg"}' and fin.model_calls == 1


# twenty-fourth session: a constrained turn's JSON answer ({"answer": {...}}) was not streamed (AnswerStream read only
# a string answer), so a streaming client got it whole in one chunk at the end while plain answers streamed
WRITTEN = '{"answer": {"value": 42,  "unit": "kg",\n "note": "a \\"}\\" ] \\u00e9 \\/ {"}}'
"""A constrained turn's answer as a model writes it: spaces orjson would not write, brackets and an escaped quote in a
string, escapes orjson would write as the character."""
STREAMED = '{"value":42,"unit":"kg","note":"a \\"}\\" ] \u00e9 / {"}'
"""Its JSON as the client gets it, streamed and whole: as orjson writes it."""


async def test_a_structured_answer_streams_as_the_model_writes_it_and_is_the_answer() -> None:
    engine = ScriptedEngine([call("calculator", expression="6*7"), {"content": WRITTEN}])
    evs = await events(engine, chat(response_format=JSON_SCHEMA))
    deltas = [e.text for e in evs if isinstance(e, TextDelta)]
    fin = evs[-1]
    assert isinstance(fin, Finished) and fin.stop == "answer" and fin.finish_reason == "stop"
    assert len(deltas) > 10 and "".join(deltas) == fin.content == STREAMED
    assert orjson.dumps(orjson.loads(fin.content)).decode() == STREAMED
    assert orjson.loads(fin.content) == {"value": 42, "unit": "kg", "note": 'a "}" ] \u00e9 / {'}
    assert evs.index(next(e for e in evs if isinstance(e, TextDelta))) < len(evs) - 1  # before the answer ended


async def test_a_streamed_structured_answer_reaches_the_sse_client_in_chunks_as_produced() -> None:
    from aigrid.agents.reply import sse_stream

    engine = ScriptedEngine([call("calculator", expression="6*7"), {"content": WRITTEN}])
    body = chat(response_format=JSON_SCHEMA, stream=True)
    chunks = [orjson.loads(line[len(b"data: "):]) async for raw in sse_stream(
        run_tool_loop(engine, body, REGISTRY), "m", include_usage=False, created=0, response_id="r")
        for line in raw.split(b"\n") if line.startswith(b"data: {")]
    contents = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"][0]["delta"].get("content")]
    assert len(contents) > 10 and "".join(contents) == STREAMED  # no second copy at the end
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_a_structured_answer_cut_off_by_max_tokens_ends_with_what_was_streamed() -> None:
    engine = ScriptedEngine([{"content": '{"answer": {"value": 4', "finish": "length"}])
    evs = await events(engine, chat(response_format=JSON_SCHEMA))
    fin = evs[-1]
    # as a text answer cut off: what was written (streamed already), finish_reason "length"; before, no content
    assert isinstance(fin, Finished) and fin.finish_reason == "length" and fin.stop == "answer"
    assert "".join(e.text for e in evs if isinstance(e, TextDelta)) == fin.content == '{"value":4'


async def test_a_streamed_structured_answer_nested_past_what_is_written_again_stays_the_answer() -> None:
    """parse_turn takes an answer nested deeper than MAX_DEPTH for a bad call (it would write it out again); streamed,
    the client has it already and the answer is its text as written: no tool step, no second answer after it."""
    deep = "[" * 130 + "]" * 130
    engine = ScriptedEngine([{"content": '{"answer": {"deep": ' + deep + "}}"}, structured_answer({"value": 1})])
    evs = await events(engine, chat(response_format={"type": "json_object"}))
    fin = evs[-1]
    assert not [e for e in evs if isinstance(e, Step)] and isinstance(fin, Finished) and fin.model_calls == 1
    assert "".join(e.text for e in evs if isinstance(e, TextDelta)) == fin.content == '{"deep":' + deep + "}"


async def test_a_streamed_structured_answer_passes_the_output_filter_as_a_whole_answer_would() -> None:
    """The tenant's output redaction reads the JSON text as it streams (holding back a tail, as for any answer): the
    client gets it in parts before the end, and the same text, still valid JSON, as the whole answer's redaction."""
    from aigrid.agents.reply import sse_stream
    from aigrid.gateway.output_filter import OutputFilter
    from aigrid.security.firewall.pii import redact

    value = {"value": 42, "unit": "kg", "note": "write to jo@example.com " + "and so on " * 40}
    # the address's @ written as a JSON escape: the redaction reads the string's characters, as the client's parser does
    written = orjson.dumps({"answer": value}).decode().replace("@", "\\u0040")
    engine = ScriptedEngine([call("calculator", expression="6*7"), {"content": written}])
    out = OutputFilter(redacts=True, strip_usage=False)
    contents: list[str] = []
    async for raw in sse_stream(run_tool_loop(engine, chat(response_format=JSON_SCHEMA, stream=True), REGISTRY), "m",
                                include_usage=False, created=0, response_id="r"):
        for line in raw.split(b"\n"):
            if line.startswith(b"data: {") and (chunk := out.event(orjson.loads(line[len(b"data: "):]))) is not None:
                contents += [c["delta"]["content"] for c in chunk["choices"] if c.get("delta", {}).get("content")]
    whole = orjson.dumps(value).decode()
    assert len(contents) > 5 and "".join(contents) == redact(whole)
    assert orjson.loads("".join(contents))["note"].startswith("write to [REDACTED:EMAIL] and so on")


_json = st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                     max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=4), _json, max_size=3) | st.lists(_json, max_size=3),
       st.sampled_from([None, 1]), st.booleans(), st.lists(st.integers(1, 9), min_size=1, max_size=40))
def test_a_json_answer_streams_as_orjson_writes_it_however_it_is_written_and_cut(
        value: Any, indent: int | None, ascii_only: bool, sizes: list[int]) -> None:
    """Whatever spacing and escapes the model writes and wherever the engine cuts its text, what streams is the JSON
    as orjson writes it (`value` too, once closed), so streamed and whole answers are the same text."""
    import json

    from aigrid.agents.answer_stream import AnswerStream

    written = '{"answer": ' + json.dumps(value, indent=indent, ensure_ascii=ascii_only) + "}"
    stream, out, pos = AnswerStream(), [], 0
    for size in sizes * (len(written) // len(sizes) + 1):
        out.append(stream.feed(written[pos:pos + size]))
        pos += size
    assert "".join(out) == stream.value == orjson.dumps(value).decode()


def test_a_lone_high_surrogate_at_the_answers_end_does_not_hold_the_answer_back() -> None:
    """A string answer's escapes are read by the one JSON escape reader (answer_stream.json_escape, the output
    redaction's too): a lone high surrogate (`\\uD83D` not followed by its low half) is U+FFFD as soon as what follows
    cannot be one. AnswerStream's own reader waited for six more characters, so an answer ending with one within
    them never closed (nothing more was streamed)."""
    from aigrid.agents.answer_stream import AnswerStream

    stream = AnswerStream()
    assert stream.feed('{"answer": "ok \\uD83D"}') == "ok \ufffd"
    assert stream.feed(" more") == ""  # closed: what follows the answer is not the answer
    assert AnswerStream().feed('{"answer": "\\uD83D\\uDE00!"}') == "\U0001F600!"  # a pair, as before
