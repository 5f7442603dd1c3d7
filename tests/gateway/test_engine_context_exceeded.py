"""An engine's own "context exceeded" 400 (llama.cpp's, vLLM's, SGLang's words) reaches the client as the gateway's own
`context_length_exceeded` 400, in each door's envelope (gateway/engine_errors.py). Until the twenty-eighth session a
prompt between the engine's real context and the gateway's estimate got the engine's 400 as it wrote it, with no
`code` (llama.cpp) or a `code` of 400 (vLLM, SGLang): a client could not handle one code whoever answered."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import orjson
import pytest

from aigrid.engines.protocol import UpstreamResponse
from aigrid.gateway.app import build_app, build_gateway
from aigrid.gateway.engine_errors import engine_refusal
from aigrid.spec.load import load_spec
from tests.gateway import hostile_engine as H
from tests.gateway.conftest import DEMO, _no_sleep, audit_rows, serving, spec_in
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.hostile_grid import grid as two_engines
from tests.gateway.metered_gateway import booked, inflight
from tests.gateway.spare_refusal import refusing, spares_open

LLAMA_NEW = {"error": {"code": 400, "message": "request (2100 tokens) exceeds the available context size (2048 tokens), "
                       "try increasing it", "type": "exceed_context_size_error", "n_prompt_tokens": 2100, "n_ctx": 2048}}
LLAMA_BRIEF = {"error": {"code": 400, "message": "the request exceeds the available context size (2048 tokens), try "
                         "increasing it", "type": "invalid_request_error"}}
LLAMA_OLD = {"error": {"code": 400, "message": "the request exceeds the available context size. try increasing the "
                       "context size or enable context shift", "type": "invalid_request_error"}}
VLLM = {"object": "error", "message": "This model's maximum context length is 2048 tokens. However, you requested 2472 "
        "tokens (376 in the messages, 2096 in the completion). Please reduce the length of the messages or completion.",
        "type": "BadRequestError", "param": None, "code": 400}
SGLANG = {"object": "error", "message": "The input (2500 tokens) is longer than the model's context length (2048 tokens).",
          "type": "BadRequestError", "param": None, "code": 400}
WORDINGS = {"llamacpp": (LLAMA_NEW, 2048), "llamacpp-figure": (LLAMA_BRIEF, 2048), "llamacpp-old": (LLAMA_OLD, None),
            "vllm": (VLLM, 2048), "sglang": (SGLANG, 2048)}


@pytest.mark.parametrize("name", list(WORDINGS))
def test_each_engines_wording_is_the_gateways_context_length_exceeded(name: str) -> None:
    body, context = WORDINGS[name]
    err = orjson.loads(engine_refusal(orjson.dumps(body), 400, param="prompt")[0])["error"]
    assert err["code"] == "context_length_exceeded" and err["param"] == "prompt", err
    assert err["type"] == "invalid_request_error"
    assert (f"maximum context length is {context} tokens" in err["message"]) == (context is not None), err
    # vLLM counts the output asked for in (2096 of its 2472 tokens): a client told only to shorten its messages could
    # not tell that max_tokens was the cause (review RV10)
    assert err["message"].endswith("reduce the length of the prompt or lower max_tokens."), err


def test_other_400s_and_other_statuses_are_unchanged() -> None:
    other = {"error": {"message": "the context of this tool call is missing", "type": "invalid_request_error"}}
    assert orjson.loads(engine_refusal(orjson.dumps(other), 400)[0])["error"] == {
        "message": "the context of this tool call is missing", "type": "invalid_request_error", "param": None,
        "code": None}
    assert orjson.loads(engine_refusal(orjson.dumps(VLLM), 500)[0])["error"]["code"] is None  # a 5xx is a failure


def _answer_always(fakes: dict[str, FakeEngine], body: bytes) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield body

    @asynccontextmanager
    async def answered(path: str, raw: bytes) -> AsyncIterator[UpstreamResponse]:
        yield UpstreamResponse(400, {"content-type": "application/json"}, chunks())

    for f in fakes.values():
        f.open = answered  # type: ignore[method-assign, assignment]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("name", list(WORDINGS))
async def test_chat_and_messages_doors_answer_the_gateways_code(tmp_path: Path, name: str, stream: bool) -> None:
    body, context = WORDINGS[name]
    fakes = {e.id: FakeEngine(e.id) for e in load_spec(DEMO).endpoints}
    _answer_always(fakes, orjson.dumps(body))
    gw = build_gateway(spec_in(tmp_path), fakes, rng=random.Random(7), sleep=_no_sleep)
    message = {"role": "user", "content": "hi"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        chat = await c.post("/v1/chat/completions", json={"model": "smollm2-135m", "stream": stream,
                                                          "messages": [message]})
        completion = await c.post("/v1/completions", json={"model": "smollm2-135m", "stream": stream,
                                                           "prompt": "hi"})
        claude = await c.post("/v1/messages", json={"model": "smollm2-135m", "max_tokens": 5, "stream": stream,
                                                    "messages": [message]})
    err = chat.json()["error"]
    assert chat.status_code == 400 and err["code"] == "context_length_exceeded" and err["param"] == "messages", chat.text
    assert completion.status_code == 400 and completion.json()["error"]["param"] == "prompt", completion.text
    assert completion.json()["error"]["code"] == "context_length_exceeded"
    assert claude.status_code == 400, claude.text
    said = claude.json()["error"]
    assert said["type"] == "invalid_request_error", said
    assert (f"maximum context length is {context} tokens" in said["message"]) == (context is not None), said
    assert said["message"] == err["message"]


async def test_the_engines_refusal_is_audited_and_counted_as_the_gateways_own_check(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """One error, one outcome, whoever found it: an engine's context 400 was audited, logged and counted `http_400`
    (with no status or message in the record's extra) while the gateway's own check (context_window.py) recorded
    `error:context_length_exceeded`; an operator counting context refusals by outcome missed every one an engine
    found. Now each is `error:context_length_exceeded`, status 400 and its message in the record, the access line's
    outcome and status, the endpoint's `aigrid_requests` outcome and the GenAI metrics' error type."""
    fakes = {e.id: FakeEngine(e.id) for e in load_spec(DEMO).endpoints}
    _answer_always(fakes, orjson.dumps(LLAMA_NEW))
    spec = spec_in(tmp_path)
    long = "x" * (spec.models["smollm2-135m"].context * 8 + 80)  # past the gateway's own bound: never sent on
    sent = [("/v1/chat/completions", {"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}]}),
            ("/v1/chat/completions", {"model": "smollm2-135m", "stream": True,
                                      "messages": [{"role": "user", "content": "hi"}]}),
            ("/v1/messages", {"model": "smollm2-135m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
            ("/v1/chat/completions", {"model": "smollm2-135m", "messages": [{"role": "user", "content": long}]})]
    with caplog.at_level("INFO", logger="aigrid.access"):
        async with serving(spec, fakes) as (c, gw):
            answers = [await c.post(path, json=body) for path, body in sent]
            rows = await audit_rows(gw)
    assert [a.status_code for a in answers] == [400] * 4, [a.text for a in answers]
    outcomes = [(r["outcome"], r["extra"].get("status"), bool(r["extra"].get("message"))) for r in rows]
    assert outcomes == [("error:context_length_exceeded", 400, True)] * 4, outcomes
    assert "engine refused the request" in rows[0]["extra"]["message"]  # the message the client got
    lines = [r.aigrid_fields for r in caplog.records if r.name == "aigrid.access"]  # type: ignore[attr-defined]
    assert [(line["outcome"], line["status"]) for line in lines] == [("error:context_length_exceeded", 400)] * 4
    exposed = list(gw.metrics.registry.collect())
    requests: dict[str, float] = {}  # summed over endpoints: a refusal pins no affinity, the three may spread
    for s in (s for m in exposed if m.name == "aigrid_requests" for s in m.samples if s.name == "aigrid_requests_total"):
        requests[s.labels["outcome"]] = requests.get(s.labels["outcome"], 0) + s.value
    assert requests == {"error:context_length_exceeded": 3}, requests  # the three an engine answered (not http_400)
    assert gw.metrics.rejected.labels("context_length_exceeded")._value.get() == 1  # the gateway's own, before routing
    errors = {s.labels["error_type"] for m in exposed if m.name == "gen_ai_client_operation_duration_seconds"
              for s in m.samples}
    assert errors == {"error:context_length_exceeded"}, errors


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_the_responses_door_names_its_own_fields_whoever_found_the_prompt_too_long(tmp_path: Path,
                                                                                       stream: bool) -> None:
    """On the Responses API the engine's context 400 names `input` and max_output_tokens, as the gateway's own check
    there does: it said `messages` and max_tokens, chat's fields, which a Responses request has not (review RV3 of the
    twenty-ninth session)."""
    fakes = {e.id: FakeEngine(e.id) for e in load_spec(DEMO).endpoints}
    _answer_always(fakes, orjson.dumps(LLAMA_NEW))
    spec = spec_in(tmp_path)
    long = "x" * (spec.models["smollm2-135m"].context * 8 + 80)  # past the gateway's own bound: never sent on
    async with serving(spec, fakes) as (c, _):
        engines = await c.post("/v1/responses", json={"model": "smollm2-135m", "input": "hi", "stream": stream})
        own = await c.post("/v1/responses", json={"model": "smollm2-135m", "input": long, "stream": stream})
    for r in (engines, own):
        said = r.json()["error"]
        assert r.status_code == 400 and said["code"] == "context_length_exceeded", r.text
        assert said["param"] == "input", said
    said = engines.json()["error"]["message"]
    assert said.endswith("reduce the length of the input or lower max_output_tokens."), said


async def test_a_background_response_the_engine_refuses_as_too_long_fails_as_a_400_would_say(tmp_path: Path) -> None:
    """A background Response whose engine refused the prompt as past its context was stored failed with code
    `server_error` (a server's fault, to a client that retries) and chat's wording (`messages`, max_tokens), the
    message alone; now as a failed run's error says the gateway's own errors (background.error_object): OpenAI's code
    for a 400, `invalid_prompt`, the message and field this door names, and the gateway's code (review RV3 of the
    twenty-ninth session)."""
    fakes = {e.id: FakeEngine(e.id) for e in load_spec(DEMO).endpoints}
    _answer_always(fakes, orjson.dumps(LLAMA_NEW))
    async with serving(spec_in(tmp_path), fakes) as (c, _):
        created = await c.post("/v1/responses", json={"model": "smollm2-135m", "input": "hi", "background": True,
                                                      "store": True})
        assert created.status_code == 200, created.text
        for _ in range(3000):  # polled up to 30 s: a loaded machine is late, not wrong
            got = (await c.get(f"/v1/responses/{created.json()['id']}")).json()
            if got["status"] not in ("queued", "in_progress"):
                break
            await asyncio.sleep(0.01)
    assert got["status"] == "failed", got
    error = got["error"]
    assert (error["code"], error.get("param"), error.get("aigrid_code")) == ("invalid_prompt", "input",
                                                                     "context_length_exceeded"), error
    assert error["message"].endswith("reduce the length of the input or lower max_output_tokens."), error


async def test_a_spare_refusing_a_continuation_as_too_long_is_counted_as_the_gateways_own_check(tmp_path: Path) -> None:
    """A stream breaks and the spare refuses its continuation with its context 400 (the continuation's prompt holds the
    text already sent, so a prompt the first engine held can be too long for the spare): proxy.continue_stream booked
    it `http_400` in `aigrid_requests` unread, where the main path books an engine's context 400 as the gateway's own
    `error:context_length_exceeded` (48127ade). Now the spare's refusal is read (bounded) and booked so."""
    broken = H.stream(H.chunk(b"data: " + orjson.dumps(H.token("Hi")) + b"\n\n"), H.CLOSE)
    refusal = H.whole(orjson.dumps(LLAMA_NEW), 400)
    async for g in two_engines(tmp_path, lambda p, r: broken, good=lambda p, r: refusal):
        r = await g.post("chat", True)
        assert r.status_code == 200 and b"the continuation was refused (" in r.content, r.content
        assert g.good.requests >= 1 and inflight(g.gw) == 0
        requests = booked(g.gw)
    spares = {outcome for (endpoint, outcome) in requests if endpoint != "nrt-smollm2"}
    assert spares == {"error:context_length_exceeded"}, requests


async def test_a_spares_refusal_whose_read_fails_unexpectedly_is_booked_by_its_status_and_the_stream_ends_said(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Reading a spare's refusal of a continuation (42d87a24) raised past continue_stream on an error that is not an
    EngineError (a bug, an unmapped library error): booked `client_closed` (499) though the client was still there, and
    raised into the client's event stream instead of its error event. Now logged with its traceback (as the main
    path's read logs one) and booked by what the spare sent, its status; the next spare is tried, and the stream
    ends with its error event."""
    broken = H.stream(H.chunk(b"data: " + orjson.dumps(H.token("Hi")) + b"\n\n"), H.CLOSE)

    async def body() -> AsyncIterator[bytes]:
        yield b'{"error": '
        raise RuntimeError("a bug reading the refusal")

    async for g in two_engines(tmp_path, lambda p, r: broken):
        spares_open(g.gw, refusing(body))
        r = await g.post("chat", True)
        assert r.status_code == 200 and b"the continuation was refused (" in r.content, r.content
        assert inflight(g.gw) == 0
        requests = booked(g.gw)
    spares = {outcome for (endpoint, outcome) in requests if endpoint != "nrt-smollm2"}
    assert spares == {"http_400"}, requests
    assert "a bug reading the refusal" in caplog.text and "Traceback" in caplog.text


async def test_a_spares_refusal_whose_close_is_cut_short_leaves_no_request_in_flight(tmp_path: Path) -> None:
    """A cancel (the client gone, a shutdown) that lands while a spare's refused continuation is being closed: the
    close raised before proxy.finish booked it, so the spare kept one request in flight for good (its load, as the
    router reads it, one too high), where _attempt, abandon and _close_losers book it in a `finally`."""
    broken = H.stream(H.chunk(b"data: " + orjson.dumps(H.token("Hi")) + b"\n\n"), H.CLOSE)

    async def body() -> AsyncIterator[bytes]:
        yield orjson.dumps(LLAMA_NEW)

    @asynccontextmanager
    async def refusing(path: str, payload: bytes) -> AsyncIterator[UpstreamResponse]:
        yield UpstreamResponse(400, {"content-type": "application/json"}, body())
        raise asyncio.CancelledError("cut while closing")

    async for g in two_engines(tmp_path, lambda p, r: broken):
        spares_open(g.gw, refusing)
        with pytest.raises((asyncio.CancelledError, httpx.HTTPError)):
            await g.post("chat", True)
        assert inflight(g.gw) == 0
