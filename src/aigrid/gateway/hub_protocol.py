"""The frames the gateway's worker processes and their hub exchange over a Unix socket.

A frame is a 4-byte big-endian length and an orjson payload. A request is `[id, op, arg]`; its answer is
`[id, ok, result]` (ok false: result is the error message). `id` 0 means no answer is wanted (the audit
records a worker hands over: the hub writes them in arrival order, one chain).
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import orjson

MAX_FRAME = 16 * 1024 * 1024
_LEN = struct.Struct(">I")


def frame(payload: Any) -> bytes:
    data = orjson.dumps(payload)
    return _LEN.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """The next frame's payload; raises asyncio.IncompleteReadError at the end of the stream."""
    (size,) = _LEN.unpack(await reader.readexactly(4))
    if size > MAX_FRAME:
        raise ValueError(f"a hub frame of {size} bytes is larger than {MAX_FRAME}")
    return orjson.loads(await reader.readexactly(size))
