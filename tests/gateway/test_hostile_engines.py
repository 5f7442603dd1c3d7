"""Broken and hostile engines (a FAKE engine on a real socket, hostile_engine.py, read by the gateway's real adapter):
whatever an engine sends, the client gets an answer or an error in its API's envelope (never a 500), the quota is
settled and exactly one audit record written, the failure is logged and counted against the engine, and the
gateway reads no more of it than an answer can hold."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from aigrid.errors import EngineStreamBroken
from aigrid.gateway.app import Gateway
from tests.gateway import hostile_engine as H
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.hostile_grid import CALCULATOR, DOORS, ENDS, SANE, Grid, grid, sane
from tests.gateway.metered_gateway import balance, inflight, the_one_record


@pytest.fixture
async def html_grid(tmp_path: Path) -> AsyncIterator[Grid]:
    async for g in grid(tmp_path, lambda p, r: H.whole(b"<html><body>502 Bad Gateway</body></html>", 200, "text/html")):
        yield g


@pytest.mark.parametrize("door", list(DOORS))
@pytest.mark.parametrize("stream", [False, True])
async def test_a_page_instead_of_an_answer_is_the_engines_failure_and_the_next_candidate_answers(
        html_grid: Grid, door: str, stream: bool, caplog: pytest.LogCaptureFixture) -> None:
    """An engine (or the proxy in front of it) that answers 200 with an HTML page: passed on as the answer until now
    (chat and completions: the page with a 200, audited `ok`; Messages: a 500; Responses: a 502 charged the
    reservation), the engine never counted as failing. Now a failure before the first byte, the next candidate's."""
    caplog.set_level(logging.WARNING)
    r = await html_grid.post(door, stream)
    assert r.status_code == 200, r.text
    assert b"<html>" not in r.content and (b"Hi" in r.content if stream else b"Hello" in r.content)
    row = await the_one_record(html_grid.gw)
    assert row["outcome"] == "ok" and row["decision"]["chosen"]["endpoint"] != "nrt-smollm2"
    assert html_grid.failures("nrt-smollm2") == 1 and html_grid.bad.requests == 1
    assert "content-type text/html" in caplog.text
    assert inflight(html_grid.gw) == 0


@pytest.mark.parametrize("script", [
    pytest.param(lambda p, r: H.whole(orjson.dumps(SANE) if not r.get("stream") else b"data: [DONE]\n\n",
                                      extra=["content-encoding: gzip"]), id="gzip"),
    pytest.param(lambda p, r: H.whole(orjson.dumps(SANE)), id="json-to-a-stream"),
])
async def test_a_compressed_answer_or_a_whole_one_to_a_stream_is_not_an_answer(tmp_path: Path, script: Any) -> None:
    async for g in grid(tmp_path, script, good=script):
        r = await g.post("chat", True)
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_failed"
        assert (await the_one_record(g.gw))["outcome"] == "error:upstream_failed"
        assert await balance(g.gw) == 0 and g.failures("nrt-smollm2") == 1


@pytest.mark.parametrize("body", [b'{"choices": [', b'{"id": "x", "object": "chat.completion"}',
                                  b'{"id": "x", "choices": null}', b'{"id": "x", "choices": [1]}',
                                  b'{"choices": [{"message": {"role": "assistant", "tool_calls": "zz"}}]}'])
@pytest.mark.parametrize("door", ["chat", "messages", "responses"])
async def test_a_whole_answer_that_is_not_a_completion_is_a_502_counted_against_the_engine(
        tmp_path: Path, body: bytes, door: str, caplog: pytest.LogCaptureFixture) -> None:
    """JSON cut short (a lying Content-Length), or without choices: a 200 `ok` on chat (Messages: a 500, or an empty
    message), the engine never counted."""
    caplog.set_level(logging.WARNING)
    async for g in grid(tmp_path, lambda p, r: H.whole(body)):
        r = await g.post(door, False)
        assert r.status_code in (500, 502) and b"not a completion" in r.content
        if door != "messages":
            assert r.json()["error"]["code"] == "upstream_failed"
        else:
            assert r.json()["type"] == "error"  # Anthropic's envelope
        assert (await the_one_record(g.gw))["outcome"] == "error:upstream_failed"
        assert g.failures("nrt-smollm2") == 1 and inflight(g.gw) == 0
        assert "with what is not a completion" in caplog.text


BAD_USAGE = [{"prompt_tokens": -5, "completion_tokens": -5, "total_tokens": -10},
             {"prompt_tokens": 1e300, "completion_tokens": 1e300},
             {"prompt_tokens": "abc", "completion_tokens": "x"},
             {"prompt_tokens": 2**70, "completion_tokens": 1},
             {"prompt_tokens": 500_000, "completion_tokens": 1}]


@pytest.mark.parametrize("usage", BAD_USAGE, ids=["negative", "1e300", "strings", "past-64-bits", "past-context"])
@pytest.mark.parametrize("door", list(DOORS))
@pytest.mark.parametrize("stream", [False, True])
async def test_token_counts_that_cannot_be_charged_are_taken_as_unknown(
        tmp_path: Path, usage: dict, door: str, stream: bool, caplog: pytest.LogCaptureFixture) -> None:
    """Charged as they came, -5 refunded the tenant (and the token counter raised: a 500, or a stream cut with a
    traceback), 1e300 locked it out for good, a string failed the settlement and the audit record (none written);
    the Messages and Responses doors failed on each. Now the answer's count is unknown: it is charged the
    reservation, as any answer whose engine sent no count, and the client never sees the engine's numbers."""
    caplog.set_level(logging.WARNING)

    def script(path: str, req: dict) -> H.Script:  # json, not orjson: it writes integers past 64 bits
        if req.get("stream"):
            last = json.dumps(H.token("", usage=usage) | {"choices": []}).encode()
            return H.stream(*H.sse(H.token("Hi"), H.token("", "stop"), last))
        return H.whole(json.dumps(H.answer_of(usage=usage)).encode())

    async for g in grid(tmp_path, script, good=script):
        r = await g.post(door, stream)
        assert r.status_code == 200, r.text
        assert b"1e+300" not in r.content and b'"abc"' not in r.content and b"-5" not in r.content
        row = await the_one_record(g.gw)
        assert row["outcome"] == "ok"
        charged = await balance(g.gw)
        assert 0 < charged < 100 and row["extra"]["charged_tokens"] == charged  # the reservation
        assert "cannot be charged" in caplog.text and inflight(g.gw) == 0


async def test_a_whole_answer_past_what_its_tokens_can_hold_is_not_read_to_its_end(tmp_path: Path) -> None:
    """An engine that does not stop sending: its whole answer was read into memory to its end (bounded only by the
    answer's deadline, up to 600 s). Now at most BYTES_PER_TOKEN x its context (at least 1 MiB), then a 502."""
    pad = b"x" * 65536
    script = [H.head(200, chunked=True), H.chunk(b'{"choices": [], "pad": "'), *([H.chunk(pad)] * 128), H.END]
    async for g in grid(tmp_path, lambda p, r: script, good=lambda p, r: script, context=64):
        r = await g.post("chat", False)
        assert r.status_code == 502 and "larger than 1048576 bytes" in r.json()["error"]["message"]
        assert (await the_one_record(g.gw))["outcome"] == "error:upstream_failed"
        assert g.failures("nrt-smollm2") == 1 and inflight(g.gw) == 0


def endless(path: str, req: dict) -> H.Script:
    """A whole answer of 8 MiB: a completion with a pad that does not stop (a stream's head for a stream)."""
    if req.get("stream"):
        return H.stream(*H.sse(H.token("Hi"), H.token("", "stop")))
    doc = orjson.dumps(H.answer_of() | {"object": "text_completion"})
    return [H.head(200, chunked=True), H.chunk(doc[:-1] + b', "pad": "'), *([H.chunk(b"x" * 65536)] * 128),
            H.chunk(b'"}'), H.END]


@pytest.mark.parametrize(("door", "extra", "kind"), [
    pytest.param("chat", {"n": 3}, "vllm", id="n-choices"),
    pytest.param("completions", {"prompt": ["Say hello", "Say bye"]}, "vllm", id="list-of-prompts"),
    pytest.param("completions", {"echo": True}, "llamacpp", id="legacy-echo"),
    pytest.param("completions", {"echo": True, "n": 2}, "llamacpp", id="legacy-echo-n"),
])
async def test_answers_read_whole_by_a_wrapper_are_held_within_a_whole_answers_bound(
        tmp_path: Path, door: str, extra: dict, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    """`n` answers, a list of prompts (engines/fan_out.py) and a legacy completion's answer (legacy_completions.py)
    are read whole by the engine's wrapper, which read each to its end: an engine that does not stop grew the
    gateway's memory without bound, n times, and its answer was passed on, `ok`. Now what the wrapper holds is
    within the bound the proxy reads one whole answer within (Proxy.most_bytes, for all the answers together): past it
    the engine's failure, read no further, the next candidate answers."""
    caplog.set_level(logging.WARNING)
    async for g in grid(tmp_path, endless, good=sane, context=64, kind=kind):
        r = await g.post(door, False, **extra)
        assert r.status_code == 200, r.text
        assert b"xxxx" not in r.content and len(r.content) < 100_000
        row = await the_one_record(g.gw)
        assert row["outcome"] == "ok" and row["decision"]["chosen"]["endpoint"] != "nrt-smollm2"
        assert g.failures("nrt-smollm2") == 1 and inflight(g.gw) == 0
        assert "bytes, more than its tokens can be" in caplog.text


async def test_a_llama_cpp_answer_read_whole_for_its_stop_word_is_read_within_the_bound(tmp_path: Path) -> None:
    """A llama.cpp endpoint's whole answer to a request with `stop` is read whole by StopWordEngine (to name the stop
    string, engines/stop_words.py), built once per endpoint, so no attempt's bound reached it: an engine that does not
    stop was read into memory to its end before the proxy's own bound could count it. Now it reads within its
    model's bound (BYTES_PER_TOKEN x the context, at least 1 MiB): past it the engine's failure, read no further."""
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stop": ["."]})
    async with H.adapter(tmp_path, endless("/v1/chat/completions", {}), kind="llamacpp", context=64) as engine:
        with pytest.raises(EngineStreamBroken, match="larger than 1048576 bytes"):
            async with engine.open("/v1/chat/completions", body) as answer:
                assert answer.status == 200
                await anext(answer.body)


def loop_engine(endless_turn: int) -> Callable[[str, dict], H.Script]:
    """A tool loop's engine (constrained: JSON content) whose model turn `endless_turn` (0: the first) sends 8 MiB of
    answer text; the turn before it asks for the calculator."""
    turns = [0]

    def script(path: str, req: dict) -> H.Script:
        turn, turns[0] = turns[0], turns[0] + 1
        if turn < endless_turn:
            return H.stream(*H.sse(H.token('{"tool": "calculator", "arguments": {"expression": "6*7"}}'),
                                   H.token("", "stop")))
        pad = H.chunk(b"data: " + orjson.dumps(H.token("x" * 65536)) + b"\n\n")
        return H.stream(H.chunk(b"data: " + orjson.dumps(H.token('{"answer": "')) + b"\n\n"), *([pad] * 128),
                        *H.sse(H.token('"}', "stop")))

    return script


@pytest.mark.parametrize("stream", [False, True])
async def test_a_tool_loops_model_turn_is_read_within_a_whole_answers_bound(
        tmp_path: Path, stream: bool, caplog: pytest.LogCaptureFixture) -> None:
    """The tool loop reads each model turn's answer to its end, holding its text and calls as they come: an engine
    that does not stop grew the gateway's memory without bound (a 32 MiB turn: a peak of 450 MiB allocated), and its
    answer was passed on. Now a turn is read within the bound of a whole answer (Proxy.most_bytes): past it the
    engine's failure, read no further: whole, in the first turn (no tool ran), the next candidate answers; streamed,
    the answer's text went out as it came (the stream had started), so it ends with the in-stream error."""
    caplog.set_level(logging.WARNING)
    async for g in grid(tmp_path, loop_engine(0), good=sane, context=64):
        r = await g.post("chat", stream, tools=CALCULATOR)
        assert r.status_code == 200, r.text
        row = await the_one_record(g.gw)
        if stream:
            assert b"stream_interrupted" in r.content and len(r.content) < 3 << 20
            assert row["outcome"] == "interrupted"
        else:
            assert b"xxxx" not in r.content and b"Hi" in r.content and len(r.content) < 100_000
            assert row["outcome"] == "ok" and row["decision"]["chosen"]["endpoint"] != "nrt-smollm2"
        assert g.failures("nrt-smollm2") == 1 and inflight(g.gw) == 0
        assert "larger than 1048576 bytes" in caplog.text


@pytest.mark.parametrize("stream", [False, True])
async def test_a_tool_loops_later_turn_past_the_bound_fails_without_running_the_loop_again(
        tmp_path: Path, stream: bool) -> None:
    """After the calculator ran, a turn past the bound is the engine's failure as any failure after a tool acted:
    whole, the 502 that says it is not tried again (no other engine runs the loop and its tools again); streamed, the
    answer's in-stream error. Before, the turn was read to its end and passed on."""
    async for g in grid(tmp_path, loop_engine(1), good=sane, context=64):
        r = await g.post("chat", stream, tools=CALCULATOR)
        if stream:  # the answer's text went out as it came: no more of it than the bound
            assert r.status_code == 200 and b"stream_interrupted" in r.content and b"larger than" in r.content
            assert len(r.content) < 3 << 20
        else:
            assert b"xxxx" not in r.content and len(r.content) < 100_000
            assert r.status_code == 502 and r.headers["x-should-retry"] == "false", r.text
            assert "larger than 1048576 bytes" in r.json()["error"]["message"]
        assert g.failures("nrt-smollm2") == 1 and g.good.requests == 0 and inflight(g.gw) == 0


@pytest.mark.parametrize("chunk", [{"choices": "abc"}, {"choices": [1]}, {"choices": [{"index": 0, "delta": "zz"}]},
                                   {"choices": [{"index": 0, "delta": {"tool_calls": "zz"}}]},
                                   {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": "a", "id": "c"}]}}]},
                                   {"error": {"message": "the engine ran out of memory", "code": 500}}],
                         ids=["choices-str", "choices-ints", "delta-str", "calls-str", "index-str", "error-event"])
@pytest.mark.parametrize("door", list(ENDS))
async def test_a_chunk_a_front_door_cannot_translate_ends_its_answer_and_counts_against_the_engine(
        tmp_path: Path, chunk: dict, door: str, caplog: pytest.LogCaptureFixture) -> None:
    """The Messages and Responses doors translate the engine's chat stream: a chunk of another shape raised there
    (the stream cut with a traceback, audited `error:internal`), and the engine's own error event ended the answer
    as if the client had gone (`client_closed`, the engine never counted). Now the door's own in-stream error, the
    record `interrupted`, the engine charged a failure."""
    caplog.set_level(logging.WARNING)
    script = H.stream(*H.sse(H.token("Hi"), chunk, H.token("", "stop")))
    async for g in grid(tmp_path, lambda p, r: script, good=lambda p, r: script):
        r = await g.post(door, True)
        assert r.status_code == 200 and ENDS[door] in r.content
        row = await the_one_record(g.gw)
        assert row["outcome"] == "interrupted"
        assert g.failures("nrt-smollm2") == 1 and inflight(g.gw) == 0
        assert await balance(g.gw) == row["extra"]["charged_tokens"] > 0  # answered, its count unknown: the reservation
        assert "stream broke" in caplog.text


def metrics(body: bytes, *, pause_s: float = 0.0, pieces: int = 1) -> Callable[[], H.Script]:
    """A /metrics answer of `pieces` x `body`, chunked, `pause_s` between them."""
    return lambda: [H.head(200, "text/plain", chunked=True),
                    *[step for _ in range(pieces) for step in (H.chunk(body), pause_s)], H.END]


@pytest.mark.parametrize("answer", [
    pytest.param(metrics(b"# waiting\n", pause_s=0.5, pieces=60), id="never-ends"),  # 30 s, uncut
    pytest.param(metrics(b"# " + b"x" * (1 << 20) + b"\n", pieces=17), id="17-MiB"),
])
async def test_metrics_that_never_end_hold_no_scrape_and_no_memory(tmp_path: Path, answer: Any) -> None:
    """The scraper read an engine's /metrics whole, each read within 2 s but with no bound on the total: one that
    kept trickling held every endpoint's scrape (they are awaited together) for as long as it went on, and one of 200
    MB took the gateway past 20 GB (the OOM killer). Now a probe's answer is read within the probe timeout in all
    and up to METRICS_MAX_BYTES (16 MiB): that engine is unhealthy, saying why, the others scraped."""
    async for g in grid(tmp_path, sane):
        g.bad.gets["/metrics"] = answer
        started = asyncio.get_running_loop().time()
        await g.gw.scraper.scrape_once()
        # within the probe timeout (2 s) in all, with room for a loaded machine; uncut, the trickle lasts 30 s
        assert asyncio.get_running_loop().time() - started < 10.0
        state = g.gw.store.state("nrt-smollm2")
        assert not state.healthy and ("within" in state.reason or "more than" in state.reason)
        assert all(g.gw.store.state(e).healthy for e in ("fra-smollm2", "iad-smollm2", "gru-smollm2"))


@pytest.mark.parametrize("text", [
    b"vllm:num_requests_running -1000\nvllm:num_requests_waiting -1000\nvllm:kv_cache_usage_perc -5\n",
    b'vllm:num_requests_running{a="1"} 1e308\nvllm:num_requests_running{a="2"} 1e308\n',
    b"vllm:num_requests_running NaN\nvllm:num_requests_waiting +Inf\n",
], ids=["negative", "overflow", "nan"])
async def test_metrics_that_lie_never_fail_a_scrape_nor_read_below_zero(tmp_path: Path, text: bytes) -> None:
    """Negative counts were stored as they came (running -1000, KV use -5: better than idle to the least-loaded and
    KV-aware policies, without bound); two values of 1e308 summed to infinity and the scrape raised OverflowError,
    which at start stopped the gateway. Now such values are not read."""
    async for g in grid(tmp_path, sane):
        g.bad.gets["/metrics"] = lambda: H.whole(text, content_type="text/plain")
        await g.gw.scraper.scrape_once()
        state = g.gw.store.state("nrt-smollm2")
        assert state.healthy and state.running == 0 and state.waiting == 0
        assert state.kv_usage is None or state.kv_usage >= 0


async def test_an_unexpected_error_scraping_one_engine_fails_neither_the_others_nor_the_start(
        gateway: Gateway, fakes: dict[str, FakeEngine], caplog: pytest.LogCaptureFixture) -> None:
    """An error the adapter does not map (a bug; OverflowError was one) raised out of scrape_once: the tick failed,
    and at start (Periodic.start runs the first tick) the gateway did not start. Now logged, that engine unhealthy."""
    async def broken() -> Any:
        raise OverflowError("cannot convert float infinity to integer")

    fakes["nrt-smollm2"].stats = broken  # type: ignore[method-assign]
    await gateway.scraper.scrape_once()
    assert not gateway.store.state("nrt-smollm2").healthy and gateway.store.state("fra-smollm2").healthy
    assert "unexpected error reading its health or metrics" in caplog.text


@pytest.mark.parametrize("usage", BAD_USAGE[:4], ids=["negative", "1e300", "strings", "past-64-bits"])
@pytest.mark.parametrize("stream", [False, True])
async def test_counts_that_cannot_be_charged_in_one_of_n_answers_leave_the_merged_count_unknown(
        tmp_path: Path, usage: dict, stream: bool, caplog: pytest.LogCaptureFixture) -> None:
    """`n` answers are summed (engines/fan_out.py): a string or a count past 64 bits in one raised there (a 502 after
    every candidate, or a stream cut with a traceback, `error:internal`). Now the merged answer has no usage."""
    caplog.set_level(logging.WARNING)

    def script(path: str, req: dict) -> H.Script:
        if req.get("stream"):
            last = json.dumps(H.token("", usage=usage) | {"choices": []}).encode()
            return H.stream(*H.sse(H.token("Hi"), H.token("", "stop"), last))
        return H.whole(json.dumps(H.answer_of(usage=usage)).encode())

    async for g in grid(tmp_path, script, good=script):
        r = await g.post("chat", stream, n=2)
        assert r.status_code == 200 and (b"[DONE]" in r.content if stream else len(r.json()["choices"]) == 2)
        row = await the_one_record(g.gw)
        assert row["outcome"] == "ok" and await balance(g.gw) == row["extra"]["charged_tokens"] > 0
        assert "count is unknown" in caplog.text and g.failures("nrt-smollm2") == 0


@pytest.mark.parametrize("door", list(ENDS))
async def test_what_an_engine_sends_after_its_done_is_not_translated(tmp_path: Path, door: str) -> None:
    """A chat client stops at [DONE]; the Messages and Responses doors read on and put what came after it (a second
    [DONE], more text) into the answer. Now the answer ends at [DONE], read whole and audited `ok`."""
    late = H.chunk(b"data: " + orjson.dumps(H.token(" and then some")) + b"\n\n")
    script = H.stream(*H.sse(H.token("Hi"), H.token("", "stop"))[:-1], late, H.chunk(b"data: [DONE]\n\n"), H.END)
    async for g in grid(tmp_path, lambda p, r: script, good=lambda p, r: script):
        r = await g.post(door, True)
        assert r.status_code == 200 and b"Hi" in r.content and b"and then some" not in r.content
        assert (await the_one_record(g.gw))["outcome"] == "ok" and inflight(g.gw) == 0


@pytest.mark.parametrize("door", ["chat", "messages"])
async def test_a_connection_that_fails_after_the_answer_ended_leaves_the_answer_whole(tmp_path: Path, door: str) -> None:
    """An engine (or a proxy before it) that drops the connection after its [DONE], before the chunked body's end: the
    client had the whole answer, but it was booked as a stream broken mid-way (a failure on the engine's circuit)
    and audited `client_closed`. Now `ok`, logged, the engine not charged a failure."""
    script = H.stream(*H.sse(H.token("Hi"), H.token("", "stop"))[:-1], H.CLOSE)
    async for g in grid(tmp_path, lambda p, r: script, good=lambda p, r: script):
        r = await g.post(door, True)
        assert r.status_code == 200 and b"Hi" in r.content and b"error" not in r.content
        assert (await the_one_record(g.gw))["outcome"] == "ok"
        assert g.failures("nrt-smollm2") == 0 and inflight(g.gw) == 0


async def test_a_response_head_that_never_ends_is_cut_at_one_mib(tmp_path: Path) -> None:
    """A header line that keeps growing: httptools keeps it whole until its line ends, so the gateway buffered it
    until the first-byte deadline (at least 5 s, at whatever rate the engine sent). Now the head is at most
    MAX_HEAD_BYTES (1 MiB): a protocol error at once, the next candidate tried."""
    piece = b"a" * 65536
    script = [b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-pad: ", *([piece] * 1024), 30.0]
    async for g in grid(tmp_path, lambda p, r: script, good=lambda p, r: script):
        started = asyncio.get_running_loop().time()
        r = await g.post("chat", True)
        assert r.status_code == 502 and "the response head is larger than 1048576 bytes" in r.json()["error"]["message"]
        assert asyncio.get_running_loop().time() - started < 3.0
        assert (await the_one_record(g.gw))["outcome"] == "error:upstream_failed" and inflight(g.gw) == 0


@pytest.mark.parametrize("chunk", [{"choices": "abc"}, {"choices": [1]}, {"choices": [{"index": 0, "delta": {"content": 42}}]}],
                         ids=["choices-str", "choices-ints", "content-number"])
async def test_a_continuation_that_sends_a_chunk_of_another_shape_is_relayed_not_a_traceback(
        tmp_path: Path, chunk: dict) -> None:
    """Found by a soak of hostile answers: after an engine broke mid-stream, its continuation's chunks are relabelled
    (continuation.Rewriter), which assumed chat chunks: `choices: "abc"` raised there, the client's stream cut
    with a traceback and audited `error:internal`. Now such a chunk is passed on as the chat route passes any."""
    broken = H.stream(H.chunk(b"data: " + orjson.dumps(H.token("Hi")) + b"\n\n"), H.CLOSE)
    spare = H.stream(*H.sse(chunk, H.token(" there"), H.token("", "stop")))
    async for g in grid(tmp_path, lambda p, r: broken, good=lambda p, r: spare):
        r = await g.post("chat", True)
        assert r.status_code == 200 and b"[DONE]" in r.content and b" there" in r.content
        row = await the_one_record(g.gw)
        assert row["outcome"] == "ok" and g.good.requests == 1  # continued on a spare
        assert g.failures("nrt-smollm2") == 1 and inflight(g.gw) == 0


SOAK = [  # one hostile answer of each kind, in turn (request dict -> script)
    lambda r: H.whole(b"<html>x</html>", 200, "text/html"),
    lambda r: H.stream(*H.sse(b'{"choices": [', H.token("", "stop"))) if r.get("stream") else H.whole(b'{"choices": ['),
    lambda r: H.stream(*H.sse(H.token("Hi"), H.token("", "stop"), {"choices": [], "usage": {"prompt_tokens": -5}}))
    if r.get("stream") else H.whole(orjson.dumps(H.answer_of(usage={"prompt_tokens": "abc"}))),
    lambda r: H.stream(*H.sse(H.token("Hi"), {"error": {"message": "boom"}}, done=False)) if r.get("stream")
    else [H.head(200, length=1000) + b'{"choices"', H.CLOSE],
    lambda r: H.stream(H.chunk(b"data: " + orjson.dumps(H.token("Hi")) + b"\n\n"), H.chunk(b'data: {"ch'), H.CLOSE)
    if r.get("stream") else H.whole(b'{"choices": [1]}'),
    lambda r: H.stream(*H.sse({"choices": "abc"}, H.token("", "stop"))) if r.get("stream") else H.whole(b"{}"),
    lambda r: sane("", r),
]


async def soak(requests: int) -> None:
    """Hostile answers of every kind in turn through one gateway, to chat, Messages and Responses, whole and streamed:
    the statuses, and the memory tracemalloc traces at eight points (gc'd)."""
    import gc
    import tempfile
    import tracemalloc

    logging.disable(logging.CRITICAL)
    turn = iter(range(1 << 62))
    async for g in grid(Path(tempfile.mkdtemp()), lambda p, r: SOAK[next(turn) % len(SOAK)](r),
                        good=lambda p, r: SOAK[next(turn) % len(SOAK)](r), requests_per_min=1 << 30):
        statuses: dict[int, int] = {}
        marks: dict[int, float] = {}
        tracemalloc.start()
        for i in range(requests):
            r = await g.post(["chat", "messages", "responses"][i % 3], bool(i % 2))
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            for live in g.gw.store._live.values():
                live.breaker.record_success()  # every endpoint stays in play
            if (i + 1) % max(1, requests // 8) == 0:
                gc.collect()
                marks[i + 1] = round(tracemalloc.get_traced_memory()[0] / 1e6, 1)
        print(f"{requests} requests: statuses {statuses}, in flight after: {inflight(g.gw)}")
        print(f"traced MB after n requests: {marks}")


if __name__ == "__main__":  # .venv/bin/python -m tests.gateway.test_hostile_engines 12000
    import sys

    asyncio.run(soak(int(sys.argv[1]) if len(sys.argv) > 1 else 3000))


@pytest.mark.parametrize("status,body,ctype", [(400, b'{"error": {"message": "bad thing"}}', "application/json"),
                                               (429, b'{"error": {"message": "slow down"}}', "application/json"),
                                               (404, b"<html>404 Not Found</html>", "text/html")])
@pytest.mark.parametrize("door", ["chat", "messages"])
@pytest.mark.parametrize("stream", [False, True])
async def test_an_engines_refusal_is_passed_on_and_charged_nothing(
        tmp_path: Path, status: int, body: bytes, ctype: str, door: str, stream: bool) -> None:
    """An engine's 4xx (it refused: nothing generated) was charged the whole reservation, as an answer whose count is
    unknown: a hosted engine's 429 cost the tenant its max_tokens and its prompt. Now nothing is charged."""
    async for g in grid(tmp_path, lambda p, r: H.whole(body, status, ctype), good=lambda p, r: H.whole(body, status, ctype)):
        r = await g.post(door, stream)
        assert r.status_code == status
        row = await the_one_record(g.gw)
        assert row["outcome"] == f"http_{status}" and await balance(g.gw) == 0 and inflight(g.gw) == 0


@pytest.mark.parametrize("body,ctype,message,param", [
    (b'{"error": {"message": "temperature must be non-negative, got -1.0 (at URL)", '
     b'"type": "BadRequestError", "param": "temperature", "code": 400}}', "application/json",
     "temperature must be non-negative", "temperature"),  # vLLM's (its context refusal: test_engine_context_exceeded)
    (b'{"object": "error", "message": "bad sampling (at URL)", "type": "BadRequestError", "param": null, '
     b'"code": 400}', "application/json", "bad sampling", None),  # SGLang's and older vLLM's
    (b'{"error": "Input validation error (at URL)", "error_type": "validation"}', "application/json",
     "Input validation error", None),  # TGI's
    (b"<html>400 Bad Request (at URL)</html>", "text/html", "400 Bad Request", None),  # a proxy's page
])
@pytest.mark.parametrize("stream", [False, True])
async def test_an_engines_refusal_reaches_an_openai_client_in_openais_envelope(
        tmp_path: Path, body: bytes, ctype: str, message: str, param: str | None, stream: bool) -> None:
    """Passed on as sent, an engine's error gave the OpenAI SDKs vLLM's type and integer code as the error's
    (`err.type == "BadRequestError"`, `err.code == "400"`), an HTML page no error at all, and the engine's own
    address where it named it. Now: OpenAI's envelope with the engine's message, its addresses hidden."""
    holder: dict[str, str] = {}

    def refuse(path: str, req: dict) -> H.Script:
        return H.whole(body.replace(b"URL", holder["url"].encode()), 400, ctype)

    async for g in grid(tmp_path, refuse, good=refuse):
        holder["url"] = g.bad.url
        r = await g.post("chat", stream)
        assert r.status_code == 400 and r.headers["content-type"] == "application/json", r.text
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error" and err["code"] is None and err["param"] == param, err
        assert message in err["message"] and g.bad.url not in err["message"] and "nrt-smollm2" in err["message"]
        assert (await the_one_record(g.gw))["outcome"] == "http_400" and await balance(g.gw) == 0
