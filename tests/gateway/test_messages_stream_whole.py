"""The anthropic SDK's stream helper (`client.messages.stream(...).get_final_message()`) accumulates the same message
as the non-streamed answer, over a tool call too: content blocks, stop_reason, stop_sequence (the message id is
each answer's own). Native and constrained tool modes, text before the call and a call alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aigrid.gateway.app import build_app
from tests.agents.scripted_engine import ScriptedEngine
from tests.gateway.conftest import scripted_gateway
from tests.gateway.sdk_clients import anthropic_client

TOOL = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                                "required": ["city"]}}
ASK: Any = {"model": "smollm2-135m", "max_tokens": 64, "tools": [TOOL],
            "messages": [{"role": "user", "content": "Weather in Paris?"}]}
NATIVE = {"content": "Let me look.", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}
CONSTRAINED = {"content": '{"tool": "get_weather", "arguments": {"city": "Paris"}}'}


@pytest.mark.parametrize(("mode", "reply", "choice"), [
    ("native", NATIVE, {"type": "auto"}),
    ("constrained", CONSTRAINED, {"type": "any"}),
    ("constrained", CONSTRAINED, {"type": "tool", "name": "get_weather"}),
])
async def test_the_stream_helpers_final_message_is_the_whole_answer_over_a_tool_call(
        tmp_path: Path, mode: str, reply: dict[str, Any], choice: dict[str, Any]) -> None:
    engine = ScriptedEngine([dict(reply), dict(reply)])
    claude = anthropic_client(build_app(await scripted_gateway(tmp_path, engine, mode)))
    whole = await claude.messages.create(**ASK, tool_choice=choice)
    async with claude.messages.stream(**ASK, tool_choice=choice) as s:
        streamed = await s.get_final_message()
    await claude.close()
    shown = [whole.model_dump(exclude={"id", "usage"}), streamed.model_dump(exclude={"id", "usage"})]
    for message in shown:  # each answer's own call id
        for block in message["content"]:
            block.pop("id", None)
    assert shown[0] == shown[1], shown
    assert whole.stop_reason == "tool_use" and whole.content[-1].type == "tool_use"
    assert whole.content[-1].input == {"city": "Paris"}  # type: ignore[union-attr]
