"""`auto` and a family name route to models of different contexts: the gateway's context check lets through what the
largest may take (context_window.model_context), and the engine's output bound (request_info.engine_output_limit)
is judged by the context of the model of the endpoint each attempt goes to (Proxy, per candidate). Until the
thirty-fourth session the bound was the smallest context's of every model the name may route to, for every
candidate: a prompt the small model leaves no room for reached the large one with no max_tokens, and could decode
to the end of its context past the grid's limit (issue 12's hole, for `auto` and families)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigrid.spec.models import GridSpec
from tests.gateway.conftest import serving
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.two_context_grid import two_contexts

PROMPT = "word " * 1200  # 6,000 characters: at 2 a token, more than the small model's 2,048 leave room for


def two_models(tmp: Path) -> tuple[GridSpec, dict[str, FakeEngine]]:
    """two_context_grid's grid of two models of family smollm2 (SMALL, context 2,048, at iad-smollm2; LARGE, 8,192,
    at fra-smollm2), with the grid's limit 4,096."""
    spec, fakes = two_contexts(tmp)
    return spec.model_copy(update={"gateway": spec.gateway.model_copy(update={"max_output_tokens": 4096})}), fakes


@pytest.mark.parametrize("model", ["auto", "smollm2"])
async def test_the_large_models_engine_gets_the_grids_limit_where_the_small_one_would_leave_no_room(
        tmp_path: Path, model: str) -> None:
    """Both models' endpoints are candidates (the small one's is healthy when the request is routed, and fails if it
    is sent one); the attempt that reaches the large model's engine sends it the grid's limit, though the small
    model's context (2,048) leaves a prompt of 3,000 tokens (at 2 characters a token) none."""
    spec, fakes = two_models(tmp_path)
    async with serving(spec, fakes) as (client, _):
        fakes["iad-smollm2"].down = True
        r = await client.post("/v1/chat/completions",
                              json={"model": model, "messages": [{"role": "user", "content": PROMPT}]})
        assert r.status_code == 200, r.text
        [decision] = (await client.get("/v1/decisions")).json()["data"][-1:]
    assert {c["endpoint"] for c in decision["candidates"]} == {"iad-smollm2", "fra-smollm2"}
    assert decision["attempts"][-1]["endpoint"] == "fra-smollm2"
    [sent] = fakes["fra-smollm2"].received
    assert sent.get("max_tokens") == 4096


@pytest.mark.parametrize("model", ["auto", "smollm2"])
async def test_the_small_models_engine_gets_no_max_tokens_its_context_has_no_room_for(
        tmp_path: Path, model: str) -> None:
    spec, fakes = two_models(tmp_path)
    async with serving(spec, fakes) as (client, _):
        fakes["fra-smollm2"].down = True
        r = await client.post("/v1/chat/completions",
                              json={"model": model, "messages": [{"role": "user", "content": PROMPT}]})
        assert r.status_code == 200, r.text
    [sent] = fakes["iad-smollm2"].received
    assert "max_tokens" not in sent


async def test_a_prompt_only_the_large_model_takes_passes_the_gateways_context_check(tmp_path: Path) -> None:
    """20,000 characters: at least 2,500 tokens by the check's generous bound (8 characters a token), past the small
    model's 2,048 and within the large one's 8,192: the gateway lets it through for `auto` (the largest context)."""
    spec, fakes = two_models(tmp_path)
    fakes["iad-smollm2"].down = True
    async with serving(spec, fakes) as (client, _):
        r = await client.post("/v1/chat/completions",
                              json={"model": "auto", "messages": [{"role": "user", "content": "word " * 4000}]})
        assert r.status_code == 200, r.text
    [sent] = fakes["fra-smollm2"].received
    assert sent.get("max_tokens") is None  # 10,000 tokens at 2 characters a token leave 8,192 none



@pytest.mark.parametrize("where,first,spare", [("Frankfurt", "fra-smollm2", "iad-smollm2"),
                                               ("Ashburn", "iad-smollm2", "fra-smollm2")])
async def test_a_continuation_gets_a_max_tokens_only_where_both_models_contexts_leave_room(
        tmp_path: Path, where: str, first: str, spare: str) -> None:
    """(Review RV1 of a19baf06) A stream broken on one model's engine and continued on the other's: where the small
    model's context leaves the prompt no room for the grid's limit, the continuation is sent no max_tokens, as before
    the bound was per candidate. After a19baf06 the large model's 4,096 went, less what was delivered, to the small
    model's engine (4,094: past its context with the prompt, vLLM's 400 where a continuation had been served), and a
    continuation of the small model's answer (sent none) was bounded afresh at the large model's engine with the grid's
    whole 4,096, more than the first attempt's engine was sent."""
    spec, fakes = two_models(tmp_path)
    fakes[first].break_after = 2  # dies after "Hello from"
    async with serving(spec, fakes) as (client, _):
        body = {"model": "smollm2", "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
        async with client.stream("POST", "/v1/chat/completions", json=body,
                                 headers={"x-aigrid-client-location": where}) as r:
            assert r.status_code == 200
            text = (await r.aread()).decode()
        decision = (await client.get(f"/v1/decisions/{r.headers['x-aigrid-decision']}")).json()
    assert decision["served_by"] == f"{first} -> {spare}", decision["served_by"]
    assert "[DONE]" in text and "stream_interrupted" not in text
    [sent] = fakes[first].received
    assert sent.get("max_tokens") == (4096 if first == "fra-smollm2" else None)
    [resumed] = fakes[spare].received
    assert resumed["messages"][-1] == {"role": "assistant", "content": "Hello from"}
    assert "max_tokens" not in resumed, resumed.get("max_tokens")


@pytest.mark.parametrize("where,first,spare,sent_first", [("Frankfurt", "fra-smollm2", "iad-smollm2", 4096),
                                                          ("Ashburn", "iad-smollm2", "fra-smollm2", 500)])
async def test_a_continuation_gets_the_smaller_of_the_rooms_both_models_contexts_leave_less_what_was_delivered(
        tmp_path: Path, where: str, first: str, spare: str, sent_first: int) -> None:
    """3,000 characters: 1,548 tokens at 2 characters a token (the template's twice) leave the small model's 2,048
    context 500 and the large one's the grid's 4,096. A stream broken after 2 chunks on either model's engine is
    continued on the other's with the smaller, 500, less the 2 delivered: never past the small model's context,
    never more than the first engine was sent. Bounded at the spare alone, a continuation of the small model's answer
    (sent 500) was sent the large one's 4,096 less 2."""
    spec, fakes = two_models(tmp_path)
    fakes[first].break_after = 2  # dies after "Hello from"
    async with serving(spec, fakes) as (client, _):
        body = {"model": "smollm2", "stream": True, "messages": [{"role": "user", "content": "word " * 600}]}
        async with client.stream("POST", "/v1/chat/completions", json=body,
                                 headers={"x-aigrid-client-location": where}) as r:
            assert r.status_code == 200
            text = (await r.aread()).decode()
        decision = (await client.get(f"/v1/decisions/{r.headers['x-aigrid-decision']}")).json()
    assert decision["served_by"] == f"{first} -> {spare}", decision["served_by"]
    assert "[DONE]" in text and "stream_interrupted" not in text
    [sent] = fakes[first].received
    assert sent.get("max_tokens") == sent_first
    [resumed] = fakes[spare].received
    assert resumed["messages"][-1] == {"role": "assistant", "content": "Hello from"}
    assert resumed.get("max_tokens") == 500 - 2


@pytest.mark.parametrize("kind,expected", [("llamacpp", 4096), ("vllm", 500)])
async def test_a_llama_server_engine_gets_the_grids_limit_where_a_validating_one_gets_the_room(
        tmp_path: Path, kind: str, expected: int) -> None:
    """3,000 characters (1,548 tokens at 2 characters a token, the template's twice) to the small model (2,048): a vLLM
    engine is sent the room, 500 (it refuses prompt + max_tokens past its context); a llama-server engine the grid's
    4,096, which it never refuses (it stops at its context's end). Until the thirty-fourth session both got 500, and
    answers past it were cut early (6.78% of the conversation traces at 2,048: scripts/output_bound_cost.py)."""
    spec, fakes = two_models(tmp_path)
    fakes["iad-smollm2"].kind = kind
    fakes["fra-smollm2"].down = True
    async with serving(spec, fakes) as (client, _):
        r = await client.post("/v1/chat/completions",
                              json={"model": "smollm2", "messages": [{"role": "user", "content": "word " * 600}]})
        assert r.status_code == 200, r.text
    [sent] = fakes["iad-smollm2"].received
    assert sent.get("max_tokens") == expected


@pytest.mark.parametrize("prompt,sent_first,resumed_with", [(600, 500, 498), (1200, None, 4094)])
async def test_a_continuation_on_a_llama_server_engine_gets_the_first_engines_bound_else_the_grids_limit(
        tmp_path: Path, prompt: int, sent_first: int | None, resumed_with: int) -> None:
    """A stream broken on the small model's (validating) engine and continued on the large model's llama-server
    engine (the spare's kind decides): 3,000 characters, sent the room the small context leaves (500), resumed with
    that less the 2 chunks delivered; 6,000 characters, which leave the small context no room (sent none), resumed
    with the grid's limit less 2, where a validating spare gets none (the test above) and decodes to its context's
    end: a llama-server engine refuses no max_tokens."""
    spec, fakes = two_models(tmp_path)
    fakes["fra-smollm2"].kind = "llamacpp"
    fakes["iad-smollm2"].break_after = 2  # dies after "Hello from"
    async with serving(spec, fakes) as (client, _):
        body = {"model": "smollm2", "stream": True, "messages": [{"role": "user", "content": "word " * prompt}]}
        async with client.stream("POST", "/v1/chat/completions", json=body,
                                 headers={"x-aigrid-client-location": "Ashburn"}) as r:
            assert r.status_code == 200
            text = (await r.aread()).decode()
        decision = (await client.get(f"/v1/decisions/{r.headers['x-aigrid-decision']}")).json()
    assert decision["served_by"] == "iad-smollm2 -> fra-smollm2", decision["served_by"]
    assert "[DONE]" in text and "stream_interrupted" not in text
    [sent] = fakes["iad-smollm2"].received
    assert sent.get("max_tokens") == sent_first
    [resumed] = fakes["fra-smollm2"].received
    assert resumed.get("max_tokens") == resumed_with
