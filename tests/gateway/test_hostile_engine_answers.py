"""The answer path with one engine an attacker runs (a FAKE engine on a real socket, hostile_engine.py, read by the
gateway's real adapter; the grid of test_hostile_engines.py): what of its answer reaches the client, and how much
of it the gateway reads."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable

import orjson
import pytest

from aigrid.gateway.output_filter import MAX_TEXTS
from aigrid.gateway.proxy import EngineNames
from aigrid.security.firewall.pipeline import Action
from tests.gateway import hostile_engine as H
from tests.gateway import hostile_grid as T
from tests.gateway.hostile_grid import SANE, Grid
from tests.gateway.metered_gateway import balance, inflight, the_one_record


async def grid(tmp_path, bad: Callable[[str, dict], H.Script], good: Callable[[str, dict], H.Script] = T.sane,
               context: int | None = None, idle_s: float | None = None, max_s: float | None = None
               ) -> AsyncIterator[Grid]:
    """hostile_grid.grid; `idle_s`, `max_s`: its gateway.stream_idle_s and stream_max_s as the proxy reads
    them."""
    async for g in T.grid(tmp_path, bad, good, context):
        if idle_s is not None:
            g.gw.proxy.stream_idle_s = idle_s
        if max_s is not None:
            g.gw.proxy.stream_max_s = max_s
        yield g


HOSTILE_HEADERS = ["set-cookie: session=stolen; Path=/", "location: https://evil.example/",
                   "content-security-policy: default-src *", "access-control-allow-origin: *",
                   "access-control-allow-credentials: true", "x-frame-options: ALLOWALL", "link: <https://evil.example>"]


@pytest.mark.parametrize("door", ["chat", "completions"])
@pytest.mark.parametrize("stream", [False, True])
async def test_an_engines_headers_never_make_its_answer_a_page_nor_reach_the_client(
        tmp_path, door: str, stream: bool) -> None:
    """The engine's content-type was passed on as it wrote it, once it named JSON (`"json" in` it) or began
    `text/event-stream`: `text/html; x=json` (or `text/event-stream, text/html`, which a browser reads as its last
    type, text/html) made an answer the model (or the engine) wrote `<script>` into a page of the gateway's origin
    (a cross-site form can POST a text/plain body that is JSON). Now the client gets the type the gateway checked
    the answer has: application/json, or text/event-stream. The engine's other headers never reach the client."""
    page = "<script>alert(document.domain)</script>"

    def script(path: str, req: dict) -> H.Script:
        if req.get("stream"):
            return [H.head(200, "text/event-stream, text/html", chunked=True, extra=HOSTILE_HEADERS),
                    *H.sse(H.token(page), H.token("", "stop"))]
        return H.whole(orjson.dumps(H.answer_of(page)), content_type="text/html; x=json", extra=HOSTILE_HEADERS)

    async for g in grid(tmp_path, script, good=script):
        r = await g.post(door, stream)
        assert r.status_code == 200, r.text
        assert page.encode() in r.content  # the answer itself is passed on
        assert r.headers["content-type"] == ("text/event-stream" if stream else "application/json")
        for name in ("set-cookie", "location", "content-security-policy", "access-control-allow-origin",
                     "access-control-allow-credentials", "x-frame-options", "link"):
            assert name not in r.headers, name
        assert (await the_one_record(g.gw))["outcome"] == "ok"


async def test_a_sane_answer_keeps_its_type(tmp_path) -> None:
    """The common case unchanged: an engine's `application/json` answer is application/json."""
    async for g in grid(tmp_path, lambda p, r: H.whole(orjson.dumps(SANE))):
        r = await g.post("chat", False)
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"


def endless(*steps: H.Step) -> Callable[[str, dict], H.Script]:
    """A stream that opens with one token, then `steps`, never its end; a whole answer: a sane one."""
    def script(path: str, req: dict) -> H.Script:
        if not req.get("stream"):
            return H.whole(orjson.dumps(SANE))
        return H.stream(H.chunk(b"data: " + orjson.dumps(H.token("Hi")) + b"\n\n"), *steps)
    return script


@pytest.mark.parametrize("door", ["chat", "completions"])
async def test_a_stream_that_does_not_stop_is_cut_at_a_whole_answers_bound(tmp_path, door: str) -> None:
    """A streamed answer was relayed for as long as its engine sent events: one that never stops (tokens past
    max_tokens, past its context) held the client, the tenant's reservation and the gateway's bandwidth without
    bound (each event is bounded, their sum was not). Now at most what a whole answer may take (BYTES_PER_TOKEN x
    its contexts, at least 1 MiB), then the in-stream error: the engine's failure, counted, not continued."""
    event = H.chunk(b"data: " + orjson.dumps(H.token("x" * 8000)) + b"\n\n")
    async for g in grid(tmp_path, endless(*[event] * 400), context=64):  # 3.2 MB, the bound 1 MiB
        r = await asyncio.wait_for(g.post(door, True), 20)  # before: to the read timeout (300 s), the answer whole
        assert r.status_code == 200
        assert b"stream_interrupted" in r.content and b"past 1048576 bytes" in r.content
        assert len(r.content) < (1 << 20) + 64_000
        row = await the_one_record(g.gw)
        assert row["outcome"] == "interrupted"
        assert g.failures("nrt-smollm2") == 1 and g.good.requests == 0  # not continued on an innocent engine
        assert inflight(g.gw) == 0


async def test_a_stream_of_keep_alives_only_is_silent(tmp_path) -> None:
    """Comments (`: keep-alive`) are reads, so the read timeout (gateway.stream_idle_s) never caught an engine that
    sends nothing else: the answer never ended. Now reads without a data event for that long are its silence."""
    async for g in grid(tmp_path, endless(*[H.chunk(b": keep-alive\n\n"), 0.05] * 400), idle_s=0.5):  # 20 s
        started = time.monotonic()
        r = await asyncio.wait_for(g.post("chat", True), 30)
        assert r.status_code == 200 and b"stream_interrupted" in r.content and b"no data event" in r.content
        assert time.monotonic() - started < 15  # the keep-alives last 20 s; margin for a loaded machine
        assert (await the_one_record(g.gw))["outcome"] == "interrupted" and g.failures("nrt-smollm2") == 1


async def test_a_slow_stream_with_data_is_not_cut(tmp_path) -> None:
    """The sane case: tokens slower than nothing, each within the read timeout, keep-alives between them."""
    steps = [H.chunk(b": ka\n\n"), 0.2, H.chunk(b"data: " + orjson.dumps(H.token("y")) + b"\n\n"), 0.2] * 5
    async for g in grid(tmp_path, endless(*steps, *H.sse(H.token("", "stop"))), idle_s=0.5):
        r = await g.post("chat", True)
        assert r.status_code == 200 and b"stream_interrupted" not in r.content and r.content.count(b'"y"') == 5
        assert (await the_one_record(g.gw))["outcome"] == "ok"


@pytest.mark.parametrize("door", ["chat", "completions"])
async def test_a_stream_of_empty_data_events_is_cut_at_its_ceiling(tmp_path, door: str) -> None:
    """`data: {}` is a data event, so neither gateway.stream_idle_s nor the byte bound (days at 100 B/s) cut an
    engine that sends only those: it held the client, the reservation and the engine slot. Now gateway.stream_max_s
    (here 0.5 s; a 'second' is 0.05 s) ends it: the in-stream error, the engine's failure counted, not continued."""
    async for g in grid(tmp_path, endless(*[H.chunk(b"data: {}\n\n"), 0.05] * 400), idle_s=0.5, max_s=0.5):  # 20 s
        started = time.monotonic()
        r = await asyncio.wait_for(g.post(door, True), 20)
        assert r.status_code == 200 and b"stream_interrupted" in r.content
        assert b"streamed for more than 0.5 s" in r.content
        assert 0.5 <= time.monotonic() - started < 15  # the engine's bytes last 20 s; margin for a loaded machine
        assert (await the_one_record(g.gw))["outcome"] == "interrupted"
        assert g.failures("nrt-smollm2") == 1 and g.good.requests == 0
        assert inflight(g.gw) == 0


async def test_a_slow_stream_with_tokens_under_its_ceiling_passes(tmp_path) -> None:
    """The sane case of stream_max_s: tokens every 'second' (0.1 s), the answer whole before the ceiling (2 s)."""
    steps = [H.chunk(b"data: " + orjson.dumps(H.token("y")) + b"\n\n"), 0.1] * 8
    async for g in grid(tmp_path, endless(*steps, *H.sse(H.token("", "stop"))), idle_s=0.5, max_s=2.0):
        r = await g.post("chat", True)
        assert r.status_code == 200 and b"stream_interrupted" not in r.content and r.content.count(b'"y"') == 8
        assert (await the_one_record(g.gw))["outcome"] == "ok"


@pytest.mark.parametrize("door", ["chat", "completions"])
@pytest.mark.parametrize("counts", [{"prompt_tokens": -5, "completion_tokens": "abc", "total_tokens": -10},
                                    {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}],
                         ids=["unchargeable", "sane"])
async def test_a_usage_key_written_with_escapes_is_read_as_usage(tmp_path, door: str, counts: dict) -> None:
    """The stream's usage was looked for as the bytes `"usage"`: an engine that wrote the key with JSON escapes
    (`"us\\u0061ge"`, the same key to every JSON reader) had its counts passed to a client that never asked for
    them, unchecked (-5, "abc"), and a sane count not read (the tenant charged the reservation, 34 tokens, for 6).
    Now read as any usage: a sane one charged, one that cannot be charged taken out, the client's own filter applies."""
    def script(path: str, req: dict) -> H.Script:
        last = orjson.dumps(H.token("", usage=counts) | {"choices": []}).replace(b'"usage"', b'"us\\u0061ge"')
        return H.stream(*H.sse(H.token("Hi"), H.token("", "stop"), last))

    async for g in grid(tmp_path, script, good=script):
        r = await g.post(door, True)  # the client asks for no usage
        assert r.status_code == 200 and b"Hi" in r.content
        assert b"u0061ge" not in r.content and b"prompt_tokens" not in r.content
        row = await the_one_record(g.gw)
        assert row["outcome"] == "ok"
        if counts["prompt_tokens"] == 5:
            assert await balance(g.gw) == 6  # before: 34, the reservation


@pytest.mark.parametrize("text", ["x" * 300_000, "aEngine( " * 30_000], ids=["letters", "open-reprs"])
def test_hiding_addresses_in_a_long_error_is_linear(text: str) -> None:
    """EngineNames.hide drops an adapter's repr with `\\w+Engine\\([^()]*\\)`, which retried from every character of a
    run of letters (and read to the end from each `Engine(`): quadratic, 300 KB took minutes, the event loop held."""
    started = time.process_time()  # CPU time (hide runs on this thread): a loaded machine does not stretch it
    assert EngineNames({}).hide(text) == text
    assert time.process_time() - started < 1


@pytest.mark.parametrize("stream", [False, True])
async def test_a_long_error_page_answers_at_once(tmp_path, stream: bool) -> None:
    """An engine's 4xx with 60 KB of letters (an HTML page, a message quoting the prompt): its client waited ~6 s
    and every other request of the worker with it (200 KB: 69 s). Now its envelope at once, cut to 2,000 chars."""
    def script(path: str, req: dict) -> H.Script:
        return H.whole(b"<html>" + b"x" * 120_000 + b"</html>", 400, "text/html")  # quadratic: ~25 s before

    async for g in grid(tmp_path, script, good=script):
        started = time.monotonic()
        r = await g.post("chat", stream)
        assert time.monotonic() - started < 5  # a wide margin for a loaded 2-core machine; linear: tens of ms
        assert r.status_code == 400 and r.headers["content-type"] == "application/json"
        assert r.json()["error"]["type"] == "invalid_request_error" and len(r.content) < 2_500


async def test_the_tool_loops_model_turns_get_the_idle_bound(tmp_path) -> None:
    """The tool loop's model turns read their engine with gateway.stream_idle_s as the relay does (LoopConfig.quiet_s:
    tests/agents/test_loop.py::test_a_model_turn_of_keep_alives_is_the_engines_silence); before, with none."""
    async for g in grid(tmp_path, T.sane):
        assert g.gw.agents.loop.quiet_s == g.gw.spec.gateway.stream_idle_s == 300.0


def opened_then(*steps: H.Step, turn: bytes = orjson.dumps(H.token("Hi"))) -> Callable[[str, dict], H.Script]:
    """`endless`, its first event `turn`: every request of a fan-out, every model turn of a tool loop alike."""
    def script(path: str, req: dict) -> H.Script:
        return H.stream(H.chunk(b"data: " + turn + b"\n\n"), *steps)
    return script


@pytest.mark.parametrize("door", ["chat", "completions"])
@pytest.mark.parametrize("steps", [[H.chunk(b"data: {}\n\n"), 0.05], [H.chunk(b": keep-alive\n\n"), 0.05]],
                         ids=["empty-events", "keep-alives"])
async def test_a_fanned_out_stream_is_held_to_the_ceiling(tmp_path, door: str, steps: list[H.Step]) -> None:
    """`n` > 1 (engines/fan_out.py): the n answers' merged stream had no ceiling in time (only the engine's own stream
    had gateway.stream_max_s): engines sending `data: {}` (relayed as empty chunks) held the client, the reservation
    and n engine slots for as long as their bytes lasted, and engines sending keep-alives (which the merged stream
    passes nothing of, so the relay waited on a read that never came) for ever. Now the same ceiling, the wait for a
    read cut at it: the in-stream error, the engine's failure counted, not continued, the record written once."""
    async for g in grid(tmp_path, opened_then(*steps * 400), idle_s=10, max_s=0.5):  # 20 s of them
        started = time.monotonic()
        r = await asyncio.wait_for(g.post(door, True, n=2), 20)
        assert r.status_code == 200 and b"stream_interrupted" in r.content, r.content[-300:]
        assert b"streamed for more than 0.5 s" in r.content and b"[DONE]" not in r.content
        assert 0.5 <= time.monotonic() - started < 15  # the engine's bytes last 20 s; margin for a loaded machine
        row = await the_one_record(g.gw)
        assert row["outcome"] == "interrupted" and g.bad.requests == 2
        assert g.failures("nrt-smollm2") == 1 and g.good.requests == 0
        assert inflight(g.gw) == 0 and await balance(g.gw) > 0  # settled: the reservation, its count unknown


@pytest.mark.parametrize("door", ["chat", "completions"])
async def test_a_fanned_out_stream_of_keep_alives_is_silent(tmp_path, door: str) -> None:
    """The engine's own stream gets gateway.stream_idle_s of reads without a data event; a fan-out's answers had no
    such bound (the relay reads the merged stream, which passes nothing of a keep-alive, and each engine connection's
    read timeout sees reads): engines sending keep-alives only held it to the ceiling, an hour. Now each answer of the
    fan-out is held to it (sse.Quiet, the one implementation): past it the in-stream error, the engine counted."""
    async for g in grid(tmp_path, opened_then(*[H.chunk(b": keep-alive\n\n"), 0.05] * 400), idle_s=0.5):  # 20 s
        started = time.monotonic()
        r = await asyncio.wait_for(g.post(door, True, n=2), 20)
        assert r.status_code == 200 and b"stream_interrupted" in r.content and b"no data event" in r.content
        assert time.monotonic() - started < 15  # the keep-alives last 20 s; margin for a loaded machine
        assert (await the_one_record(g.gw))["outcome"] == "interrupted"
        assert g.failures("nrt-smollm2") == 1 and g.good.requests == 0 and inflight(g.gw) == 0


async def test_a_streamed_tool_loop_is_held_to_the_ceiling(tmp_path) -> None:
    """A tool loop's streamed answer (agents/loop.py) had no ceiling in time either: a turn whose engine sends
    `data: {}` (a data event: the turn's quiet bound resets) after `{"answer": "Hi` was bounded only by the turn's bytes
    (1 MiB at 10 bytes an event). Now gateway.stream_max_s holds it too: the in-stream error at the ceiling."""
    turn = orjson.dumps(H.token('{"answer": "Hi'))
    async for g in grid(tmp_path, opened_then(*[H.chunk(b"data: {}\n\n"), 0.05] * 400, turn=turn), max_s=0.5):
        started = time.monotonic()
        r = await asyncio.wait_for(g.post("chat", True, tools=T.CALCULATOR), 20)
        assert r.status_code == 200 and b"stream_interrupted" in r.content, r.content[-300:]
        assert b"streamed for more than 0.5 s" in r.content
        assert 0.5 <= time.monotonic() - started < 15  # the engine's bytes last 20 s; margin for a loaded machine
        assert (await the_one_record(g.gw))["outcome"] == "interrupted"
        assert g.failures("nrt-smollm2") == 1 and inflight(g.gw) == 0


async def test_an_answer_past_the_output_filters_bound_is_not_continued_elsewhere(tmp_path) -> None:
    """With answers redacted, an engine that opens more than output_filter.MAX_TEXTS texts fails the stream (the
    filter's SseError); the relay read it as an engine that broke and continued the answer on a spare, handing it the
    text the hostile engine wrote as the continuation's prefill (held back and redacted text included). Now it is the
    engine's own answer at fault, as past the other bounds: the in-stream error, not continued."""
    many = [{"choices": [{"index": i, "delta": {"content": "a"}}]} for i in range(1, MAX_TEXTS + 1)]
    bad = H.stream(*H.sse(H.token("Hi"), *many, H.token("", "stop")))
    async for g in grid(tmp_path, lambda p, r: bad):
        firewall = g.gw.guard.firewall
        firewall.policies["metered"] = dataclasses.replace(firewall.policy("metered"), pii_output=Action.REDACT)
        r = await asyncio.wait_for(g.post("chat", True), 20)
        assert r.status_code == 200 and b"stream_interrupted" in r.content and b"not continued" in r.content
        assert f"more than {MAX_TEXTS} texts".encode() in r.content
        assert (await the_one_record(g.gw))["outcome"] == "interrupted"
        assert g.failures("nrt-smollm2") == 1 and g.good.requests == 0 and inflight(g.gw) == 0


async def test_a_stream_of_several_prompts_that_breaks_is_not_continued_as_one_prompt(tmp_path) -> None:
    """A list of prompts is one engine request per prompt (engines/fan_out.py), merged: when one broke mid-stream the
    relay continued the answer on a spare as if it were one, sending the prompts joined into one with every answer's
    text so far as its prefill, and relayed that one answer as the rest of all of them (audited `ok`). Now, as with
    `n`, the in-stream error saying why it is not continued."""
    broken = H.stream(H.chunk(b"data: " + orjson.dumps(H.token("Hi")) + b"\n\n"), H.CLOSE)
    async for g in grid(tmp_path, lambda p, r: broken):
        r = await asyncio.wait_for(g.post("completions", True, prompt=["Say hello", "Say goodbye"]), 20)
        assert r.status_code == 200 and b"stream_interrupted" in r.content, r.content[-300:]
        assert b"several prompts" in r.content and b"[DONE]" not in r.content
        assert (await the_one_record(g.gw))["outcome"] == "interrupted"
        assert g.good.requests == 0 and inflight(g.gw) == 0


async def test_an_event_past_its_bound_holding_done_is_not_an_ended_answer(tmp_path) -> None:
    """An event larger than sse.MAX_EVENT_BYTES fails the stream (the decoder's SseError), and none of it reaches the
    client; but the relay judged whether the answer had ended from the raw bytes of its last reads, the unrelayed
    event's included: one whose text held `[DONE]` was taken as an answer that had ended, audited `ok`, the engine not
    counted, the client's stream stopped with neither its end nor an error. Now it is an engine that broke, counted;
    and such an event is the engine's own answer at fault, as past the other bounds (it was continued on the spare,
    what the hostile engine streamed its prefill): the in-stream error, not continued."""
    huge = H.chunk(b'data: {"choices": [{"index": 0, "delta": {"content": "' + b"[DONE]" * 750_000)  # 4.5 MB
    async for g in grid(tmp_path, endless(huge, 30.0)):
        r = await asyncio.wait_for(g.post("chat", True), 20)
        assert r.status_code == 200 and b"Hi" in r.content and b"stream_interrupted" in r.content, r.content[-300:]
        assert b"not continued" in r.content and b"[DONE]" not in r.content
        assert (await the_one_record(g.gw))["outcome"] == "interrupted"
        assert g.failures("nrt-smollm2") == 1 and g.good.requests == 0 and inflight(g.gw) == 0


async def test_an_answer_past_the_output_filters_bound_in_an_event_cut_across_reads_is_not_an_ended_answer(
        tmp_path) -> None:
    """The event past output_filter.MAX_TEXTS is not relayed, nor the read it ends in; its start, in the read before,
    was still read for the answer's end: `[DONE]` in its text had the answer taken as ended, audited `ok`, the engine
    not counted, the client's stream stopped with neither its end nor an error."""
    many = [{"choices": [{"index": i, "delta": {"content": "a"}}]} for i in range(1, MAX_TEXTS)]
    last = b"data: " + orjson.dumps({"choices": [{"index": MAX_TEXTS, "delta": {"content": "[DONE]"}}]}) + b"\n\n"
    bad = H.stream(*H.sse(H.token("Hi"), *many, done=False)[:-1], 0.2, H.chunk(last[:-7]), 0.2,
                   H.chunk(last[-7:]), 30.0)
    async for g in grid(tmp_path, lambda p, r: bad):
        firewall = g.gw.guard.firewall
        firewall.policies["metered"] = dataclasses.replace(firewall.policy("metered"), pii_output=Action.REDACT)
        r = await asyncio.wait_for(g.post("chat", True), 20)
        assert r.status_code == 200 and b"stream_interrupted" in r.content and b"not continued" in r.content
        assert (await the_one_record(g.gw))["outcome"] == "interrupted"
        assert g.failures("nrt-smollm2") == 1 and g.good.requests == 0 and inflight(g.gw) == 0


async def test_an_answer_whose_text_says_done_is_not_ended_by_it(tmp_path) -> None:
    """Whether a stream that broke had ended was read from the bytes `[DONE]` anywhere in its last reads: an answer
    whose text held them (a model explaining SSE) and whose engine then broke was taken as ended: not continued,
    audited `ok`, the engine not counted, the client's stream stopped with neither its end nor an error. Now only a
    `data: [DONE]` line ends it: the engine broke, the answer continued on the spare."""
    said = H.chunk(b"data: " + orjson.dumps(H.token("Send data: [DONE] last")) + b"\n\n")
    async for g in grid(tmp_path, lambda p, r: H.stream(said, 0.1, H.CLOSE)):
        r = await asyncio.wait_for(g.post("chat", True), 20)
        assert r.status_code == 200 and r.content.endswith(b"\n\ndata: [DONE]\n\n"), r.content[-300:]
        assert g.failures("nrt-smollm2") == 1 and g.good.requests == 1 and inflight(g.gw) == 0


@pytest.mark.parametrize("end", [b'"finish_reason":"stop"}]}', b"\ndata: [DONE]"], ids=["finish_reason", "done"])
async def test_an_unfinished_end_is_not_an_ended_answer_at_the_ceiling(tmp_path, end: bytes) -> None:
    """The end of an answer cut at gateway.stream_max_s was read from its engine's raw reads, the start of an event the
    client never got included: an engine that sent `"finish_reason":"` (or a `data: [DONE]` line) in an unfinished
    event, then nothing, had its answer taken as ended: audited `ok`, the engine not counted, the client's stream
    stopped with neither its end nor an error. Now only relayed bytes count: the in-stream error, the engine counted."""
    unfinished = H.chunk(b'data: {"choices":[{"index":0,"delta":{},' + end)
    async for g in grid(tmp_path, endless(unfinished, 30.0), max_s=0.5):
        r = await asyncio.wait_for(g.post("chat", True), 20)
        assert r.status_code == 200 and b"stream_interrupted" in r.content, r.content[-300:]
        assert b"streamed for more than 0.5 s" in r.content and b"finish_reason\":\"stop" not in r.content
        assert (await the_one_record(g.gw))["outcome"] == "interrupted"
        assert g.failures("nrt-smollm2") == 1 and g.good.requests == 0 and inflight(g.gw) == 0


async def test_an_answer_whose_finish_is_relayed_at_the_ceiling_stands(tmp_path) -> None:
    """The honest answer at the same ceiling: its finish chunk relayed whole, then the wait for its [DONE] cut: the
    answer has ended (audited `ok`, the engine not counted), not cut."""
    finish = H.chunk(b"data: " + orjson.dumps(H.token("", "stop")) + b"\n\n")
    async for g in grid(tmp_path, endless(finish, 30.0), max_s=0.5):
        r = await asyncio.wait_for(g.post("chat", True), 20)
        assert r.status_code == 200 and b"stream_interrupted" not in r.content and b'"stop"' in r.content
        assert (await the_one_record(g.gw))["outcome"] == "ok"
        assert g.failures("nrt-smollm2") == 0 and g.good.requests == 0 and inflight(g.gw) == 0
