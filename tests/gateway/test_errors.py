"""Bad input gets the OpenAI error envelope with the right status, never a 500."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from aigrid.errors import InvalidRequest
from aigrid.gateway.app import Gateway, build_app
from tests.gateway.sdk_clients import anthropic_client, openai_client

CHAT = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}]}


def assert_envelope(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == code
    return err


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b"[1,2]", b"", b"[" * 5000 + b"]" * 5000])
async def test_malformed_json_is_400(client: httpx.AsyncClient, body: bytes) -> None:
    r = await client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert_envelope(r, 400, "invalid_json")


@pytest.mark.parametrize(("patch", "param"), [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"temperature": 9}, "temperature"),
    ({"model": None}, "model"),
])
async def test_schema_violations_name_the_field(client: httpx.AsyncClient, patch: dict, param: str) -> None:
    err = assert_envelope(await client.post("/v1/chat/completions", json={**CHAT, **patch}), 400, "invalid_request")
    assert err["param"] == param


async def test_absurd_max_tokens(client: httpx.AsyncClient) -> None:
    err = assert_envelope(await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 10**9}),
                          400, "invalid_request")
    assert err["param"] == "max_tokens"


async def test_unknown_model_is_404(client: httpx.AsyncClient) -> None:
    err = assert_envelope(await client.post("/v1/chat/completions", json={**CHAT, "model": "gpt-9"}),
                          404, "model_not_found")
    assert "smollm2-135m" in err["message"]


async def test_unknown_city_is_400(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", json=CHAT, headers={"x-aigrid-client-location": "Atlantis"})
    assert "Tokyo" in assert_envelope(r, 400, "invalid_request")["message"]


async def test_body_too_large(client: httpx.AsyncClient) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * (5 * 1024 * 1024)}]}
    err = assert_envelope(await client.post("/v1/chat/completions", json=big), 400, "request_too_large")
    # the setting and its figure (7 Dec 2026, thirty-second session: it said the figure only)
    assert err["message"] == ("request body is larger than 4,194,304 bytes, the most one request may hold "
                              "(gateway.max_body_bytes)"), err
    r = await client.post("/v1/messages", json={**big, "max_tokens": 4})  # Anthropic's door keeps its 413
    assert r.status_code == 413 and "gateway.max_body_bytes" in r.json()["error"]["message"], r.text


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    assert_envelope(await client.get("/v1/nothing"), 404, "not_found")
    err = assert_envelope(await client.get("/v1/chat/completions"), 404, "not_found")  # a method it does not take
    assert err["message"] == "GET /v1/chat/completions is not served by this gateway (this path takes POST)"
    r = await client.get("/v1/messages")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"  # Anthropic's envelope


async def test_sdk_methods_not_served_are_the_sdks_not_found(gateway: Gateway) -> None:
    """SDK methods whose path the gateway serves with other methods: a 405 was the SDKs' bare APIStatusError."""
    app = build_app(gateway)
    oai, claude = openai_client(app), anthropic_client(app)
    try:
        calls = [lambda: oai.models.delete("smollm2-135m"), lambda: oai.chat.completions.list(),
                 lambda: oai.chat.completions.delete("chatcmpl-1"), lambda: oai.images.generate(prompt="a cat")]
        for call in calls:
            with pytest.raises(openai.NotFoundError) as not_found:
                await call()
            assert not_found.value.body["code"] == "not_found", not_found.value.body  # type: ignore[index]
        with pytest.raises(anthropic.NotFoundError):
            await claude.get("/v1/messages", cast_to=object)
    finally:
        await oai.close()
        await claude.close()


async def test_the_anthropic_sdk_gets_anthropics_envelope_on_every_route(gateway: Gateway) -> None:
    """Its `client.models` and a path not served answered in OpenAI's envelope (error.type
    `invalid_request_error` on a 404, no top-level `type`); the OpenAI SDK on the same paths keeps OpenAI's."""
    app = build_app(gateway)
    oai, claude = openai_client(app), anthropic_client(app)
    try:
        with pytest.raises(anthropic.NotFoundError) as model:
            await claude.models.retrieve("llama-9b")
        with pytest.raises(anthropic.NotFoundError) as skills:
            await claude.beta.skills.list()
        for err in (model.value, skills.value):
            assert err.body["type"] == "error" and err.body["error"]["type"] == "not_found_error", err.body  # type: ignore[index]
        assert "Available: smollm2-135m" in model.value.body["error"]["message"]  # type: ignore[index]
        with pytest.raises(openai.NotFoundError) as openai_model:
            await oai.models.retrieve("llama-9b")
        assert openai_model.value.body["code"] == "model_not_found"  # type: ignore[index]
    finally:
        await oai.close()
        await claude.close()


async def test_residency_header_cannot_widen_tenant(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", json=CHAT,
                          headers={"x-aigrid-tenant": "eu-bank", "x-aigrid-residency": "US"})
    err = assert_envelope(r, 403, "jurisdiction_not_allowed")
    # it named no field ("key anonymous may not send requests to jurisdictions ['US']", param null): now the
    # header, the tenant and what it may use
    assert err["param"] == "x-aigrid-residency", err
    assert "tenant 'eu-bank'" in err["message"] and "may use EU" in err["message"], err


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", CHAT),
    ("/v1/messages", {**CHAT, "max_tokens": 8}),
    ("/v1/responses", {"model": "smollm2-135m", "input": "hi"}),
    ("/v1/responses", {"model": "smollm2-135m", "input": "hi", "background": True}),
    ("/v1/conversations", {}),
], ids=["chat", "messages", "responses", "background response", "conversation"])
async def test_a_residency_no_site_is_in_is_a_400_naming_the_header(client: httpx.AsyncClient, path: str,
                                                                   body: dict) -> None:
    """x-aigrid-residency: XX (a typo, another grid's name) was routed and refused as a 503 no_eligible_endpoint,
    which the OpenAI SDK raises as InternalServerError; the conversations route already answered 400."""
    r = await client.post(path, json=body, headers={"x-aigrid-residency": "XX, YY"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    message = err["message"]
    assert "no site of this grid is in XX, YY; its jurisdictions: BR, EU, JP, US" in message, err
    if path != "/v1/messages":
        assert err["param"] == "x-aigrid-residency", err
    r = await client.post("/v1/chat/completions", json=CHAT, headers={"x-aigrid-residency": "eu, XX"})
    assert r.status_code == 200 and r.headers["x-aigrid-jurisdiction"] == "EU", r.text  # one it has: served there


async def test_a_residency_name_with_control_characters_comes_back_escaped(client: httpx.AsyncClient) -> None:
    """A jurisdiction named with a terminal's escape (CSI, 0x9b) came back raw in the 400's message (ATK7,
    thirty-seventh session); it is shown as repr, as the other headers' errors show theirs."""
    r = await client.post("/v1/chat/completions", json=CHAT, headers={"x-aigrid-residency": b"\x9b2J"})
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert "\x9b" not in message and "no site of this grid is in '\\x9b2J'" in message, message


def test_a_conversations_residency_400_shows_a_name_not_printable_escaped() -> None:
    """A write to a conversation stored in the EU asking `x-aigrid-residency: <CSI>2J` said the name raw in its 400
    (review RV5 of e87d0273, which escaped it in the guard's 400 only): as repr now, as the other residency errors."""
    from aigrid.gateway.conversations_api import check_stored_in
    from aigrid.security.principal import Principal, Scopes

    with pytest.raises(InvalidRequest) as e:
        check_stored_in(Principal("default", "k", Scopes()), "EU", "conversation", "conversation conv_1",
                        "\x9b2J", writes=True)
    assert e.value.code == "conversation_residency"
    assert "\x9b" not in e.value.message and e.value.message.endswith("asks for '\\x9b2J'"), e.value.message


async def test_unknown_decision_is_404(client: httpx.AsyncClient) -> None:
    assert_envelope(await client.get("/v1/decisions/dec-nope"), 404, "not_found")


@pytest.mark.parametrize("value", ["91,10", "10,181", "abc,def", "Atlantis"])
async def test_bad_locations_are_400(client: httpx.AsyncClient, value: str) -> None:
    r = await client.post("/v1/chat/completions", json=CHAT, headers={"x-aigrid-client-location": value})
    assert assert_envelope(r, 400, "invalid_request")["param"] == "x-aigrid-client-location"


@pytest.mark.parametrize("value", ["²", "١٠", "-1", "0"])
async def test_a_number_that_is_not_plain_digits_is_a_400_naming_the_parameter(client: httpx.AsyncClient,
                                                                               value: str) -> None:
    """'²'.isdigit() is True but int('²') raises: every numeric query, header and form field reads plain
    ASCII digits only, so such input is the client's 400, never a 500 (found by the fuzz test)."""
    r = await client.get("/v1/decisions", params={"limit": value})
    assert r.status_code == 400 and r.json()["error"]["param"] == "limit", r.text
    r = await client.get("/v1/decisions", params={"limit": "2"})
    assert r.status_code == 200
    r = await client.post("/v1/chat/completions", headers={"x-aigrid-priority": "²".encode("latin-1")},
                          json={"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400, r.text


@pytest.mark.parametrize("path", ["/v1/decisions", "/v1/files", "/v1/batches", "/v1/messages/batches",
                                  "/v1/conversations/conv_none/items", "/v1/responses/resp_none/input_items"])
async def test_a_number_of_thousands_of_digits_is_a_400_naming_the_parameter(client: httpx.AsyncClient,
                                                                             path: str) -> None:
    """int() refuses more than 4,300 digits (ValueError): a `limit` of 5,000 digits on every list route was
    a 500; it is the client's 400 naming limit, and 0...01 is still 1."""
    r = await client.get(path, params={"limit": "9" * 5000})
    err = r.json()["error"]  # the OpenAI envelope names the parameter; Anthropic's (message batches) has no param
    assert r.status_code == 400 and err.get("param", "limit") == "limit" and "limit" in err["message"], r.text
    r = await client.get(path, params={"limit": "0" * 5000 + "1"})
    assert r.status_code in (200, 404), r.text


async def test_a_content_length_of_thousands_of_digits_is_refused_as_too_large(client: httpx.AsyncClient) -> None:
    """A declared Content-Length beyond int()'s 4,300 digits (a server that passes it on) was a 500."""
    for path in ("/v1/chat/completions", "/v1/files"):
        r = await client.post(path, content=b"{}", headers={"content-length": "9" * 5000,
                                                            "content-type": "multipart/form-data; boundary=x"})
        assert r.status_code in (400, 413) and r.json()["error"]["code"] in ("request_too_large", "file_too_large"), r.text


def test_a_bad_content_block_is_named_by_its_field_not_its_tag() -> None:
    """pydantic puts the branch's tag after a list item of tagged unions (`...content.0.text.text`); the error
    names the client's field (`messages.0.content.0.text`), as Anthropic's own errors do."""
    from aigrid.errors import ApiError
    from aigrid.gateway.front_door import validate
    from aigrid.gateway.messages_schema import MessagesRequest

    cases = [([{"type": "text", "text": 5}], "messages.0.content.0.text"),
             ([{"type": "tool_use", "name": "x", "input": {}}], "messages.0.content.0.id"),
             ([{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": 7}]}],
              "messages.0.content.0.content.0.text"),
             ([{"type": "bogus"}], "messages.0.content.0")]
    for content, param in cases:
        with pytest.raises(ApiError) as info:
            validate(MessagesRequest, {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": content}]},
                     dotted=True)
        assert info.value.param == param and f"'{param}'" in info.value.message, info.value.message


@pytest.mark.parametrize("extra,param,says", [
    ({"top_logprobs": 3}, "top_logprobs", "needs logprobs: true"),
    ({"logprobs": True, "top_logprobs": 30}, "top_logprobs", "less than or equal to 20"),
    ({"response_format": {"type": "json_schema"}}, "response_format", "needs a `json_schema` object"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}, "response_format.json_schema.name",
     "Missing required parameter"),
    ({"modalities": ["text", "audio"]}, "modalities", "answer in text only"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio", "audio output is not served"),
], ids=["top_logprobs without logprobs", "top_logprobs over 20", "json_schema without it",
        "json_schema without a name", "audio among the modalities", "audio settings"])
def test_openais_own_checks_of_logprobs_and_response_format(extra: dict, param: str, says: str) -> None:
    """OpenAI refuses these with a 400 naming the field; an engine answered them in its own shape (llama.cpp:
    `{"code": 400, "message": ...}`, no param) or took them (top_logprobs 30, a json_schema without a name). Engines' extensions still pass (llama.cpp's
    `schema` beside json_object). Audio output (`modalities` with "audio", or `audio` settings) was served as text
    alone, silently: refused, as OpenAI refuses it for a model that does not speak."""
    from aigrid.errors import ApiError
    from aigrid.gateway.front_door import validate
    from aigrid.gateway.schemas import ChatRequest

    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(ApiError) as info:
        validate(ChatRequest, {**body, **extra})
    assert info.value.param == param and says in info.value.message, info.value.message
    for fine in ({"logprobs": True, "top_logprobs": 20}, {"response_format": {"type": "json_object", "schema": {}}},
                 {"modalities": ["text"]},
                 {"response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": {}}}}):
        validate(ChatRequest, {**body, **fine})


def test_a_response_format_type_of_an_engines_own_passes() -> None:
    """vLLM's and SGLang's `structural_tag` (and any type an engine adds) goes to the engine, which answers."""
    from aigrid.gateway.front_door import validate
    from aigrid.gateway.schemas import ChatRequest

    body = validate(ChatRequest, {"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                  "response_format": {"type": "structural_tag", "structures": [], "triggers": []}})
    assert body.model_dump(exclude_none=True)["response_format"] == {
        "type": "structural_tag", "structures": [], "triggers": []}  # passed on whole, for the engine to read


@pytest.mark.parametrize("route,body,param,code", [
    # texts read apart (documents, template variables, tool definitions) count a fifth of one read together:
    # screen.MAX_OTHERS (20,000) of them (10,000 until the thirtieth session's review RV1 had them count as much);
    # since the thirty-sixth session's RV1 these fields hold body_values.MAX_OPTION_VALUES (20,000) values together,
    # refused first (invalid_request), before any text is read
    ("/v1/chat/completions", {**CHAT, "documents": ["n"] * 20_001}, "documents", "invalid_request"),
    # 4,001 one-character parts read together: under schemas.MAX_PARTS (10,000), over screen.MAX_TOGETHER (4,000)
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": "1"}] * 4_001}]},
     "messages[0]", "too_many_texts"),
    ("/v1/chat/completions", {**CHAT, "chat_template_kwargs": {"notes": ["n"] * 20_001}}, "chat_template_kwargs",
     "invalid_request"),
    # a list of prompts is one engine request per prompt, at most 32 (engines/fan_out.py): refused before that
    ("/v1/completions", {"model": "smollm2-135m", "prompt": [f"p{i}" for i in range(10_001)]}, "prompt",
     "invalid_request"),
    ("/v1/messages", {"model": "smollm2-135m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}],
                      "tools": [{"name": f"t{i}", "input_schema": {"type": "object"}} for i in range(10_001)]},
     "tools", "too_many_texts"),
])
async def test_more_texts_than_the_firewall_reads_in_one_request_are_refused_unread(
        client: httpx.AsyncClient, gateway: Gateway, route: str, body: dict, param: str, code: str) -> None:
    """The firewall's cost is per text as well as per character (about 0.15 ms to score a short text, up to 0.9 ms
    for one read together across its seams with others): 100,000 distinct one-word documents (0.9 MB) took 13 s of
    its one worker thread, which every tenant's long texts share, and a 4 MiB body of them about a minute, where the
    longest single text costs 3-4 s. The choke point reads at most screen.MAX_TOGETHER texts read together (4,000) or
    MAX_OTHERS others (20,000) of one request: more is the client's 400 naming the field, before any text is read or
    an engine reached."""
    firewall = gateway.guard.screen.firewall
    read: list[int] = []
    check = firewall.check_texts
    firewall.check_texts = lambda tenant, texts: read.append(len(texts)) or check(tenant, texts)  # type: ignore[method-assign]
    r = await client.post(route, json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    if route == "/v1/messages":  # Anthropic's envelope: the message names the field
        assert err["type"] == "invalid_request_error" and err["message"].startswith(f"{param}: "), r.text
    else:
        assert (err["code"], err["param"]) == (code, param), r.text
    assert read == []


@pytest.mark.parametrize("route,body,field", [
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": "1"}] * 4_001}, "messages[4000]"),
    ("/v1/responses", {"model": "smollm2-135m", "input": [{"role": "user", "content": "1"}] * 4_001},
     "input[4000].content"),
    # a user turn and the model's: 2,000 + 400 (screen.PART_CHARS, TEXT_CHARS), past the bound at the 3,334th pair
    ("/v1/messages", {"model": "smollm2-135m", "max_tokens": 8, "messages": [
        {"role": "user", "content": "1"}, {"role": "assistant", "content": "ok"}] * 4_000 + [
        {"role": "user", "content": "1"}]}, "messages.6666.content"),
], ids=["chat messages", "responses input", "messages messages"])  # documents: body_values refuses them first
async def test_too_many_texts_names_the_doors_own_field(client: httpx.AsyncClient, route: str, body: dict,
                                                        field: str) -> None:
    """The refusal of more texts than the firewall reads in one request names the field the bound is passed at, in
    its message and (OpenAI's envelope) its param, as each front door calls it: a chat message is named by its index,
    which the Responses and Messages doors name by their own field. Until the thirtieth session's review RV1 the
    message said '(up to messages)' on the Responses door, whose param said `input`."""
    r = await client.post(route, json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["message"].startswith(f"{field}: this request holds "), r.text
    if route == "/v1/responses":
        assert "messages" not in err["message"], r.text
    if route != "/v1/messages":  # Anthropic's envelope has no param
        assert (err["code"], err["param"]) == ("too_many_texts", field), r.text


@pytest.mark.parametrize("extra", [
    {"documents": ["word " * 200_000]},
    {"chat_template_kwargs": {"custom_instructions": "word " * 200_000}},
    {"tools": [{"type": "function", "function": {"name": "lookup", "description": "word " * 200_000}}]},
    {"messages": [*CHAT["messages"], {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "word " * 200_000}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"}]},
    {"messages": [*CHAT["messages"], {"role": "assistant", "content": "ok", "reasoning_content": "word " * 200_000},
                  {"role": "user", "content": "and?"}]},
], ids=["documents", "template variables", "tool description", "tool call arguments", "reasoning"])
async def test_texts_beside_the_messages_count_against_the_context_before_the_firewall_reads_them(
        client: httpx.AsyncClient, gateway: Gateway, extra: dict) -> None:
    """The template puts documents, template variables and tool definitions into the prompt, but the context
    check counted the messages alone: a 1 MB document beside a short question passed it and took the firewall's
    worker thread seconds to read (4 MiB: about 7 s), for a prompt no engine of the model could hold. They count
    now: the client's 400 context_length_exceeded, before any text is read."""
    firewall = gateway.guard.screen.firewall
    read: list[int] = []
    check = firewall.check_texts
    firewall.check_texts = lambda tenant, texts: read.append(len(texts)) or check(tenant, texts)  # type: ignore[method-assign]
    r = await client.post("/v1/chat/completions", json={**CHAT, **extra})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded", r.text
    assert read == []


@pytest.mark.parametrize("route,body,param", [
    ("/v1/chat/completions", {**CHAT, "n_probs": 49_152}, "n_probs"),
    ("/v1/completions", {"model": "smollm2-135m", "prompt": "hi", "n_probs": 5}, "n_probs"),
    ("/v1/completions", {"model": "smollm2-135m", "prompt": "hi", "logprobs": 1000}, "logprobs"),
])
async def test_a_probability_distribution_wider_than_20_tokens_is_refused(client: httpx.AsyncClient, route: str,
                                                                          body: dict, param: str) -> None:
    """Chat's top_logprobs is at most 20, as OpenAI's; but llama-server's own `n_probs` (chat and completions) and
    a completion's legacy `logprobs: N`, which llama-server reads as n_probs, had no bound: n_probs 100000
    answered each token with the model's whole distribution (49,152 log-probabilities, as much of the model as a
    distiller can ask for) and the abuse signals never saw it. Now n_probs is the client's 400 naming it (use
    logprobs and top_logprobs), a completion's logprobs at most 20."""
    r = await client.post(route, json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_a_legacy_completions_logprobs_count_reads_as_top_logprobs_to_the_abuse_signals() -> None:
    """A completion's `logprobs: 5` asks for the 5 most likely tokens per position, as chat's top_logprobs 5 does:
    the extraction signal counted only chat's field, so a sweep through /v1/completions was never seen."""
    from aigrid.gateway.guard import request_traits
    from aigrid.gateway.schemas import CompletionRequest

    legacy = request_traits({"prompt": "x", "logprobs": 5}, "x")
    assert legacy.logprobs and legacy.top_logprobs == 5
    assert request_traits({"logprobs": True, "top_logprobs": 7}, "x").top_logprobs == 7
    assert request_traits({"logprobs": True}, "x").top_logprobs == 0
    # 5.0: CompletionRequest serves it as 5 (a whole float, as the engines read it); it counted 0, and the
    # extraction signal (logprobs with top_logprobs >= 5) never saw a sweep sent so
    assert CompletionRequest.model_validate({"model": "m", "prompt": "x", "logprobs": 5.0}).logprobs == 5
    assert request_traits({"prompt": "x", "logprobs": 5.0}, "x").top_logprobs == 5
    assert request_traits({"prompt": "x", "logprobs": 2.5}, "x").top_logprobs == 0  # not a count (a 400 there)
    # vLLM's prompt_logprobs: the same distribution over the prompt's positions (until 2026-12-04 not counted;
    # at most 20 and never -1, the whole vocabulary: test_prompt_logprobs_are_bounded_as_top_logprobs)
    prompt = request_traits({"prompt": "x", "prompt_logprobs": 20}, "x")
    assert prompt.logprobs and prompt.top_logprobs == 20
    assert request_traits({"logprobs": True, "top_logprobs": 3, "prompt_logprobs": 9}, "x").top_logprobs == 9
    with pytest.raises(InvalidRequest):  # a wrong type is the client's 400 naming it, as for top_logprobs
        request_traits({"prompt_logprobs": "all"}, "x")


@pytest.mark.parametrize("route,body", [
    ("/v1/chat/completions", {**CHAT, "max_tokens": 1, "n_predict": -1}),
    ("/v1/completions", {"model": "smollm2-135m", "prompt": "hi", "max_tokens": 1, "n_predict": 100_000}),
])
async def test_an_output_limit_of_the_engines_own_is_refused(client: httpx.AsyncClient, route: str, body: dict) -> None:
    """llama-server's `n_predict` overrides `max_tokens`: `max_tokens: 1, n_predict: -1` was reserved against the
    quota, checked against the grid's max_output_tokens and given a whole-answer deadline as one token, while the
    engine wrote to the end of its context (986 tokens in 21 s on a 1,024-token llama-server): the attempt ran
    past its deadline on every candidate (502, nothing charged, a failure counted against each circuit) and
    every engine kept writing. Now the client's 400 naming n_predict: max_tokens says it to every engine."""
    r = await client.post(route, json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "n_predict", r.text


@pytest.mark.parametrize("route,body", [
    ("/v1/chat/completions", {**CHAT, "n_cmpl": 4}),
    ("/v1/completions", {"model": "smollm2-135m", "prompt": "hi", "n_cmpl": 2}),
])
async def test_choices_of_the_engines_own_are_refused(client: httpx.AsyncClient, route: str, body: dict) -> None:
    """llama-server's `n_cmpl` answers that many choices with the usage of one: n_cmpl 4 through a grid of real
    llama-servers answered four choices of 20 tokens, charged and audited as 20. The grid's `n` serves choices
    and counts each (engines/fan_out.py); n_cmpl is the client's 400 naming it."""
    r = await client.post(route, json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "n_cmpl", r.text


async def test_best_of_more_than_one_is_refused(client: httpx.AsyncClient) -> None:
    """The legacy `best_of` has the engine sample that many completions for the n it returns: vLLM's V0 engine
    did, charged as n. Only 1 is served; more is the client's 400 naming it, before any engine."""
    body = {"model": "smollm2-135m", "prompt": "hi", "max_tokens": 4}
    for bad in (2, 100, True, "3"):
        r = await client.post("/v1/completions", json={**body, "best_of": bad})
        assert r.status_code == 400 and r.json()["error"]["param"] == "best_of", r.text
        # the grid's own sentence, without pydantic's "Value error, " in front of it
        assert r.json()["error"]["message"] == ("invalid value for 'best_of': best_of other than 1 is not served by "
                                                "this grid: ask for n choices"), r.text
    assert (await client.post("/v1/completions", json={**body, "best_of": 1})).status_code == 200


@pytest.mark.parametrize("route,body", [
    ("/v1/chat/completions", {**CHAT, "prompt_logprobs": -1}),
    ("/v1/chat/completions", {**CHAT, "prompt_logprobs": 21}),
    ("/v1/completions", {"model": "smollm2-135m", "prompt": "hi", "prompt_logprobs": -1}),
])
async def test_prompt_logprobs_are_bounded_as_top_logprobs(client: httpx.AsyncClient, route: str, body: dict) -> None:
    """vLLM's prompt_logprobs -1 is the whole vocabulary at every prompt position (a distiller's request), and
    the abuse signals counted only positive values (review finding): at most 20, as top_logprobs, else the
    client's 400 naming it."""
    r = await client.post(route, json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt_logprobs", r.text


@pytest.mark.parametrize("route,extra,param", [
    ("/v1/chat/completions", {"frequency_penalty": 5}, "frequency_penalty"),
    ("/v1/chat/completions", {"frequency_penalty": -2.5}, "frequency_penalty"),
    ("/v1/chat/completions", {"frequency_penalty": "0.5"}, "frequency_penalty"),
    ("/v1/chat/completions", {"presence_penalty": 100}, "presence_penalty"),
    ("/v1/completions", {"presence_penalty": -3}, "presence_penalty"),
    ("/v1/chat/completions", {"seed": "42"}, "seed"),
    ("/v1/chat/completions", {"seed": 1.5}, "seed"),
    ("/v1/completions", {"seed": 2**64}, "seed"),
    ("/v1/chat/completions", {"stop": 5}, "stop"),
    ("/v1/chat/completions", {"stop": [1]}, "stop[0]"),
    ("/v1/chat/completions", {"stop": ""}, "stop"),
    ("/v1/chat/completions", {"stop": ["END", ""]}, "stop"),
    ("/v1/completions", {"stop": [""]}, "stop"),
    ("/v1/chat/completions", {"tools": "get_weather"}, "tools"),
    ("/v1/chat/completions", {"parallel_tool_calls": "no"}, "parallel_tool_calls"),
], ids=lambda v: v if isinstance(v, str) and not v.startswith("/") else None)
async def test_openais_ranges_and_types_of_sampling_fields(client: httpx.AsyncClient, route: str, extra: dict,
                                                           param: str) -> None:
    """OpenAI's ranges and types (penalties -2.0 to 2.0, an integer seed, stop strings, a list of tools, a boolean
    parallel_tool_calls) are a 400 naming the field. They went to the engine: llama.cpp took frequency_penalty
    50 and wrote a garbled answer, ended every answer at once on an empty stop string, ignored `stop: 5` and a
    string parallel_tool_calls, and answered a string penalty or seed, or tools not a list, with its own 400
    without a `param`."""
    body = {**(CHAT if route.endswith("chat/completions") else {"model": "smollm2-135m", "prompt": "hi"}), **extra}
    err = assert_envelope(await client.post(route, json=body), 400, "invalid_request")
    assert err["param"] == param, err


@pytest.mark.parametrize("extra", [
    {"frequency_penalty": 2, "presence_penalty": -2}, {"frequency_penalty": 0.5, "presence_penalty": 1},
    {"seed": -1}, {"seed": 2**63 - 1}, {"stop": "END"}, {"stop": ["a", "b", "c", "d", "e", " "]}, {"stop": None},
    {"parallel_tool_calls": False}, {"top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1},
])
async def test_sampling_fields_within_openais_ranges_and_engines_own_still_pass(client: httpx.AsyncClient,
                                                                               extra: dict) -> None:
    """Within the ranges, and engines' own sampling fields (vLLM's and llama.cpp's top_k, min_p,
    repetition_penalty) and more than OpenAI's 4 stop strings (every engine serves them), still pass."""
    for route, base in (("/v1/chat/completions", CHAT), ("/v1/completions", {"model": "smollm2-135m", "prompt": "hi"})):
        r = await client.post(route, json={**base, **extra})
        assert r.status_code == 200, r.text


async def test_a_404_says_when_the_base_url_lacks_or_doubles_v1(client: httpx.AsyncClient) -> None:
    """A client whose base URL is the gateway's address without /v1 (most OpenAI-compatible tools add only the
    path) got "Not Found: POST /chat/completions"; one with /v1 that adds /v1 itself (the Anthropic SDKs, Claude
    Code) "Not Found: POST /v1/v1/messages". Each now says what the base URL should be."""
    r = await client.post("/chat/completions", json=CHAT)
    message = assert_envelope(r, 404, "not_found")["message"]
    assert "(the API is under /v1: an OpenAI client's base URL is http://gw/v1)" in message, message
    r = await client.post("/v1/v1/messages", json=CHAT, headers={"anthropic-version": "2023-06-01"})
    assert r.status_code == 404 and "their base URL is http://gw;" in r.json()["error"]["message"], r.text
    r = await client.get("/nothing-here")
    assert "base URL" not in assert_envelope(r, 404, "not_found")["message"]


def test_the_base_url_hint_echoes_the_clients_host_escaped_and_cut() -> None:
    """The hint's base URL comes from the client's Host header (Starlette drops one with characters a host cannot
    hold, not a long one), which was echoed whole, up to the head's 64 KiB; it is now shown as the path is
    (unknown_path.shown_path): at most 200 characters, escaped."""
    from starlette.requests import Request

    from aigrid.gateway.envelope import _base_url_hint
    scope = {"type": "http", "method": "POST", "path": "/chat/completions", "root_path": "", "scheme": "http",
             "query_string": b"", "server": ("127.0.0.1", 8080),
             "headers": [(b"host", b"a" * 5000 + b".example")]}
    message = _base_url_hint(Request(scope), 404)
    assert "(the API is under /v1: an OpenAI client's base URL is http://aaaa" in message, message
    assert "(5015 characters)" in message and len(message) < 400, message


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/chat/completions", {"model": "smollm2-135m"}, "messages"),
    ("/v1/completions", {"model": "smollm2-135m"}, "prompt"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, "model"),
])
async def test_a_missing_field_is_said_missing_in_openais_words(client: httpx.AsyncClient, path: str, body: dict,
                                                                param: str) -> None:
    """A required field left out read `invalid value for 'messages': Field required` (a value the client never
    sent); OpenAI's API says `Missing required parameter: 'messages'.`, code `missing_required_parameter` (until
    review RV4 the code was the grid's `invalid_request`)."""
    err = assert_envelope(await client.post(path, json=body), 400, "missing_required_parameter")
    assert (err["message"], err["param"]) == (f"Missing required parameter: '{param}'.", param), err


@pytest.mark.parametrize(("body", "said"), [
    ({"model": "smollm2-135m", "max_tokens": 8}, "messages: Field required"),
    ({"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens: Field required"),
])
async def test_a_missing_field_on_the_messages_door_is_said_in_anthropics_words(client: httpx.AsyncClient,
                                                                               body: dict, said: str) -> None:
    """Anthropic's API says `messages: Field required` (the door's own envelope, its own words)."""
    r = await client.post("/v1/messages", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == {"type": "invalid_request_error", "message": said}, r.text
