"""Mid-stream failover: what a broken stream already told the client, and how another engine continues it.

The relay forwards only whole SSE events (up to the last blank line), so at any moment the client holds
exactly the events in `sent`. When the engine dies, those events are parsed once (never on the happy
path) into the text already delivered. The next engine gets the same request with that text as a
prefilled assistant turn (chat) or appended to the prompt (completions) and a max_tokens budget reduced by
what was sent; its events are rewritten to carry the original stream's id, so the client sees one stream
with no repeated and no lost text. Where an exact continuation is impossible (tool calls, constrained
output, several choices, logprobs), the stream ends with a clear error instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

CONSTRAINED_FIELDS = ("response_format", "grammar", "json_schema", "guided_json", "guided_regex",
                      "guided_grammar", "guided_choice", "tools", "functions", "logprobs", "n")
"""Request fields whose output an engine cannot resume exactly from text alone."""
CONTINUE_FLAGS: dict[str, dict[str, Any]] = {
    # vLLM and SGLang continue a final assistant message only when asked; llama.cpp does it by default.
    "vllm": {"continue_final_message": True, "add_generation_prompt": False},
    "sglang": {"continue_final_message": True, "add_generation_prompt": False},
}


def events_in(buffer: bytes) -> tuple[bytes, bytes]:
    """Split a byte buffer into (complete SSE events, the incomplete tail)."""
    cut = buffer.rfind(b"\n\n")
    if cut < 0:
        return b"", buffer
    return buffer[: cut + 2], buffer[cut + 2:]


def data_lines(events: bytes) -> list[bytes]:
    return [line[5:].strip() for line in events.split(b"\n") if line.startswith(b"data:")]


@dataclass
class Delivered:
    """What the client has received so far on one stream."""

    text: list[str] = field(default_factory=list)
    chunks: int = 0
    stream_id: str | None = None
    created: int | None = None
    model: str | None = None
    tool_calls: bool = False
    finished: bool = False
    done: bool = False

    @classmethod
    def parse(cls, sent: bytes) -> Delivered:
        d = cls()
        for raw in data_lines(sent):
            if raw == b"[DONE]":
                d.done = True
                continue
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(obj, dict):
                continue
            d.stream_id = d.stream_id or obj.get("id")
            d.created = d.created or obj.get("created")
            d.model = d.model or obj.get("model")
            for choice in obj.get("choices") or ():
                delta = choice.get("delta") or {}
                piece = delta.get("content") if "delta" in choice else choice.get("text")
                if piece:
                    d.text.append(piece)
                    d.chunks += 1
                if delta.get("tool_calls") or delta.get("function_call"):
                    d.tool_calls = True
                if choice.get("finish_reason"):
                    d.finished = True
        return d


def why_not_continuable(body: dict[str, Any], delivered: Delivered) -> str | None:
    if delivered.tool_calls:
        return "the answer was a tool call"
    for name in CONSTRAINED_FIELDS:
        value = body.get(name)
        if value not in (None, False, 1, [], {}):
            return f"the request uses '{name}', which cannot be resumed exactly"
    return None


def continuation_body(body: dict[str, Any], delivered: Delivered, engine_kind: str) -> dict[str, Any]:
    """The request that makes another engine produce the rest of the answer."""
    sent = "".join(delivered.text)
    out = {**body, "stream": True}
    budget = body.get("max_completion_tokens") or body.get("max_tokens")
    if budget is not None:
        remaining = max(1, int(budget) - delivered.chunks)
        out["max_tokens" if "max_tokens" in body else "max_completion_tokens"] = remaining
    if "messages" in body:
        out["messages"] = [*body["messages"], {"role": "assistant", "content": sent}]
        out.update(CONTINUE_FLAGS.get(engine_kind, {}))
    else:
        prompt = body.get("prompt", "")
        out["prompt"] = (prompt if isinstance(prompt, str) else "".join(prompt)) + sent
    return out


def rewrite_event(raw: bytes, delivered: Delivered) -> bytes | None:
    """One continuation event, relabelled as part of the original stream; None to drop it."""
    if raw == b"[DONE]":
        return b"data: [DONE]\n\n"
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    choices = obj.get("choices") or []
    if choices and all(_role_only(c) for c in choices) and not obj.get("usage"):
        return None  # the new engine's opening {"role": "assistant"} delta: the client has had one already
    if delivered.stream_id is not None:
        obj["id"] = delivered.stream_id
    if delivered.created is not None:
        obj["created"] = delivered.created
    usage = obj.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        usage["completion_tokens"] += delivered.chunks
        if isinstance(usage.get("prompt_tokens"), int):
            usage["prompt_tokens"] = max(0, usage["prompt_tokens"] - delivered.chunks)
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _role_only(choice: dict[str, Any]) -> bool:
    delta = choice.get("delta")
    return isinstance(delta, dict) and not delta.get("content") and not choice.get("finish_reason") \
        and not delta.get("tool_calls")
