"""Whose steps an answer's `aigrid_steps` are, at the Responses door: the pipeline decides once (routes._forward:
a tool loop with server-side tools answers) and the door reads that decision (Exchange.steps), not the rule again."""

from __future__ import annotations

from typing import Any

import pytest

from tests.gateway import hostile_engine as H
from tests.gateway import hostile_grid as T
from tests.gateway.translating_grid import FORGED, PII, chunk, engine, grid


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_tool_offered_while_the_engine_answers_does_not_make_its_steps_the_grids(tmp_path,
                                                                                         stream: bool) -> None:
    """The Responses door asked again, once the answer came, whether a tool loop answered (the request's tools against
    the registry as it is then), where the pipeline had decided it before routing: an MCP server that offers a tool
    of the client's tool's name meanwhile (notifications/tools/list_changed) had an engine's forged `aigrid_steps`
    shown as the grid's tool runs (mcp_call items, their PII past any redaction) though no loop ran. Now the door
    reads the pipeline's decision (Exchange.steps)."""
    from aigrid.agents.calculator import Calculator

    class Later(Calculator):
        name = "f"

    offered: list[Any] = []
    events = [chunk({"content": "Hi"}), chunk({}, "stop", aigrid_steps=[FORGED])]
    answers = engine(whole=H.answer_of() | {"aigrid_steps": [FORGED]}, events=events)

    def bad(path: str, req: dict) -> H.Script:
        if not offered:  # the tool list changes while the engine answers
            offered.append(g.gw.agents.tools.add(Later()))
        return answers(path, req)

    async for g in grid(tmp_path, bad):
        models = g.gw.spec.models  # the engine calls the client's tool itself: no tool loop
        models[T.M] = models[T.M].model_copy(update={"tool_calls": "native"})
        r = await g.post("responses", stream, tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}}])
        assert offered and "f" in g.gw.agents.tools
        assert r.status_code == 200 and b"mcp_call" not in r.content and PII.encode() not in r.content, r.text
        assert b"Hi" in r.content or b"Hello" in r.content
