"""The Messages door's stream (messages_stream._Blocks): what it copies to write the blocks of tool calls that waited."""

from __future__ import annotations

from typing import Any

import pytest

from aigrid.gateway import messages_stream
from tests.gateway.waiting_calls import waiting_calls


class _Counted(bytes):
    """Bytes whose sums (either side) are _Counted again and add the characters they make to `made[0]`."""

    made = [0]

    def _new(self, data: bytes) -> _Counted:
        self.made[0] += len(data)
        return _Counted(data)

    def __add__(self, other: bytes) -> _Counted:  # type: ignore[override]
        return self._new(bytes(self) + bytes(other))

    def __radd__(self, other: bytes) -> _Counted:
        return self._new(bytes(other) + bytes(self))


@pytest.mark.parametrize("how", ["flush", "whole"])
def test_the_blocks_of_many_calls_waiting_are_joined_once(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """(7 Dec 2026, thirty-sixth session, brief QUAD) The calls begun while an earlier call's arguments were not
    whole wait; when they start (text or the answer's end: flush; the open call's arguments whole: tool_args), each
    block was added to the bytes of all before it (`+=`), a copy of them all each time: 1,024 calls of 8 KiB took 2 s
    of the event loop (scripts/bench_stream_doors.py --waiting). Now they are joined once."""
    sse = messages_stream.sse

    def counted(event: str, data: dict[str, Any]) -> bytes:
        return _Counted(sse(event, data))

    monkeypatch.setattr(messages_stream, "sse", counted)
    _Counted.made[0] = 0
    calls, piece = 300, "x" * 1_000
    blocks = waiting_calls(calls, piece)
    made = _Counted.made[0]
    out = blocks.flush() if how == "flush" else blocks.tool_args(0, '"}', True)
    assert out.count(b"event: content_block_start") == calls - 1
    assert out.count(piece.encode()) == calls - 1
    assert _Counted.made[0] - made <= 2 * len(out), (_Counted.made[0] - made, len(out))  # whole: calls / 2 times it
