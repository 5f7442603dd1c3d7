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

WAIT_S = 2.0
"""AUDIT_WAIT_S where a test cancels a close halfway through another's wait: a second on either side of the cancel."""


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
    ex, task = await _waiting_close(guard, sink)
    task.cancel()  # a second cancel while the record waits for room
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)  # at once; 30 s for a loaded machine
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
        record = await asyncio.wait_for(sink.queue.get(), 30)
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


async def _waiting_close(guard: Guard, sink: FullQueue) -> tuple[Exchange, asyncio.Task[None]]:
    """A request whose close (after a first cancel) waits for room for its record."""
    ex = Exchange(CHAT_PATH, 1_800_000_000.0)
    ex.principal = guard.principal(None, None)
    ex.reservation = await guard.quotas.admit(ex.principal, 10)

    async def request() -> None:
        try:
            await asyncio.sleep(30)  # the request, until a cancel (a whole-answer timeout, a shutdown)
        finally:
            await guard.finish(ex)

    sink.waiting.clear()
    task = asyncio.create_task(request())
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait_for(sink.waiting.wait(), 30)
    return ex, task


def _lost_in_logs(caplog: pytest.LogCaptureFixture, *exchanges: Exchange) -> None:
    for ex in exchanges:
        assert [m for m in caplog.messages if "audit record lost" in m and ex.request_id in m], caplog.messages
    assert not [m for m in caplog.messages if "never retrieved" in m], caplog.messages


async def test_a_close_cancelled_while_stop_waits_for_the_others_is_waited_for_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Before: stop() waited only for the appends there when it got there; a close cancelled during that wait left
    one nothing waited for (not yet counted when stop returned)."""
    monkeypatch.setattr(guard_module, "AUDIT_WAIT_S", WAIT_S)
    sink = FullQueue()
    guard = Guard(spec_in(tmp_path), audit_sink=sink)
    await guard.start()
    first = await _cancelled_while_its_record_waits(guard, sink)
    second, request = await _waiting_close(guard, sink)
    waits = asyncio.Event()
    appended = guard._appended

    async def seen() -> None:
        waits.set()
        await appended()

    monkeypatch.setattr(guard, "_appended", seen)
    stopping = asyncio.create_task(guard.stop())
    await asyncio.wait_for(waits.wait(), 30)  # stop() waits for the first's append (an event, not a sleep)
    # the cancel lands halfway through that wait: the second's append then ends a second after the first's, not
    # with it (two timeouts a few ms apart fire in one turn of the loop, and the test would pass the bug)
    await asyncio.sleep(WAIT_S / 2)
    assert len(guard._appending) == 1 and not request.done() and not stopping.done()  # all three still waiting
    request.cancel()  # a shutdown's second cancel: the second's record goes to a task of its own, made now
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(request, 30)
    await asyncio.wait_for(stopping, 30)
    assert guard.audit_failures == 2 and not guard._appending
    _lost_in_logs(caplog, first, second)


class StopCancels(FullQueue):
    """Its stop cancels a close waiting for room (a shutdown's cancel landing while the audit log stops) and
    returns before that close's append task first runs."""

    request: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        assert self.request is not None
        self.request.cancel()
        await asyncio.sleep(0)  # the request's close takes the cancel and hands its record to a task, not yet run


async def test_a_close_cancelled_while_the_log_stops_is_logged_and_counted_lost(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Before: the task first ran after stop() had set guard.audit to None, and its assert failed inside it: the record
    neither logged nor counted by the gateway (only asyncio's "exception was never retrieved")."""
    monkeypatch.setattr(guard_module, "AUDIT_WAIT_S", 0.1)
    sink = StopCancels()
    guard = Guard(spec_in(tmp_path), audit_sink=sink)
    await guard.start()
    ex, sink.request = await _waiting_close(guard, sink)
    await guard.stop()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(sink.request, 30)  # at once; 30 s for a loaded machine
    await asyncio.sleep(0.3)  # the unfixed code's task: ended by now, whatever it did
    assert guard.audit_failures == 1 and not guard._appending
    _lost_in_logs(caplog, ex)
