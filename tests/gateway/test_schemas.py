"""Body fields of an engine's own that reach other requests' state on that engine are refused before routing
(schemas._Common): vLLM's `kv_transfer_params` (its disaggregated-serving connectors read from it where to pull
a prefill's KV blocks: host, port, block ids), llama-server's `id_slot` (the slot whose cache, another
client's prompt, the request is run in), SGLang's `bootstrap_host`, `bootstrap_port`, `bootstrap_room` (where a
disaggregated decode pulls its KV from) and `session_params` (a session's earlier request whose cache it continues).
All were passed to the engine untouched."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from tests.gateway.conftest import audit_rows, serving, spec_in
from tests.gateway.fake_engine import FakeEngine

CHAT = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 4}
COMPLETION = {"model": "smollm2-135m", "prompt": "hi", "max_tokens": 4}
KV = {"do_remote_prefill": True, "remote_host": "10.0.0.9", "remote_port": 5600, "remote_block_ids": [1, 2, 3],
      "remote_engine_id": "prefill-0"}


@pytest.mark.parametrize("route,body", [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)])
@pytest.mark.parametrize("field,value", [("kv_transfer_params", KV), ("id_slot", 0),
                                         # SGLang's (an engine kind of the grid): the prefill server and transfer
                                         # room a disaggregated decode pulls KV from, and a session's earlier
                                         # request whose cache the request continues
                                         ("bootstrap_host", "10.0.0.9"), ("bootstrap_port", 8998),
                                         ("bootstrap_room", 12345), ("session_params", {"id": "s", "rid": "r"}),
                                         # SGLang's request id and data-parallel replica; code the engine runs
                                         # (SGLang's serialized logit processor, vLLM's by import path)
                                         ("rid", "another-clients-request"), ("data_parallel_rank", 1),
                                         ("decode_dp_rank", 0), ("custom_logit_processor", "gASV..."),
                                         ("logits_processors", ["pkg.mod.Processor"]),
                                         # vLLM's request id (SGLang's rid): the engine's key of a request in flight
                                         ("request_id", "another-clients-request"),
                                         # an adapter picked on the engine beside `model`: SGLang's, llama-server's
                                         ("lora_path", "bank-finetune"), ("lora", [{"id": 0, "scale": 1.0}])])
async def test_fields_that_reach_other_requests_engine_state_are_refused(
        client: httpx.AsyncClient, fakes: dict[str, FakeEngine], route: str, body: dict, field: str,
        value: object) -> None:
    r = await client.post(route, json={**body, field: value})
    assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text
    assert "not served by this grid" in r.json()["error"]["message"], r.text
    assert all(not f.received for f in fakes.values())
    assert (await client.post(route, json=body)).status_code == 200  # without it, served


def test_the_api_document_does_not_offer_the_fields_it_refuses() -> None:
    """/openapi.json listed each refused engine field among a request's properties (any value), as if it were served:
    a client generated from it, or a fuzzer, was offered fields that are always a 400."""
    from aigrid.gateway.openapi import openapi_document

    refused = {"n_probs", "n_predict", "n_cmpl", "kv_transfer_params", "id_slot", "bootstrap_host", "bootstrap_port",
               "bootstrap_room", "session_params", "rid", "data_parallel_rank", "decode_dp_rank",
               "custom_logit_processor", "logits_processors", "request_id", "lora_path", "lora", "return_hidden_states",
               "vllm_xargs", "mm_processor_kwargs", "media_io_kwargs"}
    schemas = openapi_document("test")["components"]["schemas"]
    for name in ("ChatRequest", "CompletionRequest"):
        assert "model" in schemas[name]["properties"]
        assert refused.isdisjoint(schemas[name]["properties"]), (name, refused & set(schemas[name]["properties"]))


@pytest.mark.parametrize("route,body", [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)])
async def test_a_request_id_of_the_engine_is_refused_and_audited(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict) -> None:
    """(7 Dec 2026, thirty-second session) vLLM's `request_id` (its chat and completions requests take one from the
    client, since vLLM PR 9550) is the engine's key of a request in flight, as SGLang's `rid` (refused since the
    twentieth session): it was passed on. Two requests with one id at once broke vLLM's engine for every tenant on
    it (vllm-project/vllm issues 10583, 15041: a V1 engine crashed; "Request id ... already running" at best) until
    vLLM added a random suffix (PR 27987, Nov 2025), and the grid's own `n` sent the same body n times: one request
    of `n: 2` was two engine requests of one id. Now the client's 400 naming it, before any engine, audited."""
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        r = await client.post(route, json={**body, "request_id": "chatcmpl-1", "n": 2})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "request_id" and r.json()["error"]["type"] == "invalid_request_error"
        assert "engine state of other requests" in r.json()["error"]["message"], r.text
        assert all(not f.received for f in fakes.values())
        rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == route]
        assert [row["outcome"] for row in rows] == ["error:invalid_request"], rows


@pytest.mark.parametrize("route,body", [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)])
@pytest.mark.parametrize("field,value", [("lora_path", "bank-finetune"), ("lora", [{"id": 0, "scale": 1.0}])])
async def test_an_adapter_picked_beside_the_model_is_refused_and_audited(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict, field: str, value: object) -> None:
    """(7 Dec 2026, thirty-second session) A LoRA adapter is a model of the grid (an endpoint's `served_model` on vLLM
    or SGLang: docs/engines.md), routed, priced and scoped by `model`, which the gateway writes for the endpoint it
    chose. But SGLang's chat and completions take the adapter from the body's `lora_path` too (sglang PRs 2243, 2438;
    `model` only wins where it names one itself, base:adapter), and llama-server applies the adapters it loaded by
    the body's `lora` ({id, scale}): both were passed on. A key granted only the base model asked for it with
    `lora_path` naming another tenant's fine-tune, and was served that fine-tune, priced and audited as the base
    model. Now the client's 400 naming the field, before any engine, audited."""
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        r = await client.post(route, json={**body, field: value})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == field and r.json()["error"]["type"] == "invalid_request_error"
        assert "name it as the model" in r.json()["error"]["message"], r.text
        assert all(not f.received for f in fakes.values())
        rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == route]
        assert [row["outcome"] for row in rows] == ["error:invalid_request"], rows


MAX_GRAMMAR_NESTING = 1000
"""schemas.MAX_GRAMMAR_NESTING (test_the_grammar_bound_is_the_schemas_own checks that they agree)."""


def test_the_grammar_bound_is_the_schemas_own() -> None:
    from aigrid.gateway import schemas
    assert schemas.MAX_GRAMMAR_NESTING == MAX_GRAMMAR_NESTING


def nested_grammar(depth: int) -> str:
    return "root ::= " + "(" * depth + '"a"' + ")" * depth


@pytest.mark.parametrize("route,body", [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)])
@pytest.mark.parametrize("field", ["grammar", "guided_grammar", "ebnf"])
async def test_a_grammar_nested_past_what_an_engine_parses_is_refused_and_audited(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict, field: str) -> None:
    """(7 Dec 2026, thirty-second session) A client's grammar went to the engine as written (llama-server's `grammar`,
    vLLM's `guided_grammar`, SGLang's `ebnf`), and llama.cpp parses GBNF by recursion, one level per group: one chat
    request with a grammar of 60,000 nested groups (120 KB, within max_body_bytes) killed the grid's own embedded
    engine (llama-server 0.3.36, the cached build: its process gone, /health unanswered; measured this session;
    llama.cpp issue 26600, fix PR 26602 not merged), and with it every tenant's requests there. A grammar nested
    deeper than MAX_GRAMMAR_NESTING (1,000, PR 26602's bound; 5,000 parsed on that build) is the client's 400
    naming the field, before any engine, audited (and one longer than 256 KiB, which bounds the scan's cost); a group
    inside a literal, a character class or a comment is not nesting."""
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        for deep in (60_000, MAX_GRAMMAR_NESTING + 1):
            r = await client.post(route, json={**body, field: nested_grammar(deep)})
            assert r.status_code == 400, r.text
            err = r.json()["error"]
            assert err["param"] == field and err["type"] == "invalid_request_error", err
            assert f"nested {deep} groups deep" in err["message"] and len(err["message"]) < 400, err
        assert all(not f.received for f in fakes.values())
        rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == route]
        assert [row["outcome"] for row in rows] == ["error:invalid_request"] * 2, rows
        # within the bound, and parentheses that are text (a literal, a class, a comment), pass to the engine
        fine = [nested_grammar(MAX_GRAMMAR_NESTING), 'root ::= "' + "(" * 5000 + '" [()\\]] # ' + "(" * 5000,
                'root ::= "\\\"(" ( "a" | [^)] )*']
        for grammar in fine:
            r = await client.post(route, json={**body, field: grammar})
            assert r.status_code == 200, r.text
        assert sum(len(f.received) for f in fakes.values()) == len(fine)
        r = await client.post(route, json={**body, field: 5})
        assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text
        # the scan's cost is bounded by the grammar's length (schemas.MAX_GRAMMAR_CHARS, 256 KiB)
        r = await client.post(route, json={**body, field: 'root ::= "' + "a" * 256 * 1024 + '"'})
        assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text
        assert "characters long" in r.json()["error"]["message"], r.text
        assert sum(len(f.received) for f in fakes.values()) == len(fine)


@pytest.mark.parametrize("route,body", [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)])
@pytest.mark.parametrize("field,value,says", [
    ("return_hidden_states", True, "internal states"),
    ("vllm_xargs", {"kv_transfer_params": "not-a-dict"}, "extensions and connectors"),
    ("mm_processor_kwargs", {"max_pixels": 100_000_000}, "processes images"),
    ("media_io_kwargs", {"video": {"num_frames": -1}}, "how many frames")])
async def test_engine_pass_through_fields_are_refused_and_audited(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict, field: str, value: object,
        says: str) -> None:
    """(7 Dec 2026, thirty-second session) Three engine fields were passed on as written. SGLang's
    `return_hidden_states` (chat and completions, sglang PR 6716, where the operator started it with
    --enable-return-hidden-states) answers every token's last-layer hidden state beside the text: what distils the
    model, a model-extraction channel no abuse signal reads, unbounded and uncounted. vLLM's `vllm_xargs` is copied
    into the engine's SamplingParams.extra_args, where its KV connectors read `kv_transfer_params` (refused on its
    own): a planted one passed that refusal, and one not a dict crashed the engine core (vLLM PR 56814). vLLM's
    `mm_processor_kwargs` overrides the operator's --mm-processor-kwargs (max_pixels) that the engine's encoder cache
    was profiled for: an image past it hung the V1 scheduler (vLLM issue 26223, PR 33110). Now each is the client's
    400 naming the field, before any engine, audited. (FX2) vLLM's `media_io_kwargs` likewise: a request's
    `{"video": {"num_frames": -1}}` lifted the operator's frame ceiling (CVE-2026-34755, vLLM PR 51969)."""
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        r = await client.post(route, json={**body, field: value})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == field and r.json()["error"]["type"] == "invalid_request_error"
        assert says in r.json()["error"]["message"], r.text
        assert all(not f.received for f in fakes.values())
        rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == route]
        assert [row["outcome"] for row in rows] == ["error:invalid_request"], rows


@pytest.mark.parametrize("route,body", [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)])
@pytest.mark.parametrize("field,value", [
    ("return_hidden_states", False), ("vllm_xargs", {}), ("mm_processor_kwargs", {}), ("media_io_kwargs", {})])
async def test_engine_pass_through_fields_that_ask_nothing_pass(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict, field: str, value: object) -> None:
    """(review RV3 of 53bdd543) The engine's own default of a refused field asks nothing of it: SGLang's client sends
    `return_hidden_states: false` on every request, refused with the rest until then. It passes, as a null does;
    any other value is still refused (0 for false, a non-empty object). It is left out of what
    the engine gets (review RV4 of f7f3180c: a hosted OpenAI API answers an unknown field its own 400)."""
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        r = await client.post(route, json={**body, field: value})
        assert r.status_code == 200, r.text
        sent = [req for f in fakes.values() for req in f.received]  # left out: a hosted API would refuse it
        assert len(sent) == 1 and field not in sent[0], sent
        other = 0 if value is False else {"a": 1}
        r = await client.post(route, json={**body, field: other})
        assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text


async def test_best_of_more_than_one_is_refused_on_chat_as_on_completions(
        tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    """(7 Dec 2026, thirty-second session) `best_of` was refused on /v1/completions only (7a496fe0), but vLLM's chat
    request reads it too (`ChatCompletionRequest.best_of`, into the same SamplingParams): its V0 engine sampled that
    many answers for each one returned, charged as one. A chat `best_of: 100` went to the engine untouched. Now the
    client's 400 naming it on both routes, audited; 1 (the default) passes."""
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        for bad in (2, 100, True, "3"):
            r = await client.post("/v1/chat/completions", json={**CHAT, "best_of": bad})
            assert r.status_code == 400 and r.json()["error"]["param"] == "best_of", r.text
            assert r.json()["error"]["message"] == ("invalid value for 'best_of': best_of other than 1 is not served "
                                                    "by this grid: ask for n choices"), r.text
        assert all(not f.received for f in fakes.values())
        rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == "/v1/chat/completions"]
        assert [row["outcome"] for row in rows] == ["error:invalid_request"] * 4, rows
        assert (await client.post("/v1/chat/completions", json={**CHAT, "best_of": 1})).status_code == 200


CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}


@pytest.mark.parametrize("messages,index", [
    ([{"role": "user"}], 0),  # what llama.cpp answered "All non-assistant messages must contain 'content'"
    ([{"role": "user", "content": None}], 0),
    ([{"role": "system"}, {"role": "user", "content": "hi"}], 0),
    ([{"role": "developer", "content": None}, {"role": "user", "content": "hi"}], 0),
    ([{"role": "user", "content": "hi"}, {"role": "assistant"}, {"role": "user", "content": "and?"}], 1),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [CALL]},
      {"role": "tool", "tool_call_id": "call_1"}], 2),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "function_call": {"name": "lookup", "arguments": "{}"}},
      {"role": "function", "name": "lookup"}], 2),
])
async def test_a_message_without_its_content_is_refused_naming_the_field(
        client: httpx.AsyncClient, fakes: dict[str, FakeEngine], messages: list[dict], index: int) -> None:
    """OpenAI's rule (the SDK's message types: content Required for system, developer, user and tool; a function
    message's key required, null allowed; an assistant's only with neither tool_calls nor function_call). A user
    message without content reached llama.cpp, whose 400 the client got with `param` and `code` null."""
    r = await client.post("/v1/chat/completions", json={**CHAT, "messages": messages})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == f"messages[{index}].content" and error["code"] == "invalid_request", r.text
    assert f"'messages[{index}].content'" in error["message"], r.text
    assert all(not f.received for f in fakes.values())


@pytest.mark.parametrize("messages", [
    [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [CALL]},
     {"role": "tool", "tool_call_id": "call_1", "content": "42"}, {"role": "user", "content": "so?"}],
    # the gateway's own answer with no text (content null), sent back as history
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None}, {"role": "user", "content": "hi"}],
    [{"role": "user", "content": ""}],
])
async def test_the_messages_that_may_leave_content_out_or_empty_are_served(
        client: httpx.AsyncClient, messages: list[dict]) -> None:
    r = await client.post("/v1/chat/completions", json={**CHAT, "messages": messages})
    assert r.status_code == 200, r.text


async def test_an_assistant_messages_refusal_names_every_way_to_leave_content_out(
        client: httpx.AsyncClient) -> None:
    """An assistant may leave content out beside `tool_calls`, a legacy `function_call` or a string `refusal`: the
    400 named `tool_calls` only."""
    r = await client.post("/v1/chat/completions", json={**CHAT, "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant"}, {"role": "user", "content": "and?"}]})
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert all(f"`{key}`" in message for key in ("tool_calls", "function_call", "refusal")), message


async def test_an_unknown_response_format_type_is_refused_naming_it_and_audited(
        tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    """(7 Dec 2026, thirty-second session) `response_format: {"type": "xml"}` went to the engine, and llama-server's
    own 400 came back with `param: null`. Now the client's 400 naming `response_format.type`, before any engine,
    audited; the served types (OpenAI's text, json_object, json_schema; vLLM's and SGLang's structural_tag) pass."""
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        for bad in ("xml", "JSON_OBJECT", 5):
            r = await client.post("/v1/chat/completions", json={**CHAT, "response_format": {"type": bad}})
            assert r.status_code == 400, r.text
            error = r.json()["error"]
            assert error["param"] == "response_format.type" and error["type"] == "invalid_request_error", r.text
            if isinstance(bad, str):
                assert f"the response format {bad!r} is not served: send one of text, json_object, json_schema, " \
                       "structural_tag" in error["message"], r.text
        assert all(not f.received for f in fakes.values())
        rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == "/v1/chat/completions"]
        assert [row["outcome"] for row in rows] == ["error:invalid_request"] * 3, rows
        for served in ({"type": "text"}, {"type": "json_object"}, {"type": "structural_tag", "structures": []}):
            r = await client.post("/v1/chat/completions", json={**CHAT, "response_format": served})
            assert r.status_code == 200, r.text


@pytest.mark.parametrize("route,body", [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)])
async def test_a_logit_bias_not_openais_map_is_refused_naming_it(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict) -> None:
    """(7 Dec 2026, thirty-second session) `logit_bias: "x"` was answered 200 and the engine ignored it: the client
    believed its answer biased. OpenAI's logit_bias is a map of token ids (strings of digits) to numbers from -100 to
    100; anything else is now the client's 400 naming `logit_bias`, audited; the map passes as sent."""
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        bad = ("x", 5, ["15043", 1], {"hello": 1}, {"15043": 101}, {"15043": "1"}, {"15043": True})
        for value in bad:
            r = await client.post(route, json={**body, "logit_bias": value})
            assert r.status_code == 400, (value, r.text)
            assert r.json()["error"]["param"] == "logit_bias" and "logit_bias" in r.json()["error"]["message"], r.text
        assert all(not f.received for f in fakes.values())
        rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == route]
        assert [row["outcome"] for row in rows] == ["error:invalid_request"] * len(bad), rows
        r = await client.post(route, json={**body, "logit_bias": {"15043": -100, "50256": 2.5}})
        assert r.status_code == 200, r.text
        assert [f.received[-1]["logit_bias"] for f in fakes.values() if f.received] == [{"15043": -100, "50256": 2.5}]


def test_a_comment_ends_at_a_carriage_return_as_llama_cpp_ends_it() -> None:
    """(7 Dec 2026, thirty-second session, review RV1 of fe0745b7) llama.cpp's grammar parser ends a `#` comment at
    '\\r' as at '\\n' (parse_space), and takes a lone '\\r' as the newline between rules: the scan read the comment to
    the next '\\n', so groups after a '\\r' went uncounted (`# c\\rx ::= ((((...`: nested 3,000 deep, read as 0) and
    reached the engine past the bound."""
    from aigrid.gateway.schemas import grammar_nesting
    deep = "(" * 3000 + '"a"' + ")" * 3000
    assert grammar_nesting("root ::= x # c\rx ::= " + deep) == 3000
    assert grammar_nesting("root ::= ( # c\r\n" + deep + ")") == 3001
    assert grammar_nesting("root ::= x # ((((\rx ::= \"a\"") == 0  # the comment's own, up to the '\r'


@pytest.mark.parametrize("route,body", [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)])
async def test_vllms_structured_outputs_grammar_is_bounded_as_grammar_is(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict) -> None:
    """(Review RV1 of fe0745b7) vLLM removed `guided_grammar` in its v0.12: its grammar is `structured_outputs.grammar`,
    which reached the engine unread however deeply it nested. Now bounded as `grammar` is (the client's 400 naming
    `structured_outputs.grammar`, audited); a grammar within the bound and the object's other keys pass as written."""
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        r = await client.post(route, json={**body, "structured_outputs": {"grammar": nested_grammar(
            MAX_GRAMMAR_NESTING + 1)}})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == "structured_outputs.grammar" and err["type"] == "invalid_request_error", err
        assert f"nested {MAX_GRAMMAR_NESTING + 1} groups deep" in err["message"], err
        assert all(not f.received for f in fakes.values())
        rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == route]
        assert [row["outcome"] for row in rows] == ["error:invalid_request"], rows
        fine = {"grammar": nested_grammar(MAX_GRAMMAR_NESTING), "whitespace_pattern": " "}
        r = await client.post(route, json={**body, "structured_outputs": fine})
        assert r.status_code == 200, r.text
        sent = [got for f in fakes.values() for got in f.received]
        assert len(sent) == 1 and sent[0]["structured_outputs"] == fine, sent


def nested_regex(depth: int) -> str:
    return "(" * depth + "a" + ")" * depth


def nested_json(depth: int) -> str:
    return '{"type": "array", "items": ' * depth + '{"type": "string"}' + "}" * depth


@pytest.mark.parametrize("route,body", [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)])
@pytest.mark.parametrize("field,value,param,says", [
    ("guided_regex", nested_regex(MAX_GRAMMAR_NESTING + 1), "guided_regex", "groups deep"),
    ("regex", nested_regex(60_000), "regex", "groups deep"),
    ("structured_outputs", {"regex": nested_regex(MAX_GRAMMAR_NESTING + 1)}, "structured_outputs.regex",
     "groups deep"),
    ("guided_json", nested_json(130), "guided_json", "deeper than 128 levels"),
    ("json_schema", nested_json(130), "json_schema", "deeper than 128 levels"),
    ("structured_outputs", {"json": "[" * 5000 + "]" * 5000}, "structured_outputs.json", "not JSON"),
    ("structural_tag", '{"structures": ' + "[" * 200 + "]" * 200 + "}", "structural_tag", "deeper than"),
    # Lark (vLLM's guidance backend, SGLang's llguidance): `[...]` is an optional group, not a character class
    ("guided_grammar", "start: " + "[" * (MAX_GRAMMAR_NESTING + 1) + '"a"' + "]" * (MAX_GRAMMAR_NESTING + 1),
     "guided_grammar", "groups deep"),
    ("structured_outputs", {"grammar": "start: " + "[" * 3000 + '"a"' + "]" * 3000}, "structured_outputs.grammar",
     "groups deep"),
    ("ebnf", "start: x\n" + ")" * 5000 + "\nx: " + "(" * 2000 + '"a"' + ")" * 2000, "ebnf", "groups deep"),
    # llama.cpp built with LLAMA_LLGUIDANCE reads a grammar beginning `%llguidance` as Lark
    ("grammar", "%llguidance {}\nstart: " + "[" * 3000 + '"a"' + "]" * 3000, "grammar", "groups deep")])
async def test_a_regex_a_json_schema_text_or_a_lark_grammar_past_the_bound_is_refused_and_audited(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict, field: str, value: object,
        param: str, says: str) -> None:
    """(7 Dec 2026, thirty-third session) The grammar bound (MAX_GRAMMAR_NESTING) read GBNF's groups only. A regular
    expression (vLLM's `guided_regex` and `structured_outputs.regex`, SGLang's `regex`) went to the engine at any
    depth, and xgrammar, vLLM's and SGLang's default backend, turns it into a grammar group for group
    (RegexConverter) that its parser reads as a grammar's; a JSON schema given as a string (vLLM's `guided_json`
    and `structured_outputs.json`, SGLang's `json_schema`, their `structural_tag`) passed the body's own depth
    bound (json_depth.MAX_DEPTH, 128) as one string; a Lark grammar's optional groups (`[...]`, which the GBNF scan
    reads as a character class) and groups after stray closing brackets went uncounted, and so did a llama-server
    `grammar` beginning `%llguidance`, which llama.cpp built with LLAMA_LLGUIDANCE reads as Lark. Each is now the
    client's 400 naming the field, before any engine, audited; within the bound each passes as written."""
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        r = await client.post(route, json={**body, field: value})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == param and err["type"] == "invalid_request_error", err
        assert says in err["message"] and len(err["message"]) < 400, err
        assert all(not f.received for f in fakes.values())
        rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == route]
        assert [row["outcome"] for row in rows] == ["error:invalid_request"], rows


@pytest.mark.parametrize("route,body", [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)])
async def test_regexes_json_schema_texts_and_lark_grammars_within_the_bound_pass_as_written(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict) -> None:
    """The other side of the bound: nested MAX_GRAMMAR_NESTING deep, a JSON schema within 128 levels, and brackets
    that are text (escaped, in a character class, in a Lark literal or regular expression) pass to the engine."""
    fine = [("guided_regex", nested_regex(MAX_GRAMMAR_NESTING)), ("regex", "\\(" * 5000 + "[(]" * 2000),
            ("structured_outputs", {"regex": "[a-z]+", "json": nested_json(10)}),
            ("guided_json", nested_json(120)), ("guided_json", {"type": "object"}), ("json_schema", '{"type": "string"}'),
            ("guided_grammar", 'start: "' + "[" * 5000 + '" /[[(]+/ ' + "[" * MAX_GRAMMAR_NESTING
             + '"a"' + "]" * MAX_GRAMMAR_NESTING)]
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        for field, value in fine:
            r = await client.post(route, json={**body, field: value})
            assert r.status_code == 200, (field, r.text)
        sent = [got for f in fakes.values() for got in f.received]
        assert [got[field] for got, (field, _) in zip(sent, fine, strict=True)] == [v for _, v in fine]


MAX_LOGIT_BIAS = 1024
"""schemas.MAX_LOGIT_BIAS: OpenAI's bound ("Expected an object with at most 1024 properties")."""


@pytest.mark.parametrize("route,body", [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)])
async def test_a_logit_bias_of_more_tokens_than_openai_takes_is_refused_naming_it(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict) -> None:
    """(7 Dec 2026, thirty-third session) `logit_bias` was bounded only by the body's size: 200,000 entries (2.7 MB,
    within max_body_bytes) went to the engine, which adds each to the logits of every step it samples. OpenAI's API
    refuses more than 1,024 ("too many properties"); so does the grid now, the client's 400 naming `logit_bias`,
    before any engine, audited. 1,024 pass as sent."""
    from aigrid.gateway import schemas
    assert schemas.MAX_LOGIT_BIAS == MAX_LOGIT_BIAS
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        # 9,000: within body_values.MAX_OPTION_VALUES (its keys and values 18,000), past which a body is refused first
        for count in (9_000, MAX_LOGIT_BIAS + 1):
            r = await client.post(route, json={**body, "logit_bias": {str(t): -1 for t in range(count)}})
            assert r.status_code == 400, r.text[:300]
            err = r.json()["error"]
            assert err["param"] == "logit_bias" and err["type"] == "invalid_request_error", err
            assert f"{count:,} tokens" in err["message"] and len(err["message"]) < 300, err
        assert all(not f.received for f in fakes.values())
        rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == route]
        assert [row["outcome"] for row in rows] == ["error:invalid_request"] * 2, rows
        most = {str(t): -1 for t in range(MAX_LOGIT_BIAS)}
        r = await client.post(route, json={**body, "logit_bias": most})
        assert r.status_code == 200, r.text
        assert [f.received[-1]["logit_bias"] for f in fakes.values() if f.received] == [most]


@pytest.mark.parametrize("route,body", [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)])
@pytest.mark.parametrize("triggers", [[{"type": 2, "value": "(" * 50_000 + "a" + ")" * 50_000}],
                                      [{"type": 1, "value": "a" * 100_000}], [{"type": 3, "value": "x"}]])
async def test_llama_servers_grammar_triggers_are_refused_and_audited(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict, triggers: list) -> None:
    """(7 Dec 2026, thirty-third session) llama-server's `grammar_triggers` (the words and patterns after which a
    lazy grammar starts) were passed on: llama-server compiles each as a C++ std::regex (llama-grammar.cpp, a word
    escaped), and libstdc++ compiles by recursion, once per group and once per character: 50,000 nested groups or
    a literal of 100,000 characters crashed it (SIGSEGV, measured with g++ here), and with it the engine and every
    request on it. On chat llama-server replaces the client's triggers with its template's; on /v1/completions
    they were the client's. Now the client's 400 naming the field, before any engine, audited; `[]` passes and is
    left out."""
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        lazy = {**body, "grammar": 'root ::= "a"', "grammar_lazy": True}
        r = await client.post(route, json={**lazy, "grammar_triggers": triggers})
        assert r.status_code == 400, r.text[:300]
        err = r.json()["error"]
        assert err["param"] == "grammar_triggers" and err["type"] == "invalid_request_error", err
        assert "std::regex" in err["message"] and len(err["message"]) < 400, err
        assert all(not f.received for f in fakes.values())
        rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == route]
        assert [row["outcome"] for row in rows] == ["error:invalid_request"], rows
        r = await client.post(route, json={**body, "grammar_triggers": []})
        assert r.status_code == 200, r.text
        sent = [got for f in fakes.values() for got in f.received]
        assert len(sent) == 1 and "grammar_triggers" not in sent[0], sent



@pytest.mark.parametrize("route,body", [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)])
@pytest.mark.parametrize("field", ["stop", "bad_words"])
async def test_stop_sequences_and_bad_words_past_what_an_engine_checks_each_step_are_refused(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict, field: str) -> None:
    """(7 Dec 2026, thirty-third session) `stop` and vLLM's `bad_words` were bounded only by the body's size: 100,000
    of either were served, and the engine checks each at every step it samples (llama-server's find_stopping_strings
    walks every stop string for each token, in the one loop serving all its slots; vLLM's bad_words loop in Python
    per request per step), a cost every tenant's requests batched with it pay. More than 1,024 (MAX_LOGIT_BIAS's
    figure) is now the client's 400 naming the field, before any engine, audited; 1,024 pass as sent."""
    from aigrid.gateway import schemas
    assert schemas.MAX_STEP_ENTRIES == MAX_LOGIT_BIAS
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        # 15,000: within body_values.MAX_OPTION_VALUES, past which a body is refused first (thirty-sixth session)
        for count in (15_000, MAX_LOGIT_BIAS + 1):
            r = await client.post(route, json={**body, field: [f"w{i}" for i in range(count)]})
            assert r.status_code == 400, r.text[:300]
            err = r.json()["error"]
            assert err["param"] == field and err["type"] == "invalid_request_error", err
            assert f"{count:,}" in err["message"] and "every step" in err["message"], err
        assert all(not f.received for f in fakes.values())
        rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == route]
        assert [row["outcome"] for row in rows] == ["error:invalid_request"] * 2, rows
        most = [f"w{i}" for i in range(MAX_LOGIT_BIAS)]
        r = await client.post(route, json={**body, field: most})
        assert r.status_code == 200, r.text
        assert [f.received[-1][field] for f in fakes.values() if f.received] == [most]


def schema_with(pattern: str) -> dict:
    return {"type": "object", "properties": {"id": {"type": "string", "pattern": pattern}}}


@pytest.mark.parametrize("field,value,param", [
    ("response_format", {"type": "json_schema", "json_schema": {"name": "n", "schema": schema_with(nested_regex(
        MAX_GRAMMAR_NESTING + 1))}}, "response_format.json_schema.schema.properties.id.pattern"),
    ("tools", [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "patternProperties": {nested_regex(MAX_GRAMMAR_NESTING + 1): {"type": "string"}}}}}],
     "tools[0].function.parameters.patternProperties"),
    ("guided_json", schema_with("a" * (256 * 1024 + 1)), "guided_json.properties.id.pattern"),
    ("structured_outputs", {"json": schema_with(nested_regex(MAX_GRAMMAR_NESTING + 1))},
     "structured_outputs.json.properties.id.pattern")])
async def test_a_json_schemas_pattern_past_the_regex_bound_is_refused_and_audited(
        tmp_path: Path, fakes: dict[str, FakeEngine], field: str, value: object, param: str) -> None:
    """(7 Dec 2026, thirty-third session) A JSON schema's `pattern` is a regular expression the engine compiles
    with the schema (xgrammar's JSON schema converter turns it into grammar groups as it does `guided_regex`;
    llama.cpp's bounds its own at 100 groups): in OpenAI's `response_format`, a function tool's `parameters` (the
    grammar of a required or named tool call), vLLM's `guided_json` and `structured_outputs.json`, it reached the
    engine at any depth and length. Each `pattern` (and `patternProperties` key) is now bounded as `guided_regex`
    is: the client's 400 naming its place, before any engine, audited; within the bound it passes as written."""
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        r = await client.post("/v1/chat/completions", json={**CHAT, field: value})
        assert r.status_code == 400, r.text[:300]
        err = r.json()["error"]
        assert err["param"] == param and err["type"] == "invalid_request_error", err
        assert "regular expression" in err["message"] and len(err["message"]) < 400, err
        assert all(not f.received for f in fakes.values())
        rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == "/v1/chat/completions"]
        assert [row["outcome"] for row in rows] == ["error:invalid_request"], rows
        fine = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema_with(
            nested_regex(MAX_GRAMMAR_NESTING) + "[(]" * 2000)}}
        r = await client.post("/v1/chat/completions", json={**CHAT, "response_format": fine})
        assert r.status_code == 200, r.text[:300]
        assert [f.received[-1]["response_format"] for f in fakes.values() if f.received] == [fine]


async def test_a_responses_requests_schema_pattern_is_bounded_as_chats(
        tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    """The Responses API's `text.format` schema reaches the engine as chat's `response_format` (validated as a chat
    request): its deep `pattern` is refused there too, before any engine."""
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        body = {"model": "smollm2-135m", "input": "hi", "max_output_tokens": 16, "text": {"format": {
            "type": "json_schema", "name": "n", "schema": schema_with(nested_regex(MAX_GRAMMAR_NESTING + 1))}}}
        r = await client.post("/v1/responses", json=body)
        assert r.status_code == 400 and "regular expression" in r.json()["error"]["message"], r.text[:300]
        assert all(not f.received for f in fakes.values())


@pytest.mark.parametrize("route,body", [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)])
@pytest.mark.parametrize("field,value,param", [
    ("guided_json", orjson.dumps(schema_with(nested_regex(MAX_GRAMMAR_NESTING + 1))).decode(), "guided_json"),
    ("json_schema", orjson.dumps(schema_with("a" * (256 * 1024 + 1))).decode(), "json_schema"),
    ("structured_outputs", {"json": orjson.dumps(schema_with(nested_regex(MAX_GRAMMAR_NESTING + 1))).decode()},
     "structured_outputs.json"),
    ("structural_tag", orjson.dumps({"structures": [{"begin": "<f>", "end": "</f>", "schema": schema_with(
        nested_regex(MAX_GRAMMAR_NESTING + 1))}], "triggers": ["<f>"]}).decode(), "structural_tag")])
async def test_a_pattern_in_a_json_schema_sent_as_a_string_is_bounded_as_in_an_object(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict, field: str, value: object,
        param: str) -> None:
    """(review RV1 of b42ac1b7, thirty-third session) A schema's `pattern` was bounded only where the schema came as
    an object: vLLM's `guided_json` and `structured_outputs.json` sent as a string of JSON, SGLang's `json_schema`
    (a string only) and a structural tag's schemas passed a pattern nested 1,001 groups deep, or 256 KiB long, to
    the engine. Now the client's 400 naming the field and the pattern's place in it, before any engine, audited."""
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        r = await client.post(route, json={**body, field: value})
        assert r.status_code == 400, r.text[:300]
        err = r.json()["error"]
        assert err["param"] == param and err["type"] == "invalid_request_error", err
        assert "regular expression" in err["message"] and "id.pattern" in err["message"], err
        assert len(err["message"]) < 400, err
        assert all(not f.received for f in fakes.values())
        rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == route]
        assert [row["outcome"] for row in rows] == ["error:invalid_request"], rows


@pytest.mark.parametrize("value", ["bad", [1], ["ok", None], {"w": 1}])
async def test_bad_words_of_another_kind_than_a_list_of_strings_is_refused_naming_it(
        tmp_path: Path, fakes: dict[str, FakeEngine], value: object) -> None:
    """(review RV1 of 109b38a0) vLLM's `bad_words` is a list of strings; 109b38a0 read it (it went to the engine
    unread, whose own 400 came after the grid routed and counted the request). Another kind is the client's 400
    naming the field, before any engine."""
    async with serving(spec_in(tmp_path), fakes) as (client, _):
        r = await client.post("/v1/chat/completions", json={**CHAT, "bad_words": value})
        assert r.status_code == 400, r.text[:300]
        err = r.json()["error"]
        assert err["param"] == "bad_words" and "a list of strings" in err["message"], err
        assert all(not f.received for f in fakes.values())


def grammar_tag(depth: int) -> dict:
    """xgrammar's structural tag whose format is an EBNF grammar ({"type": "grammar", "grammar": ...})."""
    return {"type": "structural_tag", "format": {"type": "sequence", "elements": [
        {"type": "const_string", "value": "<a>"}, {"type": "grammar", "grammar": nested_grammar(depth)}]}}


@pytest.mark.parametrize("field,value,param", [
    ("response_format", grammar_tag(MAX_GRAMMAR_NESTING + 1), "response_format.format.elements[1].grammar"),
    ("structured_outputs", {"structural_tag": orjson.dumps(grammar_tag(MAX_GRAMMAR_NESTING + 1)).decode()},
     "structured_outputs.structural_tag"),
    ("structural_tag", orjson.dumps(grammar_tag(3000)).decode(), "structural_tag")])
async def test_a_structural_tags_grammar_past_the_grammar_bound_is_refused(
        tmp_path: Path, fakes: dict[str, FakeEngine], field: str, value: object, param: str) -> None:
    """(review RV1 of 746ca3e7 and b42ac1b7, thirty-third session) xgrammar's structural tag (vLLM's
    `response_format` of type structural_tag and `structured_outputs.structural_tag`, SGLang's `structural_tag`)
    takes a format `{"type": "grammar", "grammar": EBNF}` that xgrammar parses as `grammar` is: it reached the
    engine nested at any depth, past MAX_GRAMMAR_NESTING. Now the client's 400 naming the field (and the grammar's
    place), before any engine, audited; nested MAX_GRAMMAR_NESTING deep it passes as written."""
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        r = await client.post("/v1/chat/completions", json={**CHAT, field: value})
        assert r.status_code == 400, r.text[:300]
        err = r.json()["error"]
        assert err["param"] == param and err["type"] == "invalid_request_error", err
        assert "groups deep" in err["message"] and len(err["message"]) < 400, err
        assert all(not f.received for f in fakes.values())
        rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == "/v1/chat/completions"]
        assert [row["outcome"] for row in rows] == ["error:invalid_request"], rows
        fine = grammar_tag(MAX_GRAMMAR_NESTING)
        r = await client.post("/v1/chat/completions", json={**CHAT, "response_format": fine})
        assert r.status_code == 200, r.text[:300]
        assert [f.received[-1]["response_format"] for f in fakes.values() if f.received] == [fine]
