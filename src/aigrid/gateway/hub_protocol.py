"""The frames the gateway's worker processes and their hub exchange over a Unix socket.

A frame is a 4-byte big-endian length and an orjson payload. A request is `[id, op, arg]`; its answer is
`[id, ok, result]` (ok false: result is the error message). `id` 0 means no answer is wanted.

What a worker hands over without waiting for the hub (its quota settlements, its audit records, its
decisions) travels in batches: `[id, "batch", [[op, arg], ...]]`, every message a worker posts in one turn of
the event loop, in one frame, handled by the hub in order. A batch with an id is answered once,
`[id, true, [[index, error], ...]]` (the messages the hub refused; empty when it took them all): that is the
acknowledgement of the audit records in it (hub_client.HubAuditLog). Both sides write through a FrameWriter:
the frames of one turn leave in one write, and the posted messages of one turn go in one batch (a worker
under load ends several requests per turn: one frame and at most one answer for all of them).

A connection opens with the worker's hello, `[0, "hello", TOKEN]` (read_hello): the hub's per-start secret, which
only the processes it started hold; any other first frame ends the connection unanswered.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

import orjson

MAX_FRAME = 16 * 1024 * 1024
"""The largest frame either side reads; a larger one ends the connection (the stream cannot be read past it), and
with it every call and posted message of that worker in flight. So no side sends one (`FrameTooLarge`): the one
call whose request or answer it would be fails alone."""
HELLO = "hello"
"""A connection's first frame, from the worker: `[0, "hello", TOKEN]`, the hub's per-start secret (hub.Hub.token); the
hub reads nothing else from a connection that does not open with it (read_hello)."""
HELLO_MAX = 256
"""The most bytes a hello frame may take (a token is 64 hex digits)."""
HELLO_S = 5.0
"""The most seconds a connection may take to say hello."""
BATCH = "batch"
BATCH_MAX = 256
"""Messages in one batch frame at most (a turn that posts more starts another): bounds a frame's size."""
_LEN = struct.Struct(">I")
_BATCH_ROOM = 64
"""A batch frame's bytes beside its messages (`[id,"batch",[...]]`)."""

Done = Callable[[str | None], None]
"""Called with None when the hub took a posted message, else with why it did not (refused, connection lost)."""


class FrameTooLarge(ValueError):
    """A frame that would be larger than MAX_FRAME: not sent. Before, it was sent, and the reader dropped the
    connection: a tenant's conversation of 16 MiB of JSON (5 items of 4 MiB, no model needed; control characters
    are 6 bytes each in JSON) read through the hub broke its worker's connection, failing every other tenant's
    call in flight on it and losing the audit records it had posted."""


async def read_hello(reader: asyncio.StreamReader) -> str | None:
    """The token of a connection's hello frame (HELLO), or None where its first frame is not one: larger than
    HELLO_MAX (the rest is never read), not JSON, another shape. Raises asyncio.IncompleteReadError at the end of
    the stream."""
    (size,) = _LEN.unpack(await reader.readexactly(4))
    if size > HELLO_MAX:
        return None
    try:
        hello = orjson.loads(await reader.readexactly(size))
    except orjson.JSONDecodeError:
        return None
    if isinstance(hello, list) and len(hello) == 3 and hello[:2] == [0, HELLO] and isinstance(hello[2], str):
        return hello[2]
    return None


def frame(payload: Any) -> bytes:
    data = orjson.dumps(payload)
    if len(data) > MAX_FRAME:
        raise FrameTooLarge(f"{len(data)} bytes, more than a hub frame carries ({MAX_FRAME})")
    return _LEN.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """The next frame's payload; raises asyncio.IncompleteReadError at the end of the stream."""
    (size,) = _LEN.unpack(await reader.readexactly(4))
    if size > MAX_FRAME:
        raise ValueError(f"a hub frame of {size} bytes is larger than {MAX_FRAME}")
    return orjson.loads(await reader.readexactly(size))


class Lost(str):
    """Why a posted message was not acknowledged because its connection broke (not refused by the hub)."""


class PostBatch:
    """One batch frame being filled: its messages already encoded (a message that cannot be encoded fails
    in the code that posts it), its id (0 until a message wants the hub's acknowledgement), and the callbacks
    of those messages by index."""

    __slots__ = ("id", "items", "done", "size")

    def __init__(self) -> None:
        self.id = 0
        self.items: list[bytes] = []
        self.done: list[tuple[int, Done]] = []
        self.size = 0
        """The encoded messages' bytes (a batch is cut before its frame would pass MAX_FRAME)."""

    def encode(self) -> bytes:
        data = b'[%d,"%s",[%s]]' % (self.id, BATCH.encode(), b",".join(self.items))
        return _LEN.pack(len(data)) + data

    def answered(self, failed: list[list[Any]] | None) -> None:
        """The hub's answer: every callback with the error of its message (None: taken)."""
        errors = {int(i): str(e) for i, e in failed or ()}
        for index, done in self.done:
            done(errors.get(index))

    def lost(self, why: str) -> None:
        """The connection broke before the hub acknowledged the batch: every callback hears `why` as Lost (the hub
        may or may not have applied its message; a message named by an op can be sent again)."""
        for _, done in self.done:
            done(Lost(why))


class FrameWriter:
    """Frames for one stream, gathered until the event loop's current turn ends, then written at once: one
    system call for every frame of the turn instead of one each, in the order they were sent. Messages
    posted (post) in a row go into one batch frame, in that order among the other frames."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._pending: list[bytes | PostBatch] = []
        self._batch: PostBatch | None = None

    def send(self, payload: Any) -> None:
        data = frame(payload)
        self._queue(data)
        self._batch = None

    def post(self, op: str, arg: Any) -> PostBatch:
        """Add `[op, arg]` to the batch at the end of this turn's frames (a new one after any other frame, or
        when it is full); returns that batch, whose id and callbacks the caller may set."""
        data = orjson.dumps([op, arg])
        if len(data) + _BATCH_ROOM > MAX_FRAME:
            raise FrameTooLarge(f"{op}: {len(data)} bytes, more than a hub frame carries ({MAX_FRAME})")
        batch = self._batch
        if batch is None or len(batch.items) >= BATCH_MAX or batch.size + len(data) + _BATCH_ROOM > MAX_FRAME:
            batch = self._batch = PostBatch()
            self._queue(batch)
        batch.items.append(data)
        batch.size += len(data) + 1
        return batch

    def _queue(self, item: bytes | PostBatch) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending.append(item)

    def flush(self) -> None:
        """Write what this turn gathered now (at the end of the turn by itself; a closing client calls it)."""
        pending, self._pending, self._batch = self._pending, [], None
        if pending and not self.writer.is_closing():
            self.writer.write(b"".join(p if isinstance(p, bytes) else p.encode() for p in pending))
