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
@pytest.mark.parametrize(("down", "served", "expected"), [
    pytest.param("iad-smollm2", "fra-smollm2", 4096, id="large"),
    pytest.param("fra-smollm2", "iad-smollm2", "none sent", id="small"),
])
async def test_each_models_engine_gets_the_bound_its_own_context_leaves(
        tmp_path: Path, model: str, down: str, served: str, expected: int | str) -> None:
    """Both models' endpoints are candidates (each healthy when the request is routed; the one made `down` fails if
    it is sent one), and the bound is judged at the engine the attempt reaches: the large model's (8,192) is sent the
    grid's limit, though the small model's context (2,048) leaves a prompt of 3,000 tokens (at 2 characters a token)
    none; the small model's is sent no max_tokens, which its context has no room for (vLLM refuses one past it).
    (Two tests of this shape until the thirty-fifth session.)"""
    spec, fakes = two_models(tmp_path)
    async with serving(spec, fakes) as (client, _):
        fakes[down].down = True
        r = await client.post("/v1/chat/completions",
                              json={"model": model, "messages": [{"role": "user", "content": PROMPT}]})
        assert r.status_code == 200, r.text
        [decision] = (await client.get("/v1/decisions")).json()["data"][-1:]
    assert {c["endpoint"] for c in decision["candidates"]} == {"iad-smollm2", "fra-smollm2"}
    assert decision["attempts"][-1]["endpoint"] == served
    [sent] = fakes[served].received
    assert sent.get("max_tokens", "none sent") == expected


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
    assert sent.get("max_tokens") is None  # 9,256 tokens by the estimate and its margin leave 8,192 none



@pytest.mark.parametrize("kind,expected", [("llamacpp", 4096), ("vllm", 612)])
async def test_a_llama_server_engine_gets_the_grids_limit_where_a_validating_one_gets_the_room(
        tmp_path: Path, kind: str, expected: int) -> None:
    """3,000 characters (600 words: 1,404 tokens by the estimate, request_info.prompt_units, and ROOM_MARGIN_TOKENS'
    32; SmolLM2 reads about 610) to the small model (2,048): a vLLM
    engine is sent the room, 612 (it refuses prompt + max_tokens past its context); a llama-server engine the grid's
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


@pytest.mark.parametrize(("words", "where", "spare_kind", "sent_first", "resumed_with"), [
    # 6,000 characters (PROMPT) leave the small model's context no room for the grid's limit: the continuation on a
    # validating engine is sent no max_tokens, as before the bound was per candidate (review RV1 of a19baf06)
    pytest.param(1200, "Frankfurt", "fake", 4096, None, id="no-room-large-first"),
    pytest.param(1200, "Ashburn", "fake", None, None, id="no-room-small-first"),
    # 3,000 characters leave the small context 612 and the large one the grid's 4,096: the smaller, less the 2 chunks
    # delivered, whichever engine broke
    pytest.param(600, "Frankfurt", "fake", 4096, 610, id="room-large-first"),
    pytest.param(600, "Ashburn", "fake", 612, 610, id="room-small-first"),
    # the large model's engine a llama-server (the spare's kind decides): the first engine's bound less what was
    # delivered, else (no room, sent none) the grid's limit less 2
    pytest.param(600, "Ashburn", "llamacpp", 612, 610, id="room-llama-spare"),
    pytest.param(1200, "Ashburn", "llamacpp", None, 4094, id="no-room-llama-spare"),
])
async def test_a_continuation_is_bounded_by_both_models_contexts_less_what_was_delivered(
        tmp_path: Path, words: int, where: str, spare_kind: str, sent_first: int | None,
        resumed_with: int | None) -> None:
    """A stream broken after 2 chunks ("Hello from") on one model's engine (the client's location picks which: the
    large model's at fra-smollm2 from Frankfurt, the small one's at iad-smollm2 from Ashburn) and continued on the
    other's. 3,000 characters are 1,436 tokens by the estimate and ROOM_MARGIN_TOKENS (brief TOKEST), which leave the
    small model's 2,048 context 612 and the large one's 8,192 the grid's 4,096; 6,000 characters leave the small one
    none.
    The continuation is never sent past the small model's context nor more than the first engine was sent. After
    a19baf06 the large model's 4,096 went, less what was delivered, to the small model's engine (4,094: past its
    context with the prompt, vLLM's 400 where a continuation had been served), and a continuation of the small model's
    answer was bounded afresh at the large model's engine with the grid's 4,096 (less 2), more than the first
    attempt's engine was sent; where the small context leaves no room, a llama-server spare (which refuses no
    max_tokens) gets the grid's limit less 2 rather than none, and decodes to its context's end without it. (Three
    tests of this one shape until the thirty-fifth session.)"""
    first, spare = ("fra-smollm2", "iad-smollm2") if where == "Frankfurt" else ("iad-smollm2", "fra-smollm2")
    spec, fakes = two_models(tmp_path)
    fakes[spare].kind = spare_kind
    fakes[first].break_after = 2  # dies after "Hello from"
    async with serving(spec, fakes) as (client, _):
        body = {"model": "smollm2", "stream": True, "messages": [{"role": "user", "content": "word " * words}]}
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
    assert resumed.get("max_tokens") == resumed_with, resumed.get("max_tokens")
