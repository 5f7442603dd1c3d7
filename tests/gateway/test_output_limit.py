"""A request with no output limit of its own (no max_tokens, no max_completion_tokens) reaches the engine with the
grid's gateway.max_output_tokens, or the room the model's context leaves the prompt where that is less, or none where
even that is below a floor (request_info.engine_output_limit, engine_body.bound_output; issue 12); its quota reserves DEFAULT_OUTPUT_TOKENS. Until the thirty-third
session it reached the engine with no limit and could decode to the end of the context."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from aigrid.engines.emulator import bound_port, serve
from aigrid.engines.emulator_model import EmulatorConfig
from aigrid.gateway.app import build_app, build_gateway
from aigrid.gateway.request_info import (
    CHARS_PER_TOKEN,
    CONTEXT_STOPPED_KINDS,
    DEFAULT_OUTPUT_TOKENS,
    MIN_OUTPUT_ROOM,
    ROOM_MARGIN_TOKENS,
    engine_output_limit,
)
from aigrid.gateway.wiring import build_engines, upstream
from aigrid.spec.models import GridSpec
from tests.gateway.conftest import serving, spec_in
from tests.gateway.emulated_grid import emulated_spec
from tests.gateway.fake_engine import FakeEngine

MODEL = "smollm2-135m"
ASK = [{"role": "user", "content": "Write a long story."}]
DOORS = [
    ("/v1/chat/completions", {"model": MODEL, "messages": ASK, "ignore_eos": True}),
    ("/v1/chat/completions", {"model": MODEL, "messages": ASK, "stream": True}),
    ("/v1/chat/completions", {"model": MODEL, "messages": ASK, "max_tokens": None}),
    ("/v1/completions", {"model": MODEL, "prompt": "Once upon a time", "ignore_eos": True}),
    ("/v1/responses", {"model": MODEL, "input": "Write a long story."}),
]


def _grid(tmp: Path, limit: int) -> tuple[GridSpec, dict[str, FakeEngine]]:
    spec = spec_in(tmp)
    spec = spec.model_copy(update={"gateway": spec.gateway.model_copy(update={"max_output_tokens": limit})})
    return spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}


def _sent(fakes: dict[str, FakeEngine]) -> dict[str, Any]:
    [sent] = [r for f in fakes.values() for r in f.received]
    return sent


@pytest.mark.parametrize("path, body", DOORS)
async def test_a_request_with_no_max_tokens_reaches_the_engine_with_the_grids_limit(
        tmp_path: Path, path: str, body: dict[str, Any]) -> None:
    spec, fakes = _grid(tmp_path, 100)
    async with serving(spec, fakes) as (client, _):
        r = await client.post(path, json=body)
        assert r.status_code == 200, r.text
    sent = _sent(fakes)
    assert sent["max_tokens"] == 100 and "max_completion_tokens" not in sent


@pytest.mark.parametrize("path, template", [("/v1/completions", 0), ("/v1/chat/completions", 24)])
async def test_a_prompt_whose_context_leaves_less_than_the_grids_limit_gets_the_room_it_leaves(
        tmp_path: Path, path: str, template: int) -> None:
    """20,000 characters of prose on an 8,192 context: 5,000 tokens (a letter or space a quarter token, the template's
    8 x 3 for a chat of one message, and ROOM_MARGIN_TOKENS) leave fewer than the grid's 4,096, and the engine is sent
    what they
    leave, within vLLM's `prompt + max_tokens <= max_model_len` and the grid's limit. Until the thirty-fourth session
    (review RV1) it was sent none: free to decode to the context's end, about 2,000 tokens past the grid's limit."""
    spec, fakes = _grid(tmp_path, 4096)
    assert spec.models[MODEL].context == 8192
    prompt = "area " * 4000  # as many vowels as consonants: a character a unit (request_info.prompt_units)
    body: dict[str, Any] = ({"prompt": prompt} if path == "/v1/completions"
                            else {"messages": [{"role": "user", "content": prompt}]})
    async with serving(spec, fakes) as (client, _):
        r = await client.post(path, json={"model": MODEL, **body})
        assert r.status_code == 200, r.text
    assert _sent(fakes).get("max_tokens") == 8192 - 5000 - template - ROOM_MARGIN_TOKENS


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
async def test_a_prompt_whose_context_leaves_less_than_the_floor_gets_no_limit_it_could_refuse(
        tmp_path: Path, path: str) -> None:
    """20,000 characters: 10,000 tokens at 2 characters a token leave an 8,192 context no room (below
    MIN_OUTPUT_ROOM): the engine gets no max_tokens, and its context bounds the answer (docs/security.md: what that
    leaves open)."""
    spec, fakes = _grid(tmp_path, 4096)
    prompt = "word " * 4000
    body: dict[str, Any] = ({"prompt": prompt} if path == "/v1/completions"
                            else {"messages": [{"role": "user", "content": prompt}]})
    async with serving(spec, fakes) as (client, _):
        r = await client.post(path, json={"model": MODEL, **body})
        assert r.status_code == 200, r.text
    assert "max_tokens" not in _sent(fakes)  # vLLM refuses a max_tokens past the context


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_a_clients_own_limit_is_sent_as_it_is(tmp_path: Path, field: str) -> None:
    spec, fakes = _grid(tmp_path, 100)
    async with serving(spec, fakes) as (client, _):
        r = await client.post("/v1/chat/completions", json={"model": MODEL, "messages": ASK, field: 7})
        assert r.status_code == 200, r.text
    sent = _sent(fakes)
    assert sent[field] == 7 and (field == "max_tokens" or "max_tokens" not in sent)


def test_the_engines_limit_is_the_grids_or_the_room_the_context_leaves_down_to_the_floor() -> None:
    assert MIN_OUTPUT_ROOM == 16
    assert engine_output_limit(100, None, 4096, "vllm") == 4096
    assert engine_output_limit(100, 8192, 4096, "vllm") == 4096
    assert engine_output_limit(4096, 8192, 4096, "vllm") == 4096
    assert engine_output_limit(4097, 8192, 4096, "vllm") == 4095  # the room the context leaves
    assert engine_output_limit(8192 - 16, 8192, 4096, "vllm") == 16
    assert engine_output_limit(8192 - 15, 8192, 4096, "vllm") is None  # below the floor: the context bounds it
    assert engine_output_limit(9000, 8192, 4096, "vllm") is None  # the engine's own context check answers it
    assert engine_output_limit(8190, 8192, 2, "vllm") == 2  # a grid's limit below the floor is sent where there is room


def test_an_engine_that_stops_at_its_context_gets_the_grids_limit_whatever_the_prompt() -> None:
    """llama-server (and the embedded engine, of its kind) never refuses a max_tokens past the context the prompt
    leaves: it stops at the context's end (finish_reason `length`). The room would only cut answers early."""
    assert CONTEXT_STOPPED_KINDS == {"llamacpp"}
    for prompt in (100, 4097, 8192 - 16, 8192 - 15, 9000):
        assert engine_output_limit(prompt, 8192, 4096, "llamacpp") == 4096
    for kind in ("vllm", "sglang", "tgi", "openai", "ollama", "fake"):  # taken to validate: the room
        assert engine_output_limit(4097, 8192, 4096, kind) == 4095


async def test_a_plain_chat_through_the_gateway_to_the_engine_emulator_ends_at_its_natural_length() -> None:
    """The gateway sends this body max_tokens 4,096 (the grid's limit); the engine emulator answers as a model
    would, at its natural length (default_max_tokens), finish_reason "stop". Until the thirty-third session it
    took max_tokens for the answer's length: 4,096 tokens, "length" (through `aigrid up` on an emulator spec, 41 s)."""
    server, _ = await serve(EmulatorConfig(decode_base_ms=1, prefill_base_ms=1, default_max_tokens=6))
    up = upstream()
    try:
        spec = emulated_spec(bound_port(server))
        gw = build_gateway(spec, build_engines(spec, {}, up))
        await gw.scraper.scrape_once()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw",
                                     timeout=60) as c:
            r = await c.post("/v1/chat/completions", json={"model": "emulated", "messages": ASK})
    finally:
        await up.aclose()
        server.close()
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["usage"]["completion_tokens"], answer["choices"][0]["finish_reason"]) == (6, "stop")


async def test_a_list_of_prompts_is_bounded_by_its_longest_prompt_not_their_sum(tmp_path: Path) -> None:
    """Each prompt of a completion's list is an engine request of its own, with the whole context: 16 prompts of
    about 500 tokens leave each the grid's 4,096 on an 8,192 context (their sum, about 8,000, left 189, and the
    engine got no max_tokens at all: each answer could run to the context's end while the quota held 189 each)."""
    spec, fakes = _grid(tmp_path, 4096)
    assert spec.models[MODEL].context == 8192
    async with serving(spec, fakes) as (client, _):
        r = await client.post("/v1/completions", json={"model": MODEL, "prompt": ["word " * 400] * 16})
        assert r.status_code == 200, r.text
    sent = [r for f in fakes.values() for r in f.received]
    assert sent and all(s.get("max_tokens") == 4096 for s in sent), [s.get("max_tokens") for s in sent]


async def test_a_tenant_with_a_small_token_quota_may_still_send_no_max_tokens(tmp_path: Path) -> None:
    """The engine's bound is not the quota's reservation: a request with no max_tokens reserves its prompt and the
    usual DEFAULT_OUTPUT_TOKENS (settled to what the engine decoded), as before. When the reservation was the grid's
    limit (4,096: 39b802d6, until the final read F1 of the same session), a tenant of tokens_per_min 3,000 was
    refused every such request ("429 request too large ... it reserves 4120 tokens"). Since the thirty-seventh session
    (brief ATK6, Guard.widen) its engine is sent what the tenant's minute has room for, not the grid's whole limit:
    the request is served, and its engine never decodes past the tenant's tokens per minute."""
    from aigrid.spec.models import QuotaSpec

    spec, fakes = _grid(tmp_path, 4096)
    security = spec.security.model_copy(update={"default_quotas": QuotaSpec(tokens_per_min=3000)})
    spec = spec.model_copy(update={"security": security})
    async with serving(spec, fakes) as (client, _):
        r = await client.post("/v1/chat/completions", json={"model": MODEL, "messages": ASK})
        assert r.status_code == 200, r.text
    assert DEFAULT_OUTPUT_TOKENS < _sent(fakes)["max_tokens"] < 3000



CODE = "".join(f"def scale_{i}(xs: list[float], k: float) -> list[float]:\n    return [x * k + {i} for x in xs if x > {i % 7}]"
               "\n\n\n" for i in range(400))[:14_000]
"""14,000 characters of Python: 5,904 tokens as a chat prompt to SmolLM2 (2.4 characters a token; the real
llama-server's /apply-template and /tokenize, as scripts/measure_token_estimate.py counts), 3,524 by the gateway's
estimate at 4 characters a token (until the thirty-eighth session), 7,058 by prompt_units (its marks a token each),
7,090 by the room's (ROOM_MARGIN_TOKENS)."""


@pytest.mark.parametrize("path, room", [("/v1/completions", 8192 - 7066), ("/v1/chat/completions", 8192 - 7090)])
async def test_a_long_code_prompt_is_sent_only_the_max_tokens_its_real_count_leaves_room_for(
        tmp_path: Path, path: str, room: int) -> None:
    """At 4 characters a token CODE left the grid's 4,096 on an 8,192 context, and the engine was sent max_tokens
    4,096: 10,000 tokens by the real count, past the context, vLLM's 400 (its `prompt + max_tokens > max_model_len`
    check). The room is the estimate (prompt_units) and ROOM_MARGIN_TOKENS: the engine gets what that leaves (the
    chat: 1,102), within the context with the real count (5,904 + 1,102 = 7,006). At 2 characters a token
    (ROOM_CHARS_PER_TOKEN, until the thirty-eighth session) of prompt_units' count it would have had none."""
    spec, fakes = _grid(tmp_path, 4096)
    assert spec.models[MODEL].context == 8192
    prompt = CODE
    body: dict[str, Any] = ({"prompt": prompt} if path == "/v1/completions"
                            else {"messages": [{"role": "user", "content": prompt}]})
    async with serving(spec, fakes) as (client, _):
        r = await client.post(path, json={"model": MODEL, **body})
        assert r.status_code == 200, r.text
    assert _sent(fakes).get("max_tokens") == room
    assert 5904 + room <= 8192


def test_the_room_is_the_estimate_and_a_margin() -> None:
    from aigrid.gateway.request_info import longest_prompt_tokens
    from aigrid.gateway.schemas import CompletionRequest

    one = CompletionRequest.model_validate({"model": MODEL, "prompt": "a" * 8000})
    assert longest_prompt_tokens(one, 8000 // CHARS_PER_TOKEN) == 2000 + ROOM_MARGIN_TOKENS
    several = CompletionRequest.model_validate({"model": MODEL, "prompt": ["a" * 8000, "a" * 100]})
    assert longest_prompt_tokens(several, 2025) == 2000 + ROOM_MARGIN_TOKENS
