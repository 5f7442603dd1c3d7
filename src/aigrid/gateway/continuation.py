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


class Rewriter:
    """Relabels a continuation's events as part of the original stream.

    Some engines (llama.cpp) echo a prefilled assistant message at the start of their output, others
    (vLLM with continue_final_message) do not: text at the very start of the continuation that repeats what
    the client already has is dropped, so both kinds give the client each character exactly once.
    """

    def __init__(self, delivered: Delivered) -> None:
        self.delivered = delivered
        self._echo = "".join(delivered.text)

    def _strip_echo(self, piece: str) -> str:
        if not self._echo or not piece:
            return piece
        if piece.startswith(self._echo):
            piece, self._echo = piece[len(self._echo):], ""
        elif self._echo.startswith(piece):
            piece, self._echo = "", self._echo[len(piece):]
        else:
            self._echo = ""  # the engine did not echo: its first text is new text
        return piece

    def rewrite(self, raw: bytes) -> bytes | None:
        if raw == b"[DONE]":
            return b"data: [DONE]\n\n"
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(obj, dict):
            return None
        choices = obj.get("choices") or []
        for c in choices:
            if isinstance(c.get("delta"), dict) and c["delta"].get("content"):
                c["delta"]["content"] = self._strip_echo(c["delta"]["content"])
            elif isinstance(c.get("text"), str):
                c["text"] = self._strip_echo(c["text"])
        if choices and all(_empty(c) for c in choices) and not obj.get("usage"):
            return None  # an opening role delta or a fully echoed piece: nothing new for the client
        d = self.delivered
        if d.stream_id is not None:
            obj["id"] = d.stream_id
        if d.created is not None:
            obj["created"] = d.created
        usage = obj.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            usage["completion_tokens"] += d.chunks
            if isinstance(usage.get("prompt_tokens"), int):
                usage["prompt_tokens"] = max(0, usage["prompt_tokens"] - d.chunks)
        return b"data: " + orjson.dumps(obj) + b"\n\n"


def _empty(choice: dict[str, Any]) -> bool:
    delta = choice.get("delta")
    content = delta.get("content") if isinstance(delta, dict) else choice.get("text")
    has_calls = isinstance(delta, dict) and delta.get("tool_calls")
    return not content and not choice.get("finish_reason") and not has_calls
