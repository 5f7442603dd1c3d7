"""Find the usage object in an engine's answer: a JSON body, or the SSE chunk that carries it."""

from __future__ import annotations

from typing import Any

import orjson

from aigrid.engines.sse import SseDecoder


def usage_of(obj: Any) -> dict[str, Any] | None:
    usage = obj.get("usage") if isinstance(obj, dict) else None
    return usage if isinstance(usage, dict) else None


def answer_usage(body: bytes) -> dict[str, Any] | None:
    """Usage from a whole answer: a JSON body, or the last usage chunk of an SSE body."""
    if b'"usage"' not in body:
        return None
    if not body.lstrip().startswith((b"data:", b":", b"event:", b"id:")):
        try:
            return usage_of(orjson.loads(body))
        except orjson.JSONDecodeError:
            return None
    decoder = SseDecoder()
    events = decoder.feed(body)
    last = decoder.flush()
    found = None
    for ev in [*events, *([last] if last is not None else [])]:
        if ev.data is not None and b'"usage"' in ev.data:
            try:
                found = usage_of(orjson.loads(ev.data)) or found
            except orjson.JSONDecodeError:
                continue
    return found
