"""OpenAI's `n` (several choices) through the gateway with the official SDK: the chosen engine is asked n
times at once (engines/fan_out.py) and the answers merged, whole or streamed, with usage, seeds, per-choice
output redaction and the forms that are refused. A SCRIPTED engine (tests/agents/scripted_engine.py) plays
every endpoint and records what it was sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from aigrid.engines.fan_out import MAX_QUEUED, merged_answer, merged_stream, summed_usage
from aigrid.engines.protocol import UpstreamResponse
from aigrid.gateway.app import Gateway, build_app
from aigrid.spec.models import FirewallSpec
from tests.agents.scripted_engine import ScriptedEngine
from tests.gateway.conftest import audit_rows, scripted_gateway
from tests.gateway.sdk_clients import openai_client

ASK = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture
async def scripted(tmp_path: Path) -> AsyncIterator[tuple[openai.AsyncOpenAI, ScriptedEngine]]:
    engine = ScriptedEngine([])
    gw = await scripted_gateway(tmp_path, engine, firewall=FirewallSpec(pii_output="redact"))  # per choice
    client = openai_client(build_app(gw))
    yield client, engine
    await client.close()


async def test_n_whole_answers_are_merged_with_the_prompt_counted_once(
        scripted: tuple[openai.AsyncOpenAI, ScriptedEngine]) -> None:
    oai, engine = scripted
    engine.replies += [{"content": "Red."}, {"content": "Blue."}, {"content": "Green."}]
    reply = await oai.chat.completions.create(model="smollm2-135m", messages=ASK, n=3, seed=7, stream=False)
    assert [(c.index, c.message.content) for c in reply.choices] == [(0, "Red."), (1, "Blue."), (2, "Green.")]
    assert reply.usage is not None and (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (10, 15)
    assert [b["seed"] for b in engine.received] == [7, 8, 9] and all("n" not in b for b in engine.received)


async def test_n_streamed_choices_arrive_re_indexed_with_one_usage_chunk(
        scripted: tuple[openai.AsyncOpenAI, ScriptedEngine]) -> None:
    oai, engine = scripted
    engine.replies += [{"content": "Red is warm."}, {"content": "Blue is calm."}]
    chunks = [c async for c in await oai.chat.completions.create(
        model="smollm2-135m", messages=ASK, n=2, stream=True, stream_options={"include_usage": True})]
    text: dict[int, str] = {0: "", 1: ""}
    finished = set()
    for c in chunks:
        for choice in c.choices:
            text[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finished.add(choice.index)
    assert text == {0: "Red is warm.", 1: "Blue is calm."} and finished == {0, 1}
    usages = [c.usage for c in chunks if c.usage is not None]
    assert len(usages) == 1 and (usages[0].prompt_tokens, usages[0].completion_tokens) == (10, 10)


async def test_each_choice_is_redacted_on_its_own(scripted: tuple[openai.AsyncOpenAI, ScriptedEngine]) -> None:
    """A card number split across one choice's chunks is caught though the other choice's chunks interleave."""
    oai, engine = scripted
    engine.replies += [{"content": "Pay with 4111 1111 1111 1111 now."}, {"content": "Mail ada@example.com today."}]
    chunks = [c async for c in await oai.chat.completions.create(model="smollm2-135m", messages=ASK, n=2,
                                                                 stream=True)]
    text: dict[int, str] = {0: "", 1: ""}
    for c in chunks:
        for choice in c.choices:
            text[choice.index] += choice.delta.content or ""
    assert "4111" not in text[0] and "ada@example.com" not in text[1]
    assert text[0].startswith("Pay with ") and text[1].startswith("Mail ")


async def test_the_forms_n_cannot_serve_are_the_clients_400(
        scripted: tuple[openai.AsyncOpenAI, ScriptedEngine]) -> None:
    oai, engine = scripted
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    for kwargs in ({"n": 2, "tools": [tool]}, {"n": 9}):
        with pytest.raises(openai.BadRequestError) as info:
            await oai.chat.completions.create(model="smollm2-135m", messages=ASK, stream=False, **kwargs)
        assert info.value.body["param"] == "n"  # type: ignore[index]
    assert engine.received == []


async def _answer(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def _doc(*texts: str) -> bytes:
    return orjson.dumps({"object": "text_completion", "usage": {"prompt_tokens": 6, "completion_tokens": 2},
                         "choices": [{"index": p, "text": t, "finish_reason": "stop"} for p, t in enumerate(texts)]})


async def test_answers_that_each_hold_every_prompt_put_each_prompts_choices_together() -> None:
    """OpenAI's order for `prompt: [p0, p1]` with n = 2: p0's two choices (0, 1), then p1's (2, 3). Answers that
    each hold every prompt (a list sent whole to llama.cpp or vLLM) merge with answer j's choice for prompt p at
    p x n + j. (The gateway now sends each prompt of a list alone: the test below.)"""
    whole = orjson.loads(merged_answer([_doc("sky 0", "water 0"), _doc("sky 1", "water 1")], 2))
    assert [(c["index"], c["text"]) for c in whole["choices"]] == [
        (0, "sky 0"), (1, "sky 1"), (2, "water 0"), (3, "water 1")]
    assert (whole["usage"]["prompt_tokens"], whole["usage"]["completion_tokens"]) == (6, 4)  # same prompts: once
    streams = [UpstreamResponse(200, {}, _answer(
        b"data: null\n\n",  # how llama.cpp opens a stream of several prompts
        *(b"data: " + orjson.dumps({"choices": [{"index": p, "text": f"p{p}a{j}"}]}) + b"\n\n" for p in (1, 0)),
        b"data: [DONE]\n\n")) for j in range(2)]
    events = [orjson.loads(e[6:]) for e in (b"".join([c async for c in merged_stream(streams)])).split(b"\n\n")
              if e.startswith(b"data: {")]
    seen = {(c["index"], c["text"]) for e in events for c in e["choices"]}
    assert seen == {(0, "p0a0"), (1, "p0a1"), (2, "p1a0"), (3, "p1a1")}


@pytest.mark.parametrize("usage_alone", [False, True])
async def test_a_streamed_chat_of_two_choices_is_one_completion_with_one_head(usage_alone: bool) -> None:
    """Each engine names its own answer (`chatcmpl-A`, `chatcmpl-B`, its own `created` and fingerprint): the merged
    stream relayed each choice's chunks with its engine's id, two completions in one stream; and its usage chunk
    took its head only from a usage-only chunk, so with the usage on the finish chunk (llama-server's completions)
    it had no `id`, `object`, `created` or `model`. Now every chunk is the first answer's."""
    def answer(name: str, created: int) -> AsyncIterator[bytes]:
        head = {"id": f"chatcmpl-{name}", "object": "chat.completion.chunk", "created": created,
                "model": "smollm2-135m", "system_fingerprint": f"b{name}"}
        usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
        finish = {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        return _answer(*(b"data: " + orjson.dumps(e) + b"\n\n" for e in (
            {**head, "choices": [{"index": 0, "delta": {"content": name}, "finish_reason": None}]},
            *([finish, {**head, "choices": [], "usage": usage}] if usage_alone else [{**finish, "usage": usage}]))),
            b"data: [DONE]\n\n")

    merged = b"".join([c async for c in merged_stream([UpstreamResponse(200, {}, answer("A", 1764900000)),
                                                       UpstreamResponse(200, {}, answer("B", 1764900001))], 2)])
    events = [orjson.loads(e[6:]) for e in merged.split(b"\n\n") if e.startswith(b"data: {")]
    heads = {(e.get("id"), e.get("object"), e.get("created"), e.get("model"), e.get("system_fingerprint"))
             for e in events}
    assert len(heads) == 1 and None not in next(iter(heads)), heads
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 4
    assert sorted(c["index"] for e in events for c in e["choices"]) == [0, 0, 1, 1]


async def test_a_merged_stream_reads_its_answers_no_faster_than_its_client_reads() -> None:
    """The answers' events waited for the client in a queue without a bound: engines that send faster than the client
    reads (or without end) grew the gateway's memory with everything they sent (a direct stream's engine connection
    stops being read at the transport's high water). Now at most MAX_QUEUED events wait."""
    sent = [0, 0]

    async def endless(i: int) -> AsyncIterator[bytes]:
        while True:
            sent[i] += 1
            yield b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"content": "x" * 1000}}]}) + b"\n\n"
            await asyncio.sleep(0)

    merged = merged_stream([UpstreamResponse(200, {}, endless(i)) for i in range(2)], 2)
    try:
        await anext(merged)
        await asyncio.sleep(0.2)  # a client that reads no further
        assert sum(sent) <= MAX_QUEUED + 4, sent
        got = [await anext(merged) for _ in range(200)]  # reading on, the answers go on
        assert len(got) == 200 and sum(sent) > 200
    finally:
        await merged.aclose()


def test_the_usage_details_are_summed_as_the_counts_are() -> None:
    """Cached prompt tokens count once per prompt, as its prompt tokens do; reasoning tokens for every answer, as
    its completion tokens do (until 2026-12-04 the details were the first answer's alone: a call of 4 answers
    reported a quarter of its reasoning tokens)."""
    usages = {j: {"prompt_tokens": 10 + j // 2, "completion_tokens": 5,
                  "prompt_tokens_details": {"cached_tokens": 8 + j // 2},
                  "completion_tokens_details": {"reasoning_tokens": j + 1, "note": f"answer {j}"}} for j in range(4)}
    usage = summed_usage(usages, n=2)  # prompts 0 and 1, two answers each
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (21, 20, 41)
    assert usage["prompt_tokens_details"] == {"cached_tokens": 17}  # 8 + 9: each prompt once
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 10, "note": "answer 0"}  # 1 + 2 + 3 + 4
    assert "completion_tokens_details" not in summed_usage({0: {"prompt_tokens": 1, "completion_tokens": 1}})
    # a null is no count; the prompt's details from any of its answers when the counted one has none; nested summed
    odd = summed_usage({0: {"prompt_tokens": 5, "completion_tokens_details": {"reasoning_tokens": None,
                                                                              "audio": {"tokens": 1}}},
                        1: {"prompt_tokens": 4, "prompt_tokens_details": {"cached_tokens": 4},
                            "completion_tokens_details": {"reasoning_tokens": 7, "audio": {"tokens": 2}}}}, n=2)
    assert odd["prompt_tokens_details"] == {"cached_tokens": 4}
    assert odd["completion_tokens_details"] == {"reasoning_tokens": 7, "audio": {"tokens": 3}}


class ListAnswering(ScriptedEngine):
    """/v1/completions as llama-server answers it: one choice per prompt of a list, and the usage of one prompt
    (the first's words as its tokens, 5 completion tokens), whole or streamed. Records what it was sent. A chat
    gets the script's replies."""

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        if path.endswith("/chat/completions"):  # a chat: the script's replies
            async with super().open(path, body) as upstream:
                yield upstream
            return
        sent = orjson.loads(body)
        self.received.append(sent)
        prompts = sent["prompt"] if isinstance(sent["prompt"], list) else [sent["prompt"]]
        usage = {"prompt_tokens": len(prompts[0].split()), "completion_tokens": 5}
        texts = [f"answer to {p}" for p in prompts]
        if sent.get("stream"):
            events = [{"choices": [{"index": i, "text": t, "finish_reason": "stop"}]} for i, t in enumerate(texts)]
            events.append({"choices": [], "usage": usage})
            yield UpstreamResponse(200, {"content-type": "text/event-stream"}, _answer(
                *(b"data: " + orjson.dumps(e) + b"\n\n" for e in events), b"data: [DONE]\n\n"))
        else:
            yield UpstreamResponse(200, {"content-type": "application/json"}, _answer(orjson.dumps(
                {"object": "text_completion", "usage": usage,
                 "choices": [{"index": i, "text": t, "finish_reason": "stop"} for i, t in enumerate(texts)]})))


@pytest.mark.parametrize("stream", [False, True])
async def test_a_list_of_prompts_is_one_engine_request_per_prompt_each_counted(tmp_path: Path, stream: bool) -> None:
    """llama-server answers a list of prompts with the usage of one prompt, so a list sent on whole was charged
    as one prompt (two prompts of 4 words, 5 tokens each: 4 prompt tokens and 5 completion tokens). Each prompt is
    now an engine request of its own (the fan-out of `n`), in OpenAI's order (prompt p's n choices at p x n),
    the usage every prompt and every answer; a list past MAX_FANNED_REQUESTS answers is the client's 400."""
    engine = ListAnswering([])
    gw = await scripted_gateway(tmp_path, engine)
    await gw.guard.start()  # the audit log
    oai = openai_client(build_app(gw))
    prompts = ["one two three four", "five six seven eight nine"]
    try:
        if stream:
            chunks = [c async for c in await oai.completions.create(
                model="smollm2-135m", prompt=prompts, n=2, max_tokens=5, stream=True,
                stream_options={"include_usage": True})]
            got = sorted((c.index, c.text) for chunk in chunks for c in chunk.choices)
            usage = next(c.usage for c in chunks if c.usage is not None)
        else:
            reply = await oai.completions.create(model="smollm2-135m", prompt=prompts, n=2, max_tokens=5)
            got, usage = [(c.index, c.text) for c in reply.choices], reply.usage
        assert got == [(0, "answer to one two three four"), (1, "answer to one two three four"),
                       (2, "answer to five six seven eight nine"), (3, "answer to five six seven eight nine")]
        assert [b["prompt"] for b in engine.received] == [prompts[0], prompts[0], prompts[1], prompts[1]]
        assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (4 + 5, 4 * 5)
        rows = await audit_rows(gw)
        assert (rows[-1]["prompt_tokens"], rows[-1]["completion_tokens"]) == (9, 20)
        engine.received.clear()
        with pytest.raises(openai.BadRequestError) as info:
            await oai.completions.create(model="smollm2-135m", prompt=[f"p{i}" for i in range(17)], n=2, max_tokens=5)
        assert info.value.body["param"] == "prompt" and "34 answers" in info.value.body["message"]  # type: ignore[index]
        assert engine.received == []
        # a chat's `prompt` is not a completion's list (review finding: it was fanned out, one choice per entry)
        engine.replies = [{"content": "Red."}]
        chat = await oai.chat.completions.create(model="smollm2-135m", messages=ASK, stream=False,
                                                 extra_body={"prompt": ["a", "b"]})
        assert len(chat.choices) == 1 and len(engine.received) == 1
    finally:
        await oai.close()
        await gw.guard.stop()


class Probing(ListAnswering):
    """ListAnswering that reads the gateway's in-flight ledger as each engine request opens."""

    def __init__(self) -> None:
        super().__init__([])
        self.seen: list[int] = []
        self.probe: Callable[[], int] = lambda: 0

    def open(self, path: str, body: bytes) -> AbstractAsyncContextManager[UpstreamResponse]:
        self.seen.append(self.probe())
        return super().open(path, body)


async def test_a_fanned_out_call_is_each_of_its_engine_requests_in_the_in_flight_ledger(tmp_path: Path) -> None:
    """A list of two prompts times n = 2 is four engine requests at the chosen endpoint: the ledger the next
    decisions read holds four while they run (it held one until 2026-12-04, however many the call became), and
    none once the call is over."""
    engine = Probing()
    gw = await scripted_gateway(tmp_path, engine)
    engine.probe = lambda: sum(gw.store.inflight(e.id) for e in gw.spec.endpoints)
    oai = openai_client(build_app(gw))
    try:
        reply = await oai.completions.create(model="smollm2-135m", prompt=["one two", "three four"], n=2, max_tokens=5)
        assert len(reply.choices) == 4 and engine.seen == [4, 4, 4, 4]
        assert all(gw.store.inflight(e.id) == 0 for e in gw.spec.endpoints)
        engine.seen.clear()
        await oai.completions.create(model="smollm2-135m", prompt="one two", max_tokens=5)
        assert engine.seen == [1]
    finally:
        await oai.close()


# --- one of the n answers cut short ----------------------------------------------------------------------


class CutChoice(ScriptedEngine):
    """Every request with an even seed (choice 1 of `seed=7, n=2`) is answered cut short, its connection closed
    cleanly: streamed, its events stop before the one with the finish_reason (no finish_reason, no [DONE]);
    whole, the JSON stops halfway (`cut`), or it is whole JSON without a choice (`empty`). The other streams end
    with `ending` in place of their `data: [DONE]\n\n` (b"": a finish_reason only, as TGI before 2.2)."""

    whole = "cut"
    ending = b"data: [DONE]\n\n"

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        cut = orjson.loads(body).get("seed", 1) % 2 == 0
        async with super().open(path, body) as up:
            if not cut:
                streamed = up.headers["content-type"] == "text/event-stream"
                yield UpstreamResponse(up.status, up.headers, _ending(up.body, self.ending)) if streamed else up
            elif up.headers["content-type"] == "text/event-stream":
                yield UpstreamResponse(up.status, up.headers, _before_finish(up.body))
            elif self.whole == "cut":
                answer = b"".join([c async for c in up.body])
                yield UpstreamResponse(up.status, up.headers, _answer(answer[: len(answer) // 2]))
            else:
                yield UpstreamResponse(up.status, up.headers, _answer(b'{"object":"chat.completion","choices":[]}'))


async def _before_finish(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for chunk in body:
        if b'"finish_reason":"' in chunk:
            return
        yield chunk


async def _ending(body: AsyncIterator[bytes], ending: bytes) -> AsyncIterator[bytes]:
    async for chunk in body:
        yield chunk.replace(b"data: [DONE]\n\n", ending)


Cutting = tuple[httpx.AsyncClient, openai.AsyncOpenAI, CutChoice, Gateway]


@pytest.fixture
async def cutting(tmp_path: Path) -> AsyncIterator[Cutting]:
    engine = CutChoice([{"content": f"Colour {i} is a fine one."} for i in range(30)])
    gw = await scripted_gateway(tmp_path, engine)
    await gw.guard.start()  # the audit log
    app = build_app(gw)
    oai = openai_client(app)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as raw:
            yield raw, oai, engine, gw
    finally:
        await oai.close()
        await gw.guard.stop()


@pytest.mark.parametrize("ending", [b"data: [DONE]\n\n", b"", b"data: [DONE]"])
async def test_a_cut_choice_ends_the_stream_with_the_error_a_cut_stream_gets(cutting: Cutting, ending: bytes) -> None:
    """Choice 1's stream closes before its finish_reason and [DONE]: the merged stream ended with its own [DONE]
    and the client had a short choice 1 that looked whole. Now it is a cut stream's end (relay.py): the
    `stream_interrupted` error event, no [DONE], the attempt booked broken, the request audited interrupted;
    what the client already had of both choices came first. Choice 0 ends whole by relay.py's rule too when
    its [DONE] is missing (its finish_reason says it ended) or lacks its blank line: only choice 1 is named."""
    raw, _, engine, gw = cutting
    engine.ending = ending
    r = await raw.post("/v1/chat/completions", json={"model": "smollm2-135m", "messages": ASK, "n": 2, "seed": 7,
                                                     "stream": True})
    assert r.status_code == 200
    events = [orjson.loads(e[6:]) for e in r.text.split("\n\n") if e.startswith("data: {")]
    assert "data: [DONE]" not in r.text, r.text[-300:]
    error = events[-1]["error"]
    assert error["code"] == "stream_interrupted" and error["type"] == "upstream_error"
    assert error["message"].startswith("the answer was interrupted: choice 1: the engine's stream ended before "
                                       "the answer did (no finish_reason, no [DONE])"), error
    text: dict[int, str] = {0: "", 1: ""}
    for e in events[:-1]:
        for c in e["choices"]:
            text[c["index"]] += c["delta"].get("content") or ""
    assert text == {0: "Colour 0 is a fine one.", 1: "Colour 1 is a fine one."}  # every delta sent before the cut
    record = gw.decisions.get(r.headers["x-aigrid-decision"])
    assert record is not None and record.status == "interrupted"
    assert any("stream broke: choice 1: the engine's stream ended" in str(a.get("error")) for a in record.attempts)
    rows = [row for row in await audit_rows(gw) if row["request_id"] == r.headers["x-aigrid-decision"]]
    assert [row["outcome"] for row in rows] == ["interrupted"]


async def test_a_cut_choice_raises_in_the_openai_sdk(cutting: Cutting) -> None:
    _, oai, _, _ = cutting
    stream = await oai.chat.completions.create(model="smollm2-135m", messages=ASK, n=2, seed=7, stream=True)
    with pytest.raises(openai.APIError) as info:
        async for _ in stream:
            pass
    assert info.value.body["code"] == "stream_interrupted"  # type: ignore[index]


@pytest.mark.parametrize("whole", ["cut", "empty"])
async def test_a_cut_or_empty_whole_answer_is_an_error_not_fewer_choices(cutting: Cutting, whole: str) -> None:
    """Non-streamed, choice 1's answer is half its JSON, or JSON without a choice: every candidate is asked (each
    n times), then the client gets the 502 that names the choice and why, never one choice where it asked two
    (`empty` was a 200 with one choice; `cut` a 502 with "unexpected JSONDecodeError", logged as a bug)."""
    raw, _, engine, gw = cutting
    engine.whole = whole
    r = await raw.post("/v1/chat/completions", json={"model": "smollm2-135m", "messages": ASK, "n": 2, "seed": 7,
                                                     "stream": False})
    assert r.status_code == 502, r.text
    error = r.json()["error"]
    assert error["code"] == "upstream_failed"
    why = "is cut short (not whole JSON)" if whole == "cut" else "has no choice"
    assert f"choice 1: the engine's answer {why}" in error["message"] and "unexpected" not in error["message"]
    record = gw.decisions.get(r.headers["x-aigrid-decision"])
    assert record is not None and record.status == "failed" and all(not a["ok"] for a in record.attempts)
