"""What each engine kind is sent: the `developer` role as `system` except to a hosted engine (kind `openai`), and
the deprecated `functions` / `function_call` refused unless every engine that may serve the model is hosted
(gateway/engine_body.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aigrid.gateway.engine_body import for_engine, kinds_of_spec, serving_kinds
from aigrid.spec.models import GridSpec
from tests.gateway.conftest import serving, spec_in
from tests.gateway.fake_engine import FakeEngine

MODEL = "smollm2-135m"
DEV = [{"role": "developer", "content": "Answer in French."}, {"role": "user", "content": "hello"}]


def _grid(tmp: Path, kind: str) -> tuple[GridSpec, dict[str, FakeEngine]]:
    """The demo grid, every endpoint (spec and adapter alike) of engine `kind`."""
    spec = spec_in(tmp)
    spec = spec.model_copy(update={"endpoints": [e.model_copy(update={"engine": kind}) for e in spec.endpoints]})
    fakes = {e.id: FakeEngine(e.id) for e in spec.endpoints}
    for f in fakes.values():
        f.kind = kind
    return spec, fakes


def _sent(fakes: dict[str, FakeEngine]) -> list[dict[str, Any]]:
    return [r for f in fakes.values() for r in f.received]


@pytest.mark.parametrize("kind, role", [("vllm", "system"), ("llamacpp", "system"), ("sglang", "system"),
                                        ("openai", "developer")])
@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"model": MODEL, "max_tokens": 4, "messages": DEV}),
    ("/v1/chat/completions", {"model": MODEL, "max_tokens": 4, "messages": DEV, "stream": True}),
    ("/v1/responses", {"model": MODEL, "max_output_tokens": 16, "input": DEV}),
])
async def test_the_developer_role_reaches_an_engine_as_system_unless_hosted(
        tmp_path: Path, kind: str, role: str, path: str, body: dict[str, Any]) -> None:
    spec, fakes = _grid(tmp_path, kind)
    async with serving(spec, fakes) as (client, _):
        r = await client.post(path, json=body)
        assert r.status_code == 200, r.text
    [sent] = _sent(fakes)
    assert [m["role"] for m in sent["messages"]] == [role, "user"]
    assert sent["messages"][0]["content"] == "Answer in French."


def test_a_body_without_the_role_is_the_body_itself() -> None:
    plain = {"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}] * 50}
    assert for_engine(plain, "vllm") is plain
    dev = {"messages": DEV}
    renamed = for_engine(dev, "vllm")
    assert renamed is not dev and dev["messages"][0]["role"] == "developer"  # the client's body untouched
    assert for_engine(dev, "openai") is dev
    # a scan, no copy: each message read a few times whatever the history's length (counted, not timed: a timed
    # bound flakes on a loaded machine)
    reads = {n: _reads_of_a_scan(n) for n in (100, 1000)}
    assert 0 < reads[100] <= 6 * 100 and reads[1000] == 10 * reads[100], reads


class _CountingMessage(dict[str, Any]):
    """A message that counts the reads of its keys (get, [], in) into `reads`."""

    def __init__(self, reads: list[int], **fields: Any) -> None:
        super().__init__(**fields)
        self._reads = reads

    def get(self, key: Any, default: Any = None) -> Any:
        self._reads[0] += 1
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        self._reads[0] += 1
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._reads[0] += 1
        return super().__contains__(key)


def _reads_of_a_scan(n: int) -> int:
    """Reads of the messages' keys by for_engine on a body of `n` messages it has nothing to change in, for vllm
    (every check applies); the body itself comes back."""
    reads = [0]
    body = {"messages": [_CountingMessage(reads, role=("system", "user")[i % 2], content="x") for i in range(n)]}
    assert for_engine(body, "vllm") is body
    return reads[0]


@pytest.mark.parametrize("field, value", [
    ("functions", [{"name": "get_weather", "parameters": {"type": "object", "properties": {}}}]),
    ("function_call", {"name": "get_weather"}),
    ("function_call", "auto"),
])
async def test_legacy_functions_are_a_400_where_an_engine_ignores_them(
        tmp_path: Path, field: str, value: Any) -> None:
    spec, fakes = _grid(tmp_path, "vllm")
    body = {"model": MODEL, "max_tokens": 4, "messages": DEV[1:], field: value}
    async with serving(spec, fakes) as (client, _):
        r = await client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == field and "tools" in r.json()["error"]["message"]
    assert _sent(fakes) == []


async def test_legacy_functions_pass_where_every_engine_is_hosted(tmp_path: Path) -> None:
    spec, fakes = _grid(tmp_path, "openai")
    functions = [{"name": "get_weather", "parameters": {"type": "object", "properties": {}}}]
    body = {"model": MODEL, "max_tokens": 4, "messages": DEV[1:], "functions": functions,
            "function_call": {"name": "get_weather"}}
    async with serving(spec, fakes) as (client, _):
        r = await client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    [sent] = _sent(fakes)
    assert sent["functions"] == functions and sent["function_call"] == {"name": "get_weather"}


def test_a_model_is_served_by_its_family(tmp_path: Path) -> None:
    spec, _ = _grid(tmp_path, "openai")
    one = spec.endpoints[0].model_copy(update={"engine": "vllm"})
    kinds = kinds_of_spec(spec.model_copy(update={"endpoints": [one, *spec.endpoints[1:]]}))
    assert serving_kinds(MODEL, kinds) == {"openai", "vllm"}
    assert serving_kinds("auto", kinds) == {"openai", "vllm"}
    assert serving_kinds(spec.models[MODEL].family, kinds) == {"openai", "vllm"}
    assert serving_kinds("no-such-model", kinds) == frozenset()


class _Walked(list[Any]):
    """A spec's endpoints that count how often they are gone over."""

    walks = 0

    def __iter__(self) -> Iterator[Any]:
        self.walks += 1
        return super().__iter__()


def _walked(tmp: Path, engine: Callable[[int], str]) -> tuple[GridSpec, _Walked, dict[str, FakeEngine]]:
    """The demo grid under `tmp`, endpoint i of engine `engine(i)`, its endpoints counting their walks."""
    tmp.mkdir()
    spec = spec_in(tmp)
    walked = _Walked(e.model_copy(update={"engine": engine(i)}) for i, e in enumerate(spec.endpoints))
    fakes = {e.id: FakeEngine(e.id) for e in walked}
    for e in walked:
        fakes[e.id].kind = e.engine
    return spec.model_copy(update={"endpoints": walked}), walked, fakes


async def test_each_gateway_serves_the_kinds_of_its_own_spec_with_no_walk_a_request(tmp_path: Path) -> None:
    """Two gateways of one process (tests, a worker's), their requests interleaved: each answers by its own spec's
    engines (legacy `function_call` a 400 where one of them is not hosted, served where all are), from the table
    built once with it (Gateway.serving_kinds), never going over the spec's endpoints again. Until the thirty-second
    session every request went over every endpoint (1.7 ms a request on a grid of 1,200 endpoints:
    scripts/bench_serving_kinds.py); then a table of the last spec asked about, kept in the module, was built again
    on each request that came with the other gateway's spec."""
    mixed, mixed_walks, mixed_fakes = _walked(tmp_path / "mixed", lambda i: "vllm" if i % 2 else "openai")
    hosted, hosted_walks, hosted_fakes = _walked(tmp_path / "hosted", lambda i: "openai")
    body = {"model": MODEL, "max_tokens": 4, "messages": DEV[1:], "function_call": "auto"}
    async with serving(mixed, mixed_fakes) as (a, gw_a), serving(hosted, hosted_fakes) as (b, gw_b):
        assert gw_a.serving_kinds[MODEL] == {"openai", "vllm"} and gw_b.serving_kinds[MODEL] == {"openai"}
        built = mixed_walks.walks, hosted_walks.walks
        for _ in range(10):
            r = await a.post("/v1/chat/completions", json=body)
            assert r.status_code == 400 and r.json()["error"]["param"] == "function_call", r.text
            r = await b.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
        assert (mixed_walks.walks, hosted_walks.walks) == built  # before: a build of the table on each request
    assert _sent(mixed_fakes) == [] and len(_sent(hosted_fakes)) == 10


def test_a_model_s_table_holds_its_family_s_kinds_and_no_other_s(tmp_path: Path) -> None:
    spec, _ = _grid(tmp_path, "openai")
    other = spec.models[MODEL].model_copy(update={"family": "other"})
    cousin = spec.models[MODEL].model_copy()  # same family, no endpoint of its own
    models = {**spec.models, "other-1b": other, "cousin-1b": cousin}
    endpoints = [spec.endpoints[0], spec.endpoints[1].model_copy(update={"model": "other-1b", "engine": "vllm"})]
    two = spec.model_copy(update={"models": models, "endpoints": endpoints})
    family = spec.models[MODEL].family
    assert kinds_of_spec(two) == {MODEL: {"openai"}, "cousin-1b": {"openai"}, family: {"openai"},
                                  "other-1b": {"vllm"}, "other": {"vllm"}, "auto": {"openai", "vllm"}}


LEGACY = [{"role": "user", "content": "Weather in Lisbon?"},
          {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": '{"city": "Lisbon"}'}},
          {"role": "function", "name": "get_weather", "content": "22 C, sunny"}]


@pytest.mark.parametrize("kind", ["vllm", "llamacpp", "openai"])
async def test_a_legacy_history_reaches_an_engine_as_tool_calls_unless_hosted(tmp_path: Path, kind: str) -> None:
    """An assistant's `function_call` and the `function` message with its result went to every engine as sent:
    vLLM and llama.cpp dropped the call (the model never saw it had called) and gave the `function` role to the chat
    template. Now they get a tool call (its id derived from its message's place) and the `tool` result answering it;
    a hosted engine gets the history as sent."""
    spec, fakes = _grid(tmp_path, kind)
    body = {"model": MODEL, "max_tokens": 4, "messages": LEGACY}
    async with serving(spec, fakes) as (client, _):
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
    [sent] = _sent(fakes)
    if kind == "openai":
        assert sent["messages"] == LEGACY
        return
    user, called, result = sent["messages"]
    assert user == LEGACY[0] and "function_call" not in called
    assert called["tool_calls"] == [{"id": "call_legacy_1", "type": "function",
                                     "function": {"name": "get_weather", "arguments": '{"city": "Lisbon"}'}}]
    assert result == {"role": "tool", "tool_call_id": "call_legacy_1", "name": "get_weather", "content": "22 C, sunny"}


def test_the_translation_is_the_same_every_time_and_leaves_the_client_s_body_alone() -> None:
    body = {"messages": [*LEGACY, {"role": "user", "content": "And Porto?"}, LEGACY[1], LEGACY[2]]}
    first, again = for_engine(body, "vllm"), for_engine(body, "vllm")
    assert first == again and body["messages"][1] == LEGACY[1] and body["messages"][2]["role"] == "function"
    assert [m.get("tool_call_id") for m in first["messages"]] == [None, None, "call_legacy_1", None, None,
                                                                  "call_legacy_4"]
    assert for_engine(body, "openai") is body


@pytest.mark.parametrize("messages, param", [
    ([LEGACY[0], LEGACY[2]], "messages[1]"),  # a result of no call
    ([*LEGACY, LEGACY[2]], "messages[3]"),  # a second result of one call
    ([LEGACY[0], {**LEGACY[1], "function_call": "get_weather"}, LEGACY[2]], "messages[1].function_call"),
    ([LEGACY[0], {**LEGACY[1], "function_call": {"name": "get_weather", "arguments": {"city": "Lisbon"}}}, LEGACY[2]],
     "messages[1].function_call"),
])
async def test_a_legacy_history_that_cannot_be_translated_is_a_400_naming_it(
        tmp_path: Path, messages: list[dict[str, Any]], param: str) -> None:
    spec, fakes = _grid(tmp_path, "vllm")
    async with serving(spec, fakes) as (client, _):
        r = await client.post("/v1/chat/completions", json={"model": MODEL, "max_tokens": 4, "messages": messages})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.text
    assert _sent(fakes) == []


@pytest.mark.parametrize("field, value", [
    ("functions", [{"name": "get_weather", "parameters": {"type": "object", "properties": {}}}]),
    ("function_call", {"name": "get_weather"}),
])
async def test_legacy_functions_beside_tools_are_a_400_even_where_every_engine_is_hosted(
        tmp_path: Path, field: str, value: Any) -> None:
    """With every endpoint hosted, `functions` beside `tools` (a server-side tool's) passed the check and the tool
    loop dropped them without a word: the model was offered the tools only."""
    spec, fakes = _grid(tmp_path, "openai")
    body = {"model": MODEL, "max_tokens": 4, "messages": DEV[1:], field: value,
            "tools": [{"type": "function", "function": {"name": "calculator"}}]}
    async with serving(spec, fakes) as (client, _):
        r = await client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == field and "beside `tools`" in r.json()["error"]["message"]
    assert _sent(fakes) == []


REFUSED = "I'm sorry, I can't help with that."


@pytest.mark.parametrize("kind", ["vllm", "llamacpp", "sglang", "openai"])
@pytest.mark.parametrize("content", ["left out", None])
async def test_a_refused_turn_sent_back_is_served_its_refusal_the_engines_content(
        tmp_path: Path, kind: str, content: object) -> None:
    """OpenAI's Agents SDK sends a refused answer back as history as `{"role": "assistant", "refusal": "..."}`, no
    content (the openai SDK's ChatCompletionAssistantMessageParam); a client appending the answer's message sends
    content null beside it. 74ce1adf made the first a 400 naming messages.1.content. An engine other than a hosted
    one gets the refusal as the message's content (vLLM gave the template an empty turn; llama.cpp refuses an
    assistant message with neither content nor tool_calls); a hosted one, the message as sent."""
    from openai.types.chat import ChatCompletionAssistantMessageParam

    from aigrid.gateway.app import build_app
    from tests.gateway.sdk_clients import openai_client

    turn = ChatCompletionAssistantMessageParam(role="assistant", refusal=REFUSED)
    if content is None:
        turn["content"] = None
    spec, fakes = _grid(tmp_path, kind)
    async with serving(spec, fakes) as (_, gw):
        oai = openai_client(build_app(gw))
        answer = await oai.chat.completions.create(model=MODEL, max_tokens=4, messages=[
            {"role": "user", "content": "How do I pick a lock?"}, turn, {"role": "user", "content": "Why not?"}])
    assert answer.choices[0].message.content
    (sent,) = _sent(fakes)
    expected = dict(turn) if kind == "openai" else {"role": "assistant", "content": REFUSED}
    assert sent["messages"][1] == expected, sent["messages"]


def test_the_firewall_reads_a_refused_turns_refusal() -> None:
    """The engine gets the refusal as the turn's text (above), so the firewall reads it as the assistant's."""
    from aigrid.gateway.model_texts import chat_texts

    texts = chat_texts({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "refusal": REFUSED}]})
    assert [(t.text, t.path) for t in texts if t.path[1] == 1] == [(REFUSED, ("messages", 1, "refusal"))]


@pytest.mark.parametrize("kind", ["vllm", "openai"])
async def test_personal_data_in_a_refused_turn_is_redacted_before_any_engine_reads_it(
        tmp_path: Path, kind: str) -> None:
    """A redacting tenant's refused turn sent back: the refusal reached a hosted engine (which reads it) unread."""
    spec, fakes = _grid(tmp_path, kind)
    async with serving(spec, fakes) as (client, _):
        r = await client.post("/v1/chat/completions", headers={"x-aigrid-tenant": "eu-bank"}, json={
            "model": MODEL, "max_tokens": 4, "messages": [
                {"role": "user", "content": "Write to my colleague."},
                {"role": "assistant", "refusal": "I won't email jane.doe@example.com for you."},
                {"role": "user", "content": "Why not?"}]})
    assert r.status_code == 200, r.text
    (sent,) = _sent(fakes)
    turn = sent["messages"][1]
    assert "jane.doe@example.com" not in str(sent) and "[REDACTED:EMAIL]" in str(turn.get("content", turn)), turn
