"""At most one tool call in an answer whose client asked for one: chat's `parallel_tool_calls: false`, which the
Messages door writes for Anthropic's `tool_choice.disable_parallel_tool_use: true` and the Responses door passes on
as it came. The three doors' answers are the chat answer the gateway relays (messages_translate, responses_translate
read it after), so the rule is kept here once, for a chat answer whole (first_call_only) and streamed (OneCall, in the
output filter), and each door's calls, tool_use blocks and function_call items follow from it.

The engines differ: vLLM drops the calls past the first itself (vllm-project/vllm#26233), SGLang passes the flag on
and answers two (sgl-project/sglang#9696), so the same request's answer depended on where the router sent it. Each
choice keeps its first call (the first call index its stream opened; a whole answer's first call) and every piece
of a later one is left out; its finish_reason (`tool_calls`) and usage (what the engine decoded, charged as it
counted) stay as the engine wrote them. Only a request that asked pays for it: an ordinary stream keeps the relay's
lean path (no event parsed), and one that asks has only the reads that may hold a call parsed (may_call)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson

log = logging.getLogger("aigrid.proxy")


def asks_one_call(body: Mapping[str, Any]) -> bool:
    """Does a chat body allow at most one tool call (`parallel_tool_calls: false`)?"""
    return body.get("parallel_tool_calls") is False


def may_call(data: bytes) -> bool:
    """Whether an engine's read (or one event's data) may hold a piece of a tool call: the key `tool_calls` written
    plainly, or any JSON escape (one may spell the key: `"tool\\u005fcalls"`). Any other read of a stream that asks for
    one call goes out on the relay's lean path, unparsed (an answer's text tokens)."""
    return b"tool_calls" in data or b"\\u" in data


class OneCall:
    """One stream's choices, each kept to the first tool call it opened (by the call's `index`, else its place in
    the piece): a later call's pieces never reach the client. The call kept goes out as `index` 0, whichever index the
    engine opened first: an engine that opened call 1 before call 0 sent the client one call at index 1, on which
    the openai SDK's stream helper (ChatCompletionStreamState) fails with an IndexError (review RV3)."""

    def __init__(self) -> None:
        self._first: dict[int, int] = {}  # choice index -> the call index kept
        self._told = False

    def event(self, obj: dict[str, Any]) -> None:
        """One chunk (a parsed chat.completion.chunk), its later calls' pieces taken out of each choice's delta."""
        choices = obj.get("choices")
        if not isinstance(choices, list):
            return
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            calls = delta.get("tool_calls")
            if not isinstance(calls, list) or not calls:
                continue
            index = choice.get("index")
            index = index if isinstance(index, int) else 0
            first = self._first.get(index)
            kept = []
            for place, call in enumerate(calls):
                k: int = call["index"] if isinstance(call, dict) and isinstance(call.get("index"), int) else place
                if first is None:
                    first = self._first[index] = k
                if k == first:
                    if k and isinstance(call, dict) and "index" in call:  # the answer's one call: index 0, as the
                        call["index"] = 0  # SDKs' accumulators read it (the openai helper's list; an IndexError)
                    kept.append(call)
            if len(kept) == len(calls):
                continue
            if not self._told:
                self._told = True
                log.info("an engine answered more than one tool call where the request asked for one "
                         "(parallel_tool_calls: false): only the first is sent")
            if kept:
                delta["tool_calls"] = kept
            else:
                del delta["tool_calls"]


def first_call_only(answer: bytes) -> bytes:
    """A whole chat answer with each choice's message kept to its first tool call; the engine's bytes where no choice
    held more than one (or the answer is not a chat answer: an engine's refusal passes as it came)."""
    try:
        doc = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return answer
    choices = doc.get("choices") if isinstance(doc, dict) else None
    cut = 0
    for choice in choices if isinstance(choices, list) else ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        calls = message.get("tool_calls")
        if isinstance(calls, list) and len(calls) > 1:
            cut += len(calls) - 1
            message["tool_calls"] = calls[:1]
    if not cut:
        return answer
    log.info("an engine answered %d tool calls past the first where the request asked for one "
             "(parallel_tool_calls: false): left out", cut)
    return orjson.dumps(doc)
