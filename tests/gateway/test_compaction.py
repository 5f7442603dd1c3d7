"""POST /v1/responses/compact (the official openai SDK's `client.responses.compact`) and compaction items as input,
through the in-process gateway with a SCRIPTED engine (tests/agents/scripted_engine.py) that records what it
was sent. The compaction pass is one request of the one pipeline (quotas, firewall, routing, audit); its
answer is the user messages word for word and one compaction item, whose summary is sealed to the tenant and
restored (as a user message the firewall reads) when the item comes back as input."""

from __future__ import annotations

import base64
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from aigrid.gateway.app import build_app, build_gateway
from aigrid.gateway.compaction import COMPACTION_PROMPT, SUMMARY_HEADER, SUMMARY_MAX_TOKENS
from tests.agents.scripted_engine import ScriptedEngine
from tests.gateway.compaction_grid import (
    ATTACK,
    CONVERSATION,
    METERED,
    MODEL,
    SUMMARY,
    Grid,
    as_input,
    scripted_grid,
)
from tests.gateway.conftest import _no_sleep, audit_rows, spec_in

FRANKFURT = {"x-aigrid-client-location": "Frankfurt"}
TOKYO = {"x-aigrid-client-location": "Tokyo"}


@pytest.fixture
async def grid(tmp_path: Path) -> AsyncIterator[Grid]:
    async with scripted_grid(tmp_path) as served:
        yield served


async def compacted(grid: Grid, **kwargs: Any) -> Any:
    grid.says(SUMMARY)
    raw = await grid.client.responses.with_raw_response.compact(model=MODEL, **kwargs)
    assert SUMMARY not in raw.http_response.text  # sealed
    return raw.parse()


async def test_compacting_keeps_the_user_messages_and_adds_one_sealed_compaction_item(grid: Grid) -> None:
    done = await compacted(grid, input=CONVERSATION, instructions="You handle the user's mail.")
    assert done.object == "response.compaction" and done.id.startswith("resp_")
    kinds = [(item.type, getattr(item, "role", None)) for item in done.output]
    assert kinds == [("message", "user"), ("message", "user"), ("compaction", None)]
    assert [item.content[0].text for item in done.output[:2]] == [CONVERSATION[0]["content"], CONVERSATION[4]["content"]]
    item = done.output[-1]
    assert item.id.startswith("cmp_") and item.encrypted_content
    assert done.usage.input_tokens == 10 and done.usage.output_tokens == 5 and done.usage.total_tokens == 15
    sent = grid.engine.received[-1]
    assert sent["messages"][0] == {"role": "system", "content": COMPACTION_PROMPT}
    assert sent["messages"][1] == {"role": "system", "content": "You handle the user's mail."}
    assert sent["messages"][2:7] == [
        {"role": "user", "content": CONVERSATION[0]["content"]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "mail", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "Invoice 2231: 3 items, 120 EUR."},
        {"role": "assistant", "content": "Invoice 2231 totals 120 EUR."},
        {"role": "user", "content": CONVERSATION[4]["content"]}]
    assert sent["messages"][-1]["role"] == "user" and len(sent["messages"]) == 8
    assert sent["max_tokens"] == SUMMARY_MAX_TOKENS and "tools" not in sent and sent.get("stream") is not True


async def test_the_next_request_reads_the_summary_and_the_user_messages(grid: Grid) -> None:
    done = await compacted(grid, input=CONVERSATION)
    grid.says("Dear Dana, ...")
    nxt = await grid.client.responses.create(model=MODEL, input=[*as_input(done.output),
                                                                 {"role": "user", "content": "Make it shorter."}])
    assert nxt.output_text == "Dear Dana, ..."
    assert grid.engine.received[-1]["messages"] == [
        {"role": "user", "content": CONVERSATION[0]["content"]},
        {"role": "user", "content": CONVERSATION[4]["content"]},
        {"role": "user", "content": f"{SUMMARY_HEADER}\n{SUMMARY}"},
        {"role": "user", "content": "Make it shorter."}]
    counted = await grid.client.responses.input_tokens.count(model=MODEL, input=as_input(done.output))
    bare = await grid.client.responses.input_tokens.count(model=MODEL, input=as_input(done.output)[:2])
    assert counted.input_tokens > bare.input_tokens  # the summary is counted too
    # compacted again: the earlier summary is read by the pass (folded into the new one), not kept as a message
    again = await compacted(grid, input=[*as_input(done.output), {"role": "user", "content": "Send it."}])
    assert {"role": "user", "content": f"{SUMMARY_HEADER}\n{SUMMARY}"} in grid.engine.received[-1]["messages"]
    assert [i.type for i in again.output] == ["message", "message", "message", "compaction"]


async def test_a_stored_history_is_compacted_and_its_summary_stays_in_its_jurisdiction(grid: Grid) -> None:
    grid.says("Invoice 2231 totals 120 EUR.")
    first = await grid.client.responses.create(model=MODEL, input="Total Dana's invoice 2231.",
                                               extra_headers=FRANKFURT)
    grid.says(SUMMARY)
    raw = await grid.client.responses.with_raw_response.compact(
        model=MODEL, previous_response_id=first.id, input=[{"role": "user", "content": "Draft a reply."}],
        extra_headers=TOKYO)
    assert raw.headers["x-aigrid-jurisdiction"] == "EU"  # routed where the history is kept, not near Tokyo
    done = raw.parse()
    assert [i.content[0].text for i in done.output[:-1]] == ["Total Dana's invoice 2231.", "Draft a reply."]
    assert {"role": "assistant", "content": "Invoice 2231 totals 120 EUR."} in grid.engine.received[-1]["messages"]
    # a request reading the summary is routed there too, and one that must stay elsewhere is refused
    grid.says("ok")
    nxt = await grid.client.responses.with_raw_response.create(model=MODEL, input=as_input(done.output),
                                                               extra_headers=TOKYO)
    assert nxt.headers["x-aigrid-jurisdiction"] == "EU"
    with pytest.raises(openai.BadRequestError) as us:
        await grid.client.responses.create(model=MODEL, input=as_input(done.output),
                                           extra_headers={"x-aigrid-residency": "US"})
    assert us.value.body["param"] == "input[2]" and us.value.body["code"] == "conversation_residency"


def tampered(token: str) -> str:
    prefix, body = token[:6], token[6:]
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[-1] ^= 1
    return prefix + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


async def test_a_tampered_foreign_or_forged_compaction_item_is_a_400_naming_it(grid: Grid) -> None:
    done = await compacted(grid, input=CONVERSATION)
    items = as_input(done.output)
    token = items[-1]["encrypted_content"]
    calls = len(grid.engine.received)
    for label, content, headers in (("tampered", tampered(token), {}), ("garbage", "not even base64 !", {}),
                                    ("forged", "aigc1_" + base64.urlsafe_b64encode(b"x" * 64).decode(), {}),
                                    ("another tenant's", token, {"x-aigrid-tenant": "eu-bank"})):
        bad = [*items[:2], {**items[-1], "encrypted_content": content}]
        for call in (grid.client.responses.create, grid.client.responses.compact,
                     grid.client.responses.input_tokens.count):
            with pytest.raises(openai.BadRequestError) as refused:
                await call(model=MODEL, input=bad, extra_headers=headers)
            body = refused.value.body
            assert body["param"] == "input[2].encrypted_content", (label, body)
            assert body["code"] == "invalid_encrypted_content" and refused.value.status_code == 400, (label, body)
    with pytest.raises(openai.BadRequestError) as missing:
        await grid.client.responses.create(model=MODEL, input=[{"type": "compaction"}])
    assert missing.value.body["param"] == "input[0].encrypted_content"
    assert len(grid.engine.received) == calls  # no engine read any of them


async def test_an_attack_in_a_tool_result_being_compacted_is_blocked_by_the_firewall(grid: Grid) -> None:
    poisoned = [*CONVERSATION[:2], {**CONVERSATION[2], "output": f"Invoice 2231. {ATTACK}"}, *CONVERSATION[3:]]
    with pytest.raises(openai.BadRequestError) as blocked:
        await compacted(grid, input=poisoned)
    assert blocked.value.body["code"] == "firewall_blocked" and blocked.value.body["param"] == "input[2].output"
    assert grid.engine.received == []
    record = (await audit_rows(grid.gw))[-1]
    assert record["extra"]["route"] == "/v1/responses/compact" and record["outcome"] == "error:firewall_blocked"


async def test_the_compaction_pass_is_metered_and_audited(grid: Grid) -> None:
    principal = grid.gw.guard.principal(None, "metered")
    done = await compacted(grid, input=CONVERSATION, extra_headers=METERED)
    assert await grid.gw.guard.quotas.tokens_this_minute(principal) == 15  # settled to its usage (10 + 5)
    record = (await audit_rows(grid.gw))[-1]
    assert record["extra"]["route"] == "/v1/responses/compact" and record["outcome"] == "ok"
    assert record["tenant"] == "metered" and (record["prompt_tokens"], record["completion_tokens"]) == (10, 5)
    assert record["extra"]["compaction_item"] == done.output[-1].id


@pytest.mark.parametrize("body,param", [
    ({"input": CONVERSATION}, "model"),
    ({"model": MODEL}, "input"),
    ({"model": MODEL, "input": []}, "input"),
    ({"model": MODEL, "input": [{"type": "web_search_call"}]}, "input[0].type"),
    ({"model": MODEL, "input": [{"role": "wizard", "content": "x"}]}, "input[0].role"),
    ({"model": MODEL, "input": CONVERSATION, "conversation": "conv_1"}, "conversation"),
    ({"model": MODEL, "input": CONVERSATION, "stream": True}, "stream"),
    ({"model": MODEL, "input": CONVERSATION, "background": True}, "background"),
    ({"model": MODEL, "input": "x", "previous_response_id": "resp_nope"}, "previous_response_id"),
], ids=["no model", "no conversation", "empty input", "item type", "role", "conversation", "stream", "background",
        "unknown previous response"])
async def test_bad_input_is_a_4xx_naming_the_field(grid: Grid, body: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.APIStatusError) as refused:
        await grid.client.post("/responses/compact", body=body, cast_to=object)
    assert refused.value.status_code in (400, 404) and refused.value.body["param"] == param, refused.value.body
    assert grid.engine.received == []


async def test_a_compaction_item_cannot_join_a_conversation(grid: Grid) -> None:
    done = await compacted(grid, input=CONVERSATION)
    conv = await grid.client.conversations.create()
    with pytest.raises(openai.BadRequestError) as refused:
        await grid.client.responses.create(model=MODEL, input=as_input(done.output), conversation=conv.id)
    assert refused.value.body["param"] == "input[2]"
    with pytest.raises(openai.BadRequestError) as kept:
        await grid.client.conversations.items.create(conv.id, items=as_input(done.output))
    assert kept.value.body["param"] == "items[2].type"
    with pytest.raises(openai.BadRequestError) as created:  # nor can a new conversation start with one
        await grid.client.conversations.create(items=as_input(done.output))
    assert created.value.body["param"] == "items[2].type"
    assert (await grid.client.conversations.items.list(conv.id)).data == []  # nothing was kept


def test_a_compaction_item_is_restored_on_a_websocket_too(tmp_path: Path) -> None:
    """The WebSocket mode's response.create is the HTTP create (responses_socket.py): the summary reaches the
    engine there too, and a tampered item is its 400 naming the field, as over HTTP."""
    from tests.gateway.socket_grid import served, until_done

    with served(tmp_path) as grid:
        client = grid.sync_client()
        done = client.responses.compact(model=MODEL, input=CONVERSATION)
        items = as_input(done.output)
        with client.responses.connect() as conn:
            conn.response.create(model=MODEL, input=[*items, {"role": "user", "content": "Go on."}])
            assert until_done(iter(conn))[-1].type == "response.completed"
            asked = [m for e in grid.engines.values() for m in e.received][-1]["messages"]
            assert asked[2] == {"role": "user", "content": f"{SUMMARY_HEADER}\nHello from the grid"}
            conn.response.create(model=MODEL, input=[{**items[-1], "encrypted_content": tampered(
                items[-1]["encrypted_content"])}])
            error = until_done(iter(conn))[-1]
            assert error.type == "error" and error.error.param == "input[0].encrypted_content", error


async def test_keys_are_checked_before_the_body_and_a_summary_keeps_to_the_keys_jurisdictions(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With keys enforced: no key is a 401 before the body is read; a summary of an EU-stored history is, for a key
    narrowed to the US, what that history is: a 403 naming the item (as previous_response_id is named)."""
    import httpx

    from aigrid.security.keys import KeyRing
    from aigrid.security.principal import Scopes

    secret = "compaction-test-secret-0123456789"
    monkeypatch.setenv("AIGRID_KEY_SECRET", secret)
    ring = KeyRing(secret.encode())
    full, us = ring.issue("default"), ring.issue("default", Scopes(jurisdictions=frozenset({"US"})))
    ring.save(tmp_path / "keys.json")
    spec = spec_in(tmp_path, enforce=True)
    engine = ScriptedEngine([])
    gw = build_gateway(spec, {e.id: engine for e in spec.endpoints}, rng=random.Random(3), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    await gw.guard.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            r = await c.post("/v1/responses/compact", content=b"{not json", headers={"content-type": "application/json"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key", r.text
            as_full, as_us = ({"authorization": f"Bearer {k.api_key}", **FRANKFURT} for k in (full, us))
            engine.replies = [{"content": "Invoice 2231 totals 120 EUR."}, {"content": SUMMARY}]
            first = (await c.post("/v1/responses", headers=as_full, json={"model": MODEL, "input": "Total it."})).json()
            done = await c.post("/v1/responses/compact", headers=as_full,
                                json={"model": MODEL, "previous_response_id": first["id"]})
            assert done.status_code == 200, done.text
            output = done.json()["output"]
            refused = await c.post("/v1/responses", headers=as_us, json={"model": MODEL, "input": output})
            assert refused.status_code == 403, refused.text
            assert (refused.json()["error"]["code"], refused.json()["error"]["param"]) == (
                "jurisdiction_not_allowed", "input[1]")
            assert len(engine.received) == 2  # the create and the pass; nothing for the refused request
    finally:
        await gw.guard.stop()


async def test_a_pass_that_writes_no_summary_is_a_502_and_a_long_one_is_cut(grid: Grid) -> None:
    """No compaction item is made of nothing (an engine that answered no text); a summary past MAX_SUMMARY_CHARS
    (an engine that ignored max_tokens) is cut before it is sealed."""
    from aigrid.gateway.compaction import MAX_SUMMARY_CHARS

    grid.says("")
    with pytest.raises(openai.APIStatusError) as empty:
        await grid.client.responses.compact(model=MODEL, input=CONVERSATION)
    assert empty.value.status_code == 502 and empty.value.body["code"] == "upstream_failed", empty.value.body
    grid.says("x" * (MAX_SUMMARY_CHARS + 500), "ok")
    long = await grid.client.responses.compact(model=MODEL, input=CONVERSATION)
    await grid.client.responses.create(model=MODEL, input=as_input(long.output))
    assert grid.engine.received[-1]["messages"][-1]["content"] == f"{SUMMARY_HEADER}\n{'x' * MAX_SUMMARY_CHARS}"
