"""OpenAI's automatic compaction on POST /v1/responses (`context_management: [{"type": "compaction",
"compact_threshold": N}]`), with the official openai SDK against the in-process gateway and a SCRIPTED engine
(tests/agents/scripted_engine.py) that records what it was sent: above the threshold the conversation is compacted
first by the pass POST /v1/responses/compact runs (its own audited, metered exchange), then answered on its user
messages and the summary; the Response's output starts with the compaction item."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from aigrid.gateway.compaction import COMPACTION_PROMPT, SUMMARY_HEADER
from tests.gateway.compaction_grid import (
    ATTACK,
    CONVERSATION,
    LOW,
    METERED,
    MODEL,
    SUMMARY,
    SUMMARY_MESSAGE,
    USERS,
    Grid,
    as_input,
    scripted,
    scripted_grid,
)
from tests.gateway.conftest import audit_rows

HIGH = [{"type": "compaction", "compact_threshold": 100_000}]


@pytest.fixture
async def grid(tmp_path: Path) -> AsyncIterator[Grid]:
    async with scripted_grid(tmp_path) as served:
        yield served


async def test_below_the_threshold_nothing_changes_and_without_one_the_models_share_decides(grid: Grid) -> None:
    for threshold in (HIGH, [{"type": "compaction"}]):  # given, and 80% of smollm2-135m's 8192 tokens
        grid.says("Dear Dana, ...")
        done = await grid.client.responses.create(model=MODEL, input=CONVERSATION, context_management=threshold)
        assert [item.type for item in done.output] == ["message"] and done.output_text == "Dear Dana, ..."
        assert grid.engine.received[-1]["messages"][0] == USERS[0] and done.usage is not None
        assert done.usage.total_tokens == 15
    assert len(grid.engine.received) == 2
    # about 10,000 tokens (40,000 characters; within the context check's 8 per token): above 80% of 8192
    long = [*CONVERSATION[:2], {**CONVERSATION[2], "output": "Invoice line: 1 item, 40 EUR. " * 1300},
            *CONVERSATION[3:]]
    scripted(grid)
    done = await grid.client.responses.create(model=MODEL, input=long, context_management=[{"type": "compaction"}])
    assert [item.type for item in done.output] == ["compaction", "message"]
    assert grid.engine.received[-2]["messages"][0]["content"] == COMPACTION_PROMPT
    assert grid.engine.received[-1]["messages"] == [*USERS, SUMMARY_MESSAGE]


async def test_above_the_threshold_it_is_compacted_first_then_answered_on_the_summary(grid: Grid) -> None:
    scripted(grid)
    raw = await grid.client.responses.with_raw_response.create(model=MODEL, input=CONVERSATION,
                                                               context_management=LOW)
    assert SUMMARY not in raw.http_response.text  # sealed
    done = raw.parse()
    assert [item.type for item in done.output] == ["compaction", "message"] and done.output_text == "Dear Dana, ..."
    assert done.output[0].id.startswith("cmp_") and done.output[0].encrypted_content
    pass_, answer = grid.engine.received
    assert pass_["messages"][0] == {"role": "system", "content": COMPACTION_PROMPT} and "tools" not in pass_
    assert {"role": "tool", "tool_call_id": "c1", "content": CONVERSATION[2]["output"]} in pass_["messages"]
    assert answer["messages"] == [*USERS, SUMMARY_MESSAGE]  # the user messages and the summary, nothing else
    # usage: the pass's and the answer's, as one Response's
    assert done.usage is not None
    assert (done.usage.input_tokens, done.usage.output_tokens, done.usage.total_tokens) == (80, 35, 115)
    # the client sends the output back: the compacted state travels, the summary restored
    grid.says("Shorter: ...")
    await grid.client.responses.create(model=MODEL, input=[*as_input(done.output),
                                                           {"role": "user", "content": "Make it shorter."}],
                                       context_management=HIGH)
    assert grid.engine.received[-1]["messages"][0] == SUMMARY_MESSAGE


async def test_streamed_the_compaction_item_comes_first_in_openais_events(grid: Grid) -> None:
    scripted(grid)
    stream = await grid.client.responses.create(model=MODEL, input=CONVERSATION, context_management=LOW, stream=True)
    events = [e async for e in stream]
    kinds = [e.type for e in events]
    assert kinds[:5] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.compaction.compacting", "response.output_item.done"], kinds
    assert events[2].item.type == "compaction" and events[2].output_index == 0
    assert events[3].item_id == events[4].item.id and events[4].item.encrypted_content
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert kinds[5] == "response.output_item.added" and events[5].output_index == 1
    final = events[-1].response
    assert kinds[-1] == "response.completed" and [i.type for i in final.output] == ["compaction", "message"]
    assert final.usage is not None and final.usage.total_tokens == 115
    assert grid.engine.received[-1]["messages"] == [*USERS, SUMMARY_MESSAGE]


async def test_a_follow_up_continues_from_the_summary_not_the_old_turns(grid: Grid,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from aigrid.gateway import routes
    from aigrid.security.firewall.texts import Source

    read: list[list[tuple[Source, str]]] = []

    def spy(body: dict[str, Any], documents: Any = ()) -> Any:
        texts = chat_texts(body, documents)
        read.append([(t.source, t.text) for t in texts])
        return texts

    chat_texts = routes.chat_texts
    monkeypatch.setattr(routes, "chat_texts", spy)
    grid.says("Invoice 2231 totals 120 EUR.")
    first = await grid.client.responses.create(model=MODEL, input="Find the invoice from Dana and total it.")
    scripted(grid)
    compacted = await grid.client.responses.create(model=MODEL, previous_response_id=first.id,
                                                   input="Now draft a reply to Dana.", context_management=LOW)
    assert compacted.previous_response_id == first.id and compacted.output[0].type == "compaction"
    assert {"role": "assistant", "content": "Invoice 2231 totals 120 EUR."} in grid.engine.received[-2]["messages"]
    assert grid.engine.received[-1]["messages"] == [*USERS, SUMMARY_MESSAGE]
    grid.says("Sent.")
    await grid.client.responses.create(model=MODEL, previous_response_id=compacted.id, input="Send it.")
    assert grid.engine.received[-1]["messages"] == [*USERS, SUMMARY_MESSAGE,
                                                   {"role": "assistant", "content": "Dear Dana, ..."},
                                                   {"role": "user", "content": "Send it."}]
    # the firewall reads the stored summary as it read it when it came: the client's own words (a user message)
    assert (Source.USER, SUMMARY_MESSAGE["content"]) in read[-1], read[-1]
    assert (Source.USER, SUMMARY_MESSAGE["content"]) in read[-2]  # the compacted answer's own request
    # the history read stops at the compacted turn: the first response may be gone
    await grid.client.responses.delete(first.id)
    grid.says("Again.")
    await grid.client.responses.create(model=MODEL, previous_response_id=compacted.id, input="Again.")
    assert len(grid.engine.received[-1]["messages"]) == 5


async def test_an_attack_in_a_tool_result_being_compacted_is_blocked(grid: Grid) -> None:
    poisoned = [*CONVERSATION[:2], {**CONVERSATION[2], "output": f"Invoice 2231. {ATTACK}"}, *CONVERSATION[3:]]
    scripted(grid)
    with pytest.raises(openai.BadRequestError) as blocked:
        await grid.client.responses.create(model=MODEL, input=poisoned, context_management=LOW)
    assert blocked.value.body["code"] == "firewall_blocked" and blocked.value.body["param"] == "input[2].output"
    assert grid.engine.received == []
    rows = await audit_rows(grid.gw)
    assert [(r["extra"]["route"], r["outcome"]) for r in rows[-2:]] == [
        ("/v1/responses/compact", "error:firewall_blocked"), ("/v1/responses", "error:firewall_blocked")]


async def test_both_model_calls_are_metered_and_audited(grid: Grid) -> None:
    principal = grid.gw.guard.principal(None, "metered")
    scripted(grid)
    done = await grid.client.responses.create(model=MODEL, input=CONVERSATION, context_management=LOW,
                                              extra_headers=METERED)
    assert await grid.gw.guard.quotas.tokens_this_minute(principal) == 115  # both settled to their usage
    compact, create = (await audit_rows(grid.gw))[-2:]
    assert compact["extra"]["route"] == "/v1/responses/compact" and compact["outcome"] == "ok"
    assert (compact["prompt_tokens"], compact["completion_tokens"]) == (70, 30) and compact["tenant"] == "metered"
    assert compact["extra"]["response_id"] == done.id and compact["extra"]["compaction_item"] == done.output[0].id
    assert create["extra"]["route"] == "/v1/responses" and create["outcome"] == "ok"
    assert (create["prompt_tokens"], create["completion_tokens"]) == (10, 5)


async def test_a_failed_pass_fails_the_response(grid: Grid) -> None:
    grid.engine.replies = [{"content": ""}, {"content": "never"}]
    with pytest.raises(openai.APIStatusError) as failed:
        await grid.client.responses.create(model=MODEL, input=CONVERSATION, context_management=LOW)
    assert failed.value.status_code == 502 and "compaction pass" in failed.value.body["message"]
    assert len(grid.engine.received) == 1


@pytest.mark.parametrize("value,param", [
    ([{"type": "truncation"}], "context_management[0].type"),
    ([{"type": "compaction", "compact_threshold": -5}], "context_management[0].compact_threshold"),
    ([{"type": "compaction", "compact_threshold": 0}], "context_management[0].compact_threshold"),
    ([{"type": "compaction", "compact_threshold": 2000.5}], "context_management[0].compact_threshold"),
    ([{"type": "compaction", "compact_threshold": "2000"}], "context_management[0].compact_threshold"),
    ([{"type": "compaction"}, {"type": "compaction"}], "context_management"),
    ({"type": "compaction"}, "context_management"),
], ids=["unknown type", "negative", "zero", "not an integer", "a string", "two entries", "not a list"])
async def test_bad_context_management_is_a_400_naming_the_field(grid: Grid, value: Any, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await grid.client.post("/responses", body={"model": MODEL, "input": "hi", "context_management": value},
                               cast_to=object)
    assert refused.value.body["param"] == param, refused.value.body
    assert grid.engine.received == []


@pytest.mark.parametrize("extra,param", [({"background": True}, "context_management"),
                                         ({"conversation": "conv_x"}, "context_management")],
                         ids=["background", "conversation"])
async def test_what_is_not_served_with_it_is_a_400(grid: Grid, extra: dict[str, Any], param: str) -> None:
    body = {"model": MODEL, "input": CONVERSATION, "context_management": LOW, **extra}
    if "conversation" in extra:
        body["conversation"] = (await grid.client.conversations.create()).id
    with pytest.raises(openai.BadRequestError) as refused:
        await grid.client.post("/responses", body=body, cast_to=object)
    assert refused.value.body["param"] == param, refused.value.body
    assert grid.engine.received == []


def test_a_websocket_create_is_compacted_too(tmp_path: Path) -> None:
    """The WebSocket mode's response.create is the HTTP create (responses_socket.py): compacted the same way."""
    from tests.gateway.socket_grid import served, until_done

    with served(tmp_path) as g:
        client = g.sync_client()
        with client.responses.connect() as conn:
            conn.response.create(model=MODEL, input=CONVERSATION, context_management=LOW)
            events = until_done(iter(conn))
            kinds = [e.type for e in events]
            assert "response.compaction.compacting" in kinds and kinds[-1] == "response.completed", kinds
            assert [i.type for i in events[-1].response.output] == ["compaction", "message"]
            sent = [m for e in g.engines.values() for m in e.received]
            assert sent[-2]["messages"][0] == {"role": "system", "content": COMPACTION_PROMPT}
            assert sent[-1]["messages"][-1]["content"].startswith(SUMMARY_HEADER)


async def test_the_pass_runs_at_the_urgency_the_body_asks(grid: Grid) -> None:
    """The body's `priority` and `deadline_ms` (read on the Responses door since 937dfd48) count for the automatic
    compaction's pass as for its answer: the pass's chat request (responses_api._pass_body) left them out, so it was
    admitted at the default urgency, a `batch` client's pass ahead of interactive work, a deadline unheeded."""
    scripted(grid)
    done = await grid.client.responses.create(model=MODEL, input=CONVERSATION, context_management=LOW,
                                              extra_headers=METERED,
                                              extra_body={"priority": "batch", "deadline_ms": 60_000})
    assert [item.type for item in done.output] == ["compaction", "message"]
    pass_, answer = grid.engine.received
    assert not {"priority", "deadline_ms"} & (pass_.keys() | answer.keys())  # the gateway's fields, never the engine's
    compact, create = (await audit_rows(grid.gw))[-2:]
    assert compact["extra"]["route"] == "/v1/responses/compact" and create["extra"]["route"] == "/v1/responses"
    for row in (compact, create):
        urgency = row["extra"].get("urgency")
        assert urgency is not None and urgency["priority"] == "batch" and urgency["deadline_ms"] == 60_000, row
