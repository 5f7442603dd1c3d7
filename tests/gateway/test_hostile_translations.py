"""A hostile engine through the translating front doors (a FAKE engine on a real socket, hostile_engine.py, read by the
gateway's real adapter; the grid of translating_grid.py): answers whose fields have the wrong types, nest too deep
or carry text where the output filter does not read. Whatever it sends, the client gets an answer or its API's own
error (never a 500 or a stream cut with a traceback), the quota is settled and one audit record written with the
engine at fault, and no text reaches the client past the tenant's redaction."""

from __future__ import annotations

import json
import logging
from typing import Any

import orjson
import pytest

from aigrid.gateway.cache_salt import CacheSalt
from aigrid.gateway.usage import whole_answer
from tests.gateway import hostile_engine as H
from tests.gateway import hostile_grid as T
from tests.gateway.metered_gateway import balance, inflight, the_one_record
from tests.gateway.translating_grid import FORGED, PII, chunk, engine, grid

DEEP = json.loads("[" * 300 + "]" * 300)
"""JSON orjson reads (1,024 levels) and cannot write (254)."""


def answer(**message: Any) -> dict[str, Any]:
    """A whole chat completion whose message is `message` (beside its role)."""
    return H.answer_of() | {"choices": [{"index": 0, "message": {"role": "assistant", **message},
                                         "finish_reason": "stop"}]}


def call(**function: Any) -> dict[str, Any]:
    return {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}", **function}}


NOT_COMPLETIONS = {
    "finish-reason-a-list": H.answer_of() | {"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"},
                                                          "finish_reason": ["stop"]}]},
    "message-null": H.answer_of() | {"choices": [{"index": 0, "message": None, "finish_reason": "stop"}]},
    "content-a-list": answer(content=[{"type": "text", "text": PII}]),
    "content-an-object": answer(content={"text": PII}),
    "arguments-an-object": answer(content=None, tool_calls=[call(arguments={"email": PII})]),
    "name-an-object": answer(content=None, tool_calls=[call(name={"n": PII})]),
    "id-an-object": answer(content=None, tool_calls=[call() | {"id": {"n": PII}}]),
    "index-a-string": H.answer_of() | {"choices": [{"index": "0", "message": {"role": "assistant", "content": "x"}}]},
    "nested-300-levels": H.answer_of() | {"pad": DEEP},
    "nested-300-levels-usage-taken-out": H.answer_of(usage={"prompt_tokens": -1}) | {"pad": DEEP},
}


@pytest.mark.parametrize("redacting", [False, True], ids=["plain", "redacting"])
@pytest.mark.parametrize("doc", list(NOT_COMPLETIONS.values()), ids=list(NOT_COMPLETIONS))
@pytest.mark.parametrize("door", ["chat", "messages", "responses"])
async def test_a_whole_answer_of_the_wrong_shape_is_the_engines_failure(
        tmp_path, doc: dict[str, Any], door: str, redacting: bool, caplog: pytest.LogCaptureFixture) -> None:
    """Such answers passed usage.whole_answer: a finish_reason that is a list raised in the Messages and Responses
    doors (a 500, audited `error:internal`, the engine never counted); a message's text as a list or an object, a tool
    call's arguments or name as an object reached the client past the tenant's redaction, which reads strings (the
    Anthropic tool_use `input` and the Responses function call showed them whole); an answer nested 300 levels deep
    whose usage the gateway took out raised when written again (a 500 on every door, the endpoint's in-flight slot
    never released). Now each is not a completion: the door's own error, the engine charged a failure, the quota
    settled once, the slot released."""
    caplog.set_level(logging.WARNING)
    async for g in grid(tmp_path, engine(whole=doc), redacting=redacting):
        r = await g.post(door, False)
        assert r.status_code == (500 if door == "messages" else 502) and b"not a completion" in r.content, r.text
        assert PII.encode() not in r.content and b"internal error" not in r.content
        if door == "messages":
            assert r.json()["type"] == "error"  # Anthropic's envelope
        else:
            assert r.json()["error"]["code"] == "upstream_failed"
        row = await the_one_record(g.gw)
        assert row["outcome"] == "error:upstream_failed"
        assert g.failures("nrt-smollm2") == 1 and inflight(g.gw) == 0
        assert await balance(g.gw) == row["extra"]["charged_tokens"]  # settled once, as its record says
        assert "with what is not a completion" in caplog.text


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("cached", [50, 2**64 - 1], ids=["past-the-prompt", "past-63-bits"])
async def test_a_cached_count_past_the_prompts_is_the_prompts(tmp_path, stream: bool, cached: int) -> None:
    """The Messages door wrote `input_tokens` as the prompt less its cached tokens: an engine's cached count past its
    prompt's was a negative count for the client, and 2**64 - 1 one that JSON's writer cannot hold (a 500; streamed,
    the answer cut with a traceback). Now the cached count is at most the prompt's. (On an endpoint whose cache the
    grid salts per tenant, the only one whose count reaches the doors since the thirty-fourth session, DOOR2:
    usage.cache_counts_out.)"""
    usage = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6,
             "prompt_tokens_details": {"cached_tokens": cached}}
    bad = engine(whole=H.answer_of(usage=usage), events=[chunk({"content": "Hi"}), chunk({}, "stop"),
                                                         {"choices": [], "usage": usage}])
    for door in ("messages", "responses"):
        async for g in grid(tmp_path / door, bad):
            g.gw.proxy._salt = CacheSalt(b"k" * 32, g.gw.proxy._engines)  # every endpoint salted per tenant
            r = await g.post(door, stream)
            assert r.status_code == 200, r.text
            if door == "messages":
                text = r.text.split("event: message_delta\ndata: ")[-1].split("\n")[0] if stream else r.text
                used = json.loads(text)["usage"]
                assert (used["input_tokens"], used["cache_read_input_tokens"]) == (0, 5)
            else:
                text = r.text.split("event: response.completed\ndata: ")[-1].split("\n")[0] if stream else r.text
                doc = json.loads(text)
                used = (doc["response"] if stream else doc)["usage"]
                assert (used["input_tokens"], used["input_tokens_details"]["cached_tokens"]) == (5, 5)
            assert (await the_one_record(g.gw))["outcome"] == "ok" and inflight(g.gw) == 0


@pytest.mark.parametrize("stream", [False, True])
async def test_log_probabilities_of_another_shape_are_left_out_of_a_response(tmp_path, stream: bool) -> None:
    """The Responses door read an engine's `top_logprobs` as a list: a number raised there (a 500; streamed, the answer
    cut with a traceback). Now what is not of its type is left out."""
    logprobs = {"content": [{"token": "Hi", "logprob": -0.5, "bytes": "zz", "top_logprobs": 5},
                            {"token": 7, "logprob": "x", "top_logprobs": [{"token": "a", "logprob": True}, 3]}]}
    whole = H.answer_of() | {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                                          "finish_reason": "stop", "logprobs": logprobs}]}
    events = [{**chunk({"content": "Hi"}), "choices": [{"index": 0, "delta": {"content": "Hi"},
                                                         "logprobs": logprobs}]}, chunk({}, "stop")]
    async for g in grid(tmp_path, engine(whole=whole, events=events)):
        r = await g.post("responses", stream, include=["message.output_text.logprobs"])
        assert r.status_code == 200 and b"response.failed" not in r.content, r.text
        text = r.text.split("event: response.completed\ndata: ")[-1].split("\n")[0] if stream else r.text
        doc = json.loads(text)
        got = (doc["response"] if stream else doc)["output"][0]["content"][0]["logprobs"]
        assert got == [{"token": "Hi", "logprob": -0.5, "bytes": None, "top_logprobs": []},
                       {"token": "", "logprob": 0.0, "bytes": None,
                        "top_logprobs": [{"token": "a", "logprob": 0.0, "bytes": None}]}]
        assert (await the_one_record(g.gw))["outcome"] == "ok"


STREAMED = {
    "content-a-list": [chunk({"content": [{"type": "text", "text": PII}]}), chunk({}, "stop")],
    "arguments-an-object": [chunk({"tool_calls": [call(arguments={"email": PII}) | {"index": 0}]}),
                            chunk({}, "tool_calls")],
    "name-an-object": [chunk({"tool_calls": [call(name={"n": PII}) | {"index": 0}]}), chunk({}, "tool_calls")],
    "call-index-a-float": [chunk({"tool_calls": [call() | {"index": 1e300}]}), chunk({}, "tool_calls")],
    "finish-reason-an-object": [chunk({"content": "Hi"}), chunk({}, {"reason": "stop"})],
    "steps-not-objects": [chunk({"content": "Hi"}), chunk({}, "stop", aigrid_steps=["zz"])],
}


@pytest.mark.parametrize("redacting", [False, True], ids=["plain", "redacting"])
@pytest.mark.parametrize("events", list(STREAMED.values()), ids=list(STREAMED))
@pytest.mark.parametrize("door", ["messages", "responses"])
async def test_a_chunk_of_the_wrong_shape_ends_a_translated_stream_as_the_engines_failure(
        tmp_path, events: list[Any], door: str, redacting: bool) -> None:
    """chat_events wrote a tool call's arguments, its name or id and a finish_reason that were not strings as Python
    shows them (`str()`): an object's text went into the Anthropic tool_use block and the Responses function call past
    the tenant's redaction, which reads strings only; a list of steps that are not objects raised in the Responses
    door (the stream cut with a traceback). Now such a chunk ends the answer with the door's own error, the engine
    charged a failure."""
    async for g in grid(tmp_path, engine(events=events), redacting=redacting):
        r = await g.post(door, True)
        assert r.status_code == 200 and PII.encode() not in r.content
        if events is STREAMED["steps-not-objects"]:  # an engine's steps, where no tool loop answers: not read at all
            # (redacted, left out by known_only before; plain, chat_events read them and cut the answer for their shape)
            assert (await the_one_record(g.gw))["outcome"] == "ok"
            continue
        # the door's reader (chat_events) finds it; redacted, a text the output filter finds first (OutputFilter.event,
        # engines/answer_shape.choice_fault)
        whys = (b"not a chat completion chunk", b"the redaction cannot read") if redacting else (b"not a chat completion",)
        assert T.ENDS[door] in r.content and any(why in r.content for why in whys)
        assert (await the_one_record(g.gw))["outcome"] == "interrupted"
        assert g.failures("nrt-smollm2") == 1 and inflight(g.gw) == 0


async def test_a_step_comment_that_is_not_an_object_is_not_a_step(tmp_path) -> None:
    """A `: aigrid-step` comment holding a JSON string was read as a step: the Responses door raised on it (the stream
    cut with a traceback). Now it is no step."""
    async for g in grid(tmp_path, engine(comments=[b': aigrid-step "zz"\n\n'])):
        r = await g.post("responses", True)
        assert r.status_code == 200 and b"response.completed" in r.content and b"mcp_call" not in r.content
        assert (await the_one_record(g.gw))["outcome"] == "ok"


def test_an_answer_of_the_right_shape_passes_whole() -> None:
    """The shape check refuses none of what engines send: a chat answer with text, tool calls, reasoning and
    log-probabilities, a completion's text, nulls where a field is empty."""
    chat = answer(content=None, reasoning_content="hm", refusal=None, tool_calls=[call()]) | {"usage": None}
    chat["choices"][0]["logprobs"] = {"content": [{"token": "a", "logprob": -1.0, "top_logprobs": []}]}
    text = {"id": "cmpl-1", "object": "text_completion", "choices": [{"index": 0, "text": "Hi", "finish_reason": None,
                                                                       "logprobs": None}]}
    for doc in (chat, text, H.answer_of(), {"choices": []}):
        raw = orjson.dumps(doc)
        assert whole_answer(raw, None)[0] == raw


@pytest.mark.parametrize("redacting", [False, True], ids=["plain", "redacting"])
@pytest.mark.parametrize("how", ["whole", "field", "comment"])
async def test_an_engines_own_steps_are_not_the_grids_tool_runs(tmp_path, how: str, redacting: bool) -> None:
    """The Responses door showed every `aigrid_steps` of the chat answer, and every `: aigrid-step` comment of its
    stream, as the grid's own server-side tool runs (mcp_call items, server_label aigrid): an engine that wrote them
    without any tool loop had forged tool runs reach the client, their arguments and results past the tenant's
    redaction (which reads the loop's own steps only). Now steps are read only where a tool loop answers."""
    events = [chunk({"content": "Hi"}), chunk({}, "stop", aigrid_steps=[FORGED] if how == "field" else None)]
    comments = [b": aigrid-step " + orjson.dumps(FORGED) + b"\n\n"] if how == "comment" else []
    bad = engine(whole=H.answer_of() | {"aigrid_steps": [FORGED]}, events=events, comments=comments)
    async for g in grid(tmp_path, bad, redacting=redacting):
        r = await g.post("responses", how != "whole")
        assert r.status_code == 200 and b"mcp_call" not in r.content and PII.encode() not in r.content, r.text
        assert b"Hi" in r.content or b"Hello" in r.content
        assert (await the_one_record(g.gw))["outcome"] == "ok"


async def test_an_event_nested_past_what_json_writes_ends_a_redacted_stream_as_the_engines_failure(tmp_path) -> None:
    """An event the relay writes again (a redacted tenant's, or one holding usage) nested 300 levels deep raised in the
    relay (orjson reads 1,024 levels, writes 254): the stream cut with a traceback. Now the engine's own fault, as past
    the relay's other bounds: the in-stream error, the engine charged a failure."""
    deep = chunk({"content": "Hi", "tool_calls": [call() | {"index": 0}]})
    deep["choices"][0]["stop_reason"] = DEEP  # a field a redacted chunk keeps (a tool call's unknown keys are left
    events = [deep, chunk({}, "stop")]  # out since the twenty-seventh session, output_filter.CALL_KEYS)
    async for g in grid(tmp_path, engine(events=events), redacting=True):
        r = await g.post("chat", True)
        assert r.status_code == 200 and b"stream_interrupted" in r.content, r.text
        # the filter's reading of the fields a redacted chunk keeps (output_filter.read_the_rest, MAX_NESTED) finds it
        # before the relay's writing would (since the twenty-seventh session)
        assert b"cannot write again" in r.content or b"nested past" in r.content, r.text
        assert (await the_one_record(g.gw))["outcome"] == "interrupted"
        assert g.failures("nrt-smollm2") == 1 and inflight(g.gw) == 0


UNREAD_WHOLE = {
    "logprobs-unasked": H.answer_of() | {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                                                      "finish_reason": "stop",
                                                      "logprobs": {"content": [{"token": PII, "logprob": -1.0}]}}]},
    "annotations": answer(content="Hi", annotations=[{"type": "url_citation", "url_citation": {"title": PII}}]),
    "steps-without-a-loop": H.answer_of() | {"aigrid_steps": [FORGED], "aigrid_loop": {"stop": PII}},
}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("doc", list(UNREAD_WHOLE.values()), ids=list(UNREAD_WHOLE))
async def test_a_redacted_chat_answer_keeps_no_field_the_redaction_does_not_read(
        tmp_path, doc: dict[str, Any], stream: bool) -> None:
    """A redacted answer kept an engine's `logprobs` (the tenant is refused them when it asks, but an engine sent them
    unasked: the answer's tokens, unredacted), a message's `annotations`, and `aigrid_steps` / `aigrid_loop` where no
    tool loop ran (an engine's own, unread). Now they are left out; the answer is the engine's, `ok`."""
    streamed = {**doc, "object": "chat.completion.chunk",  # the same answer as one chunk: its message a delta
                "choices": [{**{k: v for k, v in c.items() if k != "message"}, "delta": c["message"]}
                            for c in doc["choices"]]}
    async for g in grid(tmp_path, engine(whole=doc, events=[streamed, chunk({}, "stop")]), redacting=True):
        r = await g.post("chat", stream)
        assert r.status_code == 200 and PII.encode() not in r.content, r.text
        assert b"aigrid_steps" not in r.content and b"logprobs\":{" not in r.content
        assert (await the_one_record(g.gw))["outcome"] == "ok"


@pytest.mark.parametrize("event", [
    pytest.param(json.dumps(chunk({"content": [{"type": "text", "text": PII}]})).encode(), id="content-a-list"),
    pytest.param(json.dumps(chunk({"tool_calls": [call(arguments={"e": PII}) | {"index": 0}]})).encode(),
                 id="arguments-an-object"),
    pytest.param(json.dumps(chunk(PII)).encode(), id="delta-a-string"),
    pytest.param(b"not JSON: " + PII.encode(), id="not-json"),
])
async def test_a_redacted_stream_with_text_the_redaction_cannot_read_is_the_engines_failure(
        tmp_path, event: bytes) -> None:
    """On the chat door a redacted stream passed on what the redaction does not read as the engine wrote it: a list as
    `content`, an object as `arguments`, a delta that is a string, an event that is not JSON. Now the stream ends there
    with the in-stream error, the engine charged a failure."""
    def script(path: str, req: dict) -> H.Script:
        return H.stream(*H.sse(json.dumps(chunk({"content": "Hi"})).encode(), event,
                               json.dumps(chunk({}, "stop")).encode()))
    async for g in grid(tmp_path, script, redacting=True):
        r = await g.post("chat", True)
        assert r.status_code == 200 and b"stream_interrupted" in r.content and PII.encode() not in r.content, r.text
        assert (await the_one_record(g.gw))["outcome"] == "interrupted"
        assert g.failures("nrt-smollm2") == 1 and inflight(g.gw) == 0


def real_whole(engine_kind: str, path: str) -> dict[str, Any]:
    """A whole answer as vLLM, llama.cpp and SGLang write one (fields as their OpenAI servers send them)."""
    usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8, "prompt_tokens_details": None}
    if path == "/v1/completions":
        return {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m", "choices": [
            {"index": 0, "text": " Hello", "logprobs": None, "finish_reason": "length", "stop_reason": None,
             "prompt_logprobs": None}], "usage": usage, "service_tier": None, "system_fingerprint": None}
    message: dict[str, Any] = {"role": "assistant", "content": "Hello", "reasoning_content": "hm", "refusal": None,
                               "annotations": None, "audio": None, "function_call": None, "tool_calls": []}
    choice: dict[str, Any] = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
    if engine_kind == "vllm":
        choice["stop_reason"] = 128001  # the stop token's id (an int), beside finish_reason
        extra: dict[str, Any] = {"service_tier": None, "system_fingerprint": None, "prompt_logprobs": None,
                                 "kv_transfer_params": None}
    elif engine_kind == "vllm-tools":
        message |= {"content": None, "reasoning_content": None, "annotations": [], "tool_calls": [
            {"id": "chatcmpl-tool-1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]}
        choice |= {"finish_reason": "tool_calls", "stop_reason": None}
        extra = {"service_tier": None, "system_fingerprint": None, "prompt_logprobs": None}
    elif engine_kind == "llamacpp":
        message = {"role": "assistant", "content": "Hello", "reasoning_content": "hm"}
        choice = {"finish_reason": "stop", "index": 0, "message": message}
        extra = {"system_fingerprint": "b6100-abc", "timings": {"prompt_n": 5, "predicted_n": 3}}
    else:  # sglang
        message |= {"reasoning_content": None, "tool_calls": None}
        choice |= {"matched_stop": 2, "hidden_states": None}
        extra = {"metadata": {"weight_version": "default"}}
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m", "choices": [choice],
            "usage": usage, **extra}


def real_stream(engine_kind: str, path: str) -> list[dict[str, Any]]:
    """The same answers streamed: a role chunk, text (or a tool call) in pieces, the finish, the usage chunk."""
    usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    if path == "/v1/completions":
        piece = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m"}
        return [piece | {"choices": [{"index": 0, "text": t, "logprobs": None, "finish_reason": f, "stop_reason": s}]}
                for t, f, s in ((" Hel", None, None), ("lo", "stop", 128001))] + [piece | {"choices": [],
                                                                                           "usage": usage}]
    def one(delta: dict[str, Any], finish: Any = None, **more: Any) -> dict[str, Any]:
        return chunk(delta, finish) | {"choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                    "finish_reason": finish, **more}]}
    if engine_kind == "vllm-tools":
        return [one({"role": "assistant", "content": ""}),
                one({"tool_calls": [{"id": "chatcmpl-tool-1", "type": "function", "index": 0,
                                     "function": {"name": "f", "arguments": ""}}]}),
                one({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\": 1}"}}]}),
                one({"content": None, "tool_calls": []}, "tool_calls", stop_reason=None),
                chunk({}) | {"choices": [], "usage": usage}]
    stop = {"vllm": {"stop_reason": 128001}, "sglang": {"matched_stop": 2}}.get(engine_kind, {})
    first = {"role": "assistant", "content": None if engine_kind == "llamacpp" else ""}
    return [one(first), one({"reasoning_content": "hm", "content": None}), one({"content": "Hel"}),
            one({"content": "lo", "refusal": None, "tool_calls": []}), one({}, "stop", **stop),
            chunk({}) | {"choices": [], "usage": usage, "system_fingerprint": None}]


@pytest.mark.parametrize("redacting", [False, True], ids=["plain", "redacting"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("kind", ["vllm", "vllm-tools", "llamacpp", "sglang"])
async def test_real_engines_answers_pass_every_door(tmp_path, kind: str, stream: bool, redacting: bool) -> None:
    """The shape checks of the twenty-sixth session (engines/answer_shape.py, called by usage.whole_answer, chat_events
    and OutputFilter.event) refuse none of what real engines send: vLLM's `stop_reason` as an int, `prompt_logprobs`,
    `service_tier` and `system_fingerprint` as null, `refusal` / `annotations` / `logprobs` null, `tool_calls: []`,
    `content: null` beside tool calls, `reasoning_content`; llama.cpp's `timings`; SGLang's `matched_stop` and
    `metadata`. Each door answers 200, the engine is not counted as failing, one record `ok`, the quota settled once."""
    def script(path: str, req: dict) -> H.Script:
        if req.get("stream"):
            return H.stream(*H.sse(*[json.dumps(e).encode() for e in real_stream(kind, path)]))
        return H.whole(json.dumps(real_whole(kind, path)).encode())

    for door in ("chat", "completions", "messages", "responses"):
        if door == "completions" and kind != "vllm":
            continue  # one completion shape (vLLM's; llama.cpp's and SGLang's hold the same fields)
        async for g in grid(tmp_path / door, script, redacting=redacting):
            r = await g.post(door, stream)
            assert r.status_code == 200, (door, r.text)
            said = (b"f", b"chatcmpl-tool-1") if kind == "vllm-tools" and door != "completions" else (b"lo",)
            assert all(s in r.content for s in said), (door, r.text)
            assert not any(e in r.content for e in (b'"error":{', b"event: error", b"response.failed")), (door, r.text)
            row = await the_one_record(g.gw)
            assert row["outcome"] == "ok", (door, row["outcome"])
            assert g.failures("nrt-smollm2") == 0 and inflight(g.gw) == 0
            assert (row["prompt_tokens"], row["completion_tokens"]) == (5, 3), door  # the engine's count, charged once
            assert await balance(g.gw) == 8 and "charged_tokens" not in row["extra"], door


@pytest.mark.parametrize("where", ["alone", "on-a-chunk", "on-done"])
async def test_an_engines_comments_do_not_reach_a_redacted_chat_stream(tmp_path, where: str) -> None:
    """The relay passed an engine's SSE comments as it framed them: a forged `: aigrid-step` (or any comment) holding
    the answer's personal data reached a tenant whose answers are redacted, which reads data events only. Now a
    redacted stream with no tool loop keeps no comment of the engine's; the answer is the engine's, `ok`."""
    step = b": aigrid-step " + orjson.dumps(FORGED) + b"\n"
    hi, stop = (b"data: " + json.dumps(e).encode() + b"\n\n" for e in (chunk({"content": "Hi"}), chunk({}, "stop")))
    body = {"alone": [step + b"\n", hi, stop, b"data: [DONE]\n\n"],
            "on-a-chunk": [step + b": " + PII.encode() + b"\n" + hi, stop, b"data: [DONE]\n\n"],
            "on-done": [hi, stop, step + b"data: [DONE]\n\n"]}[where]

    def script(path: str, req: dict) -> H.Script:
        return H.stream(*[H.chunk(b) for b in body], H.END)

    async for g in grid(tmp_path, script, redacting=True):
        r = await g.post("chat", True)
        assert r.status_code == 200 and PII.encode() not in r.content and b"aigrid-step" not in r.content, r.text
        assert b"Hi" in r.content and r.content.endswith(b"data: [DONE]\n\n"), r.text
        assert (await the_one_record(g.gw))["outcome"] == "ok"


@pytest.mark.parametrize("tail", ["finish", "not-json"])
async def test_a_last_event_without_its_blank_line_is_redacted_too(tmp_path, tail: str) -> None:
    """The relay passed the bytes an engine's stream ended with, short of an event's closing blank line, as the engine
    wrote them: a redacted tenant got that last chunk's text unredacted (`data: {...personal data..., "finish_reason":
    "stop"}` and the body's end). Now that last event is read as one and redacted (the answer whole, `ok`), or left out
    where the redaction cannot read it (the answer cut short: the in-stream error, the engine charged a failure)."""
    hi = b"data: " + json.dumps(chunk({"content": "Hi"})).encode() + b"\n\n"
    last = {"finish": json.dumps(chunk({"content": f" mail {PII}"}, "stop")).encode(),
            "not-json": b"{\"choices\": " + PII.encode()}[tail]

    def script(path: str, req: dict) -> H.Script:
        return H.stream(H.chunk(hi), H.chunk(b"data: " + last), H.END)

    async for g in grid(tmp_path, script, redacting=True):
        r = await g.post("chat", True)
        assert r.status_code == 200 and PII.encode() not in r.content, r.text
        if tail == "finish":
            assert b'"content":"Hi mail [REDACTED:EMAIL]"},"finish_reason":"stop"' in r.content, r.text
            assert (await the_one_record(g.gw))["outcome"] == "ok"
        else:
            assert b"stream_interrupted" in r.content, r.text
            assert (await the_one_record(g.gw))["outcome"] == "interrupted"
            assert g.failures("nrt-smollm2") == 1 and inflight(g.gw) == 0


@pytest.mark.parametrize("redacting", [False, True], ids=["plain", "redacting"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_tool_call_with_null_arguments_is_a_call_with_none_whole_and_streamed(
        tmp_path, stream: bool, redacting: bool) -> None:
    """`"arguments": null` (no text, as `content: null` beside a call; engines/answer_shape's one null rule) passed
    in a stream and was refused in a whole answer (usage.not_a_completion: a 502, the engine counted as failing).
    Now it is a call with no arguments on every door, whole and streamed: the Responses function call's `arguments`
    "" (not Python's "None"), Anthropic's tool_use `input` {}."""
    calls = [{"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": None}}]
    whole = answer(content=None, tool_calls=calls)
    whole["choices"][0]["finish_reason"] = "tool_calls"
    events = [chunk({"role": "assistant", "content": None, "tool_calls": [calls[0] | {"index": 0}]}),
              chunk({}, "tool_calls")]
    for door in ("chat", "messages", "responses"):
        async for g in grid(tmp_path / door, engine(whole=whole, events=events), redacting=redacting):
            r = await g.post(door, stream)
            assert r.status_code == 200 and b"get_time" in r.content, (door, r.text)
            assert b"None" not in r.content and b"not a completion" not in r.content, (door, r.text)
            if door == "responses" and not stream:
                (item,) = [i for i in r.json()["output"] if i["type"] == "function_call"]
                assert item["arguments"] == ""
            if door == "messages" and not stream:
                (block,) = [b for b in r.json()["content"] if b["type"] == "tool_use"]
                assert block["input"] == {}
            assert (await the_one_record(g.gw))["outcome"] == "ok", door
            assert g.failures("nrt-smollm2") == 0 and inflight(g.gw) == 0
