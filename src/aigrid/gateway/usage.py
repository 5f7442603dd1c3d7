"""Find the usage object in an engine's answer: a JSON body, or the SSE chunk that carries it."""

from __future__ import annotations

from typing import Any

import orjson


def sse_usage(tail: bytes) -> dict[str, Any] | None:
    """Usage from a non-streamed JSON body or from the last SSE data lines of a stream, if present."""
    if b'"usage"' not in tail:
        return None
    candidates = [tail] if not tail.lstrip().startswith(b"data:") else [
        line[5:].strip() for line in tail.splitlines() if line.startswith(b"data:")
    ]
    for raw in reversed(candidates):
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        usage = obj.get("usage") if isinstance(obj, dict) else None
        if isinstance(usage, dict):
            return usage
    return None
