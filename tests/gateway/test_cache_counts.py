"""What an answer tells of the engine's prompt cache (issue 12, DOOR2, thirty-fourth session): llama-server's
`timings` (its `cache_n`) and every engine's `usage.prompt_tokens_details.cached_tokens` say how many of the prompt's
tokens came from a cache the engine keeps for every tenant, so a tenant probing guesses of another's recent prompt
read how far each guess matched. The gateway writes them out of every answer (usage.cache_counts_out), streamed or
whole, on every door; `return_progress` and `timings_per_token`, which put them on every chunk, are left out of the
engine's request (llama.cpp's web UI sends both by default), `verbose` is refused. Only an
endpoint whose cache the grid salts per tenant (a vLLM or SGLang one, security.isolate_prefix_cache) has its
`cached_tokens` passed on: the overlap of the tenant's own prompts, which clients read (FIX4)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from aigrid.gateway.relay import EventPipe
from aigrid.gateway.usage import cache_counts_out, whole_answer
from tests.gateway.conftest import salted, serving, spec_in
from tests.gateway.fake_engine import FakeEngine

CHAT = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 4}
COMPLETION = {"model": "smollm2-135m", "prompt": "hi", "max_tokens": 4}
CACHED = 3
TIMINGS = {"cache_n": CACHED, "prompt_n": 2, "prompt_ms": 1.5, "predicted_n": 4, "predicted_ms": 9.0}


class LlamaLike(FakeEngine):
    """A fake engine answering as llama-server does (b1-0c1e570, the embedded engine): a whole answer and a stream's
    usage chunk carry `timings` and `usage.prompt_tokens_details.cached_tokens`."""

    async def _sse(self, req: dict) -> AsyncIterator[bytes]:
        async for raw in super()._sse(req):
            if b'"usage"' in raw:
                chunk = orjson.loads(raw[len(b"data: "):])
                chunk["usage"]["prompt_tokens_details"] = {"cached_tokens": CACHED}
                chunk["timings"] = TIMINGS
                raw = b"data: " + orjson.dumps(chunk) + b"\n\n"
            yield raw

    async def _json(self, req: dict) -> AsyncIterator[bytes]:
        async for raw in super()._json(req):
            doc = orjson.loads(raw)
            doc["usage"]["prompt_tokens_details"] = {"cached_tokens": CACHED}
            doc["timings"] = TIMINGS
            doc["__verbose"] = {"id_slot": 1, "tokens_cached": CACHED, "timings": TIMINGS,
                                "prompt": "<|im_start|>user\nSay hello<|im_end|>"}
            yield orjson.dumps(doc)


@pytest.fixture
def llamas(fakes: dict[str, FakeEngine]) -> dict[str, FakeEngine]:
    return {name: LlamaLike(name) for name in fakes}


def test_a_whole_answers_cache_counts_are_written_out_and_its_usage_metered_as_sent() -> None:
    answer = orjson.dumps({"id": "c1", "object": "chat.completion", "timings": TIMINGS,
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                                        "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6,
                                     "prompt_tokens_details": {"cached_tokens": CACHED}}})
    sent, usage, why = whole_answer(answer, None)
    out = orjson.loads(sent)
    assert "timings" not in out and out["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}, out
    assert why is None and usage is not None and usage["prompt_tokens_details"]["cached_tokens"] == CACHED
    assert out["choices"] == orjson.loads(answer)["choices"]


def test_an_answer_that_tells_nothing_is_not_copied() -> None:
    chunk = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6,
                                      "prompt_tokens_details": {"cached_tokens": 0}}}
    assert cache_counts_out(chunk) is None
    assert cache_counts_out({"choices": [], "usage": {"prompt_tokens": 5}}) is None
    told = {"choices": [], "prompt_progress": {"total": 43, "cache": 42, "processed": 43}}
    assert cache_counts_out(told) == {"choices": []} and "prompt_progress" in told  # (the engine's read not changed)


@pytest.mark.parametrize("route,body", [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)])
@pytest.mark.parametrize("stream", [False, True])
async def test_no_answer_tells_how_much_of_its_prompt_the_engines_cache_held(
        tmp_path: Path, llamas: dict[str, FakeEngine], route: str, body: dict, stream: bool) -> None:
    """(7 Dec 2026, thirty-fourth session) Reproduced on the embedded llama-server: after one prompt carrying
    `The vault code of ACME Corp is 4471-9926-1183`, a probe ending `4471-9926-1183.` answered cached_tokens 48 and
    timings.cache_n 48, one ending `9999-0000-1111.` 33. Each answer, whole or streamed with its usage, now says 0 and
    carries no `timings`; the usage charged is still the engine's."""
    async with serving(spec_in(tmp_path), llamas) as (client, gw):
        ask = {**body, "stream": True, "stream_options": {"include_usage": True}} if stream else body
        r = await client.post(route, json=ask)
        assert r.status_code == 200, r.text[:300]
        assert b"cache_n" not in r.content and b"timings" not in r.content, r.text[:600]
        assert b"__verbose" not in r.content and b"tokens_cached" not in r.content, r.text[:600]
        if stream:
            usages = [orjson.loads(line[6:])["usage"] for line in r.content.split(b"\n")
                      if line.startswith(b"data: {") and b'"usage"' in line]
        else:
            usages = [r.json()["usage"]]
        assert [u["prompt_tokens_details"]["cached_tokens"] for u in usages] == [0], usages
        assert usages[0]["prompt_tokens"] == 5


@pytest.mark.parametrize("stream", [False, True])
async def test_messages_and_responses_read_no_cache_count(
        tmp_path: Path, llamas: dict[str, FakeEngine], stream: bool) -> None:
    """The Messages door's `cache_read_input_tokens` and the Responses door's `input_tokens_details.cached_tokens` are
    read from the engine's count: 0 now, the whole prompt counted as input."""
    async with serving(spec_in(tmp_path), llamas) as (client, _):
        r = await client.post("/v1/messages", json={"model": "smollm2-135m", "max_tokens": 4, "stream": stream,
                                                    "messages": [{"role": "user", "content": "Say hello"}]})
        assert r.status_code == 200, r.text[:300]
        assert b'"cache_read_input_tokens":' + str(CACHED).encode() not in r.content, r.text[-600:]
        assert b'"cache_read_input_tokens":0' in r.content and b"timings" not in r.content, r.text[-600:]
        r = await client.post("/v1/responses", json={"model": "smollm2-135m", "input": "Say hello", "stream": stream})
        assert r.status_code == 200, r.text[:300]
        assert b'"cached_tokens":0' in r.content and b'"cached_tokens":' + str(CACHED).encode() not in r.content
        assert b"timings" not in r.content, r.text[-600:]


@pytest.mark.parametrize("route,body", [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)])
async def test_verbose_is_refused(tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict) -> None:
    """llama-server's `verbose` (the embedded engine's `__verbose`: `tokens_cached`, `timings.cache_n`, `id_slot`, the
    rendered prompt, the operator's sampler settings) went to a tenant whose answers are not redacted. Now the
    client's 400 naming the field, before any engine."""
    async with serving(spec_in(tmp_path), fakes) as (client, _):
        r = await client.post(route, json={**body, "stream": True, "verbose": True})
        assert r.status_code == 400, r.text[:300]
        err = r.json()["error"]
        assert err["param"] == "verbose" and "cache held" in err["message"] and len(err["message"]) < 600, err
        assert all(not f.received for f in fakes.values())


@pytest.mark.parametrize("route,body", [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)])
@pytest.mark.parametrize("stream", [True, False])
async def test_fields_that_put_the_cache_count_on_every_chunk_reach_no_engine(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict, stream: bool,
        caplog: pytest.LogCaptureFixture) -> None:
    """llama-server's `return_progress` (a stream's `prompt_progress` events, each with `cache`: 42 of 43 prompt tokens
    on the embedded engine after the vault prompt) and `timings_per_token` (`timings.cache_n` on every chunk) rode on
    chunks the relay passes unread. They were the client's 400 (5cbacbc8), which broke llama.cpp's own web UI on every
    message (it sends `timings_per_token: true` always and `return_progress: true` on every stream: tools/server/webui
    chat.service.ts). Now taken out of the engine's request, a log line naming each: served, and the engine, asked
    without them, writes neither (review RV3, thirty-fourth session)."""
    webui = {**body, "stream": stream, "return_progress": True, "timings_per_token": True}
    async with serving(spec_in(tmp_path), fakes) as (client, _):
        with caplog.at_level("INFO", logger="aigrid.gateway"):
            r = await client.post(route, json=webui)
        assert r.status_code == 200, r.text[:300]
        sent = [got for f in fakes.values() for got in f.received]
        assert len(sent) == 1, sent
        assert "return_progress" not in sent[0] and "timings_per_token" not in sent[0], sent[0]
        notes = [m for m in caplog.messages if "left out of the engine's request" in m]
        assert [n.split(": ")[1].split(" ")[0] for n in notes] == ["return_progress", "timings_per_token"], notes


VAULT = 48
"""The embedded llama-server's count for the right guess of the vault prompt (above): here any engine's count."""


class Counting(FakeEngine):
    """A fake engine whose whole answer and stream's usage chunk say `cached_tokens` VAULT of a 60-token prompt (as
    vLLM and SGLang do), with llama-server's `timings` beside it."""

    @staticmethod
    def _counted(doc: dict) -> bytes:
        doc["usage"] |= {"prompt_tokens": 60, "prompt_tokens_details": {"cached_tokens": VAULT}}
        return orjson.dumps({**doc, "timings": TIMINGS})

    async def _sse(self, req: dict) -> AsyncIterator[bytes]:
        async for raw in super()._sse(req):
            yield b"data: " + self._counted(orjson.loads(raw[6:])) + b"\n\n" if b'"usage"' in raw else raw

    async def _json(self, req: dict) -> AsyncIterator[bytes]:
        async for raw in super()._json(req):
            yield self._counted(orjson.loads(raw))


def _cached_counts(r: httpx.Response, stream: bool) -> list[int]:
    if stream:
        usages = [orjson.loads(line[6:])["usage"] for line in r.content.split(b"\n")
                  if line.startswith(b"data: {") and b'"usage"' in line]
    else:
        usages = [r.json()["usage"]]
    return [u["prompt_tokens_details"]["cached_tokens"] for u in usages]


@pytest.mark.parametrize("route,body", [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("kind", "isolate", "told"), [
    ("vllm", True, VAULT), ("sglang", True, VAULT), ("llamacpp", True, 0), ("vllm", False, 0)],
    ids=["vllm-salted", "sglang-salted", "llamacpp", "vllm-not-salted"])
async def test_a_cached_count_reaches_the_client_only_from_an_endpoint_the_grid_salts(
        tmp_path: Path, fakes: dict[str, FakeEngine], route: str, body: dict, stream: bool, kind: str, isolate: bool,
        told: int) -> None:
    """(FIX4, thirty-fourth session) DOOR2 wrote every engine's count 0. On an endpoint whose cache the grid salts per
    tenant the count is the overlap of the tenant's own prompts (no other tenant's prompt is in it): clients read it
    for their costs and prompt-cache tuning, as OpenAI's answers carry it; it is passed on as the engine sent it.
    llama-server's cache, which the grid cannot salt, and a vLLM endpoint the grid does not salt still read 0.
    `timings` are left out either way."""
    spec = salted(spec_in(tmp_path), kind)
    if not isolate:
        spec = spec.model_copy(update={"security": spec.security.model_copy(update={"isolate_prefix_cache": False})})
    engines = {name: Counting(name) for name in fakes}
    async with serving(spec, engines) as (client, _):
        ask = {**body, "stream": True, "stream_options": {"include_usage": True}} if stream else body
        r = await client.post(route, json=ask)
        assert r.status_code == 200, r.text[:300]
        sent = [req for e in engines.values() for req in e.received]
        assert len(sent) == 1 and ("cache_salt" in sent[0]) == (isolate and kind != "llamacpp"), sent
        assert _cached_counts(r, stream) == [told], r.text[-600:]
        assert b"timings" not in r.content and b"cache_n" not in r.content, r.text[-600:]


def test_a_continuation_on_another_endpoint_has_its_own_count_passed_on_or_not() -> None:
    """A stream broken on a salted endpoint and continued on llama-server's (same family): the usage chunk comes from
    the continuation's engine, whose count is a read of every tenant's prompts (EventPipe.continuation)."""
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":60,"completion_tokens":2,"total_tokens":62,' \
            b'"prompt_tokens_details":{"cached_tokens":48}}}\n\n'
    pipe = EventPipe(None, sse=True, track=True, isolated=True)
    assert orjson.loads(pipe.feed(usage)[6:])["usage"]["prompt_tokens_details"] == {"cached_tokens": VAULT}
    pipe.continuation(True, isolated=False)
    assert orjson.loads(pipe.feed(usage)[6:])["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    pipe.continuation(True, isolated=True)
    assert orjson.loads(pipe.feed(usage)[6:])["usage"]["prompt_tokens_details"] == {"cached_tokens": VAULT}
    assert pipe.usage is not None and pipe.usage["prompt_tokens_details"] == {"cached_tokens": VAULT}  # as metered


def test_a_salted_endpoints_whole_answer_keeps_its_count_and_loses_llama_servers_fields() -> None:
    answer = orjson.dumps({"id": "c1", "object": "chat.completion", "timings": TIMINGS,
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                                        "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 60, "completion_tokens": 1, "total_tokens": 61,
                                     "prompt_tokens_details": {"cached_tokens": VAULT}}})
    out = orjson.loads(whole_answer(answer, None, isolated=True)[0])
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": VAULT} and "timings" not in out, out
    plain = answer.replace(b'"timings"', b'"timing_"')  # nothing to write out: the engine's bytes as they came
    assert whole_answer(plain, None, isolated=True)[0] is plain
    assert orjson.loads(whole_answer(answer, None)[0])["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
