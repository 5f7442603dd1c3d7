"""A streamed chat answer as the Responses API's events:

    response.created, response.in_progress,
    per output item: response.output_item.added, then for a message response.content_part.added,
    response.output_text.delta*, response.output_text.done, response.content_part.done; for a function call
    response.function_call_arguments.delta*, response.function_call_arguments.done; response.output_item.done
    (first, where the request offers the grid's tools and the conversation's context lists them not yet, an
    mcp_list_tools item of them: response.output_item.added without its tools, response.mcp_list_tools.in_progress
    and .completed, response.output_item.done, as OpenAI streams one; since the thirty-eighth session, from the
    thirty-seventh before the first server-side tool run of every response that ran one)
    (a server-side tool run, an mcp_call item, once it has run: response.output_item.added in_progress,
    response.mcp_call.in_progress, response.mcp_call_arguments.delta and .done, response.mcp_call.completed or
    .failed, response.output_item.done, as OpenAI streams a remote MCP call; until the thirty-sixth session only
    the item's added and done), and
    response.completed (or response.incomplete / response.failed) with the whole Response.

An answer cut (its finish: max_output_tokens, a steer, an engine's content filter; or a failure mid-stream) closes the
item it was writing with status `incomplete`, in its done events and in the final Response, as OpenAI does.
Parallel function calls whose argument pieces the engine interleaves are open together, each delta naming its
item and output_index (_Output).

Every event carries its sequence_number (from `seq`: a streamed background response's continue its event
log's, event_log.py). `on_done` receives the final Response (to store it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import orjson

from aigrid.engines.sse import encode
from aigrid.gateway.chat_events import (
    ChatEvent,
    Finish,
    Pieces,
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
    ITEM_CUT,
    function_call_item,
    incomplete_reason,
    logprobs_of,
    mcp_call_item,
    mcp_list_tools_item,
    message_item,
    new_id,
    response_object,
    usage_block,
)

log = logging.getLogger("aigrid.proxy")
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


MESSAGE = ("message", -1)
"""The open message's key in _Output.open (a function call's: ("call", its chat index))."""


class _Open:
    """An item open: its output_index, the item as added, and its text or arguments' pieces so far."""

    __slots__ = ("index", "item", "parts", "logprobs", "whole")

    def __init__(self, index: int, item: dict[str, Any]) -> None:
        self.index, self.item = index, item
        self.whole = False  # a call's: whether its arguments are whole (ToolArgs.whole)
        self.parts = Pieces()  # the message's text or the call's argument pieces (a call's joined as they come)
        self.logprobs: list[dict[str, Any]] = []


class _Output:
    """The output items so far by output_index (one still open as added), and those open: a message, or function
    calls by chat index. Several calls may be open at once: OpenAI's chat stream may interleave the argument pieces of
    parallel calls (each piece names its call's index), and each Responses delta names its item and output_index. A
    call is done once another has begun after it and its arguments are a whole JSON object
    (ToolArgs.whole), at text, or at the answer's end. Until the thirtieth session only the last call
    begun was open: a piece of an earlier one was dropped, its arguments cut. No piece comes for a call done
    (chat_events._Calls holds text behind a call not whole, and ends the answer with an error at a piece after a
    call's arguments ended; until the thirty-first session it was dropped here with a log line, the call cut)."""

    def __init__(self, ev: _Events) -> None:
        self.ev = ev
        self.items: list[dict[str, Any]] = []
        self.open: dict[tuple[str, int], _Open] = {}
        self.last_call = ("call", -1)  # the key of the last call begun

    def close(self, key: tuple[str, int], status: str = "completed") -> bytes:
        """An open item done; `status` ITEM_CUT where the answer stopped in it (its finish, or a failure)."""
        o = self.open.pop(key)
        if key == MESSAGE:
            text = "".join(o.parts)
            done = message_item(text, o.item["id"], status, logprobs=o.logprobs)
            part = done["content"][0]
            out = (self.ev("response.output_text.done", item_id=o.item["id"], output_index=o.index, content_index=0,
                           text=text, logprobs=o.logprobs)
                   + self.ev("response.content_part.done", item_id=o.item["id"], output_index=o.index,
                             content_index=0, part=part))
        else:
            done = {**o.item, "arguments": "".join(o.parts), "status": status}
            out = self.ev("response.function_call_arguments.done", item_id=o.item["id"], output_index=o.index,
                          name=o.item["name"], arguments=done["arguments"])
        self.items[o.index] = done
        return out + self.ev("response.output_item.done", output_index=o.index, item=done)

    def close_all(self, status: str = "completed") -> bytes:
        """Every open item done, by output_index."""
        return b"".join([self.close(key, status) for key in sorted(self.open, key=lambda k: self.open[k].index)])

    def _add(self, key: tuple[str, int], item: dict[str, Any]) -> _Open:
        o = self.open[key] = _Open(len(self.items), item)
        self.items.append(item)
        return o

    def start_message(self) -> bytes:
        out = self.close_all()
        o = self._add(MESSAGE, message_item("", new_id("msg"), status="in_progress"))
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return (out + self.ev("response.output_item.added", output_index=o.index, item=o.item)
                + self.ev("response.content_part.added", item_id=o.item["id"], output_index=o.index, content_index=0,
                          part=part))

    def text_delta(self, text: str, logprobs: list[dict[str, Any]]) -> bytes:
        o = self.open[MESSAGE]
        o.parts.append(text)
        o.logprobs += logprobs
        return self.ev("response.output_text.delta", item_id=o.item["id"], output_index=o.index,
                       content_index=0, delta=text, logprobs=logprobs)

    def start_call(self, index: int, call_id: str, name: str) -> bytes:
        """A call begun: the open message done, and the last call begun if its arguments are whole. Every other open
        call's are not (args_delta closes a call once whole when another began after it), so only that one is parsed:
        an engine's thousands of calls left open are not each parsed again for every call begun (until RV9, 2,000
        open calls whose arguments end with '}' took 40 s of the event loop)."""
        out = b""
        if MESSAGE in self.open:
            out = self.close(MESSAGE)
        if (last := self.open.get(self.last_call)) is not None and last.whole:
            out += self.close(self.last_call)
        self.last_call = ("call", index)
        o = self._add(("call", index), function_call_item(call_id, name, "", new_id("fc"), status="in_progress"))
        return out + self.ev("response.output_item.added", output_index=o.index, item=o.item)

    def args_delta(self, index: int, fragment: str, whole: bool) -> bytes:
        key = ("call", index)
        o = self.open.get(key)
        if o is None:  # (chat_events ends the answer before such a piece: a bug if it comes)
            log.error("a streamed tool call's argument piece came after its function_call item was done "
                      "(call index %d): left out of the Responses stream", index)
            return b""
        o.parts.add(fragment)
        o.whole = whole
        out = self.ev("response.function_call_arguments.delta", item_id=o.item["id"], output_index=o.index,
                      delta=fragment)
        if o.index != len(self.items) - 1 and o.whole:  # another call began after it: it is done
            out += self.close(key)
        return out

    def compaction(self, item: dict[str, Any]) -> bytes:
        """A compaction item made before the answer (automatic compaction, responses_api.py), as OpenAI streams
        one: added (its content not yet written), compacting, done."""
        index = len(self.items)
        self.items.append(item)
        return (self.ev("response.output_item.added", output_index=index, item={**item, "encrypted_content": ""})
                + self.ev("response.compaction.compacting", item_id=item["id"], output_index=index)
                + self.ev("response.output_item.done", output_index=index, item=item))

    def list_tools(self, item: dict[str, Any]) -> bytes:
        """The mcp_list_tools item before the model's output, as OpenAI streams one: added without its tools,
        response.mcp_list_tools.in_progress and .completed, done with them."""
        index = len(self.items)
        self.items.append(item)
        at = {"item_id": item["id"], "output_index": index}
        return (self.ev("response.output_item.added", output_index=index, item={**item, "tools": []})
                + self.ev("response.mcp_list_tools.in_progress", **at)
                + self.ev("response.mcp_list_tools.completed", **at)
                + self.ev("response.output_item.done", output_index=index, item=item))

    def mcp_call(self, item: dict[str, Any]) -> bytes:
        """A server-side tool run (mcp_call_item), after it ran: its item added in progress (no output yet), its
        events in OpenAI's order, each naming its item and output_index, and the item done as it ended (`failed`
        with its error, responses_translate.mcp_call_item)."""
        out = self.close_all()
        index = len(self.items)
        self.items.append(item)
        at = {"item_id": item["id"], "output_index": index}
        begun = {**item, "arguments": "", "status": "in_progress", "output": None, "error": None}
        ended = "response.mcp_call.failed" if item["status"] == "failed" else "response.mcp_call.completed"
        return (out + self.ev("response.output_item.added", output_index=index, item=begun)
                + self.ev("response.mcp_call.in_progress", **at)
                + self.ev("response.mcp_call_arguments.delta", **at, delta=item["arguments"])
                + self.ev("response.mcp_call_arguments.done", **at, arguments=item["arguments"])
                + self.ev(ended, **at)
                + self.ev("response.output_item.done", output_index=index, item=item))


async def responses_stream(events: AsyncIterator[ChatEvent], req: ResponsesRequest, rid: str,
                           on_done: OnDone, *, created: int | None = None, seq: int = 0,
                           lead: Sequence[dict[str, Any]] = (), spent: Spent = (0, 0, 0),
                           listed: Sequence[dict[str, Any]] | None = None) -> AsyncIterator[bytes]:
    """`seq`: the first sequence_number; above 0, response.created was sent already (a background response's
    event log: created and queued when it was accepted, responses_api.py). `lead`: compaction items made before
    the answer (automatic compaction), streamed first; `spent`: their pass's (prompt, completion, cached) tokens,
    added to the Response's usage. `listed`: the tools an mcp_list_tools item lists after them, before the model's
    output (responses_translate.to_list; none: no item), as output_items' whole Response."""
    ev = _Events(seq)
    created = int(time.time()) if created is None else created
    if seq == 0:
        yield ev("response.created", response=response_object(req, rid, created, [], status="in_progress"))
    yield ev("response.in_progress", response=response_object(req, rid, created, [], status="in_progress"))
    out = _Output(ev)
    for item in lead:
        yield out.compaction(item)
    if listed:
        yield out.list_tools(mcp_list_tools_item(listed))
    finish: str | None = None
    loop_stop: str | None = None
    usage: Usage | None = None
    steps_seen: set[str] = set()
    steer = STEER.get()
    async for e in events:
        if isinstance(e, TextPiece):
            if MESSAGE not in out.open:
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
        elif isinstance(e, ToolArgs):
            yield out.args_delta(e.index, e.fragment, e.whole)
        elif isinstance(e, Steps):
            for step in e.steps:
                key = str(step.get("call_id") or step.get("index"))
                if key not in steps_seen:
                    steps_seen.add(key)
                    yield out.mcp_call(mcp_call_item(step))
        elif isinstance(e, Finish):
            finish, loop_stop = e.reason, e.loop_stop
        elif isinstance(e, Usage):
            usage = e
        elif isinstance(e, StreamError):  # cut mid-answer: the items it was writing end incomplete, as OpenAI's
            yield out.close_all(ITEM_CUT)
            failed = response_object(req, rid, created, out.items, status="failed")
            failed["error"] = {"code": "server_error", "message": e.message}
            yield ev("response.failed", response=failed)
            return
    yield out.close_all(ITEM_CUT if incomplete_reason(finish) else "completed")
    got = None if usage is None else (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
    final = response_object(req, rid, created, out.items, status="completed", finish_reason=finish,
                            usage=None if got is None and not any(spent) else usage_block(*added(spent, got)),
                            loop_stop=loop_stop)
    await on_done(final)
    kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    yield ev(kind, response=final)
