"""An engine's 5xx answer that says it could not read the request: the client's error, not the engine's failure.

llama-server answers HTTP 500 ("server_error") when a field of the request's JSON has a type it does not expect
(nlohmann::json's exceptions while it reads the request, before any inference): a content part without `text`
or with a number there, `tools` that is not a list, a `reasoning_content` or `reasoning_format` that is not a
string; and when the request holds audio, which no model of a grid reads (the spec declares images only:
gateway/modalities.py). Such a request fails the same way on every engine: taken for the engine failing, it was
tried on the next candidate and counted against every circuit, and four such requests of one tenant opened every
circuit of a grid. The proxy (gateway/proxy.py) and the tool loop's model turns (loop.py) both ask here.
"""

from __future__ import annotations

import re

import orjson

from aigrid.engines.protocol import UpstreamResponse
from aigrid.errors import EngineUnavailable, InvalidRequest

_UNREADABLE = re.compile(rb'"message"\s*:\s*"((?:Failed to parse \w+: |\[json\.exception\.'
                         rb'|audio input is not supported)(?:[^"\\]|\\.)*)')
"""How llama-server's message says so. Read in the answer's first bytes: the message may quote the request's whole
`tools`, as long as the client made them."""
_ERROR_BYTES = 8_192
_MESSAGE_CHARS = 500


async def could_not_read(upstream: UpstreamResponse) -> str | None:
    """The engine's message (its first 500 characters) when its 5xx answer says it could not read the request
    (_UNREADABLE, in the answer's first 8 KiB), else None."""
    head = b""
    async for chunk in upstream.body:
        head += chunk
        if len(head) >= _ERROR_BYTES:
            break
    said = _UNREADABLE.search(head[:_ERROR_BYTES])
    if said is None:
        return None
    try:  # the message as JSON escapes it; cut where the head was cut, a partial escape dropped
        message = orjson.loads(b'"' + said.group(1) + b'"')
    except orjson.JSONDecodeError:
        message = said.group(1).decode("utf-8", "replace")
    return str(message)[:_MESSAGE_CHARS]


async def raise_for_server_error(upstream: UpstreamResponse) -> None:
    """For an engine's 5xx answer: the client's 400 `engine_could_not_read` when it says it could not read the
    request (no other engine would: no failover, no circuit counts it), else EngineUnavailable (the engine's
    failure, as any other 5xx)."""
    unread = await could_not_read(upstream)
    if unread is not None:
        raise InvalidRequest(f"the engine could not read this request: {unread}", code="engine_could_not_read")
    raise EngineUnavailable(f"engine answered HTTP {upstream.status}")
