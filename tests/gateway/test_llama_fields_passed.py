"""The last llama-server fields of issue 12 (DOOR2, thirty-fourth session) that pass to the engine as written, each
said why in docs/security.md ("Every door, audited"): a change here is a change of that row. (`verbose` is
refused; `return_progress` and `timings_per_token` are left out of the engine's request: test_cache_counts.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gateway.conftest import serving, spec_in
from tests.gateway.fake_engine import FakeEngine

CHAT = {"model": "smollm2-135m", "max_tokens": 4,
        "messages": [{"role": "user", "content": "Say hello"}, {"role": "assistant", "content": "Hello"}]}
COMPLETION = {"model": "smollm2-135m", "prompt": "hi", "max_tokens": 4}
PASSED = {"generation_prompt": "<think>\n", "reasoning_budget_tokens": 16, "thinking_budget_tokens": 16,
          "reasoning_budget_message": "Enough thinking.", "continue_final_message": True,
          "add_generation_prompt": False}


@pytest.mark.parametrize("route,body", [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)])
async def test_llama_fields_of_the_requests_own_answer_pass_as_written(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict) -> None:
    """llama-server's `generation_prompt` (on chat its template's replaces it; on completions its chat parser and
    reasoning-budget sampler read it, for this answer only), `reasoning_budget_tokens` / `thinking_budget_tokens` /
    `reasoning_budget_message` (end the answer's own reasoning sooner, within the grid's output limit) and
    `continue_final_message` (continue the request's own last assistant message; the engine's 400 beside
    `add_generation_prompt: true`) reach the engine as the client wrote them."""
    async with serving(spec_in(tmp_path), fakes) as (client, _):
        r = await client.post(route, json={**body, **PASSED})
        assert r.status_code == 200, r.text[:300]
        sent = [got for f in fakes.values() for got in f.received]
        assert len(sent) == 1 and {k: sent[0].get(k) for k in PASSED} == PASSED, sent
