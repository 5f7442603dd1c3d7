"""What an OpenAI, vLLM or Anthropic client is told names the field it sent, on every door (gateway/request_info.py,
schemas.py, responses_schema.py): the output limit above the grid's (`gateway.max_output_tokens`), and a service tier
the grid does not serve, refused alike on chat and on the Responses API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.conftest import serving, spec_in
from tests.gateway.fake_engine import FakeEngine

MODEL = "smollm2-135m"
HI = [{"role": "user", "content": "hi"}]


async def _post(tmp_path: Path, fakes: dict[str, FakeEngine], path: str, body: dict[str, Any]) -> httpx.Response:
    async with serving(spec_in(tmp_path), fakes) as (http, gw):
        return await http.post(path, json=body)


@pytest.mark.parametrize("path, body, field", [
    ("/v1/chat/completions", {"messages": HI, "max_completion_tokens": 10**6}, "max_completion_tokens"),
    ("/v1/chat/completions", {"messages": HI, "max_tokens": 10**6}, "max_tokens"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 10**6}, "max_tokens"),
    ("/v1/responses", {"input": "hi", "max_output_tokens": 10**6}, "max_output_tokens"),
    ("/v1/messages", {"messages": HI, "max_tokens": 10**6}, "max_tokens"),
])
async def test_an_output_limit_above_the_grids_names_the_field_the_client_sent(
        tmp_path: Path, fakes: dict[str, FakeEngine], path: str, body: dict[str, Any], field: str) -> None:
    """A chat request's `max_completion_tokens` above `gateway.max_output_tokens` was a 400 "max_tokens 1000000
    exceeds ..." with `param: "max_tokens"`, a field the body did not have (P, twenty-eighth session)."""
    r = await _post(tmp_path, fakes, path, {"model": MODEL, **body})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["message"].startswith(f"{field} 1000000 exceeds this grid's limit of "), error
    if path != "/v1/messages":  # Anthropic's envelope has no `param`
        assert error["param"] == field, error
    assert not any(f.received for f in fakes.values())


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"messages": HI, "max_tokens": 4}),
    ("/v1/responses", {"input": "hi", "max_output_tokens": 4}),
])
@pytest.mark.parametrize("tier", ["flex", "scale", "priority"])
async def test_a_service_tier_the_grid_does_not_serve_is_refused_on_chat_and_responses_alike(
        tmp_path: Path, fakes: dict[str, FakeEngine], path: str, body: dict[str, Any], tier: str) -> None:
    """Chat refused `flex`, `scale` and `priority` with a 400 naming `service_tier`; the Responses API took them and
    served the request at the grid's one tier, the client told nothing (P, twenty-eighth session). Both refuse."""
    r = await _post(tmp_path, fakes, path, {"model": MODEL, "service_tier": tier, **body})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "service_tier" and f"service tier '{tier}' is not served" in error["message"], error
    assert not any(f.received for f in fakes.values())


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"messages": HI, "max_tokens": 4}),
    ("/v1/responses", {"input": "hi", "max_output_tokens": 4}),
])
@pytest.mark.parametrize("tier", ["auto", "default", None])
async def test_the_grids_own_tier_is_served_on_chat_and_responses_alike(
        tmp_path: Path, fakes: dict[str, FakeEngine], path: str, body: dict[str, Any], tier: str | None) -> None:
    r = await _post(tmp_path, fakes, path, {"model": MODEL, "service_tier": tier, **body})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"messages": HI, "max_tokens": 4}),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 4}),
    ("/v1/responses", {"input": "hi", "max_output_tokens": 4}),
    ("/v1/messages", {"messages": HI, "max_tokens": 4}),
])
async def test_no_door_sends_the_clients_priority_to_an_engine(
        tmp_path: Path, fakes: dict[str, FakeEngine], path: str, body: dict[str, Any]) -> None:
    """vLLM reads a body `priority` the other way (lower runs earlier; aigrid's higher is more urgent): a client's
    value sent on would be read backwards, so no door sends it (docs/routing.md, "Urgency"). A guard: passes on
    HEAD too (P asked whether the value reached vLLM: it did not). Nor the other body field of the gateway's,
    `deadline_ms` (docs/routing.md says both)."""
    r = await _post(tmp_path, fakes, path, {"model": MODEL, "priority": 1, "deadline_ms": 60_000, **body})
    assert r.status_code == 200, r.text
    sent = [s for f in fakes.values() for s in f.received]
    assert sent and all("priority" not in s and "deadline_ms" not in s for s in sent), sent
