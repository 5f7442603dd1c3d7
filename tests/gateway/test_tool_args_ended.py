"""No door hands its client a tool call whose arguments were cut (chat_events._Calls).

An engine may write a piece of a call's arguments after text, or after the call's JSON object was whole. The chat door
passes every piece through as the engine sent it. The Messages door cannot reopen a tool_use block it stopped, nor the
Responses door a function_call item it marked done: until the thirty-first session both ended the open call at text
and dropped its later pieces with a log line, so the client got `{"city": ` as the call's arguments in an answer that
looked whole. Now text that comes while a call's arguments are not whole waits for them (the call ends whole, then the
text), and a piece after a call's arguments were whole (no object can go on: they would no longer parse) ends the
answer with the door's error, the engine charged a failure. Whitespace after a whole object changes nothing."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.gateway import hostile_grid as T
from tests.gateway.metered_gateway import inflight, the_one_record
from tests.gateway.translating_grid import chunk, engine, grid


def _args(arguments: str, name: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"index": 0, "function": {"arguments": arguments}}
    if name is not None:
        call.update(id="call_w", type="function")
        call["function"]["name"] = name
    return chunk({"tool_calls": [call]})


TEXT_MID_CALL = [_args('{"city": ', "get_weather"), chunk({"content": "Let me see."}), _args('"Paris"}'),
                 chunk({}, "tool_calls")]
"""Text between two pieces of a call's arguments."""
AFTER_WHOLE = [_args('{"city": "Paris"}', "get_weather"), _args('{"city": "Oslo"}'), chunk({}, "tool_calls")]
"""A piece after the call's arguments were a whole object (they no longer parse)."""
SPACE_AFTER_WHOLE = [_args('{"city": "Paris"}', "get_weather"), _args(" \n"), chunk({"content": "Done."}),
                     _args("\n"), chunk({}, "tool_calls")]


def _data(body: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in body.split(b"\n") if line.startswith(b"data: {")]


def _messages_calls(body: bytes) -> tuple[list[str], str]:
    """Each tool_use block's input_json_delta pieces joined, and the text blocks' text."""
    events = _data(body)
    kinds = {e["index"]: e["content_block"]["type"] for e in events if e["type"] == "content_block_start"}
    args: dict[int, str] = {i: "" for i, k in kinds.items() if k == "tool_use"}
    text = ""
    for e in events:
        if e["type"] == "content_block_delta":
            if e["delta"]["type"] == "input_json_delta":
                args[e["index"]] += e["delta"]["partial_json"]
            else:
                text += e["delta"]["text"]
    return [args[i] for i in sorted(args)], text


def _responses_calls(body: bytes) -> tuple[list[str], str]:
    """Each function_call item's arguments as done, and the messages' text."""
    done = [e["item"] for e in _data(body) if e["type"] == "response.output_item.done"]
    text = "".join(c["text"] for i in done if i["type"] == "message" for c in i["content"])
    return [i["arguments"] for i in done if i["type"] == "function_call"], text


def _chat_calls(body: bytes) -> tuple[list[str], str]:
    args, text = "", ""
    for e in _data(body):
        for c in e.get("choices") or ():
            text += c["delta"].get("content") or ""
            for call in c["delta"].get("tool_calls") or ():
                args += call["function"].get("arguments") or ""
    return [args], text


READ = {"chat": _chat_calls, "messages": _messages_calls, "responses": _responses_calls}


@pytest.mark.parametrize("door", ["chat", "messages", "responses"])
async def test_text_between_a_calls_pieces_waits_for_its_arguments_whole(tmp_path, door: str) -> None:
    """Until the thirty-first session the Messages and Responses doors gave the call `{"city": `."""
    async for g in grid(tmp_path, engine(events=TEXT_MID_CALL)):
        r = await g.post(door, True)
        assert r.status_code == 200 and b"event: error" not in r.content and b"response.failed" not in r.content
        assert READ[door](r.content) == (['{"city": "Paris"}'], "Let me see.")
        assert (await the_one_record(g.gw))["outcome"] == "ok"


@pytest.mark.parametrize("door", ["messages", "responses"])
async def test_a_piece_after_a_calls_whole_object_ends_the_answer_with_the_doors_error(tmp_path, door: str) -> None:
    """Until the thirty-first session the Messages door wrote it into the open block (an input that does not parse)
    or dropped it (a block stopped), the Responses door into its open item or dropped it: an answer that looked
    whole, its call's arguments not the engine's."""
    async for g in grid(tmp_path, engine(events=AFTER_WHOLE)):
        r = await g.post(door, True)
        assert r.status_code == 200 and T.ENDS[door] in r.content
        assert b"tool call 0's arguments went on after they ended" in r.content
        assert (await the_one_record(g.gw))["outcome"] == "interrupted"
        assert g.failures("nrt-smollm2") == 1 and inflight(g.gw) == 0


async def test_the_chat_door_passes_a_piece_after_a_whole_object_as_sent(tmp_path) -> None:
    async for g in grid(tmp_path, engine(events=AFTER_WHOLE)):
        r = await g.post("chat", True)
        assert r.status_code == 200 and _chat_calls(r.content) == (['{"city": "Paris"}{"city": "Oslo"}'], "")


@pytest.mark.parametrize("door", ["messages", "responses"])
async def test_whitespace_after_a_whole_object_is_no_error(tmp_path, door: str) -> None:
    async for g in grid(tmp_path, engine(events=SPACE_AFTER_WHOLE)):
        r = await g.post(door, True)
        assert r.status_code == 200 and T.ENDS[door] not in r.content
        calls, text = READ[door](r.content)
        assert [orjson.loads(a) for a in calls] == [{"city": "Paris"}] and text == "Done."
        assert (await the_one_record(g.gw))["outcome"] == "ok"
