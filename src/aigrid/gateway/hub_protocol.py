"""The frames the gateway's worker processes and their hub exchange over a Unix socket.

A frame is a 4-byte big-endian length and an orjson payload. A request is `[id, op, arg]`; its answer is
`[id, ok, result]` (ok false: result is the error message). `id` 0 means no answer is wanted (the audit
records a worker hands over: the hub writes them in arrival order, one chain). Both sides write through a
FrameWriter: the frames of one turn of the event loop leave in one write (a worker under load sends several
per request: its quota, its audit record, its decision).
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


class FrameWriter:
    """Frames for one stream, gathered until the event loop's current turn ends, then written at once: one
    system call for every frame of the turn instead of one each, in the order they were sent."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._pending: list[bytes] = []

    def send(self, payload: Any) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(frame(payload))

    def _flush(self) -> None:
        data, self._pending = b"".join(self._pending), []
        if not self.writer.is_closing():
            self.writer.write(data)
