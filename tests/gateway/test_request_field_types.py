"""The JSON types of the OpenAI request fields, as OpenAI and vLLM take them (gateway/schemas.py,
responses_schema.py, engine_body.py).

Null is a field's default: OpenAI documents `stream`, `store` and the rest as "boolean or null", and the openai SDK's
own types take `stream=None` and `store=None` and send them as `"stream": null`. The gateway answered those with a
400 "Input should be a valid boolean" on chat, completions and the Responses API.

A value of the wrong type is a 400 naming the field, before routing: `"temperature": "0"`, `"max_tokens": "3"`,
`"stream": "true"` were taken by pydantic's lax mode and sent on as the client wrote them, and llama.cpp answered
its own 400 ("[json.exception.type_error.302] type must be number, but is string", no `param`) after the request
was routed and counted (measured against llama-server with the demo's model, 6 Dec 2026)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from aigrid.gateway.app import build_app
from tests.gateway.conftest import serving, spec_in
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.sdk_clients import openai_client

MODEL = "smollm2-135m"
CHAT: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
COMPLETION: dict[str, Any] = {"model": MODEL, "prompt": "hi", "max_tokens": 4}


def _sent(fakes: dict[str, FakeEngine]) -> list[dict[str, Any]]:
    return [r for f in fakes.values() for r in f.received]


async def test_the_openai_sdks_stream_none_and_store_none_are_served_as_their_defaults(
        tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    """The official SDK's own `stream=None` (chat, completions, responses) and `store=None` (responses): a whole
    answer, as with the field left out; a Response stored as by default."""
    async with serving(spec_in(tmp_path), fakes) as (http, gw):
        client = openai_client(build_app(gw))
        chat = await client.chat.completions.create(model=MODEL, messages=CHAT["messages"], max_tokens=4, stream=None)
        assert chat.choices[0].message.content
        done = await client.completions.create(model=MODEL, prompt="hi", max_tokens=4, stream=None)
        assert done.choices[0].finish_reason == "stop"  # (the fake engine answers any route in chat's shape)
        resp = await client.responses.create(model=MODEL, input="hi", max_output_tokens=4, stream=None, store=None)
        assert resp.status == "completed" and resp.output_text
        assert (await client.responses.retrieve(resp.id)).id == resp.id  # stored: store's default, true


@pytest.mark.parametrize("kind, left_out", [("vllm", True), ("llamacpp", True), ("sglang", True),
                                            ("openai", False)])
async def test_a_null_field_goes_on_left_out_except_to_a_hosted_engine(
        tmp_path: Path, kind: str, left_out: bool) -> None:
    """A field set to null reaches an engine without it (SGLang declares `stream`, `n` and `logprobs` a plain
    boolean or integer and refused a null); a hosted engine (kind openai) gets the body as sent."""
    spec = spec_in(tmp_path)
    spec = spec.model_copy(update={"endpoints": [e.model_copy(update={"engine": kind}) for e in spec.endpoints]})
    fakes = {e.id: FakeEngine(e.id) for e in spec.endpoints}
    for f in fakes.values():
        f.kind = kind
    async with serving(spec, fakes) as (http, _):
        r = await http.post("/v1/chat/completions", json={**CHAT, "stream": None, "n": None, "logprobs": None})
        assert r.status_code == 200, r.text
        assert "choices" in r.json() and r.headers["content-type"].startswith("application/json")
    (sent,) = _sent(fakes)
    nulls = {k for k in ("stream", "n", "logprobs") if k in sent}
    assert nulls == (set() if left_out else {"stream", "n", "logprobs"}), sent
    assert sent["max_tokens"] == 4 and sent["messages"] == CHAT["messages"]


@pytest.mark.parametrize("route, extra, param", [
    ("/v1/chat/completions", {"temperature": "0"}, "temperature"),
    ("/v1/chat/completions", {"temperature": True}, "temperature"),
    ("/v1/chat/completions", {"top_p": "0.5"}, "top_p"),
    ("/v1/chat/completions", {"max_tokens": "3"}, "max_tokens"),
    ("/v1/chat/completions", {"max_tokens": True}, "max_tokens"),
    ("/v1/chat/completions", {"max_completion_tokens": "3"}, "max_completion_tokens"),
    ("/v1/chat/completions", {"n": "2"}, "n"),
    ("/v1/chat/completions", {"logprobs": "true"}, "logprobs"),
    ("/v1/chat/completions", {"logprobs": True, "top_logprobs": "2"}, "top_logprobs"),
    ("/v1/chat/completions", {"prompt_logprobs": "1"}, "prompt_logprobs"),
    ("/v1/chat/completions", {"stream": "true"}, "stream"),
    ("/v1/chat/completions", {"stream": 1}, "stream"),
    ("/v1/chat/completions", {"stream": True, "stream_options": {"include_usage": "yes"}},
     "stream_options.include_usage"),
    ("/v1/completions", {"temperature": "1"}, "temperature"),
    ("/v1/completions", {"max_tokens": "3"}, "max_tokens"),
    ("/v1/completions", {"logprobs": "2"}, "logprobs"),
    ("/v1/completions", {"echo": "true"}, "echo"),
    ("/v1/completions", {"stream": "false"}, "stream"),
], ids=lambda v: v if isinstance(v, str) and not v.startswith("/") else None)
async def test_a_value_of_the_wrong_json_type_is_a_400_naming_its_field_before_any_engine(
        client: httpx.AsyncClient, fakes: dict[str, FakeEngine], route: str, extra: dict[str, Any],
        param: str) -> None:
    body = {**(CHAT if route.endswith("chat/completions") else COMPLETION), **extra}
    r = await client.post(route, json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["type"], err["code"], err["param"]) == ("invalid_request_error", "invalid_request", param), err
    assert not _sent(fakes)  # refused before routing: no engine asked


@pytest.mark.parametrize("extra", [{"temperature": 0}, {"temperature": 1}, {"top_p": 1}, {"max_tokens": 4.0},
                                   {"n": 2}, {"logprobs": True, "top_logprobs": 2}, {"stream": False},
                                   {"temperature": None, "top_p": None, "n": None, "stream": None}])
async def test_numbers_and_booleans_of_their_type_still_pass(client: httpx.AsyncClient, extra: dict[str, Any]) -> None:
    """An integer where a float is asked (temperature 0), a whole float where an integer is (max_tokens 4.0, as
    engines read it) and nulls are served."""
    r = await client.post("/v1/chat/completions", json={**CHAT, **extra})
    assert r.status_code == 200, r.text


async def test_the_sdk_names_a_wrong_type_as_its_bad_request(tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    """What an agent sees: the SDK's BadRequestError with the field as `param` (it was llama.cpp's 400 with
    `param` None and a message about json.exception)."""
    async with serving(spec_in(tmp_path), fakes) as (_, gw):
        client = openai_client(build_app(gw))
        with pytest.raises(openai.BadRequestError) as e:
            await client.chat.completions.create(model=MODEL, messages=CHAT["messages"],
                                                 temperature="0")  # type: ignore[arg-type]
        assert e.value.param == "temperature" and "expected a number, got a string" in e.value.message


async def test_a_stream_given_as_a_string_opens_no_circuit_for_the_other_tenants(
        tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    """An engine whose schema reads `"stream": "true"` as true (vLLM's and SGLang's lax pydantic; the fake engine
    here) streamed, while the gateway, reading the body as sent, waited for a whole answer: each candidate's
    text/event-stream answer was an engine failure before the first byte, counted by its circuit breaker. Four such
    requests from one anonymous client opened the circuit of every endpoint, and another tenant's plain request was
    a 503 "circuit breaker open" (seen on the sources before the twenty-eighth session). Now a 400 before routing."""
    async with serving(spec_in(tmp_path), fakes) as (http, gw):
        for _ in range(4):
            r = await http.post("/v1/chat/completions", json={**CHAT, "stream": "true"})
            assert r.status_code == 400 and r.json()["error"]["param"] == "stream", r.text
        assert not _sent(fakes)
        assert all(s.circuit.value == "closed" for s in gw.store.snapshot().states.values())
        ok = await http.post("/v1/chat/completions", json=CHAT, headers={"x-aigrid-tenant": "eu-bank"})
        assert ok.status_code == 200, ok.text
