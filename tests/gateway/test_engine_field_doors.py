"""Engines' own body fields that reached llama-server, vLLM or SGLang unread until the thirty-fourth session (issue 12,
"Guard every door"): each is refused with the client's 400 naming it, or bounded, before any engine, on chat and
completions (schemas._Common); the fields that pass are said why in docs/security.md ("Every door, audited")."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.gateway.conftest import audit_rows, serving, spec_in
from tests.gateway.fake_engine import FakeEngine

CHAT = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 4}
COMPLETION = {"model": "smollm2-135m", "prompt": "hi", "max_tokens": 4}
ROUTES = [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)]


async def refused(client: httpx.AsyncClient, fakes: dict[str, FakeEngine], route: str, body: dict, param: str,
                  words: str) -> dict:
    """Post `body` to `route`: the client's 400 naming `param`, its message saying `words`, no engine asked."""
    r = await client.post(route, json=body)
    assert r.status_code == 400, r.text[:300]
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error", err
    assert words in err["message"] and len(err["message"]) < 600, err
    assert all(not f.received for f in fakes.values())
    return err


async def sent_as_is(client: httpx.AsyncClient, fakes: dict[str, FakeEngine], route: str, body: dict) -> dict:
    """Post `body` to `route`: served, the one engine request carrying the body's fields as sent."""
    r = await client.post(route, json=body)
    assert r.status_code == 200, r.text[:300]
    sent = [got for f in fakes.values() for got in f.received]
    assert len(sent) == 1, sent
    return sent[0]


@pytest.mark.parametrize("route,body", ROUTES)
@pytest.mark.parametrize("key,value", [("speculative.n_max", 100_000), ("speculative.n_min", 64),
                                       ("speculative.p_min", 0.0), ("speculative.type", "ngram_simple"),
                                       ("speculative.ngram_size_n", 1024)])
async def test_llama_servers_speculative_settings_are_refused_and_audited(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict, key: str, value: object) -> None:
    """(7 Dec 2026, thirty-fourth session) llama-server's per-request speculative settings (top-level keys with a dot:
    `speculative.n_max`, ...) were passed on. llama-server sizes its draft context and batches for the operator's
    --draft-max, and builds that read a request's own took any n_max: past the operator's it asked the draft
    context for more outputs than it holds, a GGML_ASSERT abort of the engine and every request on it
    (ggml-org/llama.cpp issue 25719); `speculative.type` switched the method. Now the client's 400 naming the key,
    before any engine, audited."""
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        await refused(client, fakes, route, {**body, key: value}, key, "speculative decoding")
        rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == route]
        assert [row["outcome"] for row in rows] == ["error:invalid_request"], rows
        await sent_as_is(client, fakes, route, body)  # without it, served


@pytest.mark.parametrize("route,body", ROUTES)
@pytest.mark.parametrize("field,value", [("n_discard", 2_147_483_647), ("n_keep", -1), ("n_keep", 100_000),
                                         ("n_discard", 0)])
async def test_llama_servers_context_shift_settings_are_refused_and_audited(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict, field: str, value: int) -> None:
    """(7 Dec 2026, thirty-fourth session) llama-server's `n_keep` and `n_discard` (how a context shift keeps and drops
    tokens) went to the engine unread: `n_discard` 2,147,483,647 wrapped the shift's size_t arithmetic into an uncaught
    std::length_error, an abort of the engine and every request on it (ggml-org/llama.cpp PR 24786), a wrong
    `n_keep` likewise (issue 3550). Now the client's 400 naming the field, before any engine, audited."""
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        await refused(client, fakes, route, {**body, field: value}, field, "shifts a full context")
        rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == route]
        assert [row["outcome"] for row in rows] == ["error:invalid_request"], rows
        await sent_as_is(client, fakes, route, body)  # without it, served


ARENA = '{"parsers": [{"type": "gbnf", "child": 7, "grammar": "root ::= x"}], "rules": {}, "root": 0}'
"""A serialized PEG arena as llama-server's `chat_parser` takes it: its one parser's `child` names no parser (only the
rules' and the root's ids are checked when it is loaded), and its `gbnf` grammar is the client's."""


@pytest.mark.parametrize("route,body", ROUTES)
@pytest.mark.parametrize("field,value", [("chat_format", 2_000_000), ("chat_format", 0), ("chat_parser", ARENA)])
async def test_llama_servers_answer_parser_is_refused_and_audited(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict, field: str, value: object) -> None:
    """(7 Dec 2026, thirty-fourth session) llama-server's `chat_format` (an integer cast to its enum unchecked) and
    `chat_parser` (a serialized PEG arena it loads as sent and runs on the answer's text) went to the engine unread:
    on /v1/completions they were the client's, and on chat a client's `chat_parser` stayed where the template sets
    none. Now the client's 400 naming the field, before any engine, audited."""
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        await refused(client, fakes, route, {**body, field: value}, field, "parser of the answer")
        rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == route]
        assert [row["outcome"] for row in rows] == ["error:invalid_request"], rows
        await sent_as_is(client, fakes, route, body)  # without it, served


MAX_SAMPLERS = 16
"""schemas.MAX_SAMPLERS: each of llama-server's 11 sampler kinds once, with room for more."""


@pytest.mark.parametrize("route,body", ROUTES)
# 15,000 names: within body_values.MAX_OPTION_VALUES, past which a body is refused first (thirty-sixth session)
@pytest.mark.parametrize("value", [["temperature"] * 15_000, "t" * 100_000, ["top_k"] * (MAX_SAMPLERS + 1)])
async def test_a_sampler_chain_longer_than_llama_servers_kinds_is_refused_and_audited(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict, value: object) -> None:
    """(7 Dec 2026, thirty-fourth session) llama-server's `samplers` (its sampler chain, a list of names or a string of
    letters) went to the engine as sent, bounded only by the body's size: llama-server builds the chain duplicates and
    all and runs each sampler on every token it samples, in the one loop serving all its slots (100,000
    "temperature" entries: 100,000 passes over the candidates per step). More than MAX_SAMPLERS is now the client's
    400 naming the field, before any engine, audited; MAX_SAMPLERS pass as sent."""
    from aigrid.gateway import schemas
    assert schemas.MAX_SAMPLERS == MAX_SAMPLERS
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        err = await refused(client, fakes, route, {**body, "samplers": value}, "samplers", "every token it samples")
        assert f"{len(value):,} samplers" in err["message"], err  # type: ignore[arg-type]
        rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == route]
        assert [row["outcome"] for row in rows] == ["error:invalid_request"], rows
        most = ["penalties", "dry", "top_n_sigma", "top_k", "typ_p", "top_p", "min_p", "xtc", "temperature"] * 2
        most = most[:MAX_SAMPLERS]
        assert (await sent_as_is(client, fakes, route, {**body, "samplers": most}))["samplers"] == most


@pytest.mark.parametrize("value", [[1, 2], {"top_k": 1}, ["top_k", None], 7])
async def test_samplers_of_another_shape_are_refused_naming_it(
        tmp_path: Path, fakes: dict[str, FakeEngine], value: object) -> None:
    """(7 Dec 2026, thirty-fourth session) `samplers` is a list of names or a string of letters; another shape went to
    the engine, whose own 400 (a JSON type error, no `param`) came after the grid routed and counted the request."""
    async with serving(spec_in(tmp_path), fakes) as (client, _):
        await refused(client, fakes, "/v1/chat/completions", {**CHAT, "samplers": value}, "samplers",
                      "a list of sampler names")


MAX_DRY_BREAKERS = 8
"""schemas.MAX_DRY_BREAKERS: twice llama.cpp's four default DRY sequence breakers."""


@pytest.mark.parametrize("route,body", ROUTES)
# 15,000: within body_values.MAX_OPTION_VALUES, past which a body is refused first (thirty-sixth session)
@pytest.mark.parametrize("count", [15_000, MAX_DRY_BREAKERS + 1])
async def test_dry_sequence_breakers_past_a_few_are_refused_and_audited(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict, count: int) -> None:
    """(7 Dec 2026, thirty-fourth session) llama-server's `dry_sequence_breakers` went to the engine as sent, bounded
    only by the body's size, and its DRY sampler scans the whole vocabulary once per breaker when the request's slot
    starts, in the one loop serving all its slots (100 breakers: a 16-token completion from 0.36-0.59 s to 1.8-3.3 s
    on SmolLM2-135M). More than MAX_DRY_BREAKERS is now the client's 400 naming the field, before any engine, audited;
    MAX_DRY_BREAKERS pass as sent."""
    from aigrid.gateway import schemas
    assert schemas.MAX_DRY_BREAKERS == MAX_DRY_BREAKERS
    dry = {**body, "dry_multiplier": 0.8}
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        err = await refused(client, fakes, route, {**dry, "dry_sequence_breakers": [f"b{i}" for i in range(count)]},
                            "dry_sequence_breakers", "scans its whole vocabulary")
        assert f"{count:,} breakers" in err["message"], err
        rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == route]
        assert [row["outcome"] for row in rows] == ["error:invalid_request"], rows
        most = [f"b{i}" for i in range(MAX_DRY_BREAKERS)]
        sent = await sent_as_is(client, fakes, route, {**dry, "dry_sequence_breakers": most})
        assert sent["dry_sequence_breakers"] == most


@pytest.mark.parametrize("value", [[], "\n", [1], ["\n", None], {"b": 1}])
async def test_dry_sequence_breakers_not_a_list_of_strings_are_refused_naming_it(
        tmp_path: Path, fakes: dict[str, FakeEngine], value: object) -> None:
    """(7 Dec 2026, thirty-fourth session) llama-server takes `dry_sequence_breakers` as a non-empty list of strings
    only; another shape went to the engine, whose own 400 came after the grid routed and counted the request."""
    async with serving(spec_in(tmp_path), fakes) as (client, _):
        await refused(client, fakes, "/v1/chat/completions", {**CHAT, "dry_sequence_breakers": value},
                      "dry_sequence_breakers", "a non-empty list of strings")


MAX_STEP_ENTRIES = 1024
"""schemas.MAX_STEP_ENTRIES: the most stop sequences, banned words and stop token ids one request holds."""


@pytest.mark.parametrize("route,body", ROUTES)
# 15,000: within body_values.MAX_OPTION_VALUES (20,000), past which a body is refused first (thirty-sixth session)
@pytest.mark.parametrize("count", [15_000, MAX_STEP_ENTRIES + 1])
async def test_stop_token_ids_past_what_an_engine_checks_each_step_are_refused_and_audited(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict, count: int) -> None:
    """(7 Dec 2026, thirty-fourth session) vLLM's and SGLang's `stop_token_ids` went to the engine as sent, bounded only
    by the body's size (500,000 ids: 3.4 MB), and vLLM's scheduler checks the answer's last token against the list,
    a list scanned from its start, for every request at every step (vllm/v1/core/sched/utils.py check_stop), in the
    engine core's one loop. More than MAX_STEP_ENTRIES (stop's and bad_words' bound) is now the client's 400 naming
    the field, before any engine, audited; MAX_STEP_ENTRIES pass as sent."""
    from aigrid.gateway import schemas
    assert schemas.MAX_STEP_ENTRIES == MAX_STEP_ENTRIES
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        err = await refused(client, fakes, route, {**body, "stop_token_ids": list(range(count))}, "stop_token_ids",
                            "every step")
        assert f"{count:,} token ids" in err["message"], err
        rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == route]
        assert [row["outcome"] for row in rows] == ["error:invalid_request"], rows
        most = list(range(MAX_STEP_ENTRIES))
        assert (await sent_as_is(client, fakes, route, {**body, "stop_token_ids": most}))["stop_token_ids"] == most


@pytest.mark.parametrize("value", [7, ["2"], [1.5], [True], [-1], {"2": 1}])
async def test_stop_token_ids_not_a_list_of_token_ids_are_refused_naming_it(
        tmp_path: Path, fakes: dict[str, FakeEngine], value: object) -> None:
    """(7 Dec 2026, thirty-fourth session) `stop_token_ids` is a list of token ids; another shape went to the engine,
    whose own 400 (vLLM's pydantic error, no `param` the grid could name) came after the grid routed and counted it."""
    async with serving(spec_in(tmp_path), fakes) as (client, _):
        await refused(client, fakes, "/v1/chat/completions", {**CHAT, "stop_token_ids": value}, "stop_token_ids",
                      "a list of token ids")


@pytest.mark.parametrize("route,body", ROUTES)
@pytest.mark.parametrize("limits,most", [({"max_tokens": 4}, 4), ({"max_completion_tokens": 6, "max_tokens": 9}, 6)])
async def test_min_tokens_past_the_output_limit_is_refused_and_audited(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict, limits: dict, most: int) -> None:
    """(7 Dec 2026, thirty-fourth session) vLLM's and SGLang's `min_tokens` went to the engine unread: one past the
    body's own output limit (`max_completion_tokens`, else `max_tokens`) was vLLM's 400 (its SamplingParams: "min_tokens
    must be less than or equal to max_tokens"), after the grid routed and counted the request, without a `param`.
    Now the client's 400 naming `min_tokens`, before any engine, audited; up to the limit passes as sent."""
    body = {**{k: v for k, v in body.items() if k != "max_tokens"}, **limits}
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        await refused(client, fakes, route, {**body, "min_tokens": most + 1}, "min_tokens", "output limit")
        rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == route]
        assert [row["outcome"] for row in rows] == ["error:invalid_request"], rows
        assert (await sent_as_is(client, fakes, route, {**body, "min_tokens": most}))["min_tokens"] == most


@pytest.mark.parametrize("route,body", ROUTES)
async def test_min_tokens_past_the_grids_limit_without_an_output_limit_is_refused_and_audited(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict) -> None:
    """(7 Dec 2026, thirty-fourth session, final reading) A body that sets no output limit is sent the grid's
    (`gateway.max_output_tokens`, 4,096 by default) as its `max_tokens`, so a `min_tokens` past it reached vLLM with
    min_tokens > max_tokens: its 400 without a `param`, after the grid routed and counted the request, the case
    bd71165e closed only for a body with a limit of its own. Now the client's 400 naming `min_tokens`, audited."""
    body = {k: v for k, v in body.items() if k != "max_tokens"}
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        limit = gw.spec.gateway.max_output_tokens
        await refused(client, fakes, route, {**body, "min_tokens": limit + 1}, "min_tokens", "output limit")
        rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == route]
        assert [row["outcome"] for row in rows] == ["error:invalid_request"], rows
        assert (await sent_as_is(client, fakes, route, {**body, "min_tokens": 1}))["min_tokens"] == 1


@pytest.mark.parametrize("value", [-1, "3", 2.5, True, [3]])
async def test_min_tokens_not_a_count_is_refused_naming_it(
        tmp_path: Path, fakes: dict[str, FakeEngine], value: object) -> None:
    """(7 Dec 2026, thirty-fourth session) `min_tokens` is a count; another value went to the engine, whose own 400
    came after the grid routed and counted the request."""
    async with serving(spec_in(tmp_path), fakes) as (client, _):
        await refused(client, fakes, "/v1/chat/completions", {**CHAT, "min_tokens": value}, "min_tokens",
                      "non-negative integer")


@pytest.mark.parametrize("route,body", ROUTES)
@pytest.mark.parametrize("value", ["outlines", "lm-format-enforcer", "xgrammar:no-fallback", "guidance"])
async def test_a_structured_output_backend_of_the_clients_is_refused_and_audited(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict, value: str) -> None:
    """(7 Dec 2026, thirty-fourth session) vLLM's `guided_decoding_backend` (the request's own structured-output
    backend, over the operator's) went to the engine unread: builds that honour it let a client pick outlines, whose
    regex index compile ran 15 minutes and was killed for memory (vllm-project/vllm issue 7332), where the operator
    chose xgrammar and the grid bounds constraints as its configured backends read them. Now the client's 400 naming
    the field, before any engine, audited."""
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        await refused(client, fakes, route, {**body, "guided_regex": "[a-z]+", "guided_decoding_backend": value},
                      "guided_decoding_backend", "operator's choice")
        rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == route]
        assert [row["outcome"] for row in rows] == ["error:invalid_request"], rows
        await sent_as_is(client, fakes, route, {**body, "guided_regex": "[a-z]+"})  # without it, served


def nested_regex(depth: int) -> str:
    return "(" * depth + " " + ")" * depth


@pytest.mark.parametrize("route,body", ROUTES)
@pytest.mark.parametrize("field,inner", [("guided_whitespace_pattern", None),
                                         ("structured_outputs", "whitespace_pattern")])
@pytest.mark.parametrize("pattern", [nested_regex(50_000), " " * (256 * 1024 + 1)])
async def test_a_whitespace_pattern_past_the_regex_bound_is_refused_and_audited(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict, field: str, inner: str | None,
        pattern: str) -> None:
    """(7 Dec 2026, thirty-fourth session) vLLM's whitespace pattern (`guided_whitespace_pattern`, since its v0.12
    `structured_outputs.whitespace_pattern`: the whitespace a JSON answer may hold, a regular expression its outlines
    and guidance backends compile into the schema's grammar) went to the engine at any length and depth, where every
    other regular expression of a request is bounded (256 KiB, 1,000 nested groups: schemas.regex_fault). Now the
    client's 400 naming it, before any engine, audited; one within the bound passes as sent."""
    def with_pattern(p: str) -> dict:
        value = p if inner is None else {"json": '{"type": "object"}', inner: p}
        return {**body, field: value}
    param = field if inner is None else f"{field}.{inner}"
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        await refused(client, fakes, route, with_pattern(pattern), param, "regular expression")
        rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == route]
        assert [row["outcome"] for row in rows] == ["error:invalid_request"], rows
        within = "[ \\t\\n]{0,4}"
        assert await sent_as_is(client, fakes, route, with_pattern(within)) == {**with_pattern(within),
                                                                                  "model": body["model"]}


PASSED = {"cache_prompt": False, "n_indent": 4, "t_max_predict_ms": 500,
          "post_sampling_probs": True, "return_tokens": True, "response_fields": ["content"],
          "preserved_tokens": ["<|im_end|>"], "allowed_token_ids": [1, 2, 3],
          "structured_outputs": {"json": '{"type": "object"}', "disable_any_whitespace": True}}
"""The engines' own fields the audit of the thirty-fourth session passes as written, each said why in docs/security.md
("Every door, audited"): they end the request's own answer sooner, shape only its own answer, or cost the engine
once what a request's body already bounds."""


@pytest.mark.parametrize("route,body", ROUTES)
async def test_engine_fields_audited_as_harmless_pass_as_written(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict) -> None:
    """(7 Dec 2026, thirty-fourth session) The fields docs/security.md's row passes (llama-server's cache_prompt,
    n_indent, t_max_predict_ms, post_sampling_probs, return_tokens, response_fields,
    preserved_tokens; vLLM's allowed_token_ids and structured_outputs' flags) reach the engine as the client wrote
    them: a change here is a change of that row."""
    async with serving(spec_in(tmp_path), fakes) as (client, _):
        sent = await sent_as_is(client, fakes, route, {**body, **PASSED})
        assert {k: sent.get(k) for k in PASSED} == PASSED, sent


@pytest.mark.parametrize("route,body", ROUTES)
@pytest.mark.parametrize("value", [1, 256, 0])
async def test_llama_servers_cache_reuse_by_kv_shifting_is_refused_and_audited(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict, value: int) -> None:
    """(7 Dec 2026, thirty-fourth session) llama-server's per-request `n_cache_reuse` (newer builds, 0.3.36 among them)
    turned on, for the request, the reuse of cached chunks by KV shifting the operator leaves off (--cache-reuse 0):
    chunks of whatever prompt the slot last held, another tenant's included, reused anywhere in this prompt, not
    only as a shared prefix, on an engine the grid cannot salt. Now the client's 400 naming the field, before any
    engine, audited."""
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        await refused(client, fakes, route, {**body, "n_cache_reuse": value}, "n_cache_reuse", "KV shifting")
        rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == route]
        assert [row["outcome"] for row in rows] == ["error:invalid_request"], rows
        await sent_as_is(client, fakes, route, body)  # without it, served


def test_the_api_document_does_not_offer_the_fields_refused_here() -> None:
    """The fields refused here are declared `Refused` (read to be refused), and those taken out of the body `Dropped`,
    so /openapi.json does not list them among a request's properties as if served; the bounded ones are listed (served
    within their bound). The refused and dropped are the schema's own tables (`_REFUSED`, the one validator's reasons,
    and DROPPED, drop_unserved's), not a list written here: a field refused later and declared `Any` fails this."""
    from aigrid.gateway import schemas as request_schemas
    from aigrid.gateway.openapi import openapi_document

    refused = set(request_schemas._REFUSED) | set(request_schemas.DROPPED)
    bounded = {"samplers", "dry_sequence_breakers", "stop_token_ids", "min_tokens", "guided_whitespace_pattern"}
    schemas = openapi_document("test")["components"]["schemas"]
    for name, model in (("ChatRequest", request_schemas.ChatRequest),
                        ("CompletionRequest", request_schemas.CompletionRequest)):
        assert refused <= set(model.model_fields), (name, refused - set(model.model_fields))  # read, not extra
        properties = set(schemas[name]["properties"])
        assert refused.isdisjoint(properties), (name, refused & properties)
        assert bounded <= properties, (name, bounded - properties)


@pytest.mark.parametrize("route,body", ROUTES)
@pytest.mark.parametrize("field,inner", [("guided_choice", None), ("structured_outputs", "choice")])
# 15,000 choices (330,000 characters): within body_values.MAX_OPTION_VALUES, past which a body is refused first
@pytest.mark.parametrize("choices", [[f"answer number {i:08d}" for i in range(15_000)], ["x" * (256 * 1024 + 1)]])
async def test_choices_past_a_grammars_length_are_refused_and_audited(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict, field: str, inner: str | None,
        choices: list[str]) -> None:
    """(7 Dec 2026, thirty-fourth session) vLLM's choices (`guided_choice`, since its v0.12 `structured_outputs.choice`)
    went to the engine bounded only by the body's size (100,000 of them, 1.4 MB), and vLLM makes them a grammar of
    alternatives that its backend compiles as it does a client's grammar, which the grid holds to 256 KiB
    (MAX_GRAMMAR_CHARS). Past that in all, now the client's 400 naming the field, before any engine, audited; within,
    passed as sent."""
    def with_choices(c: list[str]) -> dict:
        return {**body, field: c if inner is None else {inner: c}}
    param = field if inner is None else f"{field}.{inner}"
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        err = await refused(client, fakes, route, with_choices(choices), param, "grammar of alternatives")
        assert f"{sum(map(len, choices)):,} characters" in err["message"], err
        rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == route]
        assert [row["outcome"] for row in rows] == ["error:invalid_request"], rows
        within = ["positive", "negative", "neutral"]
        assert (await sent_as_is(client, fakes, route, with_choices(within)))[field] == with_choices(within)[field]


@pytest.mark.parametrize("value", ["yes", [1, 2], ["a", None], {"a": 1}])
async def test_choices_not_a_list_of_strings_are_refused_naming_it(
        tmp_path: Path, fakes: dict[str, FakeEngine], value: object) -> None:
    """(7 Dec 2026, thirty-fourth session) `guided_choice` is a list of strings; another shape went to the engine."""
    async with serving(spec_in(tmp_path), fakes) as (client, _):
        await refused(client, fakes, "/v1/chat/completions", {**CHAT, "guided_choice": value}, "guided_choice",
                      "a list of strings")
