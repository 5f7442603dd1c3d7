"""A streamed chat answer as the Responses API's events:

    response.created, response.in_progress,
    per output item: response.output_item.added, then for a message response.content_part.added,
    response.output_text.delta*, response.output_text.done, response.content_part.done; for a function call
    response.function_call_arguments.delta*, response.function_call_arguments.done; response.output_item.done
    (a server-side tool run is one mcp_call item, added and done at once), and
    response.completed (or response.incomplete / response.failed) with the whole Response.

An answer cut (its finish: max_output_tokens, a steer, an engine's content filter; or a failure mid-stream) closes the
item it was writing with status `incomplete`, in its done events and in the final Response, as OpenAI does.

Every event carries its sequence_number (from `seq`: a streamed background response's continue its event
log's, event_log.py). `on_done` receives the final Response (to store it).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import orjson

from aigrid.engines.sse import encode
from aigrid.gateway.chat_events import (
    ChatEvent,
    Finish,
    Steps,
    StreamError,
    TextPiece,
    ToolArgs,
    ToolStart,
    Usage,
)
from aigrid.gateway.relay_response import STEER, STEERED
from aigrid.gateway.responses_schema import ResponsesRequest
from aigrid.gateway.responses_translate import (
    CUT,
    function_call_item,
    incomplete_reason,
    logprobs_of,
    mcp_call_item,
    message_item,
    new_id,
    response_object,
    usage_block,
)

OnDone = Callable[[dict[str, Any]], Awaitable[None]]
Spent = tuple[int, int, int]
"""Tokens a Response's usage adds to its answer's: (prompt, completion, cached)."""


def added(spent: Spent, got: Spent | None) -> Spent:
    """The answer's (prompt, completion, cached) tokens with those `spent` before it (a compaction pass)."""
    a, b, c = got or (0, 0, 0)
    return spent[0] + a, spent[1] + b, spent[2] + c


class _Events:
    def __init__(self, seq: int = 0) -> None:
        self.seq = seq

    def __call__(self, kind: str, **data: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.seq, **data}
        self.seq += 1
        return encode(orjson.dumps(payload), event=kind.encode())


class _Output:
    """The output items so far, and the one still open (a message, or a function call by chat index)."""

    def __init__(self, ev: _Events) -> None:
        self.ev = ev
        self.items: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None
        self.open_key: tuple[str, int] | None = None
        self.text: list[str] = []
        self.logprobs: list[dict[str, Any]] = []
        self.args: list[str] = []

    def close(self, status: str = "completed") -> bytes:
        """The open item done; `status` CUT where the answer stopped in it (its finish, or a failure)."""
        item, self.open, key, self.open_key = self.open, None, self.open_key, None
        if item is None or key is None:
            return b""
        index = len(self.items)
        if key[0] == "message":
            text = "".join(self.text)
            done = message_item(text, item["id"], status, logprobs=self.logprobs)
            part = done["content"][0]
            out = (self.ev("response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                           text=text, logprobs=self.logprobs)
                   + self.ev("response.content_part.done", item_id=item["id"], output_index=index,
                             content_index=0, part=part))
        else:
            done = {**item, "arguments": "".join(self.args), "status": status}
            out = self.ev("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                          name=item["name"], arguments=done["arguments"])
        self.items.append(done)
        return out + self.ev("response.output_item.done", output_index=index, item=done)

    def start_message(self) -> bytes:
        out = self.close()
        item = message_item("", new_id("msg"), status="in_progress")
        self.open, self.open_key, self.text, self.logprobs = item, ("message", -1), [], []
        index = len(self.items)
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return (out + self.ev("response.output_item.added", output_index=index, item=item)
                + self.ev("response.content_part.added", item_id=item["id"], output_index=index, content_index=0,
                          part=part))

    def text_delta(self, text: str, logprobs: list[dict[str, Any]]) -> bytes:
        self.text.append(text)
        self.logprobs += logprobs
        assert self.open is not None
        return self.ev("response.output_text.delta", item_id=self.open["id"], output_index=len(self.items),
                       content_index=0, delta=text, logprobs=logprobs)

    def start_call(self, index: int, call_id: str, name: str) -> bytes:
        out = self.close()
        item = function_call_item(call_id, name, "", new_id("fc"), status="in_progress")
        self.open, self.open_key, self.args = item, ("call", index), []
        return out + self.ev("response.output_item.added", output_index=len(self.items), item=item)

    def args_delta(self, fragment: str) -> bytes:
        self.args.append(fragment)
        assert self.open is not None
        return self.ev("response.function_call_arguments.delta", item_id=self.open["id"],
                       output_index=len(self.items), delta=fragment)

    def compaction(self, item: dict[str, Any]) -> bytes:
        """A compaction item made before the answer (automatic compaction, responses_api.py), as OpenAI streams
        one: added (its content not yet written), compacting, done."""
        index = len(self.items)
        self.items.append(item)
        return (self.ev("response.output_item.added", output_index=index, item={**item, "encrypted_content": ""})
                + self.ev("response.compaction.compacting", item_id=item["id"], output_index=index)
                + self.ev("response.output_item.done", output_index=index, item=item))

    def whole(self, item: dict[str, Any]) -> bytes:
        out = self.close()
        index = len(self.items)
        self.items.append(item)
        return (out + self.ev("response.output_item.added", output_index=index, item=item)
                + self.ev("response.output_item.done", output_index=index, item=item))


async def responses_stream(events: AsyncIterator[ChatEvent], req: ResponsesRequest, rid: str,
                           on_done: OnDone, *, created: int | None = None, seq: int = 0,
                           lead: Sequence[dict[str, Any]] = (), spent: Spent = (0, 0, 0)) -> AsyncIterator[bytes]:
    """`seq`: the first sequence_number; above 0, response.created was sent already (a background response's
    event log: created and queued when it was accepted, responses_api.py). `lead`: compaction items made before
    the answer (automatic compaction), streamed first; `spent`: their pass's (prompt, completion, cached) tokens,
    added to the Response's usage."""
    ev = _Events(seq)
    created = int(time.time()) if created is None else created
    if seq == 0:
        yield ev("response.created", response=response_object(req, rid, created, [], status="in_progress"))
    yield ev("response.in_progress", response=response_object(req, rid, created, [], status="in_progress"))
    out = _Output(ev)
    for item in lead:
        yield out.compaction(item)
    finish: str | None = None
    loop_stop: str | None = None
    usage: Usage | None = None
    steps_seen: set[str] = set()
    steer = STEER.get()
    async for e in events:
        if isinstance(e, TextPiece):
            if out.open_key != ("message", -1):
                yield out.start_message()
            yield out.text_delta(e.text, logprobs_of(e.logprobs))
            if steer is not None and steer.wanted and (cut := steer.stop()) is not None:
                # a steer waits: stopped at this text chunk (a message is open, so no function call is), its
                # engine released when the relay closes; the successor continues from what was streamed
                finish = STEERED
                usage = Usage(cut["prompt_tokens"], cut["completion_tokens"], 0)
                break
        elif isinstance(e, ToolStart):
            yield out.start_call(e.index, e.call_id, e.name)
        elif isinstance(e, ToolArgs) and out.open_key == ("call", e.index):
            yield out.args_delta(e.fragment)
        elif isinstance(e, Steps):
            for step in e.steps:
                key = str(step.get("call_id") or step.get("index"))
                if key not in steps_seen:
                    steps_seen.add(key)
                    yield out.whole(mcp_call_item(step))
        elif isinstance(e, Finish):
            finish, loop_stop = e.reason, e.loop_stop
        elif isinstance(e, Usage):
            usage = e
        elif isinstance(e, StreamError):  # cut mid-answer: the item it was writing ends incomplete, as OpenAI's
            yield out.close(CUT)
            failed = response_object(req, rid, created, out.items, status="failed")
            failed["error"] = {"code": "server_error", "message": e.message}
            yield ev("response.failed", response=failed)
            return
    yield out.close(CUT if incomplete_reason(finish) else "completed")
    got = None if usage is None else (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
    final = response_object(req, rid, created, out.items, status="completed", finish_reason=finish,
                            usage=None if got is None and not any(spent) else usage_block(*added(spent, got)),
                            loop_stop=loop_stop)
    await on_done(final)
    kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    yield ev(kind, response=final)
