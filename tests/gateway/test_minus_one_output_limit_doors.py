"""An output limit of -1 on the Messages and Responses doors. Chat's and completions' `max_tokens: -1` is llama.cpp's
(and OpenAI-compatible servers') "no limit", which llama.cpp's web UI sends by default: read as not set since FIX5
(ba9c8479, schemas.NO_LIMIT). Anthropic's `max_tokens` and OpenAI Responses' `max_output_tokens` never meant -1 so
(Anthropic: a required non-negative count, 0 a cache pre-warm; OpenAI: a positive count or null): each door answers
-1 with the client's 400 in its own envelope, naming the field, before any engine (7 Dec 2026, thirty-fourth
session, brief MISC 3: pinned as found, no change)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gateway.conftest import audit_rows, serving, spec_in
from tests.gateway.fake_engine import FakeEngine

MODEL = "smollm2-135m"
ASK = [{"role": "user", "content": "Say hello"}]
MESSAGES = {"model": MODEL, "max_tokens": -1, "messages": ASK}


@pytest.mark.parametrize("stream", [False, True])
async def test_messages_max_tokens_minus_one_is_anthropics_400_naming_it(
        tmp_path: Path, fakes: dict[str, FakeEngine], stream: bool) -> None:
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        r = await client.post("/v1/messages", json={**MESSAGES, "stream": stream})
        assert r.status_code == 400, r.text[:300]
        doc = r.json()
        assert doc["type"] == "error" and doc["error"]["type"] == "invalid_request_error", doc
        assert "'max_tokens'" in doc["error"]["message"], doc
        assert all(not f.received for f in fakes.values())
        assert [row["outcome"] for row in await audit_rows(gw)] == ["error:invalid_request"]


async def test_a_message_batch_line_with_max_tokens_minus_one_is_refused_naming_its_line(
        tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    """A Message Batch's params are the Messages door's request: -1 is refused at create, naming the line's field."""
    async with serving(spec_in(tmp_path), fakes) as (client, _):
        r = await client.post("/v1/messages/batches", json={"requests": [
            {"custom_id": "a", "params": {**MESSAGES, "max_tokens": 8}},
            {"custom_id": "b", "params": MESSAGES}]})
        assert r.status_code == 400, r.text[:300]
        doc = r.json()
        assert doc["type"] == "error" and doc["error"]["type"] == "invalid_request_error", doc
        assert "requests.1.params.max_tokens" in doc["error"]["message"], doc
        assert all(not f.received for f in fakes.values())


@pytest.mark.parametrize("extra", [{}, {"stream": True}, {"background": True}])
async def test_responses_max_output_tokens_minus_one_is_openais_400_naming_it(
        tmp_path: Path, fakes: dict[str, FakeEngine], extra: dict) -> None:
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        r = await client.post("/v1/responses", json={"model": MODEL, "input": "Say hello", "max_output_tokens": -1,
                                                      **extra})
        assert r.status_code == 400, r.text[:300]
        err = r.json()["error"]
        assert err["param"] == "max_output_tokens" and err["type"] == "invalid_request_error", err
        assert all(not f.received for f in fakes.values())
        assert [row["outcome"] for row in await audit_rows(gw)] == ["error:invalid_request"]
