"""Where a gateway line or series shows a time to first token, it is a first token's (the decision's
ttft_is_first_token, which `aigrid explain` reads): the access log's `ttft_ms` and the GenAI
`gen_ai_server_time_to_first_token_seconds`. An answer not streamed (its first byte comes after its last token) and a
streamed tool loop (after whole model turns and tool runs) have a first byte, in the access log's `first_byte_ms`,
and no TTFT. Before, the access log's `ttft_ms` was a whole answer's time, and a streamed tool loop's first byte was
observed as a time to first token."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from aigrid.gateway.app import Gateway, build_app, build_gateway
from aigrid.security.firewall.texts import Source
from tests.agents.scripted_engine import ScriptedEngine, answer, call
from tests.gateway.conftest import _no_sleep, spec_in
from tests.gateway.planted_tool import Planted

MODEL = "smollm2-135m"
TTFT_COUNT = 'gen_ai_server_time_to_first_token_seconds_count{gen_ai_operation_name="chat",' \
             f'gen_ai_request_model="{MODEL}"}} 1.0'


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.aigrid_fields for r in caplog.records if r.name == "aigrid.access"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("stream", [False, True])
async def test_the_access_line_has_a_ttft_only_of_a_first_token(
        client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, stream: bool) -> None:
    with caplog.at_level("INFO", logger="aigrid.access"):
        r = await client.post("/v1/chat/completions", json={"model": MODEL, "max_tokens": 4, "stream": stream,
                                                            "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200, r.text
    [line] = access_lines(caplog)
    d = (await client.get(f"/v1/decisions/{r.headers['x-aigrid-decision']}")).json()
    assert line["first_byte_ms"] == d["ttft_ms"] and line["first_byte_ms"] is not None, (line, d)
    assert line["ttft_ms"] == (d["ttft_ms"] if stream else None), line
    text = (await client.get("/metrics")).text
    assert (TTFT_COUNT in text) is stream, text


async def test_a_streamed_tool_loop_has_a_first_byte_and_no_ttft(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    engine = ScriptedEngine([call("crm_lookup"), answer("done")])
    spec = spec_in(tmp_path)
    gw: Gateway = build_gateway(spec, {e.id: engine for e in spec.endpoints}, rng=random.Random(2), sleep=_no_sleep)
    gw.agents.tools.add(Planted("crm_lookup", Source.MCP_RESULT, "crm_lookup ran"))
    await gw.scraper.scrape_once()
    await gw.guard.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            with caplog.at_level("INFO", logger="aigrid.access"):
                r = await c.post("/v1/chat/completions", json={
                    "model": MODEL, "stream": True, "messages": [{"role": "user", "content": "Look it up."}],
                    "tools": [{"type": "function", "function": {"name": "crm_lookup"}}]})
                assert r.status_code == 200, r.text
            assert '"result":"crm_lookup ran"' in r.text and len(engine.received) == 2, r.text  # two turns, a tool run
            d = (await c.get(f"/v1/decisions/{r.headers['x-aigrid-decision']}")).json()
            assert d["ttft_ms"] is not None and d["ttft_is_first_token"] is False, d
            text = (await c.get("/metrics")).text
            assert "gen_ai_client_operation_duration_seconds_count" in text, text  # the request was observed
            assert "gen_ai_server_time_to_first_token_seconds_count" not in text, text
            [line] = access_lines(caplog)
            assert (line["ttft_ms"], line["first_byte_ms"]) == (None, d["ttft_ms"]), line
    finally:
        await gw.guard.stop()
