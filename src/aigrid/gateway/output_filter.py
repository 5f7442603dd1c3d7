"""Output checks on an engine's answer, for the requests that need them; every other answer passes untouched.

Every stream passes through one: it keeps the engine's usage chunk (quotas and the audit log are metered
with real token counts) and drops it again when only the gateway asked for it, and for tenants whose
firewall redacts output it redacts personal data (holding back a short tail, so that an item split across
chunks is still caught). Blocks with neither usage nor personal-data checks pass untouched. Works on whole
SSE events, as the relay delivers them.
"""

from __future__ import annotations

from typing import Any

import orjson

from aigrid.gateway.continuation import data_lines
from aigrid.security.firewall.pipeline import Firewall, Verdict, stream_verdicts
from aigrid.security.firewall.streaming import StreamingRedactor


class OutputFilter:
    def __init__(self, redactor: StreamingRedactor | None, strip_usage: bool) -> None:
        self._redactor = redactor
        self._strip_usage = strip_usage
        self._flushed = False
        self.usage: dict[str, Any] | None = None

    def verdicts(self) -> list[Verdict]:
        return stream_verdicts(self._redactor) if self._redactor is not None else []

    def events(self, block: bytes) -> bytes:
        if self._redactor is None and b'"usage"' not in block and b"[DONE]" not in block:
            return block  # metering only: nothing to look at in this block, pass it untouched
        out: list[bytes] = []
        for raw in data_lines(block):
            if raw == b"[DONE]":
                tail = self._flush_event()
                if tail:
                    out.append(tail)
                out.append(b"data: [DONE]\n\n")
                continue
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                out.append(b"data: " + raw + b"\n\n")
                continue
            kept = self._event(obj)
            if kept is not None:
                out.append(b"data: " + orjson.dumps(kept) + b"\n\n")
        return b"".join(out)

    def _event(self, obj: Any) -> Any:
        if not isinstance(obj, dict):
            return obj
        if isinstance(obj.get("usage"), dict):
            self.usage = obj["usage"]
            if self._strip_usage:
                if not obj.get("choices"):
                    return None
                obj = {k: v for k, v in obj.items() if k != "usage"}
        if self._redactor is None:
            return obj
        for choice in obj.get("choices") or ():
            delta = choice.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                delta["content"] = self._redactor.feed(delta["content"])
                if choice.get("finish_reason"):
                    delta["content"] += self._flush()
            elif isinstance(choice.get("text"), str):
                choice["text"] = self._redactor.feed(choice["text"])
                if choice.get("finish_reason"):
                    choice["text"] += self._flush()
        return obj

    def _flush(self) -> str:
        if self._redactor is None or self._flushed:
            return ""
        self._flushed = True
        return self._redactor.flush()

    def _flush_event(self) -> bytes:
        rest = self._flush()
        if not rest:
            return b""
        event = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": rest},
                                                                  "finish_reason": None}]}
        return b"data: " + orjson.dumps(event) + b"\n\n"


def redact_json_answer(firewall: Firewall, tenant: str, body: bytes) -> tuple[bytes, list[Verdict]]:
    """A whole (non-streamed) answer: redact each choice's text per the tenant's output policy."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body, []
    verdicts: list[Verdict] = []
    for choice in obj.get("choices") or () if isinstance(obj, dict) else ():
        msg = choice.get("message")
        if isinstance(msg, dict) and isinstance(msg.get("content"), str):
            msg["content"], v = firewall.check_output(tenant, msg["content"])
            verdicts += v
        elif isinstance(choice.get("text"), str):
            choice["text"], v = firewall.check_output(tenant, choice["text"])
            verdicts += v
    return (orjson.dumps(obj) if verdicts else body), verdicts
