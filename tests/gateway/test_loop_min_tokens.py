"""A client's `min_tokens` (vLLM's and SGLang's: the fewest tokens before an end-of-sequence may end the answer) in a
request the gateway's tool loop serves. Each model turn of the loop is sent its own `max_tokens` (agents/loop.py
_turn_base): the client's, else the loop's `step_max_tokens` (256), lowered where the quota has room for fewer
(_cap_output). A turn sent min_tokens > max_tokens is vLLM's 400 ("min_tokens must be less than or equal to
max_tokens"), without a `param`, after the routing and the count, mid-loop where a tool had run. A SCRIPTED engine
(tests/agents/scripted_engine.py) plays the model and records every turn's body."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from aigrid.gateway.app import build_gateway
from aigrid.spec.models import QuotaSpec, TenantSpec
from tests.agents.scripted_engine import ScriptedEngine, answer, call
from tests.gateway.conftest import _no_sleep, audit_rows, scripted_gateway, spec_in, started

CALCULATOR = [{"type": "function", "function": {"name": "calculator"}}]
ASK = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "What is 1 + 1?"}], "tools": CALCULATOR}
TENANT = {"x-aigrid-tenant": "metered"}


def within(sent: list[dict]) -> None:
    """Every turn the engine was sent asks no more min_tokens than its max_tokens (vLLM's rule)."""
    assert sent and all(body.get("min_tokens", 0) <= body["max_tokens"] for body in sent), \
        [(body.get("min_tokens"), body.get("max_tokens")) for body in sent]


@pytest.mark.parametrize("stream", [False, True])
async def test_min_tokens_past_a_turns_own_limit_without_an_output_limit_is_refused_naming_it(
        tmp_path: Path, stream: bool) -> None:
    """A request with server-side tools and no output limit: each turn is sent the loop's step_max_tokens (256) as
    max_tokens, so a min_tokens of 257 (within the grid's 4,096, which a request without tools is held to) reached
    the engine as min_tokens > max_tokens on every turn: vLLM's 400 without a param. Now the client's 400 naming
    `min_tokens` and saying to set max_tokens, before any engine, audited; up to 256 is sent as asked, and with the
    client's own max_tokens a larger one is served."""
    engine = ScriptedEngine([])
    gw = await scripted_gateway(tmp_path, engine)
    step = gw.agents.loop.step_max_tokens
    async with started(gw) as c:
        r = await c.post("/v1/chat/completions", json={**ASK, "min_tokens": step + 1, "stream": stream})
        assert r.status_code == 400, (r.status_code, r.text[:300], [b.get("max_tokens") for b in engine.received])
        err = r.json()["error"]
        assert err["param"] == "min_tokens" and err["type"] == "invalid_request_error", err
        assert f"({step + 1})" in err["message"] and "max_tokens" in err["message"], err
        assert engine.received == []
        [row] = await audit_rows(gw)
        assert row["outcome"] == "error:invalid_request" and row["decision"] == {}, row  # before the routing
        for body in ({**ASK, "min_tokens": step}, {**ASK, "min_tokens": step + 1, "max_tokens": step + 1}):
            engine.received.clear()
            engine.replies += [call("calculator", expression="1 + 1"), answer("2")]
            r = await c.post("/v1/chat/completions", json={**body, "stream": stream})
            assert r.status_code == 200, r.text[:300]
            within(engine.received)
            assert len(engine.received) == 2 and all(b["min_tokens"] == body["min_tokens"] for b in engine.received)


async def test_a_turn_the_quota_cuts_below_min_tokens_is_sent_min_tokens_no_larger_than_its_limit(
        tmp_path: Path) -> None:
    """A turn the quota has room for in part is sent fewer output tokens than the client's max_tokens
    (_cap_output); its min_tokens stayed the client's, so the turn reached the engine with min_tokens > max_tokens
    mid-loop (vLLM's 400 after the calculator had run). Now the turn's min_tokens is lowered with its max_tokens:
    the turn is cut short by the quota anyway (stop "token_budget" where no further turn has room)."""
    spec = spec_in(tmp_path)
    spec = spec.model_copy(update={"tenants": {**spec.tenants,
                                               "metered": TenantSpec(quotas=QuotaSpec(token_budget=300))}})
    engines = {e.id: ScriptedEngine([call("calculator", expression="1 + 1"), answer("2")]) for e in spec.endpoints}
    gw = build_gateway(spec, engines, rng=random.Random(3), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    async with started(gw) as c:
        r = await c.post("/v1/chat/completions", json={**ASK, "max_tokens": 250, "min_tokens": 250}, headers=TENANT)
    sent = [body for e in engines.values() for body in e.received]
    assert r.status_code == 200, r.text[:300]
    assert any(body["max_tokens"] < 250 for body in sent), [body["max_tokens"] for body in sent]  # the quota cut one
    within(sent)


@pytest.mark.parametrize("tool_calls", ["native", "constrained"])
async def test_min_tokens_with_only_the_clients_own_tools_is_held_to_the_grids_limit_not_a_turns(
        tmp_path: Path, tool_calls: str) -> None:
    """A request whose tools are all the client's is sent the grid's limit as max_tokens where it sets none (routes:
    its OutputBound; unwrapped on a native model, the loop's one turn on a constrained one reads that max_tokens, not
    step_max_tokens), so a min_tokens past step_max_tokens and within the grid's limit is served as asked. The
    server-side tools' check (loop.check_min_tokens) refused it, a 400 about the gateway's tool loop, until the final
    reading F2 of the thirty-fourth session."""
    engine = ScriptedEngine([answer("It is sunny.")])
    gw = await scripted_gateway(tmp_path, engine, tool_calls=tool_calls)
    step, limit = gw.agents.loop.step_max_tokens, gw.spec.gateway.max_output_tokens
    assert step + 1 <= limit
    own = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    async with started(gw) as c:
        r = await c.post("/v1/chat/completions", json={**ASK, "tools": own, "min_tokens": step + 1})
        assert r.status_code == 200, r.text[:300]
    [sent] = engine.received
    assert sent["min_tokens"] == step + 1 and sent["max_tokens"] >= step + 1, sent


async def test_min_tokens_with_the_clients_own_tools_where_the_context_leaves_no_room_is_served_not_refused_after_routing(
        tmp_path: Path) -> None:
    """A loop of the client's own tools alone (a constrained model) whose prompt leaves the engine's context no room
    for the grid's limit gets no max_tokens from the grid (request_info.engine_output_limit: None), so its turn is sent
    the loop's step_max_tokens. run_tool_loop repeated check_min_tokens there and refused a min_tokens past it: a 400
    after the routing (a decision chosen, audited), which no check before it could tell the client (thirty-fifth
    session, FIX6). Now the one check is before the routing (server-side tools); here the turn is sent min_tokens
    lowered to its max_tokens, as a turn the quota cuts is (_cap_output)."""
    engine = ScriptedEngine([answer("It is sunny.")])
    gw = await scripted_gateway(tmp_path, engine, tool_calls="constrained")
    step = gw.agents.loop.step_max_tokens
    own = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    long = [{"role": "user", "content": "word " * 6_000}]  # 30,000 characters on an 8,192-token context
    async with started(gw) as c:
        r = await c.post("/v1/chat/completions", json={**ASK, "messages": long, "tools": own, "min_tokens": step + 1})
        assert r.status_code == 200, r.text[:300]
    [sent] = engine.received
    assert sent["max_tokens"] == step, sent["max_tokens"]  # the grid's bound left none: the loop's own limit
    within(engine.received)
