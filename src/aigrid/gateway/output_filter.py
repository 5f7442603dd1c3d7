"""Output checks on an engine's answer, for the requests that need them; every other answer passes untouched.

Every stream passes through one: the relay (relay.py) meters the engine's usage chunk itself (quotas and
the audit log are charged real token counts), and this filter drops that chunk again when only the gateway
asked for it, and for tenants whose firewall redacts output it redacts personal data (holding back a short
tail, so that an item split across chunks is still caught). It works on decoded chunks (the JSON of one
SSE data payload); the relay re-frames only the events it changed and passes the others as the engine's
own bytes.
"""

from __future__ import annotations

from typing import Any

import orjson

from aigrid.security.firewall.pipeline import Firewall, Verdict, stream_verdicts
from aigrid.security.firewall.streaming import StreamingRedactor


class OutputFilter:
    def __init__(self, redactor: StreamingRedactor | None, strip_usage: bool) -> None:
        """`redactor` reads choice 0's text; each other choice (a request with `n`) gets one of its own."""
        self._redactors: dict[int, StreamingRedactor] = {} if redactor is None else {0: redactor}
        self._redacts = redactor is not None
        self.strip_usage = strip_usage
        self._flushed: set[int] = set()

    @property
    def redacts(self) -> bool:
        """True when every chunk's text is checked (and so every event is re-framed)."""
        return self._redacts

    def verdicts(self) -> list[Verdict]:
        return stream_verdicts(*self._redactors.values()) if self._redactors else []

    def event(self, obj: Any) -> Any | None:
        """One chunk as the client must see it; None to drop it."""
        if not isinstance(obj, dict):
            return obj
        if isinstance(obj.get("usage"), dict):
            if self.strip_usage:
                if not obj.get("choices"):
                    return None
                obj = {k: v for k, v in obj.items() if k != "usage"}
        if not self._redacts:
            return obj
        for choice in obj.get("choices") or ():
            index = choice.get("index")
            index = index if isinstance(index, int) else 0
            redactor = self._redactor(index)
            delta = choice.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                delta["content"] = redactor.feed(delta["content"])
                if choice.get("finish_reason"):
                    delta["content"] += self._flush(index)
            elif isinstance(choice.get("text"), str):
                choice["text"] = redactor.feed(choice["text"])
                if choice.get("finish_reason"):
                    choice["text"] += self._flush(index)
            elif (choice.get("finish_reason") and (isinstance(delta, dict) or (delta is None and choice.get("text") is None))
                  and (rest := self._flush(index))):
                # the last chunk as engines send it (`"delta": {}`, or no delta at all): what is held back goes in
                # it, not after it (in a chunk without id or model, which a client that stops at finish_reason
                # never reads); a completions chunk (`object: text_completion`) takes it as its text
                if delta is None and obj.get("object") == "text_completion":
                    choice["text"] = rest
                else:
                    choice.setdefault("delta", {})
                    if not isinstance(choice["delta"], dict):  # "delta": null
                        choice["delta"] = {}
                    choice["delta"]["content"] = rest
        return obj

    def _redactor(self, index: int) -> StreamingRedactor:
        found = self._redactors.get(index)
        if found is None:
            found = self._redactors[index] = StreamingRedactor()
        return found

    def _flush(self, index: int) -> str:
        if index in self._flushed or index not in self._redactors:
            return ""
        self._flushed.add(index)
        return self._redactors[index].flush()

    def flush_event(self) -> dict[str, Any] | None:
        """Before [DONE]: a chunk with the text still held back (a stream that ended without finish_reason)."""
        rests = [(i, self._flush(i)) for i in sorted(self._redactors)]
        choices = [{"index": i, "delta": {"content": rest}, "finish_reason": None} for i, rest in rests if rest]
        return {"object": "chat.completion.chunk", "choices": choices} if choices else None


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
