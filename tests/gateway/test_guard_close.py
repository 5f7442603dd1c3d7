"""Guard.finish on the in-process quota store (its close not shielded): a cancel that lands while the request's record
waits for room in a full audit queue still writes the record, or logs and counts it lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aigrid.audit.record import AuditRecord
from aigrid.errors import AuditUnavailable
from aigrid.gateway import guard as guard_module
from aigrid.gateway.exchange import Exchange
from aigrid.gateway.guard import Guard
from aigrid.gateway.routes import CHAT_PATH
from tests.gateway.conftest import spec_in


class FullQueue:
    """An audit sink whose queue holds one record and starts full, appended to as AuditLog.append_entry does (a put
    that waits for room, within its timeout; a cancelled put leaves nothing queued). `room()` takes the waiting one."""

    lost = 0

    def __init__(self) -> None:
        self.queue: asyncio.Queue[AuditRecord | None] = asyncio.Queue(maxsize=1)
        self.queue.put_nowait(None)
        self.waiting = asyncio.Event()

    async def start(self) -> None:
        return None

    def accepting(self) -> bool:
        return True

    async def append(self, record: AuditRecord, timeout: float | None = None) -> None:
        self.waiting.set()
        try:
            async with asyncio.timeout(timeout):
                await self.queue.put(record)
        except TimeoutError as e:
            raise AuditUnavailable(f"the audit log's queue stayed full for {timeout} s") from e

    def room(self) -> None:
        self.queue.get_nowait()

    async def flush(self) -> None:
        return None

    async def stop(self) -> None:
        return None


async def _cancelled_while_its_record_waits(guard: Guard, sink: FullQueue) -> Exchange:
    ex = Exchange(CHAT_PATH, 1_800_000_000.0)
    ex.principal = guard.principal(None, None)
    ex.reservation = await guard.quotas.admit(ex.principal, 10)

    async def request() -> None:
        try:
            await asyncio.sleep(30)  # the request, until a cancel (a whole-answer timeout, a shutdown)
        finally:
            await guard.finish(ex)

    task = asyncio.create_task(request())
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait_for(sink.waiting.wait(), 5)
    task.cancel()  # a second cancel while the record waits for room
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    return ex


async def test_a_close_cancelled_while_its_record_waits_for_room_still_writes_it(tmp_path: Path) -> None:
    """Before: the cancel cut the queue's put and the record was gone, neither logged nor counted."""
    sink = FullQueue()
    guard = Guard(spec_in(tmp_path), audit_sink=sink)
    assert not guard._store_pauses  # the in-process store: finish is not shielded
    await guard.start()
    try:
        ex = await _cancelled_while_its_record_waits(guard, sink)
        sink.room()
        record = await asyncio.wait_for(sink.queue.get(), 5)
        assert record is not None and record.request_id == ex.request_id
        assert guard.audit_failures == 0
    finally:
        await guard.stop()


async def test_a_close_cancelled_whose_record_never_finds_room_is_logged_and_counted_lost(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(guard_module, "AUDIT_WAIT_S", 0.1)
    sink = FullQueue()
    guard = Guard(spec_in(tmp_path), audit_sink=sink)
    await guard.start()
    try:
        ex = await _cancelled_while_its_record_waits(guard, sink)
    finally:
        await guard.stop()  # waits for the record's own append: full for AUDIT_WAIT_S, lost
    assert guard.audit_failures == 1
    assert [m for m in caplog.messages if "audit record lost" in m and ex.request_id in m], caplog.messages
