"""A chat or completions answer names the grid's model, never the engine's own name: an endpoint whose
`served_model` is a GGUF path (the name llama-server was started with, an internal path of the site) is sent that
name, and its engine writes it in every answer and chunk; the client reads the grid's model (`small-1b`), as the
`x-aigrid-model` header and the Messages and Responses doors say (front_door.served_model). Until the thirty-fifth
session chat and completions passed the engine's `model` through (issue 12, ATK3 item 3)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from aigrid.gateway.relay import EventPipe, model_named
from aigrid.spec.load import load_spec
from tests.gateway.conftest import serving
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.keyed_grid import SPEC

PATH = "/srv/models/smollm2-360m-instruct-q8_0.gguf"
FRANKFURT = {"x-aigrid-client-location": "Frankfurt"}
TURN = [{"role": "user", "content": "What is 2 + 2?"}]


@pytest.fixture
async def pathed() -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, FakeEngine]]]:
    """The right-size grid, every endpoint's engine serving a GGUF path (`served_model`), each echoing the name it is
    sent in its answers as llama-server and vLLM do."""
    spec = load_spec(SPEC)
    spec = spec.model_copy(update={"endpoints": [e.model_copy(update={"served_model": PATH}) for e in spec.endpoints]})
    fakes = {e.id: FakeEngine(e.id) for e in spec.endpoints}
    async with serving(spec, fakes) as (c, _gw):
        yield c, fakes


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_an_answer_names_the_grids_model_not_the_engines_path(pathed: Any, path: str, stream: bool) -> None:
    c, fakes = pathed
    asked = {"messages": TURN} if path == "/v1/chat/completions" else {"prompt": "What is 2 + 2?"}
    r = await c.post(path, json={"model": "small-1b", **asked, "max_tokens": 8, "stream": stream}, headers=FRANKFURT)
    assert r.status_code == 200 and r.headers["x-aigrid-model"] == "small-1b", r.text
    sent = [body["model"] for fake in fakes.values() for body in fake.received]
    assert sent == [PATH]  # the engine is still sent its own name
    assert PATH not in r.text, r.text
    if stream:
        chunks = [orjson.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
        assert chunks and all(ch["model"] == "small-1b" for ch in chunks if "model" in ch), chunks
        assert sum("model" in ch for ch in chunks) >= 2
    else:
        assert r.json()["model"] == "small-1b", r.text


def test_only_a_model_key_is_renamed() -> None:
    """A `"model": "..."` inside a string (the answer's text, a tool call's arguments) is escaped: left as written."""
    text = orjson.dumps({"content": 'say "model": "x"', "arguments": '{"model": "/p"}'})
    answer = b'{"model": "/p.gguf", "choices": [{"message": ' + text + b'}], "nested": {"model":"/p.gguf"}}'
    for served in (b"", orjson.dumps("/p.gguf"), orjson.dumps("/other")):  # the name sent, or another one
        named = orjson.loads(model_named(answer, orjson.dumps('gr"id'), served))
        assert named["model"] == 'gr"id' and named["nested"]["model"] == 'gr"id'
        assert named["choices"][0]["message"] == orjson.loads(text)


def _chunk(model: str, text: str) -> bytes:
    return b"data: " + orjson.dumps({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                                     "model": model, "choices": [{"index": 0, "delta": {"content": text}}]}) + b"\n\n"


def _models(out: bytes) -> list[str]:
    return [orjson.loads(line[6:])["model"] for line in out.splitlines() if line.startswith(b"data: {")]


def test_a_stream_is_renamed_until_its_engine_writes_the_grids_name_and_again_after_a_continuation() -> None:
    """EventPipe stops reading an engine's events for `model` once that engine wrote the grid's own name (sent it, it
    echoes it: model_named's work on every later chunk skipped); an engine that writes another name is renamed in
    every read; a continuation's engine is read afresh, so a spare writing its GGUF path is renamed too."""
    pathed = EventPipe(None, sse=True, track=False, model="small-1b", served=PATH)
    assert [_models(pathed.feed(_chunk(PATH, t))) for t in ("a", "b")] == [["small-1b"], ["small-1b"]]
    echoing = EventPipe(None, sse=True, track=False, model="small-1b", served="small-1b")
    assert _models(echoing.feed(_chunk("small-1b", "a"))) == ["small-1b"]
    echoing.continuation(sse=True)
    assert _models(echoing.feed(_chunk(PATH, "b"))) == ["small-1b"]
