"""A prompt only the larger of two models can hold: the gateway's context check lets it through for `auto` or the
family (the largest context routed to), and the router's context filter (core/filters/context.py, by the check's
own lower bound) keeps it from the smaller model's engine, which would refuse it (vLLM's 400) or cut it
(llama-server). Where no model the caller may reach holds it, the answer is the context check's 400 naming the
field, not a 503. Until the thirty-fourth session the router knew no context and could send it to the small one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gateway.conftest import serving
from tests.gateway.two_context_grid import LARGE_AT, SMALL_AT, two_contexts

LONG = "word " * 4000  # 20,000 characters: at least 2,500 tokens (8 a token): past 2,048, within 8,192


@pytest.mark.parametrize("model", ["auto", "smollm2"])
async def test_a_prompt_the_small_model_cannot_hold_goes_to_the_large_one(tmp_path: Path, model: str) -> None:
    spec, fakes = two_contexts(tmp_path)
    async with serving(spec, fakes) as (client, _):
        r = await client.post("/v1/chat/completions",
                              json={"model": model, "messages": [{"role": "user", "content": LONG}]})
        assert r.status_code == 200, r.text
        [decision] = (await client.get("/v1/decisions")).json()["data"][-1:]
    assert [c["endpoint"] for c in decision["candidates"]] == [LARGE_AT]
    [rejected] = decision["rejected"]
    assert (rejected["endpoint"], rejected["filter"]) == (SMALL_AT, "context")
    assert rejected["reason"].startswith("context 2,048 tokens < the prompt's at least 2,50")
    assert fakes[SMALL_AT].received == [] and len(fakes[LARGE_AT].received) == 1


async def test_a_short_prompt_may_still_go_to_either(tmp_path: Path) -> None:
    spec, fakes = two_contexts(tmp_path)
    async with serving(spec, fakes) as (client, _):
        r = await client.post("/v1/chat/completions",
                              json={"model": "auto", "messages": [{"role": "user", "content": "word " * 1600}]})
        assert r.status_code == 200, r.text
        [decision] = (await client.get("/v1/decisions")).json()["data"][-1:]
    assert {c["endpoint"] for c in decision["candidates"]} == {SMALL_AT, LARGE_AT} and not decision["rejected"]


@pytest.mark.parametrize(("route", "body", "param"), [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": LONG}]}, "messages"),
    ("/v1/completions", {"prompt": LONG}, "prompt"),
])
async def test_a_prompt_no_reachable_model_holds_is_the_context_checks_400(tmp_path: Path, route: str, body: dict,
                                                                           param: str) -> None:
    """Residency US: the large model's only site (EU) is out of reach, the small one's context too short. Every
    endpoint is rejected by a rule no retry changes, one by its context: the client's prompt is too long, a 400 in
    the API's envelope naming the field (as the gateway's own check), and no engine is sent it."""
    spec, fakes = two_contexts(tmp_path)
    async with serving(spec, fakes) as (client, _):
        r = await client.post(route, json={"model": "auto", **body}, headers={"x-aigrid-residency": "US"})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        [decision] = (await client.get("/v1/decisions")).json()["data"][-1:]
    assert (error["code"], error["param"], error["type"]) == ("context_length_exceeded", param,
                                                              "invalid_request_error")
    assert error["message"].startswith("This model's maximum context length is 2048 tokens. However, your prompt "
                                       "has at least 2500 tokens")
    assert {(x["endpoint"], x["filter"]) for x in decision["rejected"]} == {(SMALL_AT, "context"),
                                                                            (LARGE_AT, "residency")}
    assert fakes[SMALL_AT].received == [] and fakes[LARGE_AT].received == []


async def test_a_prompt_that_fills_the_context_leaves_the_answer_no_room(tmp_path: Path) -> None:
    """16,384 characters are at least 2,048 tokens: the small model's whole context, none left for the answer's first
    token (an engine refuses such a prompt). The gateway's check passed it (at least 2,048 is not above 2,048) to
    the small model's engine; it now counts the answer's token as the filter does."""
    spec, fakes = two_contexts(tmp_path)
    async with serving(spec, fakes) as (client, _):
        r = await client.post("/v1/chat/completions",
                              json={"model": "smollm2-135m", "messages": [{"role": "user", "content": "x" * 16_384}]})
    assert r.status_code == 400, r.text
    assert (r.json()["error"]["code"], r.json()["error"]["param"]) == ("context_length_exceeded", "messages")
    assert fakes[SMALL_AT].received == []


@pytest.mark.parametrize(("route", "body", "envelope"), [
    ("/v1/messages", {"max_tokens": 8, "messages": [{"role": "user", "content": LONG}]},
     {"type": "invalid_request_error", "starts": "messages: This model's maximum context length is 2048 tokens."}),
    ("/v1/responses", {"input": LONG},
     {"type": "invalid_request_error", "param": "input", "code": "context_length_exceeded",
      "starts": "This model's maximum context length is 2048 tokens."}),
])
async def test_the_other_doors_answer_it_in_their_own_envelope(tmp_path: Path, route: str, body: dict,
                                                               envelope: dict) -> None:
    spec, fakes = two_contexts(tmp_path)
    async with serving(spec, fakes) as (client, _):
        r = await client.post(route, json={"model": "auto", **body}, headers={"x-aigrid-residency": "US"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["message"].startswith(envelope.pop("starts")), error
    assert {k: error.get(k) for k in envelope} == envelope
    assert fakes[SMALL_AT].received == [] and fakes[LARGE_AT].received == []


async def test_a_prompt_of_long_whitespace_runs_that_fits_is_not_refused(tmp_path: Path) -> None:
    """A run of whitespace is read in a few tokens (SmolLM2: `a`, 1,500 spaces, `b` are 27), so the bound counts a
    run as one character: 20,000 spaces between two words (at 8 characters a token 2,500 tokens, past the small
    model's 2,048) fit it; refused with the context 400 before review RV6. Where the text alone is past the context,
    the runs collapsed, it is still refused."""
    spec, fakes = two_contexts(tmp_path)
    spaced = "a" + " " * 10_000 + "\n" * 10_000 + "b"
    async with serving(spec, fakes) as (client, _):
        r = await client.post("/v1/chat/completions",
                              json={"model": "smollm2-135m", "messages": [{"role": "user", "content": spaced}]})
        assert r.status_code == 200, r.text
        long = await client.post("/v1/chat/completions",
                                 json={"model": "smollm2-135m", "messages": [{"role": "user", "content": LONG + spaced}]})
    assert long.status_code == 400, long.text
    assert long.json()["error"]["message"].startswith("This model's maximum context length is 2048 tokens. However, "
                                                      "your prompt has at least 2500 tokens")
    assert len(fakes[SMALL_AT].received) == 1
