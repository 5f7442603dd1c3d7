"""`response.steer` in the Responses API's WebSocket mode (responses_socket.py, responses_steer.py) with the
official openai SDK's `responses.connect()`, sync and async, against a real gateway on 127.0.0.1 (the fixtures
of test_responses_socket.py) with FAKE engines that hold a response after its first word until the test opens a
gate: a steer accepted during a response stops it at its next text chunk (`incomplete`, `steered`, charged and
audited as such, never inside a function call) and becomes its automatic successor (the target's settings, its
history and the steer text, before the socket's queued creates), steers keep their order, the refusals and their codes
(the input returned), a firewall-blocked steer, a key revoked before the successor, client tool calls
(pending, then placed in the client's continuation), the bounds, and a hang-up with steers queued."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import threading
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets.sync.client

from aigrid.gateway import responses_socket
from aigrid.security.keys_cli import revoke_key
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.socket_grid import (
    ATTACK,
    MODEL,
    SECRET,
    TENANT,
    Grid,
    served,
    text_of,
    until_done,
)

FUNCTION = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
SOCKET = "WS /v1/responses"


class Gated(FakeEngine):
    """A FAKE engine: a request whose last message holds WAIT sends its first chunk, then waits for `gate`; one
    whose last message holds CALL answers a call of get_weather (natively, as a chat engine streams it)."""

    def __init__(self, name: str, words: tuple[str, ...], gate: threading.Event) -> None:
        super().__init__(name, words)
        self.gate = gate

    async def _sse(self, req: dict) -> AsyncIterator[bytes]:
        last = str((req.get("messages") or [{}])[-1].get("content"))
        chunks = (self._slow_call(req) if "SLOWCALL" in last else self._call(req) if "CALL" in last
                  else super()._sse(req))
        sent = 0
        async for chunk in chunks:
            yield chunk
            sent += 1
            while sent == 1 and "WAIT" in last and not self.gate.is_set():
                await asyncio.sleep(0.005)

    async def _call(self, req: dict) -> AsyncIterator[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return b"data: " + orjson.dumps({"id": self.name, "object": "chat.completion.chunk", "model": req["model"],
                                             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + b"\n\n"

        yield chunk({"role": "assistant", "content": None})
        yield chunk({"tool_calls": [{"index": 0, "id": "call_w1", "type": "function",
                                     "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]})
        yield chunk({}, "tool_calls")
        yield b"data: [DONE]\n\n"


    async def _slow_call(self, req: dict) -> AsyncIterator[bytes]:
        """A call of get_weather whose arguments come in three chunks, the first of them opening it (WAIT holds
        the stream after it, the call open), then a text chunk after the call."""
        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return b"data: " + orjson.dumps({"id": self.name, "object": "chat.completion.chunk", "model": req["model"],
                                             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + b"\n\n"

        def args(fragment: str, start: bool = False) -> dict[str, Any]:
            call: dict[str, Any] = {"index": 0, "function": {"arguments": fragment}}
            if start:
                call.update(id="call_w1", type="function", function={"name": "get_weather", "arguments": fragment})
            return {"tool_calls": [call]}

        yield chunk(args('{"ci', start=True))
        yield chunk(args('ty":"Pa'))
        yield chunk(args('ris"}'))
        yield chunk({}, "tool_calls")
        yield b"data: [DONE]\n\n"


def gated(gate: threading.Event) -> Callable[[str, tuple[str, ...]], FakeEngine]:
    return lambda name, words: Gated(name, words, gate)


def until(events: Iterator[Any], kind: str) -> Any:
    """The next event of this type (those before it passed over)."""
    return next(e for e in events if e.type == kind)


def asked(grid: Grid) -> list[dict[str, Any]]:
    """Every chat request the engines received, in order."""
    return [r for e in grid.engines.values() for r in e.received]


def messages(request: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(m["role"], m.get("content")) for m in request["messages"]]


def steers_of(grid: Grid) -> dict[str, int]:
    return grid.until_records(SOCKET, 1)[-1]["extra"]["steers"]


def test_a_steer_during_a_response_is_its_successors_input_with_its_settings(tmp_path: Path) -> None:
    gate = threading.Event()
    with served(tmp_path, engine=gated(gate)) as grid:
        with grid.sync_client().responses.connect() as conn:
            conn.response.create(model=MODEL, input="WAIT Tell me a story.", instructions="Be terse.",
                                 max_output_tokens=40, temperature=0.3, stream_id="story")
            events = iter(conn)
            target = until(events, "response.created").response.id
            conn.response.steer(input="Make it about cats.", previous_response_id=target)
            ack = next(e for e in events if e.type.startswith("response.steer"))
            conn.response.create(model=MODEL, input="Say hello", stream_id="other")  # queued behind the target
            gate.set()
            first = until_done(events)
            successor = until_done(events)
            queued = until_done(events)
        assert ack.type == "response.steer.accepted", ack
        assert ack.steer.previous_response_id == target and ack.steer.id.startswith("steer_")
        assert ack.stream_id == "story"
        cut = first[-1].response  # stopped at its next text chunk for the steer
        assert (first[-1].type, cut.id, cut.incomplete_details.reason) == ("response.incomplete", target, "steered")
        assert text_of(first) == "Hello" and cut.usage.output_tokens == 1
        created, done = successor[0], successor[-1]
        assert created.type == "response.created" and done.type == "response.completed", successor
        assert {e.stream_id for e in successor} == {"story"}  # on the target's lane, before the queued create
        assert created.response.previous_response_id == target != created.response.id
        inherited = done.response
        assert (inherited.model, inherited.instructions, inherited.max_output_tokens, inherited.temperature) == (
            MODEL, "Be terse.", 40, 0.3)
        assert text_of(successor) == "Hello from the grid"
        assert {e.stream_id for e in queued} == {"other"} and queued[0].response.previous_response_id is None
        requests = asked(grid)
        assert len(requests) == 3
        assert messages(requests[1]) == [("system", "Be terse."), ("user", "WAIT Tell me a story."),
                                         ("assistant", "Hello"), ("user", "Make it about cats.")]
        assert (requests[1]["max_tokens"], requests[1]["temperature"]) == (40, 0.3)
        assert steers_of(grid) == {"accepted": 1, "committed": 1, "failed": 0, "dropped": 0}
        rows = grid.records("/v1/responses")
        assert [r["outcome"] for r in rows] == ["steered", "ok", "ok"]  # the successor audited as every response


def steer_a_long_answer(grid: Any, gate: threading.Event, steer: str) -> tuple[str, list[Any], list[Any]]:
    """A long answer asked on one socket, steered with `steer` before its engine (held by `gate`) writes: the
    target's id, its events and its successor's."""
    with grid.sync_client().responses.connect() as conn:
        conn.response.create(model=MODEL, input="WAIT Tell me a long story.", max_output_tokens=300)
        events = iter(conn)
        target = until(events, "response.created").response.id
        conn.response.steer(input=steer, previous_response_id=target)
        until(events, "response.steer.accepted")
        gate.set()
        return target, until_done(events), until_done(events)


def test_a_steer_stops_its_target_at_its_next_text_chunk_charged_only_what_it_streamed(tmp_path: Path) -> None:
    """The target of an accepted steer stops at its next text chunk (OpenAI's "safe output boundary"): it ends
    `response.incomplete` with `incomplete_details.reason` `steered`, its engine request closed, stored as
    streamed; its audit record is its own, once, outcome `steered` (not a client's `client_closed`), charged the
    prompt and the chunks it streamed, not the reservation of its max_output_tokens; then its successor runs.
    Until the twenty-first session it was never stopped: the whole answer (up to max_output_tokens) was
    generated, streamed and charged before the steer took effect."""
    gate = threading.Event()
    with served(tmp_path, engine=gated(gate), words=tuple(f" w{i}" for i in range(200))) as grid:
        target, first, successor = steer_a_long_answer(grid, gate, "Stop. Say hi.")
        cut = first[-1].response
        assert (first[-1].type, cut.status, cut.incomplete_details.reason) == (
            "response.incomplete", "incomplete", "steered"), first[-1]
        assert text_of(first) == cut.output_text == " w0"
        assert cut.usage.output_tokens == 1  # of the 200 words the engine would have written, up to 300 asked
        assert successor[0].response.previous_response_id == target and successor[-1].type == "response.completed"
        assert messages(asked(grid)[1])[-2:] == [("assistant", " w0"), ("user", "Stop. Say hi.")]
        rows = grid.until_records("/v1/responses", 2)
        assert [r["outcome"] for r in rows] == ["steered", "ok"]  # the target audited once, with its own outcome
        # charged the engine's count of what it streamed (no `charged_tokens`: the quota took no reservation's rest)
        assert (rows[0]["prompt_tokens"], rows[0]["completion_tokens"]) == (cut.usage.input_tokens, 1)
        assert "charged_tokens" not in rows[0]["extra"] and cut.usage.input_tokens < 300
        assert grid.balance() == cut.usage.total_tokens + successor[-1].response.usage.total_tokens
        assert grid.inflight() == 0  # its engine request closed
        steered = sum(grid.gw.metrics.registry.get_sample_value(
            "aigrid_requests_total", {"site": e.site, "endpoint": e.id, "outcome": "steered"}) or 0.0
            for e in grid.gw.spec.endpoints)
        assert steered == 1
        errors = [m.labels.get("error_type") for f in grid.gw.metrics.registry.collect()  # a cut is no error
                  if f.name == "gen_ai_client_operation_duration_seconds" for m in f.samples
                  if m.name.endswith("_count") and m.value]
        assert errors and set(errors) == {""}, errors
        stored = grid.sync_client().responses.retrieve(target)  # stored as streamed: its successor reads it back
        assert (stored.status, stored.incomplete_details.reason, stored.output_text) == ("incomplete", "steered",
                                                                                         " w0")


def test_a_steered_target_is_charged_at_least_the_text_it_streamed_whatever_its_chunks(tmp_path: Path) -> None:
    """An engine that streams several tokens a chunk (speculative decoding, a stream interval, a hosted engine) had a
    steered target charged one completion token per chunk: 50 words streamed in one chunk, then steered, were
    charged (and audited, and told the client) as 1 token, so a client that steered instead of hanging up had its
    answers for next to nothing. Now at least the text's estimate (CHARS_PER_TOKEN, as the prompt's)."""
    gate = threading.Event()
    chunk = " lorem" * 50  # 300 characters in one chunk: 75 tokens by the gateway's estimate
    with served(tmp_path, engine=gated(gate), words=(chunk, chunk, chunk)) as grid:
        _, first, successor = steer_a_long_answer(grid, gate, "Stop.")
        cut = first[-1].response
        assert (cut.status, cut.incomplete_details.reason) == ("incomplete", "steered")
        assert text_of(first) == chunk
        assert cut.usage.output_tokens >= len(chunk) // 4, cut.usage  # was 1
        rows = grid.until_records("/v1/responses", 2)
        assert rows[0]["outcome"] == "steered" and rows[0]["completion_tokens"] == cut.usage.output_tokens
        assert grid.balance() == cut.usage.total_tokens + successor[-1].response.usage.total_tokens


def test_a_steer_does_not_stop_its_target_inside_a_function_call(tmp_path: Path) -> None:
    """A steer accepted while the target streams a function call's arguments does not cut the call: the call
    ends whole and the response `completed`, and the steer waits for the client's tool result (pending)."""
    gate = threading.Event()
    with served(tmp_path, engine=gated(gate), tool_calls="native") as grid:
        with grid.sync_client().responses.connect() as conn:
            conn.response.create(model=MODEL, input="WAIT SLOWCALL Weather in Paris?", tools=[FUNCTION])  # type: ignore[list-item]
            events = iter(conn)
            target = until(events, "response.created").response.id
            until(events, "response.output_item.added")  # the call is open
            conn.response.steer(input="Answer in French.", previous_response_id=target)
            until(events, "response.steer.accepted")
            gate.set()
            done = until_done(events)[-1]
            waiting = next(events)
        assert done.type == "response.completed" and done.response.incomplete_details is None, done
        calls = [item for item in done.response.output if item.type == "function_call"]
        assert [(c.name, c.arguments) for c in calls] == [("get_weather", '{"city":"Paris"}')]
        assert waiting.type == "response.steer.pending"
        assert [r["outcome"] for r in grid.until_records("/v1/responses", 1)] == ["ok"]


async def test_two_steers_are_the_successors_input_in_the_order_they_were_sent(tmp_path: Path) -> None:
    gate = threading.Event()
    with served(tmp_path, engine=gated(gate)) as grid:
        async with grid.async_client().responses.connect() as conn:
            await conn.response.create(model=MODEL, input="WAIT Tell me a story.")
            got: list[Any] = []
            async for event in conn:
                got.append(event)
                if event.type == "response.created":
                    break
            target = got[-1].response.id
            await conn.response.steer(input="First: cats.", previous_response_id=target)
            await conn.response.steer(previous_response_id=target, input=[
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Second: dogs."}]}])
            acks: list[Any] = []
            ends: list[Any] = []
            async for event in conn:
                if event.type == "response.steer.accepted":
                    acks.append(event)
                    if len(acks) == 2:
                        gate.set()
                if event.type in ("response.completed", "response.incomplete", "error", "response.steer.failed"):
                    ends.append(event)
                    if len(ends) == 2:
                        break
        assert [e.type for e in ends] == ["response.incomplete", "response.completed"], ends
        assert len({a.steer.id for a in acks}) == 2 and all(a.stream_id is None for a in acks)
        assert ends[1].response.previous_response_id == target
        assert messages(asked(grid)[-1])[-2:] == [("user", "First: cats."), ("user", "Second: dogs.")]
        assert steers_of(grid) == {"accepted": 2, "committed": 2, "failed": 0, "dropped": 0}


def test_a_steer_to_no_running_response_of_the_socket_fails_and_returns_its_input(tmp_path: Path) -> None:
    gate = threading.Event()
    with served(tmp_path, engine=gated(gate)) as grid:
        with grid.sync_client().responses.connect() as conn:
            events = iter(conn)
            conn.response.steer(input="and be brief", previous_response_id="resp_unknown")
            unknown = until(events, "response.steer.failed")
            gate.set()
            conn.response.create(model=MODEL, input="Say hello")
            finished = until_done(events)[-1].response.id
            conn.response.steer(input=[{"role": "user", "content": "too late"}], previous_response_id=finished)
            late = until(events, "response.steer.failed")
            gate.clear()
            conn.response.create(model=MODEL, input="WAIT Say hello", store=False, stream_id="s")
            unstored = until(events, "response.created").response.id
            conn.response.steer(input="and be brief", previous_response_id=unstored)
            not_stored = until(events, "response.steer.failed")
            conn.send_raw(json.dumps({"type": "response.steer", "input": "x", "previous_response_id": unstored,
                                      "stream_id": "s"}))
            with_lane = until(events, "response.steer.failed")
            gate.set()
            assert until_done(events)[-1].type == "response.completed"
        codes = [(e.error.code, e.error.type, e.steer.id) for e in (unknown, late, not_stored, with_lane)]
        assert codes == [("response_not_found", "invalid_request_error", None),
                         ("response_already_completed", "invalid_request_error", None),
                         ("steering_not_supported", "invalid_request_error", None),
                         ("invalid_input", "invalid_request_error", None)], codes
        assert (unknown.steer.input, unknown.steer.previous_response_id) == ("and be brief", "resp_unknown")
        assert late.steer.previous_response_id == finished
        assert late.steer.input == [{"role": "user", "content": "too late"}]  # returned as sent
        assert "store: false" in not_stored.error.message and not_stored.stream_id == "s"
        assert "stream_id" in with_lane.error.message
        assert len(asked(grid)) == 2  # no successor
        assert grid.until_records(SOCKET, 1)[0]["extra"]["refused_events"] == 4
        assert steers_of(grid) == {"accepted": 0, "committed": 0, "failed": 0, "dropped": 0}


@pytest.mark.parametrize(("steer", "param"), [
    ([{"role": "assistant", "content": "I will talk about cats."}], "input[0].role"),
    ([{"type": "function_call_output", "call_id": "call_1", "output": "sunny"}], "input[0].type"),
    ([{"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]}], "input[0].content[0].type"),
    ([{"role": "user", "content": "x", "id": "msg_1"}], "input[0].id"),
    ([], "input"),
    ("", "input"),
])
def test_a_steer_of_anything_but_user_messages_fails_invalid_input(tmp_path: Path, steer: Any, param: str) -> None:
    gate = threading.Event()
    with served(tmp_path, engine=gated(gate)) as grid:
        with grid.sync_client().responses.connect() as conn:
            conn.response.create(model=MODEL, input="WAIT Say hello")
            events = iter(conn)
            target = until(events, "response.created").response.id
            conn.response.steer(input=steer, previous_response_id=target)
            refused = next(e for e in events if e.type.startswith("response.steer"))
            gate.set()
            assert until_done(events)[-1].type == "response.completed"
            conn.response.create(model=MODEL, input="Say hello")
            after = until_done(events)[0]
        assert (refused.type, refused.error.code) == ("response.steer.failed", "invalid_input"), refused
        assert param in refused.error.message
        returned = refused.model_dump(mode="json", exclude_unset=True, warnings=False)["steer"]["input"]
        assert returned == steer  # as it was sent
        assert after.response.previous_response_id is None  # no successor came before it
        assert len(asked(grid)) == 2


def test_a_firewall_blocked_steer_fails_its_successor(tmp_path: Path) -> None:
    gate = threading.Event()
    with served(tmp_path, engine=gated(gate)) as grid:
        with grid.sync_client().responses.connect() as conn:
            conn.response.create(model=MODEL, input="WAIT Say hello", stream_id="a")
            events = iter(conn)
            target = until(events, "response.created").response.id
            conn.response.steer(input=ATTACK, previous_response_id=target)
            ack = until(events, "response.steer.accepted")
            gate.set()
            assert until_done(events)[-1].type == "response.incomplete"  # stopped for the steer
            error = next(events)
            lost = next(events)
            conn.response.create(model=MODEL, input="Say hello")  # the socket goes on
            assert until_done(events)[-1].type == "response.completed"
        assert (error.type, error.status, error.error.code) == ("error", 400, "firewall_blocked"), error
        assert error.stream_id == "a"
        assert (lost.type, lost.error.code) == ("response.steer.failed", "successor_creation_failed"), lost
        assert (lost.steer.id, lost.steer.input, lost.steer.previous_response_id) == (ack.steer.id, ATTACK, target)
        assert lost.stream_id == "a"
        assert len(asked(grid)) == 2  # the attack reached no engine
        assert [r["outcome"] for r in grid.records("/v1/responses")] == ["steered", "error:firewall_blocked", "ok"]
        assert steers_of(grid) == {"accepted": 1, "committed": 0, "failed": 1, "dropped": 0}


def test_a_successor_is_authenticated_again_a_key_revoked_meanwhile_fails_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    gate = threading.Event()
    with served(tmp_path, engine=gated(gate), enforce=True) as grid:
        grid.gw.guard.authenticator.keys._interval_s = 0.0  # the key file read again at every check
        with grid.sync_client().responses.connect() as conn:
            conn.response.create(model=MODEL, input="WAIT Say hello")
            events = iter(conn)
            target = until(events, "response.created").response.id
            conn.response.steer(input="and be brief", previous_response_id=target)
            until(events, "response.steer.accepted")
            assert revoke_key(tmp_path / "keys.json", grid.key.split("_")[1])
            gate.set()
            assert until_done(events)[-1].type == "response.incomplete"  # begun before: it ends (for the steer)
            refused = next(events)
            lost = next(events)
        assert (refused.type, refused.status, refused.error.code) == ("error", 401, "invalid_api_key"), refused
        assert (lost.type, lost.error.code, lost.steer.input) == (
            "response.steer.failed", "successor_creation_failed", "and be brief"), lost
        assert len(asked(grid)) == 1
        assert [r["outcome"] for r in grid.records("/v1/responses")] == ["steered", "error:invalid_api_key"]


def test_a_steer_waits_for_the_clients_tool_results_and_is_prepended_to_them(tmp_path: Path) -> None:
    gate = threading.Event()
    with served(tmp_path, engine=gated(gate), tool_calls="native") as grid:
        with grid.sync_client().responses.connect() as conn:
            conn.response.create(model=MODEL, input="WAIT CALL Weather in Paris?", tools=[FUNCTION],  # type: ignore[list-item]
                                 stream_id="w")
            events = iter(conn)
            target = until(events, "response.created").response.id
            conn.response.steer(input="Answer in French.", previous_response_id=target)
            ack = until(events, "response.steer.accepted")
            gate.set()
            done = until_done(events)[-1]
            waiting = next(events)
            calls = [item for item in done.response.output if item.type == "function_call"]
            conn.response.create(model=MODEL, previous_response_id=target, tools=[FUNCTION], stream_id="w",  # type: ignore[list-item]
                                 input=[{"type": "function_call_output", "call_id": calls[0].call_id,
                                         "output": "sunny, 24 C"}])
            continued = until_done(events)
        assert done.type == "response.completed" and len(calls) == 1, done
        assert (waiting.type, waiting.reason, waiting.steer.id, waiting.stream_id) == (
            "response.steer.pending", "waiting_for_required_input", ack.steer.id, "w"), waiting
        stubs = [stub.model_dump() for stub in waiting.required_input]
        assert stubs == [{"type": "function_call_output", "call_id": calls[0].call_id, "name": "get_weather"}]
        assert continued[0].response.previous_response_id == target and continued[-1].type == "response.completed"
        requests = asked(grid)
        assert len(requests) == 2  # no automatic successor: the client's continuation carried the steer
        sent = requests[-1]["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "tool", "user"]  # the call's result follows it
        assert (sent[2]["content"], sent[3]["content"]) == ("sunny, 24 C", "Answer in French.")
        assert steers_of(grid) == {"accepted": 1, "committed": 1, "failed": 0, "dropped": 0}


@pytest.mark.parametrize(("limit", "max_steers", "size"), [(1 << 20, 2, 10), (8192, 16, 3000)])
def test_the_steers_a_response_holds_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int,
                                                 max_steers: int, size: int) -> None:
    """At most MAX_STEERS per response, its successor at most max_body_bytes: one more is refused, not dropped."""
    monkeypatch.setattr(responses_socket, "MAX_STEERS", max_steers)
    gate = threading.Event()
    with served(tmp_path, engine=gated(gate), max_body_bytes=limit) as grid:
        with grid.sync_client().responses.connect() as conn:
            conn.response.create(model=MODEL, input="WAIT Say hello")
            events = iter(conn)
            target = until(events, "response.created").response.id
            for i in range(4):
                conn.response.steer(input=f"{i}" + "x" * size, previous_response_id=target)
            answers = [next(e for e in events if e.type.startswith("response.steer")) for _ in range(4)]
            gate.set()
            assert until_done(events)[-1].type == "response.incomplete"
            assert until_done(events)[-1].type == "response.completed"
        kept = 2
        assert [a.type for a in answers] == ["response.steer.accepted"] * kept + ["response.steer.failed"] * 2
        assert all(a.error.code == "too_many_pending_steers" for a in answers[kept:])
        assert [a.steer.input[0] for a in answers[kept:]] == ["2", "3"]  # returned
        assert [m[1][0] for m in messages(asked(grid)[-1])[-kept:]] == ["0", "1"]
        assert steers_of(grid) == {"accepted": kept, "committed": kept, "failed": 0, "dropped": 0}


def test_a_steer_waiting_is_held_as_the_bytes_it_came_in(tmp_path: Path) -> None:
    """A steer waiting for its target's end is held as the message the client sent, not parsed: its items (a
    message of many small parts, each a dict) were held as about 12 times their bytes, up to max_body_bytes of
    steers per socket (at the default 4 MiB, about 48 MiB a socket, 12 GiB for a tenant's 256). Its successor
    still gets every part. (nineteenth session; 256 KiB since schemas.MAX_PARTS, 10,000 parts a request)"""
    limit = 1 << 18
    parts = (limit - 4096) // 32  # {"type":"input_text","text":""} and a comma: 8,064, under MAX_PARTS
    steer = {"type": "response.steer", "input": [{"role": "user", "content": [{"type": "input_text", "text": ""}] *
                                                   parts}]}
    gate = threading.Event()
    with served(tmp_path, engine=gated(gate), max_body_bytes=limit) as grid:
        with websockets.sync.client.connect(f"ws://127.0.0.1:{grid.port}/v1/responses", additional_headers=TENANT,
                                            max_size=None) as raw:
            raw.send(json.dumps({"type": "response.create", "model": MODEL, "input": "WAIT Say hello"}))
            while (event := json.loads(raw.recv(timeout=30)))["type"] != "response.created":
                pass
            message = json.dumps({**steer, "previous_response_id": event["response"]["id"]}, separators=(",", ":"))
            assert len(message) < limit
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                raw.send(message)
                while (event := json.loads(raw.recv(timeout=10)))["type"] != "response.steer.accepted":
                    assert event["type"] != "response.steer.failed", event
                gc.collect()
                held = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
            gate.set()
            ends = []
            while len(ends) < 2 or ends[-1] != "response.completed":  # the target (stopped), then its successor
                ends.append(json.loads(raw.recv(timeout=10))["type"])
                assert ends[-1] not in ("error", "response.failed", "response.steer.failed"), ends
    # the process's whole allocation while it arrives, both ends of the socket in it: the client's frame, the
    # server's bytes and text of it (about 3 x its bytes, a few KB either side from run to run); parsed it was 11 x
    assert held < 5 * limit, f"{held} bytes held for a steer of {len(message)} bytes waiting"
    assert len(asked(grid)) == 2


def test_steers_queued_when_the_client_leaves_are_dropped_and_audited(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "aigrid.gateway")
    gate = threading.Event()
    with served(tmp_path, engine=gated(gate), words=tuple(f" w{i}" for i in range(200)), delay_s=0.01) as grid:
        with grid.sync_client().responses.connect() as conn:
            conn.response.create(model=MODEL, input="WAIT Say hello", max_output_tokens=300)
            events = iter(conn)
            target = until(events, "response.created").response.id
            conn.response.steer(input="and be brief", previous_response_id=target)
            until(events, "response.steer.accepted")
        gate.set()  # its words go on (2 s of them) to a client gone: the response ends by its hang-up path
        row = grid.until_records(SOCKET, 1)[0]
        assert row["extra"]["steers"] == {"accepted": 1, "committed": 0, "failed": 0, "dropped": 1}
        assert [r["outcome"] for r in grid.until_records("/v1/responses", 1)] == ["client_closed"]
        assert len(asked(grid)) == 1  # no successor
        assert "1 accepted steers not yet committed: dropped" in caplog.text


def steer_watched(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The relays watched for a steer (relay_response.SteerCut.engage), in the order engaged (one may be noted
    more than once)."""
    from aigrid.gateway import relay_response

    engaged: list[Any] = []
    engage = relay_response.SteerCut.engage

    def noted(self: Any, relay: Any) -> None:
        engaged.append(relay)
        engage(self, relay)

    monkeypatch.setattr(relay_response.SteerCut, "engage", noted)
    return engaged


def test_a_response_that_cannot_be_steered_is_not_watched_for_a_steer(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A socket's response a steer can never stop (`store: false`, a conversation, automatic compaction: its steers
    are refused, steering_not_supported) was served as a steerable one all the same: its relay noted every chunk's
    text for a steer that could not come. Now only a response that may be steered is watched for one."""
    engaged = steer_watched(monkeypatch)
    with served(tmp_path) as grid, grid.sync_client().responses.connect() as conn:
        conn.response.create(model=MODEL, input="Say hello", store=False)
        assert until_done(iter(conn))[-1].type == "response.completed"
        assert engaged == []  # before: its relay, watched for a steer
        conn.response.create(model=MODEL, input="Say hello")
        assert until_done(iter(conn))[-1].type == "response.completed"
        assert engaged  # a stored response may be steered: watched


def test_a_steerable_answer_is_counted_not_kept_for_a_steer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A steerable socket response's relay kept its whole streamed text (continuation.Delivered.text) for a steer
    that may never come, where a steer's charge needs only the text's length and its chunk count: 4,000 chunks of
    100 characters held 400 KB until the answer ended. Now, where no failover continuation may need the text (here
    `text.format`: a structured answer cannot be resumed from text), its length and chunks are counted, nothing
    kept; a response a continuation may need keeps its text as before."""
    engaged = steer_watched(monkeypatch)
    words = tuple(f" {i:04d}" + "x" * 95 for i in range(4000))
    with served(tmp_path, words=words) as grid, grid.sync_client().responses.connect() as conn:
        conn.response.create(model=MODEL, input="Say hello", text={"format": {"type": "json_object"}})
        assert until_done(iter(conn))[-1].type == "response.completed"
        assert engaged  # steerable: watched for a steer
        delivered = engaged[-1].pipe.delivered
        assert len(delivered.text) == 0  # before: the 4,000 chunks, 400 KB, held until the answer ended
        assert delivered.chunks == len(words) and delivered.chars == len("".join(words))  # what a steer charges
        conn.response.create(model=MODEL, input="Say hello")
        assert until_done(iter(conn))[-1].type == "response.completed"
        kept = engaged[-1].pipe.delivered  # a plain answer with spare endpoints: a failover continuation starts
        assert kept.sent_text() == "".join(words) and kept.chars == len(kept.sent_text())  # from its text, kept
