"""The loop's events as an OpenAI response, and the loop presented as an Engine.

Non-streaming: one chat.completion whose message is the final answer (or the client's tool calls), with
two extra fields: `aigrid_steps` (every tool run: tool, arguments, result, ok, duration_ms, model_ms) and
`aigrid_loop` (stop reason, mode, model calls, time in the model and in tools).

Streaming: ordinary chat.completion.chunk events; after each tool run an SSE comment line
`: aigrid-step {...}` (every SSE parser, the OpenAI SDKs' included, skips comments); the final answer's
text as content deltas while the engine produces it; the last chunk carries finish_reason plus
`aigrid_steps` and `aigrid_loop`; a usage chunk when stream_options.include_usage asks for it; [DONE].

ToolLoopEngine wraps the chosen endpoint's Engine so that the gateway's proxy (RTT emulation, failover
before the first byte, headers, metrics) serves a tool loop exactly as it serves a plain completion.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from typing import Any, Protocol

import orjson

from aigrid.agents.loop import (
    CHAT_PATH,
    DEFAULT_LOOP,
    Event,
    Finished,
    LoopConfig,
    Rejected,
    ScreenTexts,
    Step,
    TextDelta,
    ToolReport,
    TurnGate,
    UsageReport,
    run_tool_loop,
)
from aigrid.agents.tool import NO_CONTEXT, ToolContext, ToolRegistry
from aigrid.engines.protocol import Engine, UpstreamResponse
from aigrid.engines.sse import DONE, comment, encode
from aigrid.engines.wrapped import WrappedEngine, once
from aigrid.errors import EngineError, EngineFailedAfterActing, EngineStreamBroken

JSON_TYPE = {"content-type": "application/json"}
SSE_TYPE = {"content-type": "text/event-stream"}


ShowStep = Callable[[Step], Step]
"""A step as the client sees it in `aigrid_steps` and the stream's step comments (the gateway's: the tenant's
output policy applied to its arguments and result); what the model reads is not changed by it."""


StopReport = Callable[[str], None]
"""Told why the loop ended (Finished.stop: answer, step_limit, token_budget, revoked...) as its answer is made: the
gateway's audit record and access line name it (Exchange.loop_stop)."""


def _as_is(step: Step) -> Step:
    return step


def completion(finished: Finished, model: str, *, created: int, response_id: str,
               show: ShowStep = _as_is) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": finished.content or None}
    if finished.tool_calls:
        message["tool_calls"] = list(finished.tool_calls)
    return {"id": response_id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finished.finish_reason}],
            "usage": _usage(finished.usage), "aigrid_steps": [show(s).to_dict() for s in finished.steps],
            "aigrid_loop": finished.summary()}


def _usage(usage: Mapping[str, int]) -> dict[str, int] | None:
    """The answer's `usage`: the loop's summed counts, or null when a turn came without the engine's count
    (Finished.usage {}: unknown, charged its reservation), as OpenAI's schema has it (`usage` is optional), so a
    client's SDK does not build a usage object without its required counts."""
    return dict(usage) if usage else None


class _Chunks:
    def __init__(self, model: str, created: int, response_id: str) -> None:
        self.head = {"id": response_id, "object": "chat.completion.chunk", "created": created, "model": model}

    def event(self, delta: Mapping[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        chunk = {**self.head, "choices": [{"index": 0, "delta": dict(delta), "finish_reason": finish}], **extra}
        return encode(orjson.dumps(chunk))

    def usage(self, usage: Mapping[str, int]) -> bytes:
        return encode(orjson.dumps({**self.head, "choices": [], "usage": _usage(usage)}))


def step_comment(step: Step) -> bytes:
    return comment(b" aigrid-step " + orjson.dumps(step.to_dict()))


async def sse_stream(events: AsyncIterator[Event], model: str, *, include_usage: bool, created: int,
                     response_id: str, show: ShowStep = _as_is,
                     on_stop: StopReport | None = None) -> AsyncIterator[bytes]:
    out = _Chunks(model, created, response_id)
    first = await anext(events, None)
    # the opening chunk's content as OpenAI's: "" when the answer opens with text, null otherwise (a turn that ends in
    # tool calls has no content; SDKs join a later text onto null). Until the thirty-third session always "", so a
    # streamed tool-call turn ended with content "" where the whole answer gives null (the openai-agents SDK makes an
    # empty message item of a "" content)
    yield out.event({"role": "assistant", "content": "" if isinstance(first, TextDelta) else None})
    streamed = ""
    async for ev in _prepend(first, events) if first is not None else events:
        if isinstance(ev, Step):
            yield step_comment(show(ev))
        elif isinstance(ev, TextDelta):
            streamed += ev.text
            yield out.event({"content": ev.text})
        elif isinstance(ev, Rejected):
            err = {"error": {"message": f"the engine refused a step of the tool loop (HTTP {ev.status}): "
                             f"{ev.body[:500].decode(errors='replace')}", "type": "upstream_error",
                             "param": None, "code": "tool_loop_step_rejected"}}
            yield encode(orjson.dumps(err))
        elif isinstance(ev, Finished):
            if on_stop is not None:
                on_stop(ev.stop)
            if ev.content.startswith(streamed) and len(ev.content) > len(streamed):
                yield out.event({"content": ev.content[len(streamed):]})  # text the engine did not stream
            if ev.tool_calls:
                calls = [{"index": i, **c} for i, c in enumerate(ev.tool_calls)]
                yield out.event({"tool_calls": calls})
            yield out.event({}, ev.finish_reason, aigrid_steps=[show(s).to_dict() for s in ev.steps],
                            aigrid_loop=ev.summary())
            if include_usage:
                yield out.usage(ev.usage)
    yield encode(DONE)


class ClientWatch(Protocol):
    """The request's client, watched while a streamed loop works after its first byte (the gateway's
    relay_response.Hangup): `arm()` before each step (raises CancelledError when the client is gone already;
    while armed, a hang-up cancels the task that pulls the stream), `disarm()` after it."""

    def arm(self) -> None: ...

    def disarm(self) -> None: ...


class ToolLoopEngine(WrappedEngine):
    """An Engine whose chat completions run the server-side tool loop on `inner` (the chosen endpoint's
    engine). Other paths and the health/stats probes go straight to `inner`.

    Non-streaming requests run the whole loop inside open(), so the status is exact (the engine's own
    4xx is passed through) and any engine failure can still fail over. Streaming requests run the first
    model turn inside open() (failover still possible) and the rest as the body streams.

    `watch`: a streamed loop's client; each read of the body after the first (a model turn, tool runs) is
    watched, so a client that leaves stops the loop at once instead of at the next byte written to it.
    `on_usage`: told the usage of the model turns finished so far, after each, and the payload of a later
    turn handed to its engine (run_tool_loop).
    `show`: each step as the client sees it (ShowStep; None: as it is).
    `on_tool`: told of each server-side tool call as it starts and ends (ToolReport, run_tool_loop).
    `before_turn`: asked before each model turn how many output tokens it may write, None: it may not run
    (TurnGate, run_tool_loop: the gateway reserves the turn's tokens on the request's quota).
    `on_stop`: told why the loop ended (StopReport), whole or streamed.
    """

    def __init__(self, inner: Engine, registry: ToolRegistry, *, context: ToolContext = NO_CONTEXT,
                 config: LoopConfig = DEFAULT_LOOP, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time, screen: ScreenTexts | None = None,
                 watch: ClientWatch | None = None,
                 on_usage: UsageReport | None = None, show: ShowStep | None = None,
                 on_tool: ToolReport | None = None, before_turn: TurnGate | None = None,
                 on_stop: StopReport | None = None) -> None:
        super().__init__(inner)
        self.registry = registry
        self.context = context
        self.config = config
        self._clock = clock
        self._wall = wall_clock
        self.screen = screen
        self.watch = watch
        self.on_usage = on_usage
        self.show = show or _as_is
        self.on_tool = on_tool
        self.before_turn = before_turn
        self.on_stop = on_stop

    def open(self, path: str, body: bytes) -> AbstractAsyncContextManager[UpstreamResponse]:
        if path.rstrip("/") != CHAT_PATH:
            return self.inner.open(path, body)
        return self._open(body)

    @asynccontextmanager
    async def _open(self, raw: bytes) -> AsyncIterator[UpstreamResponse]:
        body = orjson.loads(raw)
        model = str(body.get("model", ""))
        created, rid = int(self._wall()), f"chatcmpl-aigrid-{uuid.uuid4().hex[:24]}"
        config = self.config if self.max_bytes is None else replace(self.config, max_turn_bytes=self.max_bytes)
        events = run_tool_loop(self.inner, body, self.registry, context=self.context, config=config,
                               clock=self._clock, screen=self.screen, on_usage=self.on_usage, on_tool=self.on_tool,
                               before_turn=self.before_turn)
        try:
            if not body.get("stream"):
                finished: Finished | None = None
                acted = 0  # server-side tool calls so far (run or refused): after one, a failure is not run again elsewhere
                try:
                    async for ev in events:
                        if isinstance(ev, Rejected):
                            yield UpstreamResponse(ev.status, JSON_TYPE, once(ev.body))
                            return
                        if isinstance(ev, Step):
                            acted += 1
                        if isinstance(ev, Finished):
                            finished = ev
                except EngineError as e:
                    if acted:
                        raise EngineFailedAfterActing(f"{e} (after {acted} server-side tool call{'s' * (acted > 1)})") from e
                    raise
                assert finished is not None
                if self.on_stop is not None:
                    self.on_stop(finished.stop)
                doc = completion(finished, model, created=created, response_id=rid, show=self.show)
                yield UpstreamResponse(200, JSON_TYPE, once(orjson.dumps(doc)))
                return
            first = await anext(events)  # the first model turn: failures here can still fail over
            if isinstance(first, Rejected):
                yield UpstreamResponse(first.status, JSON_TYPE, once(first.body))
                return
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            stream = sse_stream(_prepend(first, events), model, include_usage=include_usage,
                                created=created, response_id=rid, show=self.show, on_stop=self.on_stop)
            yield UpstreamResponse(200, SSE_TYPE, _guarded(stream, self.watch))
        finally:
            await events.aclose()



async def _prepend(first: Event, rest: AsyncIterator[Event]) -> AsyncIterator[Event]:
    yield first
    async for ev in rest:
        yield ev


async def _guarded(stream: AsyncIterator[bytes], watch: ClientWatch | None = None) -> AsyncIterator[bytes]:
    """Engine failures after the first byte become EngineStreamBroken, which the proxy turns into an
    error event (it cannot fail over once bytes were sent). With `watch`, every read after the first (the
    first is the response's opening, read before the answer starts) is watched for the client's hang-up."""
    try:
        if watch is None:
            async for chunk in stream:
                yield chunk
            return
        try:
            first = await anext(stream)
        except StopAsyncIteration:
            return
        yield first
        while True:
            watch.arm()
            try:
                chunk = await anext(stream)
            except StopAsyncIteration:
                return
            finally:
                watch.disarm()
            yield chunk
    except EngineError as e:
        raise EngineStreamBroken(str(e)) from e
