"""Which of a request's `stop` strings ended an answer, on an engine that says so only when asked: llama.cpp.

Anthropic's Messages API answers `stop_reason: "stop_sequence"` and the `stop_sequence` that matched, and a client
that cuts its model's output at a marker (`</answer>`) reads them. vLLM (`stop_reason`) and SGLang
(`matched_stop`) name the stop string in every answer (gateway/chat_events.matched_stop); llama.cpp's
OpenAI-compatible answer says only `finish_reason: "stop"`, the same for its end-of-turn token and for a stop
string, so every Messages answer through a llama.cpp site said `end_turn`. Asked with `"verbose": true`,
llama-server adds `__verbose` to the answer (to the last chunk of a stream) with `stop_type` ("word" for a stop
string) and `stopping_word` (checked on llama-server 0.3.36).

For a request with `stop` strings on an engine of such a kind (`VERBOSE_KINDS`), `StopWordEngine` asks with
`verbose`, writes the stopping word as the choice's `stop_reason` (vLLM's field, which matched_stop reads) and
leaves `__verbose` out of the answer (it repeats the whole text and the rendered prompt). A client's own
`verbose` is refused at the door since the thirty-fourth session (gateway/schemas.py: `__verbose` tells the
engine's cache count, its slot and the operator's settings), and `__verbose` is written out of every answer
(gateway/usage.CACHE_FIELDS): only this module asks for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import orjson

from aigrid.engines.fan_out import FANNED_PATHS
from aigrid.engines.protocol import Engine, UpstreamResponse
from aigrid.engines.sse import encode, rewritten
from aigrid.engines.wrapped import WrappedEngine, once, read_whole

VERBOSE_KINDS = frozenset({"llamacpp"})
"""Engine kinds that name the matched stop string only in `__verbose`, on `"verbose": true`."""
VERBOSE = "__verbose"
_MARK = b'"__verbose"'




def needs_stop_word(body: Mapping[str, Any]) -> bool:
    """Does this request ask with stop strings (and not for `verbose` itself, which the door refuses)?"""
    return bool(body.get("stop")) and "verbose" not in body


class StopWordEngine(WrappedEngine):
    """`inner` (of a kind in VERBOSE_KINDS, wired so in gateway/wiring.py) with the matched stop string as each
    choice's `stop_reason` in its chat and completion answers; every other request passes untouched. It is built
    once per endpoint: `max_bytes` (the most bytes of one whole answer it reads, the gateway's bound for the
    endpoint's model) is its own, not an attempt's (`bound` leaves it)."""

    def __init__(self, inner: Engine, max_bytes: int | None = None) -> None:
        super().__init__(inner)
        self.max_bytes = max_bytes

    def bound(self, max_bytes: int) -> None:
        """Shared by every request to its endpoint: each of its answers is one engine request's, its bound fixed."""

    def open(self, path: str, body: bytes) -> AbstractAsyncContextManager[UpstreamResponse]:
        if b'"stop"' not in body or path.rstrip("/") not in FANNED_PATHS:
            return self.inner.open(path, body)
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return self.inner.open(path, body)
        if not isinstance(doc, dict) or not needs_stop_word(doc):
            return self.inner.open(path, body)
        return self._open(path, doc)

    @asynccontextmanager
    async def _open(self, path: str, body: dict[str, Any]) -> AsyncIterator[UpstreamResponse]:
        body["verbose"] = True
        async with self.inner.open(path, orjson.dumps(body)) as answer:
            if answer.status >= 400:
                yield answer
            elif body.get("stream"):
                yield UpstreamResponse(answer.status, answer.headers, stop_word_stream(answer.body))
            else:
                whole = await read_whole(answer.body, self.max_bytes)
                yield UpstreamResponse(answer.status, answer.headers, once(stop_word_answer(whole)))


def named_stop(doc: dict[str, Any]) -> bool:
    """`doc` (an answer or a chunk) without `__verbose`, its stopping word as the choices' `stop_reason`. False
    when `doc` has no `__verbose`."""
    verbose = doc.pop(VERBOSE, None)
    if verbose is None:
        return False
    word = verbose.get("stopping_word") if isinstance(verbose, dict) else None
    if isinstance(word, str) and word and verbose.get("stop_type") == "word":
        for choice in doc.get("choices") or ():
            if isinstance(choice, dict) and choice.get("finish_reason") == "stop":
                choice["stop_reason"] = word
    return True


def stop_word_answer(answer: bytes) -> bytes:
    try:
        doc = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return answer  # not JSON: passed as the engine sent it
    if not isinstance(doc, dict) or not named_stop(doc):
        return answer
    return orjson.dumps(doc)


async def stop_word_stream(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The engine's events, the one carrying `__verbose` (llama.cpp's last) re-written. Every chunk is decoded:
    the marker may be split across two reads."""
    def rewrite(data: bytes, event: bytes) -> bytes | None:
        if _MARK not in data:
            return None
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(doc, dict) or not named_stop(doc):
            return None
        return encode(orjson.dumps(doc), event=event)

    async for chunk in rewritten(body, rewrite):
        yield chunk
