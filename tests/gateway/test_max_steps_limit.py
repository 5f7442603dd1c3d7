"""A request's `aigrid_max_steps` within the operator's `agents.max_steps_limit`. Before, a client could ask for up
to 16 tool runs (loop.MAX_STEPS_LIMIT) whatever the operator had set: `agents.max_steps: 2` was the default only."""

from __future__ import annotations

import random
from pathlib import Path

import httpx

from aigrid.gateway.app import build_app, build_gateway
from aigrid.spec.models import AgentsSpec
from tests.agents.scripted_engine import ScriptedEngine, answer, call
from tests.gateway.conftest import _no_sleep, spec_in

MODEL = "smollm2-135m"


async def test_a_request_may_not_ask_for_more_steps_than_the_operator_allows(tmp_path: Path) -> None:
    spec = spec_in(tmp_path)
    agents = AgentsSpec.model_validate({"max_steps": 2, "max_steps_limit": 3})
    spec = spec.model_copy(update={"agents": agents})
    engine = ScriptedEngine([])
    gw = build_gateway(spec, {e.id: engine for e in spec.endpoints}, rng=random.Random(2), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    await gw.guard.start()

    def ask(steps: int) -> dict:
        return {"model": MODEL, "messages": [{"role": "user", "content": "6 times 7?"}], "aigrid_max_steps": steps,
                "tools": [{"type": "function", "function": {"name": "calculator"}}]}

    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            r = await c.post("/v1/chat/completions", json=ask(4))
            assert r.status_code == 400, r.text
            assert r.json()["error"]["param"] == "aigrid_max_steps"
            assert "from 1 to 3 (this grid's agents.max_steps_limit)" in r.json()["error"]["message"]
            assert engine.received == []
            engine.replies = [call("calculator", expression="6*7")] * 3 + [answer("42")]
            r = await c.post("/v1/chat/completions", json=ask(3))
            assert r.status_code == 200, r.text
            assert len(r.json()["aigrid_steps"]) == 3
    finally:
        await gw.guard.stop()
