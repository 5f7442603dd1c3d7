"""Answers asked for uncompressed (`accept-encoding: identity`) and read with a bound: an engine's probe
(engines/openai_compat.py) and an identity provider's key set (security/jwks.py). Below every layer, so both can
call it, and the gateway's check of a proxied answer (gateway/proxy.py, `_not_an_answer`)."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

IDENTITY = "identity"


class Encoded(ValueError):
    """An answer asked for as `identity` that came compressed anyway: its body is not read (`coded`)."""


def coded(headers: Mapping[str, str]) -> str | None:
    """The content-encoding of an answer asked for as `identity` that came compressed anyway (None: it did not):
    its body is not to be read through httpx, whose decoder inflates each piece read off the network whole
    (64 KiB of gzip is 66 MB) before a bound on the body could count it."""
    encoding = headers.get("content-encoding", IDENTITY).strip().lower()
    return None if encoding in ("", IDENTITY) else encoding


async def read_identity(response: httpx.Response, most: int) -> bytes | None:
    """The body of a streamed answer asked for as `identity`, read as it arrives and no further than one piece past
    `most` bytes (None: it is larger). Encoded, its body unread, when it came compressed anyway."""
    encoding = coded(response.headers)
    if encoding is not None:
        raise Encoded(f"content-encoding {encoding!r} (identity asked): not read")
    body = bytearray()
    async for piece in response.aiter_bytes():  # identity: nothing to decode
        body += piece
        if len(body) > most:
            return None
    return bytes(body)
