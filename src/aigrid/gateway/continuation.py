"""Mid-stream failover: what a broken stream already told the client, and how another engine continues it.

The relay (relay.py) forwards only whole SSE events, so at any moment the client holds exactly the events
observed so far. When the stream may need a continuation, the relay keeps its state incrementally as
events pass (`Delivered`: the text delivered and the number of content chunks, the stream's id), never the
events themselves. When the engine dies, the next engine gets the same request with that text as a
prefilled assistant turn (chat) or appended to the prompt (completions) and a max_tokens budget reduced by
what was sent; its events are rewritten to carry the original stream's id, so the client sees one stream
with no repeated and no lost text. Where an exact continuation is impossible (tool calls, constrained
output, several choices or prompts, logprobs), the stream ends with a clear error instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aigrid.engines.fan_out import prompts_of
from aigrid.gateway.request_info import CHARS_PER_TOKEN
from aigrid.gateway.schemas import output_limit

CONSTRAINED_FIELDS = ("response_format", "grammar", "json_schema", "guided_json", "guided_regex",
                      "guided_grammar", "guided_choice", "structured_outputs", "structural_tag", "ebnf", "regex",
                      "tools", "functions", "logprobs", "n")
"""Request fields whose output an engine cannot resume exactly from text alone (a grammar starts again at its root
on the text delivered). vLLM's `structured_outputs` (its grammars since v0.12) and `structural_tag`, SGLang's `ebnf`
and `regex` were continued until review RV1 of fe0745b7."""
_UNCONSTRAINED: tuple[object, ...] = (None, False, 1, [], {})
"""Values of those fields that constrain nothing (compared with ==, so 0 and 1.0 count too)."""
CONTINUE_FLAGS: dict[str, dict[str, Any]] = {
    # vLLM and SGLang continue a final assistant message only when asked; llama.cpp does it by default.
    "vllm": {"continue_final_message": True, "add_generation_prompt": False},
    "sglang": {"continue_final_message": True, "add_generation_prompt": False},
}


@dataclass(slots=True)
class Delivered:
    """What the client has received so far on one stream, updated event by event."""

    text: list[str] = field(default_factory=list)
    chunks: int = 0
    chars: int = 0
    """The delivered text's length, kept or not."""
    keep_text: bool = True
    """Keep the text itself (a continuation starts from it); False: its length and chunk count only (what a
    steer's charge needs, relay.StreamRelay.steer), so a long answer is not held whole for a steer."""
    stream_id: str | None = None
    created: int | None = None
    model: str | None = None
    tool_calls: bool = False
    finished: bool = False
    done: bool = False
    other_chunks: int = 0
    """Chunks of generated output that are not the answer's text: reasoning (`reasoning_content`, `reasoning`) and
    tool calls (their arguments); with `other_chars`, counted for the charge only (tokens())."""
    other_chars: int = 0

    def observe(self, obj: Any) -> None:
        """One decoded chunk (a data payload's JSON) delivered to the client."""
        if not isinstance(obj, dict):
            return
        if self.stream_id is None:
            self.stream_id = obj.get("id")
            self.created = obj.get("created")
            self.model = obj.get("model")
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                piece = delta.get("content")
                if delta.get("tool_calls") or delta.get("function_call"):
                    self.tool_calls = True
                other = _other_chars(delta)
                if other:
                    self.other_chunks += 1
                    self.other_chars += other
            else:
                piece = choice.get("text")
            if piece and isinstance(piece, str):
                if self.keep_text:
                    self.text.append(piece)
                self.chars += len(piece)
                self.chunks += 1
            if choice.get("finish_reason"):
                self.finished = True

    def sent_text(self) -> str:
        return "".join(self.text)

    def tokens(self) -> int:
        """The output tokens delivered, as charged where the engine's own count never came (a client that hung up or
        cancelled, a steer, an engine that died: Exchange.used_tokens): one token per chunk of generated output (the
        text, reasoning, a tool call's arguments), at least its characters' estimate (CHARS_PER_TOKEN, as the
        prompt's: an engine may stream several tokens a chunk)."""
        return max(self.chunks + self.other_chunks, (self.chars + self.other_chars) // CHARS_PER_TOKEN)


def _other_chars(delta: dict[str, Any]) -> int:
    """The characters of a chunk's generated output besides its text: reasoning, tool calls' names and arguments."""
    n = 0
    for key in ("reasoning_content", "reasoning"):
        value = delta.get(key)
        if isinstance(value, str):
            n += len(value)
    calls = delta.get("tool_calls")
    for call in calls if isinstance(calls, list) else (delta.get("function_call"),):
        fn = call.get("function", call) if isinstance(call, dict) else None
        if isinstance(fn, dict):
            n += sum(len(v) for k in ("name", "arguments") if isinstance(v := fn.get(k), str))
    return n


def why_not_continuable(body: dict[str, Any], delivered: Delivered) -> str | None:
    if delivered.tool_calls:
        return "the answer was a tool call"
    if prompts_of(body) is not None:  # one answer per prompt (engines/fan_out.py), as `n` below
        return "the request has several prompts, each answered apart"
    for name in CONSTRAINED_FIELDS:
        value = body.get(name)
        if value not in _UNCONSTRAINED:
            return f"the request uses '{name}', which cannot be resumed exactly"
    return None


def continuation_body(body: dict[str, Any], delivered: Delivered, engine_kind: str) -> dict[str, Any]:
    """The request that makes another engine produce the rest of the answer: the budget less what was delivered,
    and the client's `min_tokens` (vLLM's, SGLang's) too, never past that rest (sent whole until the thirty-fourth
    session, {"max_tokens": 300, "min_tokens": 200} broken after 150 tokens asked the spare for 200 of 150: vLLM's
    400 on every spare, the client's stream cut)."""
    sent = delivered.sent_text()
    out = {**body, "stream": True}
    budget = output_limit(body)
    remaining = None
    if budget is not None:
        remaining = max(1, budget - delivered.chunks)
        # each limit the body sets: with both, max_completion_tokens is the budget (as vLLM reads it), and the rest
        # written to max_tokens alone left the spare the whole of it (until the final reading F2)
        for key in [k for k in ("max_tokens", "max_completion_tokens") if body.get(k) is not None]:
            out[key] = remaining
    least = body.get("min_tokens")
    if isinstance(least, int) and not isinstance(least, bool) and least > 0:
        rest = max(0, least - delivered.chunks)
        out["min_tokens"] = rest if remaining is None else min(rest, remaining)
    if "messages" in body:
        out["messages"] = [*body["messages"], {"role": "assistant", "content": sent}]
        out.update(CONTINUE_FLAGS.get(engine_kind, {}))
    else:
        prompt = body.get("prompt", "")
        out["prompt"] = (prompt if isinstance(prompt, str) else "".join(prompt)) + sent
    return out


class EchoStrip:
    """Drops an engine's echo of a prefilled assistant message from the start of its answer, piece by piece:
    llama.cpp repeats the prefill before continuing it, vLLM (continue_final_message) does not. Text that does
    not repeat the prefill ends the check (the engine did not echo: its first text is new text). The prefill is read
    from `_at` (what was echoed so far) on, never cut: until the thirty-sixth session (brief QUAD) each piece echoed
    cut the rest of it off as a new string, a copy of all that rest at every piece, quadratic in a long prefill (a
    client's final assistant turn, a continuation's text delivered) that the engine echoes a token a piece."""

    __slots__ = ("_echo", "_at")

    def __init__(self, prefill: str) -> None:
        self._echo = prefill
        self._at = 0

    def __call__(self, piece: str) -> str:
        if not self._echo or not piece:
            return piece
        rest = len(self._echo) - self._at
        if len(piece) >= rest and self._echo.startswith(piece[:rest], self._at):  # the echo's end, then new text
            piece, self._echo = piece[rest:], ""
        elif self._echo.startswith(piece, self._at):
            piece, self._at = "", self._at + len(piece)
        else:
            self._echo = ""
        return piece


class Rewriter:
    """Relabels a continuation's events as part of the original stream.

    Some engines (llama.cpp) echo a prefilled assistant message at the start of their output, others
    (vLLM with continue_final_message) do not: text at the very start of the continuation that repeats what
    the client already has is dropped, so both kinds give the client each character exactly once. It takes
    what was delivered when the continuation started (the tracking goes on while it streams).
    """

    def __init__(self, delivered: Delivered) -> None:
        self._strip_echo = EchoStrip(delivered.sent_text())
        self._id, self._created, self._chunks = delivered.stream_id, delivered.created, delivered.chunks

    def rewrite(self, obj: Any) -> Any | None:
        """The continuation's chunk as the client must see it; None when it has nothing new."""
        if not isinstance(obj, dict):
            return None
        choices = obj.get("choices")
        if not isinstance(choices, list):  # not a chat chunk's (a broken engine's): passed on as it came, relabelled
            choices = []
        for c in choices:
            if not isinstance(c, dict):
                continue
            if isinstance(c.get("delta"), dict) and isinstance(c["delta"].get("content"), str):
                c["delta"]["content"] = self._strip_echo(c["delta"]["content"])
            elif isinstance(c.get("text"), str):
                c["text"] = self._strip_echo(c["text"])
        if choices and all(isinstance(c, dict) and _empty(c) for c in choices) and not obj.get("usage"):
            return None  # an opening role delta or a fully echoed piece: nothing new for the client
        if self._id is not None:
            obj["id"] = self._id
        if self._created is not None:
            obj["created"] = self._created
        usage = obj.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            usage["completion_tokens"] += self._chunks
            if isinstance(usage.get("prompt_tokens"), int):
                usage["prompt_tokens"] = max(0, usage["prompt_tokens"] - self._chunks)
        return obj


def _empty(choice: dict[str, Any]) -> bool:
    delta = choice.get("delta")
    content = delta.get("content") if isinstance(delta, dict) else choice.get("text")
    has_calls = isinstance(delta, dict) and delta.get("tool_calls")
    return not content and not choice.get("finish_reason") and not has_calls
