"""What `POST /v1/responses/input_tokens` counts around automatic compaction (docs/responses-api.md, "Automatic
compaction", Limits), with the official openai SDK and the SCRIPTED engine of test_responses_auto_compact.py: the
field is accepted and not used (the count is the uncompacted conversation's, the figure its threshold is compared
with: no compaction pass runs in a count), and once a compacted turn is stored, a count continuing it reads the
compacted history, as the create continuing it sends the engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.gateway.compaction_grid import (
    CONVERSATION,
    LOW,
    MODEL,
    SUMMARY_MESSAGE,
    USERS,
    Grid,
    scripted,
    scripted_grid,
)


@pytest.fixture
async def grid(tmp_path: Path) -> AsyncIterator[Grid]:
    async with scripted_grid(tmp_path) as served:
        yield served


async def test_a_count_with_context_management_is_the_uncompacted_conversations(grid: Grid) -> None:
    count = grid.client.responses.input_tokens.count
    bare = await count(model=MODEL, input=CONVERSATION)
    # the SDK has no such argument (a client may still send it): extra_body
    with_field = await count(model=MODEL, input=CONVERSATION, extra_body={"context_management": LOW})
    assert with_field.input_tokens == bare.input_tokens > LOW[0]["compact_threshold"]  # a create would compact
    assert grid.engine.received == []  # no pass ran for it


async def test_a_count_continuing_a_compacted_turn_reads_the_compacted_history(grid: Grid) -> None:
    scripted(grid)
    compacted = await grid.client.responses.create(model=MODEL, input=CONVERSATION, context_management=LOW)
    assert compacted.output[0].type == "compaction"
    asked = len(grid.engine.received)
    count = grid.client.responses.input_tokens.count
    continued = await count(model=MODEL, previous_response_id=compacted.id, input="Send it.")
    written = await count(model=MODEL, input=[*USERS, SUMMARY_MESSAGE,
                                              {"role": "assistant", "content": "Dear Dana, ..."},
                                              {"role": "user", "content": "Send it."}])
    uncompacted = await count(model=MODEL, input=[*CONVERSATION, {"role": "assistant", "content": "Dear Dana, ..."},
                                                  {"role": "user", "content": "Send it."}])
    # the compacted history's count (the test's summary is longer than its short conversation)
    assert continued.input_tokens == written.input_tokens != uncompacted.input_tokens
    assert len(grid.engine.received) == asked  # counting sends nothing to an engine
    grid.says("Sent.")
    await grid.client.responses.create(model=MODEL, previous_response_id=compacted.id, input="Send it.")
    assert grid.engine.received[-1]["messages"] == [*USERS, SUMMARY_MESSAGE,
                                                   {"role": "assistant", "content": "Dear Dana, ..."},
                                                   {"role": "user", "content": "Send it."}]
