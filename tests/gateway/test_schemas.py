"""Body fields of an engine's own that reach other requests' state on that engine are refused before routing
(schemas._Common): vLLM's `kv_transfer_params` (its disaggregated-serving connectors read from it where to pull
a prefill's KV blocks: host, port, block ids), llama-server's `id_slot` (the slot whose cache, another
client's prompt, the request is run in), SGLang's `bootstrap_host`, `bootstrap_port`, `bootstrap_room` (where a
disaggregated decode pulls its KV from) and `session_params` (a session's earlier request whose cache it continues).
All were passed to the engine untouched."""

from __future__ import annotations

import httpx
import pytest

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
                                         ("logits_processors", ["pkg.mod.Processor"])])
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
               "custom_logit_processor", "logits_processors"}
    schemas = openapi_document("test")["components"]["schemas"]
    for name in ("ChatRequest", "CompletionRequest"):
        assert "model" in schemas[name]["properties"]
        assert refused.isdisjoint(schemas[name]["properties"]), (name, refused & set(schemas[name]["properties"]))


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
    assert error["param"] == f"messages.{index}.content" and error["code"] == "invalid_request", r.text
    assert f"'messages.{index}.content'" in error["message"], r.text
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
