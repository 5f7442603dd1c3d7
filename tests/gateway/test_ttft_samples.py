"""Which answers are a time-to-first-token sample (docs/observability.md, "What counts as a time to first token"): a
streamed answer relayed from the engine that did not refuse. Counted through the HTTP API on scripted engines:
the proxy's `aigrid_ttft_seconds` and observed-over-predicted ratio took a streamed tool loop's first byte (after whole
model turns and a tool run; OPS2 item 1), and a streamed refusal (the engine's 4xx) was marked a first token, shown as
a TTFT by the decision (explain, the dashboard) and the GenAI histogram (OPS2 item 2)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from aigrid.explain import render_decision
from aigrid.gateway.app import Gateway
from aigrid.security.firewall.texts import Source
from tests.agents.scripted_engine import ScriptedEngine, answer, call
from tests.gateway.conftest import scripted_gateway, started
from tests.gateway.planted_tool import Planted

MODEL = "smollm2-135m"
ASK = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "Look it up."}]}


def samples(text: str, name: str) -> float:
    """The samples of histogram `name` in a /metrics text, every label set together."""
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}_count{{[^}}]*}} (\S+)$", text, re.M))


async def counts(c: httpx.AsyncClient) -> dict[str, float]:
    text = (await c.get("/metrics")).text
    return {name: samples(text, name) for name in (
        "aigrid_ttft_seconds", "aigrid_ttft_observed_over_predicted_ratio", "gen_ai_server_time_to_first_token_seconds")}


@pytest.fixture
async def scripted(tmp_path: Path) -> AsyncIterator[tuple[Gateway, ScriptedEngine, httpx.AsyncClient]]:
    engine = ScriptedEngine([])
    gw = await scripted_gateway(tmp_path, engine)
    gw.agents.tools.add(Planted("crm_lookup", Source.MCP_RESULT, "crm_lookup ran"))
    async with started(gw) as c:
        yield gw, engine, c


async def test_a_streamed_tool_loops_first_byte_is_no_sample_of_the_proxys_ttft_metrics(
        scripted: tuple[Gateway, ScriptedEngine, httpx.AsyncClient]) -> None:
    _, engine, c = scripted
    engine.replies += [call("crm_lookup"), answer("done")]
    r = await c.post("/v1/chat/completions", json={
        **ASK, "tools": [{"type": "function", "function": {"name": "crm_lookup"}}]})
    assert r.status_code == 200 and '"result":"crm_lookup ran"' in r.text and len(engine.received) == 2, r.text
    assert await counts(c) == {"aigrid_ttft_seconds": 0, "aigrid_ttft_observed_over_predicted_ratio": 0,
                               "gen_ai_server_time_to_first_token_seconds": 0}
    engine.replies.append(answer("plain"))  # a stream relayed from the engine: one sample in each
    r = await c.post("/v1/chat/completions", json=ASK)
    assert r.status_code == 200, r.text
    assert await counts(c) == {"aigrid_ttft_seconds": 1, "aigrid_ttft_observed_over_predicted_ratio": 1,
                               "gen_ai_server_time_to_first_token_seconds": 1}


async def test_a_streamed_refusals_first_byte_is_no_first_token(
        scripted: tuple[Gateway, ScriptedEngine, httpx.AsyncClient]) -> None:
    _, engine, c = scripted
    engine.status = 400  # the engine refuses the streamed request: its JSON error, read whole
    r = await c.post("/v1/chat/completions", json=ASK)
    assert r.status_code == 400, r.text
    d = (await c.get(f"/v1/decisions/{r.headers['x-aigrid-decision']}")).json()
    assert d["ttft_ms"] is not None and d["ttft_is_first_token"] is False, d
    console = Console(width=300, record=True)
    console.print(render_decision(d))
    shown = console.export_text()
    assert "not a TTFT" in shown and "x the p50" not in shown, shown
    assert await counts(c) == {"aigrid_ttft_seconds": 0, "aigrid_ttft_observed_over_predicted_ratio": 0,
                               "gen_ai_server_time_to_first_token_seconds": 0}
    engine.status = 200
    engine.replies.append(answer("plain"))  # the same request answered: a first token, one sample in each
    r = await c.post("/v1/chat/completions", json=ASK)
    assert r.status_code == 200, r.text
    d = (await c.get(f"/v1/decisions/{r.headers['x-aigrid-decision']}")).json()
    assert d["ttft_is_first_token"] is True, d
    assert await counts(c) == {"aigrid_ttft_seconds": 1, "aigrid_ttft_observed_over_predicted_ratio": 1,
                               "gen_ai_server_time_to_first_token_seconds": 1}
