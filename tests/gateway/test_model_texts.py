"""gateway/model_texts.chat_texts walks only what a body has: a plain turn's message is not walked for the texts a
template puts beside its content, nor a body of messages only for documents, tools, a response format and template
variables (thirty-second session; the firewall reads the same texts: the other tests of chat_texts, in
tests/security/test_firewall_pipeline.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import orjson
import pytest

from aigrid.gateway import model_texts, parse_pool, routes
from aigrid.gateway.model_texts import TEXT_BESIDE_CONTENT_KEYS, TEXT_BESIDE_MESSAGES_KEYS, chat_texts


class _Always:
    """Every message and the body walked, as chat_texts did before it looked at their keys."""

    def isdisjoint(self, other: object) -> bool:
        return False


def _walked_whole(body: Mapping[str, Any], monkeypatch: pytest.MonkeyPatch) -> list[model_texts.ModelText]:
    with monkeypatch.context() as m:
        m.setattr(model_texts, "TEXT_BESIDE_CONTENT_KEYS", _Always())
        m.setattr(model_texts, "TEXT_BESIDE_MESSAGES_KEYS", _Always())
        return chat_texts(body)


CALL = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"city": "Paris"}'}}
BODIES: list[dict[str, Any]] = [
    {"messages": [{"role": "user", "content": "hi"}]},
    {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "data:,"}}]}]},
    {"messages": [{"role": "assistant", "content": None, "tool_calls": [CALL]},
                  {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]},
    {"messages": [{"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}]},
    {"messages": [{"role": "assistant", "content": "x", "reasoning_content": "think"},
                  {"role": "assistant", "content": "y", "reasoning": ["a", {"b": "c"}]}]},
    {"messages": [{"role": "assistant", "refusal": "no"}, {"role": "user", "content": "why", "tool_calls": None}]},
    {"messages": [{"role": "user", "content": "q"}], "documents": [{"title": "t", "text": "d"}]},
    {"messages": [{"role": "user", "content": "q"}], "tools": [{"type": "function", "function": {
        "name": "lookup", "description": "find a city", "parameters": {"type": "object"}}}]},
    {"messages": [{"role": "user", "content": "q"}], "functions": [{"name": "f", "description": "legacy"}]},
    {"messages": [{"role": "user", "content": "q"}], "response_format": {"type": "json_schema", "json_schema": {
        "name": "answer", "schema": {"type": "object", "description": "the answer"}}}},
    {"messages": [{"role": "user", "content": "q"}], "chat_template_kwargs": {"custom_instructions": "be nice"}},
    {"messages": [{"role": "user", "content": "q"}], "tools": None, "documents": None},
    {"messages": ["not a message", {"role": "user", "content": "q"}], "stream": True, "max_tokens": 5},
]


@pytest.mark.parametrize("body", BODIES)
def test_the_texts_are_those_of_the_whole_walk(body: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    assert chat_texts(body) == _walked_whole(body, monkeypatch)


class _Reads(Mapping[str, Any]):
    """A message or body that records each key read from it (by [], get or in); a walk that goes through all of
    its keys (iteration) is recorded as reading "*", which no skip set can stand for."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data, self.read = data, set[str]()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return self.data[key]

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return key in self.data

    def __iter__(self) -> Iterator[str]:
        self.read.add("*")
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


class _Known:
    """A message's keys all known: its other keys' walk (model_texts._other_keys, tested below) not run."""

    def issuperset(self, other: object) -> bool:
        return True


def _everything(bodies: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """One message and one body carrying every key that any message and body of `bodies` (but messages) carry,
    with a value a walk reads on (a message's last non-None value of each key)."""
    message: dict[str, Any] = {}
    body: dict[str, Any] = {}
    for b in bodies:
        body.update({k: v for k, v in b.items() if k != "messages" and v is not None})
        for m in b["messages"]:
            if isinstance(m, dict):
                message.update({k: v for k, v in m.items() if v is not None})
    return message, body


def test_the_skip_sets_are_the_keys_the_walks_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """TEXT_BESIDE_CONTENT_KEYS and TEXT_BESIDE_MESSAGES_KEYS are exactly the keys chat_texts's walks read, besides
    a message's role and content and the body's messages: read off the walks themselves (every walk run, as
    before the sets, on a message and a body carrying every key BODIES holds), so a walk that comes to read a key
    neither set has fails here, even if no body above carries it (FX, thirty-second session)."""
    message, body = _everything(BODIES)
    assert {"tool_calls", "function_call", "refusal", "reasoning"} <= message.keys()  # the walks have values
    assert {"documents", "tools", "functions", "response_format", "chat_template_kwargs"} <= body.keys()
    spy_message = _Reads(message)
    spy_body = _Reads({**body, "messages": [spy_message]})
    monkeypatch.setattr(model_texts, "MESSAGE_KEYS", _Known())  # the walk of a message's other keys reads them all
    _walked_whole(spy_body, monkeypatch)
    assert spy_message.read - {"role", "content"} == TEXT_BESIDE_CONTENT_KEYS
    assert spy_body.read - {"messages"} == TEXT_BESIDE_MESSAGES_KEYS


def test_a_plain_request_walks_nothing_beside_its_messages_content(monkeypatch: pytest.MonkeyPatch) -> None:
    walked: list[str] = []
    def spy(name: str) -> Any:
        real = getattr(model_texts, name)

        def walk(*args: Any) -> Any:
            walked.append(name)
            return real(*args)
        return walk

    for name in ("_beside_content", "_documents", "_tool_descriptions", "_response_format", "_template_variables"):
        monkeypatch.setattr(model_texts, name, spy(name))
    body = {"model": "m", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}
    assert [(t.text, t.path) for t in chat_texts(body)] == [("be brief", ("messages", 0, "content")),
                                                            ("hi", ("messages", 1, "content"))]
    assert walked == []
    chat_texts({**body, "tools": []})  # a key of the body's: its walks run (they find nothing here)
    assert walked == ["_documents", "_tool_descriptions", "_response_format", "_template_variables"]


def test_a_key_of_the_clients_own_is_read_as_its_messages_text() -> None:
    """A message's or a text part's key beyond those read or held to an id (MESSAGE_KEYS, PLAIN_PART_KEYS) is the
    client's own, and a template may print it: its strings, at any depth, and its name are read as the message's
    text (a tool's result: the tool result's), an image part's beside those of its image (its URL, `detail`); a
    message carrying every key that BODIES' messages carry has no key of its own (until the thirty-sixth session
    none was read)."""
    message, _ = _everything(BODIES)
    assert set(message) <= model_texts.MESSAGE_KEYS
    body = {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi", "note": "a note"},
                                     {"type": "image_url", "image_url": {"url": "data:,"}, "detail": "low",
                                      "alt": "a chart"}],
         "metadata": {"origin": "mail"}},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny", "tool_name": "weather"},
        {"role": "assistant", "content": "ok", "prefix": True}]}
    got = [(t.text, t.source.value, t.path) for t in chat_texts(body) if t.path[-1] != "content"]
    assert got == [("hi", "user", ("messages", 0, "content", 0, "text")),
                   ("note", "user", ("messages", 0, "content", 0, model_texts.KEYS)),
                   ("a note", "user", ("messages", 0, "content", 0, "note")),
                   ("alt", "user", ("messages", 0, "content", 1, model_texts.KEYS)),
                   ("a chart", "user", ("messages", 0, "content", 1, "alt")),
                   ("metadata", "user", ("messages", 0, model_texts.KEYS)),
                   ("origin", "user", ("messages", 0, "metadata", model_texts.KEYS)),
                   ("mail", "user", ("messages", 0, "metadata", "origin")),
                   ("tool_name", "tool_result", ("messages", 1, model_texts.KEYS)),
                   ("weather", "tool_result", ("messages", 1, "tool_name")),
                   ("prefix", "assistant", ("messages", 2, model_texts.KEYS))]


def test_a_redaction_in_a_key_of_the_clients_own_is_written_back_there() -> None:
    """The personal-data policy's redaction of such a key's text (and of its name) lands in the body where the text
    was, as a content's does (model_texts.apply)."""
    from dataclasses import replace

    from aigrid.security.firewall.pii import redact
    from aigrid.security.firewall.pipeline import Screened

    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi",
                                          "metadata": {"from": "jane.doe@example.com", "jane@example.com": "cc"}}]}
    texts = chat_texts(body)
    model_texts.apply(body, texts, Screened([replace(t, text=redact(t.text)) for t in texts]))
    assert body["messages"][0] == {"role": "user", "content": "hi",
                                   "metadata": {"from": "[REDACTED:EMAIL]", "[REDACTED:EMAIL]": "cc"}}


async def test_a_long_bodys_texts_are_collected_off_the_event_loop(client: httpx.AsyncClient,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Structural, not timed: a body past OFF_LOOP_BYTES (a message's own key of 20,000 empty arrays, 60 KB: read by
    the firewall, walked value by value) has its texts collected on a thread other than the event loop's, and is
    served; an ordinary body's are collected in place. Until the thirty-sixth session every body's were collected on
    the loop: at body_values' bounds (a message's own key of 199,800 values, a tool call's arguments of 60,000) the
    walk held it 0.4-1.2 s (scripts/loop_hold_values.py). The thread is one of the gateway's parse threads
    (Gateway.parses), not asyncio's default pool's (until the thirty-seventh session, brief FIX9)."""
    threads: list[int] = []
    names: list[str] = []
    collect = routes.chat_texts

    def watched(body: Mapping[str, Any], documents: model_texts.DocumentsAt = ()) -> list[model_texts.ModelText]:
        threads.append(threading.get_ident())
        names.append(threading.current_thread().name)
        return collect(body, documents)

    monkeypatch.setattr(routes, "chat_texts", watched)
    loop_thread = threading.get_ident()  # ASGI in process: the app runs on this test's loop
    chat = {"model": "smollm2-135m", "max_tokens": 4}
    small = await client.post("/v1/chat/completions", json={**chat, "messages": [{"role": "user", "content": "hi"}]})
    note: list[list[object]] = [[] for _ in range(20_000)]
    long = {**chat, "messages": [{"role": "user", "content": "hi", "note": note}]}
    assert len(orjson.dumps(long)) > model_texts.OFF_LOOP_BYTES
    big = await client.post("/v1/chat/completions", json=long)
    assert (small.status_code, big.status_code) == (200, 200), (small.text[:300], big.text[:300])
    assert len(threads) == 2, threads
    assert threads[0] == loop_thread, "an ordinary body's texts were collected off the loop (a thread's hop each)"
    assert threads[1] != loop_thread, "the long body's texts were collected on the event loop's thread"
    assert names[1].startswith(parse_pool.THREAD_NAME), names
